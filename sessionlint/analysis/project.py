"""The project index: module-level facts of every file, resolved across modules.

Built with Python's ``ast`` (cheap) and lazily: a module is parsed the first time a
resolution reaches it. Facts, no policy: which module-level names are session
factories, ``scoped_session`` registries, engines, ``Session`` subclasses, session
instances, or helper functions that close / roll back a parameter.

Module names come from paths below the project root (``src/app/db.py`` is
``src.app.db``). An absolute import ``app.db`` is matched against every module whose
dotted path ends with it, preferring the one nearest to the importing file, so
src-layouts, monorepos and fixture trees with repeated names all resolve sensibly.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sessionlint.analysis.sqla import CLOSE_METHODS, ROLLBACK_METHODS, sqla_kind
from sessionlint.analysis.kinds import Kind


@dataclass(frozen=True, slots=True)
class ValueSummary:
    """What a module-level name was last assigned: a call, an alias, or anything else."""

    shape: str  # "call" | "alias" | "other"
    target: str | None = None  # callee (call) or aliased name (alias), qualified
    keywords: tuple[tuple[str, str | None], ...] = ()  # keyword -> qualified value if a name
    called_twice: bool = False  # ``sessionmaker(...)()``: the callee's result is called
    line: int = 0


@dataclass(frozen=True, slots=True)
class FunctionSummary:
    """Which parameters a helper closes or rolls back somewhere in its body."""

    params: tuple[str, ...]
    closes: frozenset[str]
    rollbacks: frozenset[str]


@dataclass
class ModuleFacts:
    path: str
    name: str
    imports: dict[str, str] = field(default_factory=dict)
    values: dict[str, ValueSummary] = field(default_factory=dict)
    classes: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    methods: dict[str, dict[str, FunctionSummary]] = field(default_factory=dict)
    functions: dict[str, FunctionSummary] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    star_imports: list[str] = field(default_factory=list)
    parsed: bool = True


def module_name_for(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root) if root else path
    if rel.startswith(".."):
        rel = os.path.basename(path)
    rel = rel.replace(os.sep, "/")
    if rel.endswith(".py"):
        rel = rel[:-3]
    if rel.endswith("/__init__"):
        rel = rel[: -len("/__init__")]
    return rel.replace("/", ".").strip(".") or "__main__"


def _common_prefix_len(a: str, b: str) -> int:
    return len(os.path.commonpath([a, b])) if os.path.isabs(a) == os.path.isabs(b) else 0


class ProjectIndex:
    """Module map plus lazily parsed module facts and memoised kinds."""

    def __init__(
        self,
        root: Path | str,
        files: Iterable[str] = (),
        session_factories: Iterable[str] = (),
    ) -> None:
        self.root = os.path.abspath(str(root))
        self._by_name: dict[str, str] = {}
        self._by_suffix: dict[str, list[str]] = {}
        self._facts: dict[str, ModuleFacts] = {}
        self._sources: dict[str, str] = {}
        self._kinds: dict[str, Kind | None] = {}
        self._resolving: set[str] = set()
        self.session_factories = tuple(session_factories)
        # Which module files each resolution touched: the result cache keys on these.
        self.touched: set[str] = set()
        for path in files:
            self.add_file(path)

    # -- module map -----------------------------------------------------------

    def add_file(self, path: str, source: str | None = None) -> str:
        """Register ``path`` (optionally with in-memory source); returns its module name."""
        apath = os.path.abspath(path)
        name = module_name_for(apath, self.root)
        if source is not None:
            self._sources[apath] = source
            self._facts.pop(apath, None)
            self._kinds.clear()
        existing = self._by_name.get(name)
        if existing is None or (apath.endswith("__init__.py") and not existing.endswith("__init__.py")):
            self._by_name[name] = apath
        parts = name.split(".")
        for i in range(len(parts)):
            suffix = ".".join(parts[i:])
            bucket = self._by_suffix.setdefault(suffix, [])
            if apath not in bucket:
                bucket.append(apath)
        return name

    def module_path(self, name: str) -> str | None:
        return self._by_name.get(name)

    def resolve_absolute(self, dotted: str, importer: str) -> str | None:
        """The full module name of ``dotted`` as imported from ``importer``, if in the project."""
        candidates = self._by_suffix.get(dotted)
        if not candidates:
            return None
        if len(candidates) == 1:
            best = candidates[0]
        else:
            here = os.path.dirname(os.path.abspath(importer))
            best = max(candidates, key=lambda c: (_common_prefix_len(here, os.path.dirname(c)), -len(c)))
        return module_name_for(best, self.root)

    def resolve_relative(self, importer: str, level: int, module: str | None) -> str:
        """``from ..x import y`` inside ``importer``: the full module name of ``..x``."""
        name = module_name_for(importer, self.root)
        is_package = os.path.basename(importer) == "__init__.py"
        parts = name.split(".")
        if not is_package:
            parts = parts[:-1]
        if level > 1:
            parts = parts[: len(parts) - (level - 1)] if level - 1 <= len(parts) else []
        if module:
            parts = parts + module.split(".")
        return ".".join(p for p in parts if p)

    # -- facts ----------------------------------------------------------------

    def facts_for_path(self, path: str) -> ModuleFacts:
        apath = os.path.abspath(path)
        facts = self._facts.get(apath)
        if facts is None:
            if apath not in self._sources and module_name_for(apath, self.root) not in self._by_name:
                self.add_file(apath)
            facts = self._build(apath)
            self._facts[apath] = facts
        return facts

    def facts_for_module(self, name: str) -> ModuleFacts | None:
        path = self._by_name.get(name)
        if path is None:
            return None
        self.touched.add(path)
        return self.facts_for_path(path)

    def _build(self, path: str) -> ModuleFacts:
        name = module_name_for(path, self.root)
        source = self._sources.get(path)
        try:
            if source is None:
                with open(path, "rb") as fh:
                    tree = ast.parse(fh.read(), filename=path)
            else:
                tree = ast.parse(source, filename=path)
        except (OSError, SyntaxError, ValueError, RecursionError):
            return ModuleFacts(path, name, parsed=False)
        return _Summarizer(self, path, name).run(tree)

    # -- kinds ----------------------------------------------------------------

    def is_configured_factory(self, qname: str) -> bool:
        return any(qname == f or qname.endswith("." + f) for f in self.session_factories)

    def kind_of(self, qname: str | None) -> Kind | None:
        """What the qualified name denotes, following aliases and re-exports."""
        if not qname:
            return None
        if qname in self._kinds:
            return self._kinds[qname]
        if qname in self._resolving:
            return None
        self._resolving.add(qname)
        try:
            kind = self._kind_uncached(qname)
        finally:
            self._resolving.discard(qname)
        self._kinds[qname] = kind
        return kind

    def _kind_uncached(self, qname: str) -> Kind | None:
        if self.is_configured_factory(qname):
            return Kind("factory", origin=qname, configured=True)
        if qname.startswith("sqlalchemy."):
            return sqla_kind(qname)
        parts = qname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            facts = self.facts_for_module(".".join(parts[:i]))
            if facts is None:
                continue
            if i != len(parts) - 1:
                # ``pkg.mod`` where ``mod`` is a submodule, then an attribute of it:
                # handled by a longer prefix; an attribute of a symbol is not a kind.
                return None
            return self._symbol_kind(facts, parts[i])
        return None

    def _symbol_kind(self, facts: ModuleFacts, attr: str) -> Kind | None:
        origin = f"{facts.name}.{attr}"
        where = (facts.path, 0)
        if attr in facts.imports:
            return self.kind_of(facts.imports[attr])
        if facts.annotations.get(attr):
            declared = self.kind_of(facts.annotations[attr])
            if declared is not None and declared.tag in ("engine_type", "session_class", "connection_type"):
                tag = {"engine_type": "engine", "session_class": "session", "connection_type": "connection"}[declared.tag]
                return Kind(tag, is_async=declared.is_async, origin=origin, where=where)
        if attr in facts.values:
            value = facts.values[attr]
            where = (facts.path, value.line)
            if value.shape == "alias":
                return self.kind_of(value.target)
            if value.shape == "call":
                return self.kind_of_call(value, origin, where)
            return None
        if attr in facts.classes:
            for base in facts.classes[attr]:
                base_kind = self.kind_of(base)
                if base_kind is not None and base_kind.tag == "session_class":
                    return Kind("session_class", is_async=base_kind.is_async, origin=origin, where=where)
            return None
        if attr in facts.functions:
            summary = facts.functions[attr]
            return Kind("function", origin=origin, where=where, function=summary)
        for star in facts.star_imports:
            kind = self.kind_of(f"{star}.{attr}")
            if kind is not None:
                return kind
        return None

    def kind_of_call(self, value: ValueSummary, origin: str, where: tuple[str, int]) -> Kind | None:
        """The kind of the value a call produces, e.g. ``sessionmaker(...)`` -> a factory."""
        callee = self.kind_of(value.target)
        if callee is None:
            return None
        if value.called_twice:
            # ``sessionmaker(...)()`` at module level: a session instance.
            made = self.result_kind(callee, dict(value.keywords), origin, where)
            return self.result_kind(made, {}, origin, where) if made else None
        return self.result_kind(callee, dict(value.keywords), origin, where)

    def result_kind(
        self, callee: Kind | None, keywords: dict[str, str | None], origin: str, where: tuple[str, int]
    ) -> Kind | None:
        """What calling something of kind ``callee`` returns."""
        if callee is None:
            return None
        if callee.tag == "api":
            api = callee.api
            if api in ("sessionmaker", "async_sessionmaker"):
                is_async = api == "async_sessionmaker"
                class_ = keywords.get("class_")
                if class_ is not None:
                    class_kind = self.kind_of(class_)
                    if class_kind is not None and class_kind.tag == "session_class":
                        is_async = class_kind.is_async
                return Kind("factory", is_async=is_async, origin=origin, where=where)
            if api in ("scoped_session", "async_scoped_session"):
                return Kind(
                    "registry",
                    is_async=api == "async_scoped_session",
                    scopefunc="scopefunc" in keywords,
                    origin=origin,
                    where=where,
                )
            if api in ("create_engine", "create_async_engine"):
                return Kind("engine", is_async=api == "create_async_engine", origin=origin, where=where)
            return None
        if callee.tag in ("session_class", "factory"):
            return Kind("session", is_async=callee.is_async, origin=origin, where=where)
        if callee.tag == "registry":
            return Kind("session", is_async=callee.is_async, scoped=True, origin=origin, where=where)
        return None


class _Summarizer:
    """One pass over a module's top level (and its compound statements)."""

    def __init__(self, index: ProjectIndex, path: str, name: str) -> None:
        self.index = index
        self.facts = ModuleFacts(path, name)
        self.defined: set[str] = set()

    def run(self, tree: ast.Module) -> ModuleFacts:
        body = list(_top_level(tree.body))
        for node in body:
            self._imports(node)
        for node in body:
            for target in _bound_names(node):
                self.defined.add(target)
        for node in body:
            self._define(node)
        return self.facts

    def _imports(self, node: ast.stmt) -> None:
        facts, index = self.facts, self.index
        if isinstance(node, ast.Import):
            for alias in node.names:
                full = index.resolve_absolute(alias.name, facts.path) or alias.name
                if alias.asname:
                    facts.imports[alias.asname] = full
                else:
                    top = alias.name.split(".")[0]
                    facts.imports[top] = index.resolve_absolute(top, facts.path) or top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                module = index.resolve_relative(facts.path, node.level, node.module)
            else:
                module = index.resolve_absolute(node.module or "", facts.path) or (node.module or "")
            for alias in node.names:
                if alias.name == "*":
                    facts.star_imports.append(module)
                else:
                    facts.imports[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name

    def qualify(self, expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            if expr.id in self.facts.imports:
                return self.facts.imports[expr.id]
            if expr.id in self.defined:
                return f"{self.facts.name}.{expr.id}"
            return None
        if isinstance(expr, ast.Attribute):
            base = self.qualify(expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    def _define(self, node: ast.stmt) -> None:
        facts = self.facts
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if value is None:
                return
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                annotation = node.annotation
                if isinstance(annotation, ast.Subscript):  # Optional[Engine]
                    annotation = annotation.slice
                facts.annotations[node.target.id] = self.qualify(annotation)
            summary = self._summarize(value)
            for target in targets:
                if isinstance(target, ast.Name):
                    facts.values[target.id] = summary
        elif isinstance(node, ast.ClassDef):
            facts.classes[node.name] = tuple(self.qualify(b) for b in node.bases)
            methods = {}
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods[item.name] = summarize_function(item)
            facts.methods[node.name] = methods
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            facts.functions[node.name] = summarize_function(node)

    def _summarize(self, value: ast.expr) -> ValueSummary:
        if isinstance(value, ast.Call):
            func = value.func
            twice = False
            if isinstance(func, ast.Call):
                twice = True
                keywords_node = func.keywords
                func = func.func
            else:
                keywords_node = value.keywords
            keywords = tuple(
                (k.arg, self.qualify(k.value)) for k in keywords_node if k.arg is not None
            )
            return ValueSummary("call", self.qualify(func), keywords, twice, value.lineno)
        if isinstance(value, (ast.Name, ast.Attribute)):
            return ValueSummary("alias", self.qualify(value), line=value.lineno)
        return ValueSummary("other", line=getattr(value, "lineno", 0))


def summarize_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionSummary:
    """Parameters on which the body calls ``close()``/``rollback()`` anywhere."""
    args = node.args
    params = tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
    closes: set[str] = set()
    rollbacks: set[str] = set()
    names = set(params)
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and isinstance(sub.func.value, ast.Name)
            and sub.func.value.id in names
        ):
            if sub.func.attr in CLOSE_METHODS:
                closes.add(sub.func.value.id)
            elif sub.func.attr in ROLLBACK_METHODS:
                rollbacks.add(sub.func.value.id)
    return FunctionSummary(params, frozenset(closes), frozenset(rollbacks))


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Module-level statements, looking into if/try/with blocks but not defs."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            yield from _top_level(node.body)
            for handler in node.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(node.orelse)
            yield from _top_level(node.finalbody)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield from _top_level(node.body)


def _bound_names(node: ast.stmt) -> Iterable[str]:
    if isinstance(node, ast.Assign):
        for target in node.targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    yield sub.id
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        yield node.target.id
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
