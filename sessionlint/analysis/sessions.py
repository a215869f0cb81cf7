"""Session facts for one function: which expressions are sessions, which calls are
made on them, how a block of statements leaves, and whether a session is used again
after a statement.

Facts, no policy: the transaction, registry and thread rules decide what to report.

A *session key* names one session inside a function by its spelling (``session``,
``db.db_session``, ``self.session``): within one function that is unambiguous enough,
and it lets ``self.session.flush()`` and ``self.session.rollback()`` meet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import libcst as cst

from sessionlint.analysis import evidence
from sessionlint.analysis.calls import call_index, per_module
from sessionlint.analysis.kinds import FunctionSummary, Kind
from sessionlint.analysis.project import NO_RETURN_CALLS
from sessionlint.analysis.scope import Resolver, Scope, dotted, strip_await, target_names
from sessionlint.analysis.sqla import CLOSE_METHODS, ROLLBACK_METHODS
from sessionlint.analysis.walk import SCOPE_NODES, scope_nodes_of, walk_scope

# Methods after which the session's transaction is gone (rolled back or discarded).
RESET_METHODS = ROLLBACK_METHODS | CLOSE_METHODS

# ``sqlalchemy.exc`` classes for errors raised by the database or the flush: catching
# one of them (or anything broader) catches the error that needs a rollback.
# ``NoResultFound``/``MultipleResultsFound`` are not among them: a ``.one()`` that
# finds nothing leaves the transaction perfectly usable.
_DB_ERRORS = frozenset(
    {
        "SQLAlchemyError", "DBAPIError", "StatementError", "DatabaseError", "IntegrityError",
        "OperationalError", "DataError", "ProgrammingError", "InternalError",
        "NotSupportedError", "InterfaceError", "PendingRollbackError", "StaleDataError",
        "FlushError",
    }
)
_DRIVER_MODULES = ("psycopg2", "psycopg", "pymysql", "MySQLdb", "asyncpg", "sqlite3", "aiosqlite", "aiomysql", "oracledb", "pyodbc")

NORMAL, CONTINUE, BREAK, RETURN, RAISE, RESET = "normal", "continue", "break", "return", "raise", "reset"


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session as seen from one function."""

    key: str  # its spelling
    kind: Kind
    where: str  # "local" (bound in this function) | "param" | "closure" | "global" | "self"
    binding: tuple[cst.CSTNode, ...] = ()  # statements that bind a local one

    @property
    def long_lived(self) -> bool:
        """Outlives the function and is reused by later work: a registry, a scoped,
        module-level, ``self.`` or enclosing function's session. A parameter is not: the
        caller (a FastAPI dependency, a test fixture) usually closes it once the
        function returns, so only uses within the function count for it."""
        return self.where in ("closure", "global", "self") or self.kind.tag == "registry" or self.kind.scoped


@dataclass
class SessionCall:
    """``<session>.<method>(...)``."""

    ref: SessionRef
    method: str
    call: cst.Call


@dataclass(frozen=True, slots=True)
class SessionWith:
    """``with <call> as <name>:`` that binds a session: created by the call
    (``Factory()``), or lent by it, known by the names (``db.session_context()``)."""

    node: cst.With
    name: str
    call: cst.Call
    kind: Kind
    lent: bool


@dataclass
class FunctionTx:
    """Per-function session facts."""

    node: cst.FunctionDef
    scope: Scope
    parents: dict[int, cst.CSTNode]  # the module's parent map (calls.call_index)
    with_sessions: dict[str, list[cst.With]] = field(default_factory=dict)
    withs: list[SessionWith] = field(default_factory=list)  # in walk order


def analyzer_for(resolver: Resolver) -> TxAnalyzer:
    """The file's :class:`TxAnalyzer`, shared by every rule that asks (dropped with
    the file's other per-module facts, see :func:`calls.forget`)."""
    return per_module(resolver.module, "sessions", lambda: TxAnalyzer(resolver))


