"""Name resolution inside one file, without LibCST's metadata providers.

Python's rules, simplified where it costs nothing real: a name bound anywhere in a
function is local to it (unless declared ``global``/``nonlocal``); free names resolve
in enclosing functions, then at module level through the project index (imports,
aliases, re-exports); class bodies are not enclosing scopes for their methods.
"""

from __future__ import annotations


from dataclasses import dataclass, field
import libcst as cst

from sessionlint.analysis.calls import call_index
from sessionlint.analysis.kinds import Kind
from sessionlint.analysis.project import ModuleFacts, ProjectIndex
from sessionlint.analysis import evidence
from sessionlint.analysis.sqla import external_module
from sessionlint.analysis.walk import ScopeNode as ScopeNode, walk_scope

CONNECT_METHODS = frozenset({"connect", "raw_connection", "begin"})
# Node types that bind names (see Resolver._collect_binding); LibCST's node classes
# are final, so an exact type test is enough and skips ABCMeta's slow isinstance().
_BINDING_TYPES = frozenset(
    {
        cst.Assign, cst.AnnAssign, cst.AugAssign, cst.For, cst.CompFor, cst.WithItem, cst.ExceptHandler,
        cst.NamedExpr, cst.FunctionDef, cst.ClassDef, cst.Global, cst.Nonlocal, cst.Del, cst.Import,
        cst.ImportFrom,
    }
)


def dotted(expr: cst.BaseExpression) -> str | None:
    """``a.b.c`` as a string, for Name/Attribute chains only."""
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        base = dotted(expr.value)
        return f"{base}.{expr.attr.value}" if base else None
    return None


def strip_await(expr: cst.BaseExpression) -> cst.BaseExpression:
    while type(expr) is cst.Await:
        expr = expr.expression
    return expr


def target_names(target: cst.CSTNode) -> list[str]:
    """Names bound by an assignment target (tuples, lists, starred)."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        out: list[str] = []
        for element in target.elements:
            out.extend(target_names(element.value))
        return out
    if isinstance(target, cst.StarredElement):
        return target_names(target.value)
    return []


@dataclass
class Scope:
    node: ScopeNode
    parent: Scope | None
    cls: cst.ClassDef | None = None  # the class a method belongs to
    params: list[str] = field(default_factory=list)
    annotations: dict[str, cst.BaseExpression] = field(default_factory=dict)
    bound: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)
    imports: dict[str, str] = field(default_factory=dict)
    assigned: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    with_items: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)  # ``with x as name``

    @property
    def is_module(self) -> bool:
        return type(self.node) is cst.Module

    @property
    def is_async(self) -> bool:
        return isinstance(self.node, cst.FunctionDef) and self.node.asynchronous is not None

    def binds(self, name: str) -> bool:
        return name in self.bound and name not in self.globals and name not in self.nonlocals


@dataclass
class InstanceAttributes:
    annotations: dict[str, cst.BaseExpression] = field(default_factory=dict)
    assigned: dict[str, list[tuple[cst.BaseExpression, Scope]]] = field(default_factory=dict)


class Resolver:
    """Resolves names and expressions of one module to :class:`Kind` facts."""

    def __init__(self, module: cst.Module, facts: ModuleFacts, index: ProjectIndex) -> None:
        self.module = module
        self.facts = facts
        self.index = index
        self._scopes: dict[int, Scope] = {}
        self._parents = call_index(module).scope_parents
        self._local_kinds: dict[tuple[int, str], Kind | None] = {}
        self._instance_attrs: dict[int, InstanceAttributes] = {}

    # -- scopes ---------------------------------------------------------------

    def scope(self, node: ScopeNode) -> Scope:
        found = self._scopes.get(id(node))
        if found is None:
            found = self._build_scope(node)
            self._scopes[id(node)] = found
        return found

    def instance_attributes(self, cls: cst.ClassDef) -> InstanceAttributes:
        """What the class says of ``self.<attr>``: annotations in its body
        (``session: Session``) and every ``self.<attr> = value`` in its methods."""
        found = self._instance_attrs.get(id(cls))
        if found is not None:
            return found
        found = self._instance_attrs[id(cls)] = InstanceAttributes()
        body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
        for item in body:
            if isinstance(item, cst.SimpleStatementLine):
                for small in item.body:
                    if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                        found.annotations[small.target.value] = small.annotation.annotation
            if not isinstance(item, cst.FunctionDef):
                continue
            scope = self.scope(item)
            for sub in walk_scope(item.body):
                if isinstance(sub, cst.Assign):
                    for target in sub.targets:
                        t = target.target
                        if isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self":
                            found.assigned.setdefault(t.attr.value, []).append((sub.value, scope))
        return found

    def enclosing_class(self, node: ScopeNode) -> cst.ClassDef | None:
        return self._parents.get(id(node), (None, None))[1]

    def _build_scope(self, node: ScopeNode) -> Scope:
        if isinstance(node, cst.Module):
            return Scope(node, None)
        parent_node, cls = self._parents.get(id(node), (self.module, None))
        scope = Scope(node, self.scope(parent_node), cls)
        params = node.params
        for param in (
            *params.posonly_params,
            *params.params,
            *params.kwonly_params,
            *(p for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)),
        ):
            name = param.name.value
            scope.params.append(name)
            scope.bound.add(name)
            if param.annotation is not None:
                scope.annotations[name] = param.annotation.annotation
        body: cst.CSTNode = node.body
        for sub in walk_scope(body):
            self._collect_binding(scope, sub)
        return scope

    def _collect_binding(self, scope: Scope, node: cst.CSTNode) -> None:
        if type(node) not in _BINDING_TYPES:
            return
        if isinstance(node, cst.Assign):
            for target in node.targets:
                for name in target_names(target.target):
                    scope.bound.add(name)
                    if isinstance(target.target, cst.Name):
                        scope.assigned.setdefault(name, []).append(node.value)
        elif isinstance(node, cst.AnnAssign):
            for name in target_names(node.target):
                scope.bound.add(name)
                scope.annotations[name] = node.annotation.annotation
                if node.value is not None:
                    scope.assigned.setdefault(name, []).append(node.value)
        elif isinstance(node, cst.AugAssign):
            scope.bound.update(target_names(node.target))
        elif isinstance(node, (cst.For, cst.CompFor)):
            if isinstance(node, cst.For):
                scope.bound.update(target_names(node.target))
        elif isinstance(node, cst.WithItem):
            if node.asname is not None:
                scope.bound.update(target_names(node.asname.name))
                if isinstance(node.asname.name, cst.Name):
                    scope.with_items.setdefault(node.asname.name.value, []).append(node.item)
        elif isinstance(node, cst.ExceptHandler):
            if node.name is not None:
                scope.bound.update(target_names(node.name.name))
        elif isinstance(node, cst.NamedExpr):
            for name in target_names(node.target):
                scope.bound.add(name)
                scope.assigned.setdefault(name, []).append(node.value)
        elif isinstance(node, (cst.FunctionDef, cst.ClassDef)):
            scope.bound.add(node.name.value)
        elif isinstance(node, cst.Global):
            scope.globals.update(n.name.value for n in node.names)
        elif isinstance(node, cst.Nonlocal):
            scope.nonlocals.update(n.name.value for n in node.names)
        elif isinstance(node, cst.Del):
            scope.bound.update(target_names(node.target))
        elif isinstance(node, cst.Import):
            for alias in node.names:
                full = dotted(alias.name) or ""
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    local = alias.asname.name.value
                    scope.imports[local] = self.index.resolve_absolute(full, self.facts.path) or external_module(full)
                else:
                    local = full.split(".")[0]
                    scope.imports[local] = self.index.resolve_absolute(local, self.facts.path) or external_module(local)
                scope.bound.add(local)
        elif isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
            level = len(node.relative)
            module = dotted(node.module) if node.module is not None else None
            if level:
                base = self.index.resolve_relative(self.facts.path, level, module)
            else:
                base = self.index.resolve_absolute(module or "", self.facts.path) or external_module(module or "")
            for alias in node.names:
                name = dotted(alias.name) or ""
                local = (
                    alias.asname.name.value
                    if alias.asname is not None and isinstance(alias.asname.name, cst.Name)
                    else name
                )
                scope.imports[local] = f"{base}.{name}" if base else name
                scope.bound.add(local)

    # -- names ----------------------------------------------------------------

    def owner(self, name: str, scope: Scope) -> Scope | None:
        """The function scope that binds ``name`` as seen from ``scope``; None when the
        name is the module's (a global, an import, a builtin)."""
        current: Scope | None = scope
        if name in scope.globals:
            return None
        while current is not None and not current.is_module:
            if current.binds(name):
                return current
            current = current.parent
        return None

    def _find(self, name: str, scope: Scope) -> Scope:
        """The scope that binds ``name`` as seen from ``scope`` (the module if none)."""
        return self.owner(name, scope) or self.scope(self.module)

    def qualify(self, expr: cst.BaseExpression, scope: Scope) -> str | None:
        """The qualified name an expression refers to, if it is an import or a global."""
        if isinstance(expr, cst.Name):
            name = expr.value
            owner = self._find(name, scope)
            if not owner.is_module:
                return owner.imports.get(name)
            if name in self.facts.imports:
                return self.facts.imports[name]
            if name in self.facts.values or name in self.facts.classes or name in self.facts.functions:
                return f"{self.facts.name}.{name}"
            for star in self.facts.star_imports:
                # ``from db import *`` (and ``from sqlalchemy import *``): the first
                # star-imported module that gives the name a meaning.
                if self.index.kind_of(f"{star}.{name}") is not None:
                    return f"{star}.{name}"
            return None
        if isinstance(expr, cst.Attribute):
            base = self.qualify(expr.value, scope)
            return f"{base}.{expr.attr.value}" if base else None
        return None

    def kind(self, expr: cst.BaseExpression, scope: Scope) -> Kind | None:
        """What ``expr`` denotes: a factory, registry, engine, session class, ..."""
        expr = strip_await(expr)
        if isinstance(expr, cst.Name):
            owner = self._find(expr.value, scope)
            if not owner.is_module and expr.value not in owner.imports:
                return self.local_kind(owner, expr.value)
            return self.index.kind_of(self.qualify(expr, scope))
        if isinstance(expr, cst.Attribute):
            return self.index.kind_of(self.qualify(expr, scope))
        if isinstance(expr, cst.Call):
            return self.call_result_kind(expr, scope)
        return None

    def local_kind(self, scope: Scope, name: str) -> Kind | None:
        key = (id(scope.node), name)
        if key in self._local_kinds:
            return self._local_kinds[key]
        self._local_kinds[key] = None  # recursion guard
        kind: Kind | None = None
        annotation = scope.annotations.get(name)
        if annotation is not None:
            kind = self.annotation_kind(annotation, scope)
        if kind is None:
            for value in scope.assigned.get(name, ()):
                kind = self.kind(value, scope)
                if kind is not None:
                    break
        if (
            kind is None
            and annotation is None
            and name in scope.params
            and name not in scope.assigned
            and type(scope.node) is cst.FunctionDef
            and evidence.param_used_as_session(scope.node, name)
        ):
            kind = Kind("session", is_async=scope.is_async, origin=f"use:{name}", evidence=evidence.USED)
        self._local_kinds[key] = kind
        return kind

    def annotation_kind(self, annotation: cst.BaseExpression, scope: Scope) -> Kind | None:
        """``engine: Engine`` -> an engine value; ``s: Session`` -> a session value."""
        if isinstance(annotation, cst.Subscript):  # Optional[Session], sessionmaker[Session]
            inner = annotation.slice[0].slice if annotation.slice else None
            base_kind = self.kind(annotation.value, scope)
            if base_kind is not None and base_kind.tag == "api" and base_kind.api in (
                "sessionmaker",
                "async_sessionmaker",
            ):
                return Kind("factory", is_async=base_kind.api == "async_sessionmaker", evidence=evidence.DECLARED)
            if isinstance(inner, cst.Index):
                return self.annotation_kind(inner.value, scope)
            return None
        if isinstance(annotation, cst.BinaryOperation):  # Session | None
            return self.annotation_kind(annotation.left, scope) or self.annotation_kind(
                annotation.right, scope
            )
        if isinstance(annotation, cst.SimpleString):
            return None
        kind = self.kind(annotation, scope)
        if kind is None:
            return None
        if kind.tag == "engine_type":
            return Kind("engine", is_async=kind.is_async, evidence=evidence.DECLARED)
        if kind.tag == "session_class":
            return Kind("session", is_async=kind.is_async, evidence=evidence.DECLARED)
        if kind.tag == "connection_type":
            return Kind("connection", is_async=kind.is_async, evidence=evidence.DECLARED)
        return None

    def _method_returns(self, method: str, scope: Scope) -> Kind | None:
        """What ``self.<method>()`` returns, from the enclosing class's summary."""
        current: Scope | None = scope
        while current is not None and current.cls is None:
            current = current.parent
        if current is None or current.cls is None:
            return None
        summary = self.facts.methods.get(current.cls.name.value, {}).get(method)
        if summary is None:
            return None
        return self.index.function_returns(summary, f"{self.facts.name}.{current.cls.name.value}.{method}", None)

    def _named_factory_call(self, func: cst.BaseExpression, scope: Scope) -> Kind | None:
        """A call of something the analysis cannot trace, whose name says it makes
        sessions (``product.session_factory()``, ``maker = self.get_sessionmaker();
        maker()``): a new session. Names only, so only the unmistakable ones, and
        only without positional arguments (Pyramid's HTTP ``session_factory(request)``
        takes one; a ``sessionmaker`` takes none)."""
        if isinstance(func, cst.Name):
            name = func.value
        elif isinstance(func, cst.Attribute):
            name = func.attr.value
        else:
            return None
        tag = evidence.factory_call(name)
        if tag is None or self.qualify(func, scope) is not None:
            return None
        return Kind(tag, is_async=scope.is_async, origin=f"name:{name}", evidence=evidence.NAMED)

    def lent_session(self, call: cst.Call, asname: str, scope: Scope) -> Kind | None:
        """``with db.session_context() as session:`` where the code does not say what
        the callee returns: a session lent for the block, known by the names of the
        callee and of the block's variable. Not for callees outside the project (an
        HTTP library's ``Session()``), nor ones whose kind the code gives."""
        func = call.func
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else None
        if name is None or not evidence.lends_session(name, asname):
            return None
        callee = self.kind(func, scope)
        if callee is not None and callee.tag != "function":
            return None
        qname = self.qualify(func, scope)
        if qname is not None and not qname.startswith("sqlalchemy") and not self._in_project(qname):
            # Outside the project: ``requests.Session()`` is an HTTP session; a
            # ``get_session()`` of a database package, in a module that uses
            # SQLAlchemy, is the database's.
            if name.lower() == "session" or not any(q.startswith("sqlalchemy") for q in self.facts.imports.values()):
                return None
        return Kind("session", is_async=scope.is_async, origin=f"name:{name}", evidence=evidence.NAMED)

    def _in_project(self, qname: str) -> bool:
        parts = qname.split(".")
        return any(self.index.module_path(".".join(parts[:i])) is not None for i in range(len(parts) - 1, 0, -1))

    def call_result_kind(self, call: cst.Call, scope: Scope) -> Kind | None:
        """What a call returns: ``sessionmaker()`` a factory, ``Factory()`` a session..."""
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in CONNECT_METHODS:
            base = self.kind(func.value, scope)
            if base is not None and base.tag == "engine":
                return Kind("connection", is_async=base.is_async)
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value in ("self", "cls"):
            returned = self._method_returns(func.attr.value, scope)
            if returned is not None:
                return returned
        callee = self.kind(func, scope)
        if callee is None:
            if any(arg.keyword is None for arg in call.args):
                return None  # ``SessionFactory(secret, url)``, ``session_factory(request)``: web sessions
            return self._named_factory_call(func, scope)
        keywords: dict[str, str | None] = {}
        for arg in call.args:
            if arg.keyword is not None:
                keywords[arg.keyword.value] = self.qualify(arg.value, scope)
        return self.index.result_kind(callee, keywords, origin="", where=None)