class TxAnalyzer:
    """Session facts for the functions of one file (cached per function and class)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._functions: dict[int, FunctionTx] = {}
        self._class_attrs: dict[int, dict[str, Kind]] = {}

    # -- per function ------------------------------------------------------------

    def function(self, node: cst.FunctionDef) -> FunctionTx:
        found = self._functions.get(id(node))
        if found is None:
            scope = self.resolver.scope(node)
            found = FunctionTx(node, scope, call_index(self.resolver.module).parent)
            for sub in scope_nodes_of(node.body, cst.With):
                assert isinstance(sub, cst.With)
                for item in sub.items:
                    call = strip_await(item.item)
                    if item.asname is None or not isinstance(item.asname.name, cst.Name) or not isinstance(call, cst.Call):
                        continue
                    name = item.asname.name.value
                    kind = self.creates_session(call, scope)
                    lent = kind is None
                    if lent:
                        kind = self.resolver.lent_session(call, name, scope)
                    if kind is not None:
                        found.withs.append(SessionWith(sub, name, call, kind, lent))
                        found.with_sessions.setdefault(name, []).append(sub)
            self._functions[id(node)] = found
        return found

    def creates_session(self, expr: cst.BaseExpression, scope: Scope) -> Kind | None:
        """``Factory()``, ``Session(engine)``, ``Factory.begin()``, ``registry()``."""
        expr = strip_await(expr)
        if not isinstance(expr, cst.Call):
            return None
        kind = self.resolver.call_result_kind(expr, scope)
        if kind is not None and kind.tag == "session":
            return kind
        func = expr.func
        if isinstance(func, cst.Attribute) and func.attr.value == "begin":
            base = self.resolver.kind(func.value, scope)
            if base is not None and base.tag in ("factory", "session_class"):
                return Kind("session", is_async=base.is_async, api="begin")
        return None

    # -- is this a session? --------------------------------------------------------

    def session_ref(self, expr: cst.BaseExpression, fn: cst.FunctionDef) -> SessionRef | None:
        expr = strip_await(expr)
        tx = self.function(fn)
        scope = tx.scope
        if isinstance(expr, cst.Name):
            name = expr.value
            owner = self.resolver.owner(name, scope)
            if owner is not None and name not in owner.imports:
                owner_node = owner.node
                if isinstance(owner_node, cst.FunctionDef):
                    owner_tx = self.function(owner_node)
                    if name in owner_tx.with_sessions:
                        where = "local" if owner is scope else "closure"
                        return SessionRef(name, Kind("session"), where, tuple(owner_tx.with_sessions[name]))
                kind = self.resolver.local_kind(owner, name)
                if kind is None or kind.tag not in ("session", "registry"):
                    return None
                if owner is not scope:
                    return SessionRef(name, kind, "closure")
                if name in scope.params:
                    return SessionRef(name, kind, "param")
                return SessionRef(name, kind, "local", tuple(self._bindings(tx, name)))
            kind = self.resolver.index.kind_of(self.resolver.qualify(expr, scope))
            if kind is not None and kind.tag in ("session", "registry"):
                return SessionRef(name, kind, "global")
            return None
        if isinstance(expr, cst.Attribute):
            key = dotted(expr)
            if key is None:
                return None
            if isinstance(expr.value, cst.Name) and expr.value.value == "self":
                cls = self.resolver.enclosing_class(fn)
                if cls is None:
                    return None
                kind = self.class_attrs(cls).get(expr.attr.value)
                return SessionRef(key, kind, "self") if kind is not None else None
            kind = self.resolver.index.kind_of(self.resolver.qualify(expr, scope))
            if kind is not None and kind.tag in ("session", "registry"):
                return SessionRef(key, kind, "global")
            return None
        if isinstance(expr, cst.Call) and not expr.args:
            # ``db_session().execute(...)``: the registry's session.
            base = self.session_ref(expr.func, fn)
            if base is not None and base.kind.tag == "registry":
                return base
        return None

    def _bindings(self, tx: FunctionTx, name: str) -> Iterator[cst.CSTNode]:
        for sub in walk_scope(tx.node.body):
            if isinstance(sub, cst.Assign) and any(name in target_names(t.target) for t in sub.targets):
                yield sub
            elif isinstance(sub, cst.AnnAssign) and name in target_names(sub.target):
                yield sub

    def class_attrs(self, cls: cst.ClassDef) -> dict[str, Kind]:
        """``self.<attr>`` that hold a session or registry: assigned one in a method
        (``self.session = SessionLocal()``, ``self.session = session`` from a parameter
        annotated ``Session``), or annotated ``session: Session`` in the class body."""
        found = self._class_attrs.get(id(cls))
        if found is not None:
            return found
        found = {}
        self._class_attrs[id(cls)] = found
        attributes = self.resolver.instance_attributes(cls)
        module = self.resolver.scope(self.resolver.module)
        for name, annotation in attributes.annotations.items():
            kind = self.resolver.annotation_kind(annotation, module)
            if kind is not None and kind.tag == "session":
                found[name] = kind
        foreign: set[str] = set()
        for name, values in attributes.assigned.items():
            for value, scope in values:
                kind = self.resolver.kind(value, scope)
                if kind is not None and kind.tag in ("session", "registry"):
                    found[name] = kind
                elif isinstance(value, cst.Call) and not (self.resolver.qualify(value.func, scope) or "sqlalchemy").startswith("sqlalchemy"):
                    foreign.add(name)  # ``self.session = aiohttp.ClientSession()``
        for name in evidence.session_attrs_by_use(cls):
            if name not in found and name not in foreign:
                found[name] = Kind("session", origin=f"use:self.{name}", evidence=evidence.USED)
        return found

    # -- calls on sessions ------------------------------------------------------------

    def session_calls(self, node: cst.CSTNode, fn: cst.FunctionDef) -> Iterator[SessionCall]:
        """``<session>.<method>(...)`` calls in ``node`` (not in nested scopes)."""
        for sub in own_nodes(node):
            if isinstance(sub, cst.Call) and isinstance(sub.func, cst.Attribute):
                ref = self.session_ref(sub.func.value, fn)
                if ref is not None:
                    yield SessionCall(ref, sub.func.attr.value, sub)

    def uses(self, node: cst.CSTNode, key: str, fn: cst.FunctionDef) -> bool:
        """Whether ``node`` uses the session ``key`` other than to roll back / close it."""
        for sub in own_nodes(node):
            if isinstance(sub, (cst.Name, cst.Attribute)) and dotted(sub) == key:
                parent = self.function(fn).parents.get(id(sub))
                if isinstance(parent, cst.Attribute) and parent.attr.value in RESET_METHODS:
                    continue
                return True
        return False

    # -- exceptions ---------------------------------------------------------------------

    def catches_db_errors(self, handler: cst.ExceptHandler | cst.ExceptStarHandler, scope: Scope) -> bool:
        """Bare ``except``, ``Exception``/``BaseException``, a ``sqlalchemy.exc`` database
        error, or a DB driver's exception."""
        if handler.type is None:
            return True
        types = [e.value for e in handler.type.elements] if isinstance(handler.type, cst.Tuple) else [handler.type]
        for t in types:
            name = dotted(t)
            if name in ("Exception", "BaseException", "builtins.Exception"):
                return True
            qname = self.resolver.qualify(t, scope) or ""
            if qname.startswith("sqlalchemy.") and qname.rsplit(".", 1)[-1] in _DB_ERRORS:
                return True
            if qname.split(".")[0] in _DRIVER_MODULES:
                return True
        return False

    def catches_everything(self, handler: cst.ExceptHandler | cst.ExceptStarHandler) -> bool:
        """Bare ``except``, ``Exception`` or ``BaseException``."""
        if handler.type is None:
            return True
        types = [e.value for e in handler.type.elements] if isinstance(handler.type, cst.Tuple) else [handler.type]
        return any(dotted(t) in ("Exception", "BaseException", "builtins.Exception") for t in types)

    def exits(self, statements: Iterable[cst.CSTNode], fn: cst.FunctionDef) -> set[str]:
        """How control can leave a block: ``normal``, ``continue``, ``break``, ``return``,
        ``raise``, or ``reset`` (a rollback/close ran first, so the rest does not matter)."""
        modes: set[str] = set()
        for statement in statements:
            step = self._statement_exits(statement, fn)
            modes |= step - {NORMAL}
            if NORMAL not in step:
                return modes
        return modes | {NORMAL}

    def _statement_exits(self, node: cst.CSTNode, fn: cst.FunctionDef) -> set[str]:
        if isinstance(node, cst.SimpleStatementLine):
            return self.exits(node.body, fn)
        if isinstance(node, cst.Return):
            return {RESET} if node.value is not None and self.resets(node.value, fn) else {RETURN}
        if isinstance(node, cst.Raise):
            return {RAISE}
        if isinstance(node, cst.Continue):
            return {CONTINUE}
        if isinstance(node, cst.Break):
            return {BREAK}
        if isinstance(node, cst.BaseSmallStatement):
            return {RESET} if self.resets(node, fn) else {NORMAL}
        if isinstance(node, cst.If):
            modes = self.exits(block_of(node.body), fn)
            if node.orelse is None:
                modes |= {NORMAL} if not self.resets(node.test, fn) else {RESET}
            elif isinstance(node.orelse, cst.If):
                modes |= self._statement_exits(node.orelse, fn)
            else:
                modes |= self.exits(block_of(node.orelse.body), fn)
            return modes
        if isinstance(node, (cst.For, cst.While)):
            body = self.exits(block_of(node.body), fn)
            modes = (body - {BREAK, CONTINUE}) | {NORMAL}
            return modes
        if isinstance(node, cst.With):
            return self.exits(block_of(node.body), fn)
        if isinstance(node, (cst.Try, cst.TryStar)):
            if node.finalbody is not None:
                final = self.exits(block_of(node.finalbody.body), fn)
                if NORMAL not in final:
                    return final
            modes = self.exits(block_of(node.body), fn)
            if node.orelse is not None and NORMAL in modes:
                modes = (modes - {NORMAL}) | self.exits(block_of(node.orelse.body), fn)
            for handler in node.handlers:
                modes |= self.exits(block_of(handler.body), fn)
            return modes
        return {NORMAL}

    def resets(self, node: cst.CSTNode, fn: cst.FunctionDef) -> bool:
        """Whether evaluating ``node`` rolls back or closes a session, or calls something
        that never returns: ``x.rollback()``/``x.close()`` on anything, a project helper
        that rolls back (``undo(session)``, ``self._rollback()``), ``abort(409)``."""
        for sub in own_nodes(node):
            if not isinstance(sub, cst.Call):
                continue
            func = sub.func
            if isinstance(func, cst.Attribute) and func.attr.value in RESET_METHODS:
                return True
            scope = self.function(fn).scope
            if self.resolver.qualify(func, scope) in NO_RETURN_CALLS or self._builtin_exit(func, scope):
                return True
            summary = self._helper_summary(func, fn)
            if summary is not None and (
                summary.rollbacks or summary.rolls_back_any or summary.closes or summary.never_returns
            ):
                return True
        return False

    def _builtin_exit(self, func: cst.BaseExpression, scope: Scope) -> bool:
        """``exit()``/``quit()`` where the name is the builtin (bound nowhere)."""
        if not isinstance(func, cst.Name) or func.value not in ("exit", "quit"):
            return False
        return self.resolver.owner(func.value, scope) is None and self.resolver.qualify(func, scope) is None

    def _helper_summary(self, func: cst.BaseExpression, fn: cst.FunctionDef) -> FunctionSummary | None:
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value in ("self", "cls"):
            cls = self.resolver.enclosing_class(fn)
            if cls is None:
                return None
            return self.resolver.facts.methods.get(cls.name.value, {}).get(func.attr.value)
        if isinstance(func, (cst.Name, cst.Attribute)):
            kind = self.resolver.kind(func, self.function(fn).scope)
            if kind is not None and kind.tag == "function":
                return kind.function
        return None

    # -- statements and blocks ------------------------------------------------------------

    def parent(self, node: cst.CSTNode, fn: cst.FunctionDef) -> cst.CSTNode | None:
        return self.function(fn).parents.get(id(node))

    def ancestors(self, node: cst.CSTNode, fn: cst.FunctionDef) -> Iterator[cst.CSTNode]:
        current = self.parent(node, fn)
        while current is not None and current is not fn:
            yield current
            current = self.parent(current, fn)

    def is_within(self, node: cst.CSTNode, container: cst.CSTNode, fn: cst.FunctionDef) -> bool:
        return node is container or any(a is container for a in self.ancestors(node, fn))

    def used_after(self, start: cst.CSTNode, modes: set[str], ref: SessionRef, fn: cst.FunctionDef) -> bool:
        """Whether the session ``ref`` may be used again after control leaves ``start``
        (a statement) in one of ``modes``: by a later statement of an enclosing block, or
        by the next iteration of an enclosing loop that the session outlives. Stops at the
        ``with`` that binds it."""
        modes = set(modes)
        current: cst.CSTNode = start
        for ancestor in self.ancestors(start, fn):
            if not modes - {RETURN, RAISE, RESET}:
                return False
            if isinstance(ancestor, cst.IndentedBlock):
                body = list(ancestor.body)
                position = next((i for i, s in enumerate(body) if s is current), None)
                if position is not None and NORMAL in modes:
                    following = body[position + 1 :]
                    if any(self.uses(s, ref.key, fn) for s in following):
                        return True
                    if following:
                        modes = (modes - {NORMAL}) | self.exits(following, fn)
            elif isinstance(ancestor, (cst.For, cst.While)) and current is ancestor.body:
                repeats = modes & {NORMAL, CONTINUE}
                if repeats and not any(self.is_within(b, ancestor, fn) for b in ref.binding):
                    if self.uses(ancestor.body, ref.key, fn) or (
                        isinstance(ancestor, cst.While) and self.uses(ancestor.test, ref.key, fn)
                    ):
                        return True
                modes = (modes - {CONTINUE, BREAK}) | ({NORMAL} if modes & {NORMAL, CONTINUE, BREAK} else set())
            elif isinstance(ancestor, cst.With) and any(ancestor is b for b in ref.binding):
                return False  # the with block closes it
            current = ancestor
        return False


def block_of(suite: cst.BaseSuite) -> list[cst.CSTNode]:
    return list(suite.body)


def own_nodes(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """``node`` and its descendants in the same scope."""
    yield node
    if isinstance(node, SCOPE_NODES):
        return
    yield from walk_scope(node)
