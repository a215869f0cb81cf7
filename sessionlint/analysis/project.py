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
import bisect
import builtins
import dataclasses
import os
import re
import symtable
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sessionlint.analysis.sqla import (
    CLOSE_METHODS,
    EXTENSION_PREFIXES,
    FLASK_SQLALCHEMY,
    ROLLBACK_METHODS,
    extension_kind,
    external_module,
    extension_session,
    sqla_kind,
)
from sessionlint.analysis.kinds import FLASK_SQLALCHEMY_API, FunctionSummary, Kind, ValueSummary


@dataclass(frozen=True)
class ScanDep:
    """What a project-wide scan's answer depends on, for the result cache: the files
    it read (``inputs``), the words that chose them (a changed file spelling one may
    matter), the files that alone settle the answer (``kept_by``: while one of them
    is unchanged, no other change can undo it), and the modules its resolutions read."""

    inputs: frozenset[str]
    tokens: frozenset[str]
    kept_by: frozenset[str]
    touched: frozenset[str]


@dataclass
class Uses:
    """What a module does with some names (``ProjectIndex.uses``): the qualified names
    whose ``.remove`` attribute it calls or references (``db_session.remove()`` in a
    teardown hook, ``atexit.register(db_session.remove)``), and the calls passing a
    qualified name as an argument: (argument, callee or None, position or keyword)."""

    removes: set[str] = field(default_factory=set)
    passed: list[tuple[str, str | None, int | str]] = field(default_factory=list)
    # Those whose ``.remove`` is referenced in a teardown hook (see ``_is_hook``).
    hook_removes: set[str] = field(default_factory=set)


# Hooks that run at the end of every request, task, test or process: decorators and
# registration calls (by their last name), signals whose ``connect`` registers one,
# and method names frameworks call at the end (Tornado's ``on_finish``, unittest's
# ``tearDown``).
HOOK_REGISTRARS = frozenset(
    {
        "teardown_request", "teardown_appcontext", "after_request", "teardown_websocket",
        "add_finished_callback", "addCleanup", "addClassCleanup", "register",
    }
)
HOOK_SIGNALS = frozenset(
    {"task_postrun", "task_success", "task_failure", "task_revoked", "worker_process_shutdown", "request_finished"}
)
HOOK_METHODS = frozenset({"on_finish", "tearDown", "tearDownClass", "teardown_method", "teardown_class", "teardown_function"})


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
    # Line ranges (first line with decorators, last line) of the module's top-level
    # defs and classes: the units stage 1 keeps or blanks out.
    blocks: list[tuple[int, int]] = field(default_factory=list)
    # (line, column, message) when the module does not parse.
    syntax_error: tuple[int, int, str] | None = None


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


# A declared type -> the tag of its instances (``-> Engine`` returns an engine).
_INSTANCE_OF = {"engine_type": "engine", "session_class": "session", "connection_type": "connection"}


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
        self._kind_deps: dict[str, frozenset[str]] = {}
        self._resolving: set[str] = set()
        self._returning: set[ValueSummary] = set()  # return summaries being resolved
        self._files: dict[str, None] = {}
        self._bytes: dict[str, bytes] = {}
        # registry origin -> (removed or handed out, what the scan depended on)
        self._released: dict[str, tuple[bool, ScanDep]] = {}
        self._per_request: dict[str, tuple[str | None, ScanDep]] = {}
        # project class -> (module instantiating it, or a subclass, at import time; scan)
        self._instances: dict[str, tuple[str | None, ScanDep]] = {}
        self._uses: dict[tuple[str, frozenset[str]], Uses] = {}
        self.session_factories = tuple(session_factories)
        # Which module files each resolution touched: the result cache keys on these.
        # Dependencies of the current file's analysis, for the result cache: the module
        # files resolutions were read from, and whether project-wide scans were used.
        self.touched: set[str] = set()
        self.scans: dict[str, ScanDep] = {}
        for path in files:
            self.add_file(path)

    def __getstate__(self) -> dict[str, object]:
        # Pickled for another process on the same tree: file contents are read again
        # there on demand rather than copied through a pipe.
        state = dict(self.__dict__)
        state["_bytes"] = {}
        return state

    # -- module map -----------------------------------------------------------

    def add_file(self, path: str, source: str | None = None) -> str:
        """Register ``path`` (optionally with in-memory source); returns its module name."""
        apath = os.path.abspath(path)
        name = module_name_for(apath, self.root)
        if source is not None and self._sources.get(apath) != source:
            # An in-memory version (stdin, an editor buffer) replaces the file on disk.
            self._sources[apath] = source
            self._bytes.pop(apath, None)
            self._facts.pop(apath, None)
            self._kinds.clear()
            self._kind_deps.clear()
            self._released.clear()
            self._per_request.clear()
            self._instances.clear()
            self._uses.clear()
        if apath not in self._files:
            self._files[apath] = None
            self._released.clear()
            self._per_request.clear()
            self._instances.clear()
            self._uses.clear()
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
        if len(candidates) > 1 or module_name_for(candidates[0], self.root) != dotted:
            candidates = [c for c in candidates if self._importable_as(c, dotted, importer)]
            if not candidates:
                return None
        if len(candidates) == 1:
            best = candidates[0]
        else:
            here = os.path.dirname(os.path.abspath(importer))
            best = max(candidates, key=lambda c: (_common_prefix_len(here, os.path.dirname(c)), -len(c)))
        return module_name_for(best, self.root)

    def _importable_as(self, path: str, dotted: str, importer: str) -> bool:
        """Whether the module at ``path`` can be what ``import <dotted>`` in ``importer``
        finds: the directory above its top package is not a package itself (it is a
        source root, ``src/``), or it is the importer's own directory (Python 2's
        implicit relative import). ``pyspider/database/sqlalchemy/`` is not what
        ``import sqlalchemy`` imports."""
        module = path[: -len("/__init__.py")] if path.endswith(("/__init__.py", os.sep + "__init__.py")) else path[:-3]
        top = module
        for _ in range(dotted.count(".")):
            top = os.path.dirname(top)
        container = os.path.dirname(top)
        if container == os.path.dirname(os.path.abspath(importer)):
            return True
        return os.path.join(container, "__init__.py") not in self._files

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

    def has_facts(self, path: str) -> bool:
        return os.path.abspath(path) in self._facts

    def built_facts(self, path: str) -> ModuleFacts | None:
        """The facts of ``path`` if already built (never builds them)."""
        return self._facts.get(os.path.abspath(path))

    def install_facts(self, facts: Iterable[ModuleFacts]) -> None:
        """Facts built elsewhere (a worker process) for files of this index."""
        for item in facts:
            if item.path not in self._sources:
                self._facts.setdefault(item.path, item)

    def facts_for_module(self, name: str) -> ModuleFacts | None:
        path = self._by_name.get(name)
        if path is None:
            return None
        self.touched.add(path)
        return self.facts_for_path(path)

    def _build(self, path: str) -> ModuleFacts:
        name = module_name_for(path, self.root)
        source = self._sources.get(path)
        text = source if source is not None else self.file_bytes(path)
        try:
            tree = parse_lean(text, path)
        except SyntaxError as exc:
            return ModuleFacts(path, name, parsed=False, syntax_error=(exc.lineno or 1, exc.offset or 1, exc.msg))
        except (OSError, ValueError, RecursionError, MemoryError) as exc:
            problem = _null_byte_problem_of(text) if isinstance(exc, ValueError) else None
            return ModuleFacts(path, name, parsed=False, syntax_error=problem or (1, 1, str(exc) or type(exc).__name__))
        return _Summarizer(self, path, name, _method_lines(text)).run(tree)

    def uses(self, path: str, words: frozenset[str]) -> Uses:
        """:class:`Uses` of the module at ``path``, from its top-level statements (defs
        and classes whole) that spell one of ``words``: any reference to a name spells
        it, or spells a function-local alias assigned in the same def. A whole-module
        parse, done only for the files the project-wide questions below need."""
        key = (path, words)
        found = self._uses.get(key)
        if found is not None:
            return found
        found = self._uses[key] = Uses()
        facts = self.facts_for_path(path)
        if not facts.parsed:
            return found
        data = self.file_bytes(path)
        try:
            tree = ast.parse(data, filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return found
        lines = _word_lines(data, words)
        body = []
        for node in tree.body:
            decorators = getattr(node, "decorator_list", ())
            first = min([node.lineno, *(d.lineno for d in decorators)])
            at = bisect.bisect_left(lines, first)
            if at < len(lines) and lines[at] <= (node.end_lineno or node.lineno):
                body.append(node)
        summarizer = _Summarizer(self, path, facts.name)
        summarizer.facts = facts
        summarizer.defined = {*facts.values, *facts.classes, *facts.functions}
        _UsesScanner(summarizer, found, _registered_hooks(tree)).scan(body)
        return found

    # -- project-wide facts ---------------------------------------------------

    def files(self) -> list[str]:
        """Every registered project file (absolute paths)."""
        return list(self._files)

    def seed_bytes(self, data: dict[str, bytes]) -> None:
        """Contents already read by the caller (absolute paths), to avoid reading twice."""
        for path, blob in data.items():
            if path not in self._sources:
                self._bytes[path] = blob

    def file_bytes(self, path: str) -> bytes:
        """A project file's contents (cached: project-wide scans read every file)."""
        data = self._bytes.get(path)
        if data is not None:
            return data
        source = self._sources.get(path)
        if source is not None:
            data = source.encode("utf-8", "surrogatepass")
        else:
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                data = b""
        self._bytes[path] = data
        return data

    def registry_released(self, origin: str) -> bool:
        """Whether the ``scoped_session`` registry ``origin`` is let go of anywhere in the
        project: its ``.remove()`` called or referenced as a callback, in any module,
        through imports and aliases; handed to a project helper that removes that
        parameter (``shutdown(db_session)`` with ``def shutdown(r): r.remove()``); or
        handed to a callee outside the project (a framework that may remove it).

        Any such use spells the registry by one of its names: its own, or a name a
        module re-exports it under (found as a fixpoint). Only the files spelling one
        are parsed, and the result depends on nothing else (for the result cache)."""
        return self._registry_scan(origin, "released", self._releases)

    def attribute_closed(self, attr: str) -> bool:
        """Whether any project module closes a session it holds as ``.<attr>``:
        ``self._session.close()`` (or ``__exit__``), ``with self._session:``,
        ``closing(self._session)``, or ends every session at once
        (``close_all_sessions()``). A byte search: a module that spells one of these
        for another object's ``<attr>`` counts too, which errs towards silence."""
        name = re.escape(attr.encode())
        return self._attribute_scan(
            f"closed:{attr}",
            {attr, "close_all", "close_all_sessions"},
            rb"\." + name + rb"\s*\.\s*(?:close|__exit__|__aexit__)\b"
            rb"|\bwith\s+(?:[\w.]*\.)?" + name + rb"\s*[:,)]"
            rb"|\bclosing\(\s*(?:[\w.]*\.)?" + name + rb"\b"
            rb"|\bclose_all_sessions\(|\.close_all\(",
        )

    def attribute_removed(self, attr: str) -> bool:
        """Whether any project module removes a ``scoped_session`` registry it holds as
        ``.<attr>``: calls or hands out ``x.<attr>.remove`` (a byte search, as above)."""
        return self._attribute_scan(f"removed:{attr}", {attr}, rb"\." + re.escape(attr.encode()) + rb"\s*\.\s*remove\b")

    def attribute_disposed(self, attr: str) -> bool:
        """Whether any project module disposes an engine it holds as ``.<attr>``
        (``self.engine.dispose()``, or hands out ``x.<attr>.dispose``)."""
        return self._attribute_scan(f"disposed:{attr}", {attr}, rb"\." + re.escape(attr.encode()) + rb"\s*\.\s*dispose\b")

    def _attribute_scan(self, key: str, words: set[str], pattern: bytes) -> bool:
        found = self._released.get(key)
        if found is not None:
            self._note_scan(key, found[1])
            return found[0]
        regex = re.compile(pattern)
        inputs = self._spelling(words, set())
        kept_by = next((path for path in sorted(inputs) if regex.search(self.file_bytes(path))), None)
        scan = ScanDep(frozenset(inputs), frozenset(words), frozenset({kept_by} if kept_by else ()), frozenset())
        self._released[key] = (kept_by is not None, scan)
        self._note_scan(key, scan)
        return kept_by is not None

    def registry_torn_down(self, origin: str) -> bool:
        """Whether a teardown hook somewhere in the project removes the registry
        ``origin``: a function registered with ``teardown_request``/``after_request``/
        ``teardown_appcontext`` (decorator or call), a Celery ``task_postrun``-style
        signal, ``atexit.register``, Pyramid's ``add_finished_callback``, a pytest
        fixture (after its ``yield``), ``tearDown``/``addCleanup`` or Tornado's
        ``on_finish``. Then every request or task ends with the registry removed, and
        one more ``remove()`` elsewhere needs no ``finally``."""
        return self._registry_scan(origin, "torn-down", self._tears_down)

    def _registry_scan(self, origin: str, question: str, answers: Callable[[str, str, frozenset[str]], bool]) -> bool:
        key = origin if question == "released" else f"{question}:{origin}"
        found = self._released.get(key)
        if found is not None:
            self._note_scan(key, found[1])
            return found[0]
        outer, self.touched = self.touched, set()
        spellings = {origin.rsplit(".", 1)[-1]}
        inputs: set[str] = set()
        pending = self._spelling(spellings, inputs)
        while pending:
            for path in pending:
                inputs.add(path)
                facts = self.facts_for_path(path)
                for name, qname in facts.imports.items():
                    if name not in spellings and self._is_registry(qname, origin):
                        spellings.add(name)
                for name, value in facts.values.items():
                    if name not in spellings and value.shape == "alias" and self._is_registry(f"{facts.name}.{name}", origin):
                        spellings.add(name)
            pending = self._spelling(spellings, inputs)
        words = frozenset(spellings)
        # A use that lets go of the registry names it as a call argument (or binds an
        # alias to it), or mentions ``remove``: other files need no parse.
        argument = re.compile(
            rb"[(,=](?:\s|#[^\n]*)*(?:[\w.]*\.)?(?:" + b"|".join(re.escape(w.encode()) for w in sorted(words)) + rb")\b"
        )
        kept_by = next(
            (
                path
                for path in sorted(inputs)
                if (b"remove" in self.file_bytes(path) or argument.search(_IMPORTS.sub(b"", self.file_bytes(path))))
                and answers(path, origin, words)
            ),
            None,
        )
        released = kept_by is not None
        scan = ScanDep(
            frozenset(inputs), words, frozenset({kept_by} if kept_by else ()), frozenset(self.touched)
        )
        self.touched = outer
        self._released[key] = (released, scan)
        self._note_scan(key, scan)
        return released

    def instantiated_at_import(self, qname: str) -> str | None:
        """A module that instantiates the project class ``qname``, or a project subclass
        of it, at its top level (``db = FlaskStore()`` in ``server/ext.py`` with
        ``class FlaskStore(Store)``): that one object then lives as long as the
        process and serves every thread. The module's name, or None.

        Only the files spelling the class's name, or a subclass's, are read."""
        key = f"instances:{qname}"
        found = self._instances.get(qname)
        if found is not None:
            self._note_scan(key, found[1])
            return found[0]
        outer, self.touched = self.touched, set()
        classes = {qname}
        spellings = {qname.rsplit(".", 1)[-1]}
        inputs: set[str] = set()
        pending = self._spelling(spellings, inputs)
        while pending:
            for path in pending:
                inputs.add(path)
                facts = self.facts_for_path(path)
                for name in facts.classes:
                    sub = f"{facts.name}.{name}"
                    if sub not in classes and self.base_in(sub, classes) is not None:
                        classes.add(sub)
                        spellings.add(name)
                for name, target in facts.imports.items():
                    if target in classes:
                        spellings.add(name)
            pending = self._spelling(spellings, inputs)
        where: str | None = None
        kept_by: frozenset[str] = frozenset()
        for path in sorted(inputs):
            facts = self.facts_for_path(path)
            if any(
                value.shape == "call" and self.base_in(value.target, classes) is not None
                for value in facts.values.values()
            ):
                where, kept_by = facts.name, frozenset({path})
                break
        scan = ScanDep(frozenset(inputs), frozenset(spellings), kept_by, frozenset(self.touched))
        self.touched = outer
        self._instances[qname] = (where, scan)
        self._note_scan(key, scan)
        return where

    def instantiated_per_request(self, qname: str) -> str | None:
        """A request handler (``@app.route``, ``@router.get``, a class-based view's
        ``get``...) that instantiates the project class ``qname``, directly or through the
        ``__init__`` of another class it instantiates (``TimeToCloseService(settings)``
        whose ``__init__`` makes a ``DataService``): every request then builds a new
        object. ``module.function``, or None. Matched by the class's name: only the
        files spelling it (or an intermediate class's) are parsed."""
        key = f"per-request:{qname}"
        known = self._per_request.get(key)
        if known is not None:
            self._note_scan(key, known[1])
            return known[0]
        names = {qname.rsplit(".", 1)[-1]}
        frontier = set(names)
        inputs: set[str] = set()
        where: str | None = None
        kept_by: frozenset[str] = frozenset()
        while frontier and where is None:
            paths = self._spelling(frontier, set())
            frontier = set()
            for path in paths:
                inputs.add(path)
                try:
                    tree = ast.parse(self.file_bytes(path), filename=path)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    continue
                for owner, fn in _functions_with_owner(tree):
                    if not _instantiates(fn, names):
                        continue
                    if _handles_requests(owner, fn):
                        where, kept_by = f"{module_name_for(path, self.root)}.{fn.name}", frozenset({path})
                        break
                    if fn.name == "__init__" and owner is not None and owner.name not in names:
                        frontier.add(owner.name)
                if where is not None:
                    break
            names |= frontier
        scan = ScanDep(frozenset(inputs), frozenset(names), kept_by, frozenset())
        self._per_request[key] = (where, scan)
        self._note_scan(key, scan)
        return where

    def _spelling(self, names: set[str], seen: set[str]) -> list[str]:
        """Project files not in ``seen`` whose bytes spell one of ``names`` as a word."""
        words = [n.encode() for n in sorted(names)]
        regex = re.compile(rb"\b(?:" + b"|".join(re.escape(w) for w in words) + rb")\b")
        out = []
        for path in self._files:
            if path not in seen:
                data = self.file_bytes(path)
                if any(w in data for w in words) and regex.search(data):
                    out.append(path)
        return out

    def _is_registry(self, qname: str | None, origin: str) -> bool:
        kind = self.kind_of(qname)
        return kind is not None and kind.tag == "registry" and kind.origin == origin

    def _tears_down(self, path: str, origin: str, words: frozenset[str]) -> bool:
        """Whether the module at ``path`` removes the registry ``origin`` in a teardown hook."""
        return any(self._is_registry(qname, origin) for qname in self.uses(path, words).hook_removes)

    def _releases(self, path: str, origin: str, words: frozenset[str]) -> bool:
        """Whether the module at ``path`` removes or hands out the registry ``origin``."""
        uses = self.uses(path, words)
        if any(self._is_registry(qname, origin) for qname in uses.removes):
            return True
        for arg, callee, where in uses.passed:
            if not self._is_registry(arg, origin):
                continue
            callee_kind = self.kind_of(callee)
            if callee_kind is None or callee_kind.tag not in ("function", "api"):
                return True  # a framework or library call: assume it removes the registry
            summary = callee_kind.function
            if summary is None or not summary.removes:
                continue
            param = where if isinstance(where, str) else (
                summary.params[where] if where < len(summary.params) else None
            )
            if param in summary.removes:
                return True
        return False

    def _note_scan(self, origin: str, scan: ScanDep) -> None:
        """Record, for the result cache, what a project-wide scan depended on."""
        self.scans[origin] = scan
        self.touched |= scan.touched

    # -- kinds ----------------------------------------------------------------

    def is_configured_factory(self, qname: str) -> bool:
        return any(qname == f or qname.endswith("." + f) for f in self.session_factories)

    def base_in(self, qname: str | None, roots: Container[str], depth: int = 0) -> str | None:
        """The one of ``roots`` that the class ``qname`` is or derives from, following
        project classes across modules (``class Loader(threading.Thread)``)."""
        if not qname or depth > 6:
            return None
        if qname in roots:
            return qname
        module, _, attr = qname.rpartition(".")
        facts = self.facts_for_module(module) if module else None
        if facts is None:
            return None
        if attr in facts.imports:
            return self.base_in(facts.imports[attr], roots, depth + 1)
        for base in facts.classes.get(attr, ()):
            found = self.base_in(base, roots, depth + 1)
            if found is not None:
                return found
        return None

    def kind_of(self, qname: str | None) -> Kind | None:
        """What the qualified name denotes, following aliases and re-exports."""
        if not qname:
            return None
        if qname in self._kinds:
            # A memoised answer still depends on the modules it was read from.
            self.touched |= self._kind_deps[qname]
            return self._kinds[qname]
        if qname in self._resolving:
            return None
        self._resolving.add(qname)
        outer, self.touched = self.touched, set()
        try:
            kind = self._kind_uncached(qname)
        finally:
            self._resolving.discard(qname)
            deps, self.touched = self.touched, outer | self.touched
        self._kinds[qname] = kind
        self._kind_deps[qname] = frozenset(deps)
        return kind

    def _kind_uncached(self, qname: str) -> Kind | None:
        if self.is_configured_factory(qname):
            return Kind("factory", origin=qname, configured=True)
        if qname.startswith("sqlalchemy."):
            return sqla_kind(qname)
        if qname.startswith(EXTENSION_PREFIXES):
            extension = extension_kind(qname)
            if extension is not None or qname.startswith(FLASK_SQLALCHEMY + "."):
                return extension
        parts = qname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            facts = self.facts_for_module(".".join(parts[:i]))
            if facts is None:
                continue
            if i == len(parts) - 2 and parts[-1] in ("session", "create_scoped_session"):
                # ``db.session`` of a framework extension ``db``, and the unmanaged
                # registries Flask-SQLAlchemy 2.x builds on request
                # (``db.create_scoped_session()``: nobody removes those but the caller).
                owner = self._symbol_kind(facts, parts[i])
                if owner is not None and owner.tag == "extension":
                    if parts[-1] == "create_scoped_session":
                        return Kind("api", api="scoped_session", origin=qname)
                    return extension_session(owner, qname)
            if i == len(parts) - 2 and parts[-1] in facts.methods.get(parts[i], ()):
                # ``SessionManager.session(url)``: a classmethod or staticmethod called
                # on its class is a project helper like a module function.
                summary = facts.methods[parts[i]][parts[-1]]
                return Kind("function", origin=qname, where=(facts.path, 0), function=summary)
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
                if base_kind is not None and base_kind.tag == "api" and base_kind.api == FLASK_SQLALCHEMY_API:
                    return base_kind  # a project subclass of Flask-SQLAlchemy's extension
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
        return self.result_kind(callee, dict(value.keywords), origin, where, value.positional)

    def result_kind(
        self,
        callee: Kind | None,
        keywords: dict[str, str | None],
        origin: str,
        where: tuple[str, int] | None,
        positional: int = 0,
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
                # ``scoped_session(session_factory, scopefunc=None)``: a second
                # positional argument is the scopefunc too.
                return Kind(
                    "registry",
                    is_async=api == "async_scoped_session",
                    scopefunc="scopefunc" in keywords or positional >= 2,
                    origin=origin,
                    where=where,
                )
            if api in ("create_engine", "create_async_engine"):
                return Kind("engine", is_async=api == "create_async_engine", origin=origin, where=where)
            if api == FLASK_SQLALCHEMY_API:
                return Kind("extension", api=api, origin=origin, where=where)
            return None
        if callee.tag in ("session_class", "factory"):
            return Kind("session", is_async=callee.is_async, origin=origin, where=where)
        if callee.tag == "registry":
            return Kind("session", is_async=callee.is_async, scoped=True, origin=origin, where=where)
        if callee.tag == "function" and callee.function is not None:
            return self.function_returns(callee.function, origin or callee.origin, where or callee.where)
        return None

    def function_returns(self, function: FunctionSummary, origin: str, where: tuple[str, int] | None) -> Kind | None:
        """What a call of a project function returns: its returned call's kind, else
        its declared type's (``-> Engine: return make_engine(cfg)`` where
        ``make_engine`` is not the project's still returns an engine)."""
        if function.returns is None:
            return None
        returned = self.returned_kind(function.returns, origin, where)
        if returned is None and function.declared is not None:
            returned = self.returned_kind(function.declared, origin, where)
        return returned

    def returned_kind(self, value: ValueSummary, origin: str, where: tuple[str, int] | None) -> Kind | None:
        """What a project function returns, from its summary (see ``_Summarizer._returns``)."""
        at = where or ("", value.line)
        if value.shape == "annotation":
            declared = self.kind_of(value.target)
            if declared is None:
                return None
            # ``-> Session`` says what, not whose: warehouse's ``orm_session_from_obj()
            # -> Session`` hands out the object's own session, which the caller must not
            # close. So a declared session makes no new session; only a returned call
            # of a factory does (below).
            if declared.tag in _INSTANCE_OF and declared.tag != "session_class":
                return Kind(_INSTANCE_OF[declared.tag], is_async=declared.is_async, origin=origin, where=at)
            if declared.tag == "api" and declared.api in ("sessionmaker", "async_sessionmaker"):
                return Kind("factory", is_async=declared.api == "async_sessionmaker", origin=origin, where=at)
            return None
        if value.shape == "call":
            # A recursive helper (``def f(): return f(...)``) returns what it returns.
            if value in self._returning:
                return None
            self._returning.add(value)
            try:
                return self.kind_of_call(value, origin, at)
            finally:
                self._returning.discard(value)
        return None


class _Summarizer:
    """One pass over a module's top level (and its compound statements)."""

    def __init__(self, index: ProjectIndex, path: str, name: str, method_lines: list[int] | None = None) -> None:
        self.index = index
        self.facts = ModuleFacts(path, name)
        self.defined: set[str] = set()
        self.method_lines = method_lines  # see _method_lines; None: not known

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionSummary:
        summary = self._walked_summary(node)
        if _registers_cleanup(node):
            return summary  # it lends what it returns: the cleanup it registers closes it
        declared = self._declared(node)
        returns = self._returned_call(node) or declared
        if returns is None:
            return summary
        return dataclasses.replace(summary, returns=returns, declared=declared if returns is not declared else None)

    def _walked_summary(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionSummary:
        lines = self.method_lines
        if lines is not None:
            first = bisect.bisect_left(lines, node.lineno)
            if first == len(lines) or lines[first] > (node.end_lineno or node.lineno):
                return _plain_summary(node)  # no close/rollback/remove in its lines: no walk
        return summarize_function(node)

    def _returned_call(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ValueSummary | None:
        """The call the function returns, when that can be named (``return
        create_engine(...)``, also through a local assigned once: ``engine =
        create_engine(...); return engine``). Only statements are walked, not
        expressions: this runs for every function."""
        local_calls: dict[str, ast.Call | None] = {}
        for statement in _statements(node.body):
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
                name = statement.targets[0].id
                value = statement.value
                if local_calls.get(name) is not None and _hands_over(value, name):
                    continue  # ``session = cls.initialize_data(session)``: the same session, prepared
                local_calls[name] = value if isinstance(value, ast.Call) and name not in local_calls else None
            elif isinstance(statement, ast.Return) and statement.value is not None:
                value = statement.value
                if isinstance(value, ast.Await):
                    value = value.value
                if isinstance(value, ast.Name) and local_calls.get(value.id) is not None:
                    value = local_calls[value.id]  # type: ignore[assignment]
                if isinstance(value, ast.Call) and not (isinstance(value.func, ast.Name) and value.func.id == node.name):
                    summary = self._summarize(value)
                    if summary.target is not None:
                        return summary
        return None

    def _declared(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ValueSummary | None:
        """The declared return type (``-> Engine``), when it names one class."""
        declared = node.returns
        if declared is None:
            return None
        if isinstance(declared, ast.Subscript) and isinstance(declared.value, (ast.Name, ast.Attribute)):
            if (self.qualify(declared.value) or "").rsplit(".", 1)[-1] in ("Optional", "AsyncIterator", "Iterator", "Generator", "AsyncGenerator"):
                return None  # a generator lends; an Optional says little
        if isinstance(declared, (ast.Name, ast.Attribute)):
            target = self.qualify(declared)
            if target is not None:
                return ValueSummary("annotation", target, line=node.lineno)
        return None

    def run(self, tree: ast.Module) -> ModuleFacts:
        body = list(_top_level(tree.body))
        for node in body:
            self._imports(node)
        for node in body:
            for target in _bound_names(node):
                self.defined.add(target)
        for node in body:
            self._define(node)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                self.facts.blocks.append((first, node.end_lineno or node.lineno))
        return self.facts

    def _imports(self, node: ast.stmt) -> None:
        facts, index = self.facts, self.index
        if isinstance(node, ast.Import):
            for alias in node.names:
                full = index.resolve_absolute(alias.name, facts.path) or external_module(alias.name)
                if alias.asname:
                    facts.imports[alias.asname] = full
                else:
                    top = alias.name.split(".")[0]
                    facts.imports[top] = index.resolve_absolute(top, facts.path) or external_module(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                module = index.resolve_relative(facts.path, node.level, node.module)
            else:
                module = index.resolve_absolute(node.module or "", facts.path) or external_module(node.module or "")
            for alias in node.names:
                if alias.name == "*":
                    facts.star_imports.append(module)
                else:
                    facts.imports[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name

    def qualify(self, expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            if expr.id in self.facts.imports:
                return self.facts.imports[expr.id]
            if expr.id in self.defined or (self.facts.star_imports and not hasattr(builtins, expr.id)):
                # A name neither imported nor defined here may come from a ``from m
                # import *`` (``kind_of`` looks there).
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
                    methods[item.name] = self._function(item)
            facts.methods[node.name] = methods
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            facts.functions[node.name] = self._function(node)

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
            positional = len((value.func.args if isinstance(value.func, ast.Call) else value.args))
            return ValueSummary("call", self.qualify(func), keywords, twice, value.lineno, positional)
        if isinstance(value, (ast.Name, ast.Attribute)):
            return ValueSummary("alias", self.qualify(value), line=value.lineno)
        return ValueSummary("other", line=getattr(value, "lineno", 0))


# Files larger than this are parsed in top-level chunks: one ``ast`` of a 30k-line
# generated module costs ~150 MB, and CPython keeps that memory once it has grown.
_BIG_FILE = 256 * 1024
_CHUNK_START = re.compile(r"^(?:class |def |async def |@)", re.M)


def _chunks(text: str) -> Iterable[str]:
    """The top-level chunks of a big file: split before column-0 ``def``/``class``/
    decorator lines, a decorator staying with what it decorates."""
    start = 0
    after_decorator = False
    for match in _CHUNK_START.finditer(text):
        at = match.start()
        decorated, after_decorator = after_decorator, text.startswith("@", at)
        if at == 0 or decorated:
            continue  # a decorator's chunk runs on to the def or class it decorates
        yield text[start:at]
        start = at
    yield text[start:]


def parse_lean(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` for facts: big files are parsed in chunks (see :func:`_chunks`),
    keeping of each class only its methods (all the facts need). Any chunk that does
    not parse on its own (a split inside a string, a real syntax error) falls back to
    one whole-file parse, so results never depend on the split."""
    if len(source) <= _BIG_FILE:
        return ast.parse(source, filename=filename)
    text = source if isinstance(source, str) else _decoded(source)
    if "\r" in text:  # lines are counted by "\n" below
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    module = ast.Module(body=[], type_ignores=[])
    line = 0
    for chunk in _chunks(text):
        try:
            tree = ast.parse(chunk, filename=filename)
        except SyntaxError:
            return ast.parse(source, filename=filename)  # let the real error (or no error) show
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                node.body = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] or [ast.Pass()]
            if line:
                _shift_lines(node, line)
            module.body.append(node)
        line += chunk.count("\n")
    return module


def _shift_lines(stmt: ast.stmt, delta: int) -> None:
    """Move the line numbers the facts read (statements of the module's top level,
    compound statements and class bodies included, and their direct expressions) by
    ``delta``; a whole-tree ``ast.increment_lineno`` costs more than the parse.
    Function bodies and nested expressions keep chunk-relative lines."""
    stack: list[ast.AST] = [stmt]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    stack.append(child)
            elif isinstance(child, ast.excepthandler):
                stack.append(child)
            elif isinstance(child, ast.expr):
                _shift_node(child, delta)
        _shift_node(node, delta)


def _shift_node(node: ast.AST, delta: int) -> None:
    if "lineno" in node._attributes:
        node.lineno = getattr(node, "lineno", 0) + delta  # type: ignore[attr-defined]
        end = getattr(node, "end_lineno", None)
        if end is not None:
            node.end_lineno = end + delta  # type: ignore[attr-defined]


def check_syntax(source: str, filename: str = "<unknown>") -> None:
    """Raise SyntaxError (or ValueError for null bytes) if ``source`` does not parse.

    Parsing to a symbol table builds the syntax tree inside CPython only, which costs
    about half of ``ast.parse`` (no Python object per node); big files go in chunks,
    as in :func:`parse_lean`. The symbol table also rejects a few valid parses
    (``def f(a, a)``), so any failure is confirmed, and placed, by ``ast.parse``."""
    try:
        for chunk in _chunks(source) if len(source) > _BIG_FILE else (source,):
            symtable.symtable(chunk, filename, "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        ast.parse(source, filename=filename)


_LINE_END = re.compile(r"\r\n|\r|\n")


def null_byte_problem(source: str) -> tuple[int, int, str] | None:
    """Python refuses source holding a NUL character anywhere, even in a comment
    (which LibCST accepts): (line, column, message) of the first one."""
    at = source.find("\x00")
    if at < 0:
        return None
    ends = [m.end() for m in _LINE_END.finditer(source, 0, at)]
    return len(ends) + 1, at - (ends[-1] if ends else 0) + 1, "source code cannot contain null bytes"


def syntax_problem(source: str) -> tuple[int, int, str] | None:
    """(line, column, message) if ``source`` is not valid Python, else None."""
    problem = null_byte_problem(source)
    if problem is not None:
        return problem
    try:
        check_syntax(source)
    except SyntaxError as exc:
        return exc.lineno or 1, exc.offset or 1, exc.msg
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return 1, 1, str(exc) or type(exc).__name__
    return None


def _decoded(data: bytes) -> str:
    from sessionlint.sources import decode_source

    return decode_source(data)


def _null_byte_problem_of(text: str | bytes) -> tuple[int, int, str] | None:
    from sessionlint.sources import SourceError

    try:
        return null_byte_problem(text if isinstance(text, str) else _decoded(text))
    except SourceError:
        return None  # undecodable: reported as SES002


_METHOD_WORDS = re.compile(
    rb"\b(?:" + b"|".join(sorted(w.encode() for w in (*CLOSE_METHODS, *ROLLBACK_METHODS, "remove"))) + rb")\b"
)


def _method_lines(text: str | bytes) -> list[int]:
    """Sorted line numbers on which a word :func:`summarize_function` looks for occurs."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _match_lines(_METHOD_WORDS, data)


def _match_lines(regex: re.Pattern[bytes], data: bytes) -> list[int]:
    """Sorted line numbers (Python's line ends) on which ``regex`` matches in ``data``."""
    data = _unix_newlines(data)
    lines: list[int] = []
    line, pos = 1, 0
    for match in regex.finditer(data):
        line += data.count(b"\n", pos, match.start())
        pos = match.start()
        if not lines or lines[-1] != line:
            lines.append(line)
    return lines


def _unix_newlines(data: bytes) -> bytes:
    """``data`` with every line break a ``\n`` (lines are counted by ``\n``)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a function body in order, into compound statements but not
    into nested functions or classes."""
    for statement in body:
        yield statement
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for block in ("body", "orelse", "finalbody"):
            inner = getattr(statement, block, None)
            if isinstance(inner, list):
                yield from _statements(inner)
        for handler in getattr(statement, "handlers", ()):
            yield from _statements(handler.body)


def _plain_summary(node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionSummary:
    args = node.args
    return FunctionSummary(
        tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)),
        frozenset(),
        frozenset(),
        never_returns=never_returns(node),
    )


# Calls that never return normally, by qualified name (``exit``/``quit`` are builtins).
NO_RETURN_CALLS = frozenset(
    {
        "flask.abort", "werkzeug.exceptions.abort", "quart.abort", "flask_restful.abort",
        "flask_restx.abort", "flask_smorest.abort", "sys.exit", "os._exit", "os.abort",
        "pytest.fail", "pytest.skip", "pytest.exit", "pytest.xfail", "exit", "quit",
    }
)
_NO_RETURN_TYPES = frozenset({"NoReturn", "Never"})


# Decorator attributes that register a request handler: Flask/Quart ``route``,
# FastAPI/Starlette/Litestar/Sanic ``get``/``post``/..., aiohttp ``RouteTableDef``.
ROUTE_DECORATORS = frozenset(
    {"route", "get", "post", "put", "patch", "delete", "head", "options", "api_route", "websocket", "view"}
)
# HTTP method names of class-based views (``MethodView``, ``Resource``, ``HTTPEndpoint``,
# Tornado's ``RequestHandler``, Pyramid's view classes).
HTTP_METHODS = frozenset({"get", "post", "put", "patch", "delete", "head", "options", "dispatch_request"})
VIEW_BASES = ("View", "MethodView", "Resource", "Handler", "RequestHandler", "Endpoint", "HTTPEndpoint", "ViewSet")


def _functions_with_owner(tree: ast.Module) -> Iterator[tuple[ast.ClassDef | None, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function of a module, with the class it is a method of."""
    stack: list[tuple[ast.ClassDef | None, ast.AST]] = [(None, tree)]
    while stack:
        owner, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                stack.append((child, child))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield owner, child
                stack.append((None, child))


def _instantiates(fn: ast.FunctionDef | ast.AsyncFunctionDef, names: set[str]) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in names:
                return True
    return False


def _handles_requests(owner: ast.ClassDef | None, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``entry.is_request_handler`` on the ``ast``: a route-decorated function, or an
    HTTP method of a class-based view."""
    for decorator in fn.decorator_list:
        if isinstance(decorator, ast.Call):
            decorator = decorator.func
        if isinstance(decorator, ast.Attribute) and decorator.attr in ROUTE_DECORATORS:
            return True
    if owner is None or fn.name not in HTTP_METHODS:
        return False
    return any(
        (base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else "").endswith(VIEW_BASES)
        for base in owner.bases
    )


def _hands_over(value: ast.expr, name: str) -> bool:
    """A call taking the local ``name`` as its first argument (``s = prepare(s)``)."""
    if isinstance(value, ast.Await):
        value = value.value
    if not isinstance(value, ast.Call):
        return False
    first = value.args[0] if value.args else (value.keywords[0].value if value.keywords else None)
    return isinstance(first, ast.Name) and first.id == name


def never_returns(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Annotated ``-> NoReturn``/``-> Never``, or every path through the body ends in
    ``raise`` (or in a call of :data:`NO_RETURN_CALLS` spelled plainly): a call of it
    ends the caller's path as a ``raise`` would."""
    returns = node.returns
    if isinstance(returns, ast.Constant) and isinstance(returns.value, str):
        returns_name: str | None = returns.value.rsplit(".", 1)[-1]
    elif isinstance(returns, ast.Name):
        returns_name = returns.id
    elif isinstance(returns, ast.Attribute):
        returns_name = returns.attr
    else:
        returns_name = None
    if returns_name in _NO_RETURN_TYPES:
        return True
    return _always_raises(node.body)


def _always_raises(body: list[ast.stmt]) -> bool:
    for statement in body:
        if isinstance(statement, ast.Raise):
            # ``raise NotImplementedError``: an abstract method, which overrides replace.
            exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
            return not (isinstance(exc, ast.Name) and exc.id == "NotImplementedError")
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            func = statement.value.func
            spelled = (
                func.id if isinstance(func, ast.Name)
                else f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else ""
            )
            if spelled in NO_RETURN_CALLS or spelled in ("abort", "exit"):
                return True
        if isinstance(statement, ast.If) and statement.orelse and _always_raises(statement.body) and _always_raises(statement.orelse):
            return True
        if isinstance(statement, (ast.With, ast.AsyncWith)) and _always_raises(statement.body):
            return True
        if isinstance(statement, ast.Try):
            if statement.finalbody and _always_raises(statement.finalbody):
                return True
            settled = _always_raises(statement.body) or bool(statement.orelse) and _always_raises(statement.orelse)
            if settled and all(_always_raises(h.body) for h in statement.handlers):
                return True
        if isinstance(statement, (ast.Return, ast.Break, ast.Continue)):
            return False
    return False


def summarize_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> FunctionSummary:
    """Parameters on which the body calls ``close()``/``rollback()`` anywhere."""
    args = node.args
    params = tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
    closes: set[str] = set()
    rollbacks: set[str] = set()
    removes: set[str] = set()
    rolls_back_any = False
    names = set(params)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in ROLLBACK_METHODS:
            rolls_back_any = True
        if (
            isinstance(sub, ast.Attribute)
            and sub.attr == "remove"
            and isinstance(sub.value, ast.Name)
            and sub.value.id in names
        ):
            removes.add(sub.value.id)
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
    return FunctionSummary(
        params, frozenset(closes), frozenset(rollbacks), frozenset(removes), rolls_back_any, never_returns(node)
    )


# Import statements (``from a import (b,\n c)`` included): their commas are not calls.
_IMPORTS = re.compile(rb"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]*\([^)]*\)|^[ \t]*(?:from|import)\b[^\n]*", re.M)


def _word_lines(data: bytes, words: frozenset[str]) -> list[int]:
    """Sorted line numbers on which one of ``words`` occurs as a word."""
    regex = re.compile(rb"\b(?:" + b"|".join(re.escape(w.encode()) for w in sorted(words)) + rb")\b")
    return _match_lines(regex, data)


class _UsesScanner:
    """Scan of statements (functions included) for ``X.remove`` references and for
    qualified names passed as call arguments, with function-local imports and simple
    aliases (``registry = db.db_session``) resolved; parameters shadow globals."""

    def __init__(self, summarizer: _Summarizer, uses: Uses, hooks: frozenset[str] = frozenset()) -> None:
        self.summarizer = summarizer
        self.facts = summarizer.facts
        self.uses = uses
        self.hooks = hooks  # names of functions the module registers as teardown hooks

    def scan(self, body: list[ast.stmt]) -> None:
        self._walk(body, {}, False)

    def _qualify(self, expr: ast.expr, local: dict[str, str | None]) -> str | None:
        if isinstance(expr, ast.Name):
            if expr.id in local:
                return local[expr.id]
            return self.summarizer.qualify(expr)
        if isinstance(expr, ast.Attribute):
            base = self._qualify(expr.value, local)
            return f"{base}.{expr.attr}" if base else None
        return None

    def _locals(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, outer: dict[str, str | None]) -> dict[str, str | None]:
        local = dict(outer)
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                local[arg.arg] = None
        if isinstance(node, ast.Lambda):
            return local
        index, facts = self.summarizer.index, self.facts
        for sub in _own_nodes(node.body):
            if isinstance(sub, ast.Import):
                for alias in sub.names:
                    full = index.resolve_absolute(alias.name, facts.path) or external_module(alias.name)
                    if alias.asname:
                        local[alias.asname] = full
                    else:
                        top = alias.name.split(".")[0]
                        local[top] = index.resolve_absolute(top, facts.path) or external_module(top)
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    module = index.resolve_relative(facts.path, sub.level, sub.module)
                else:
                    module = index.resolve_absolute(sub.module or "", facts.path) or external_module(sub.module or "")
                for alias in sub.names:
                    if alias.name != "*":
                        local[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name
        for sub in _own_nodes(node.body):
            if isinstance(sub, ast.Assign):
                for target in sub.targets:
                    if isinstance(target, ast.Name):
                        value = sub.value
                        local[target.id] = (
                            self._qualify(value, local) if isinstance(value, (ast.Name, ast.Attribute)) else None
                        )
        return local

    def _walk(self, body: list[ast.stmt] | list[ast.expr], local: dict[str, str | None], in_hook: bool) -> None:
        stack: list[ast.AST] = list(body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for decorator in getattr(node, "decorator_list", []):
                    stack.append(decorator)
                inner = self._locals(node, local)
                if isinstance(node, ast.Lambda):
                    self._walk([node.body], inner, in_hook)
                else:
                    self._walk(node.body, inner, in_hook or _is_hook(node, self.hooks))
                continue
            if isinstance(node, ast.Attribute) and node.attr == "remove":
                qname = self._qualify(node.value, local)
                if qname:
                    self.uses.removes.add(qname)
                    if in_hook:
                        self.uses.hook_removes.add(qname)
            elif isinstance(node, ast.Call):
                callee = self._qualify(node.func, local)
                if _registers_hook(node):
                    # ``atexit.register(db.remove)``, ``self.addCleanup(Session.remove)``,
                    # ``app.teardown_appcontext(lambda exc: Session.remove())``
                    for arg in node.args:
                        if isinstance(arg, ast.Attribute) and arg.attr == "remove":
                            qname = self._qualify(arg.value, local)
                            if qname:
                                self.uses.hook_removes.add(qname)
                        elif isinstance(arg, ast.Lambda):
                            self._walk([arg.body], self._locals(arg, local), True)
                for position, arg in enumerate(node.args):
                    if isinstance(arg, (ast.Name, ast.Attribute)):
                        qname = self._qualify(arg, local)
                        if qname:
                            self.uses.passed.append((qname, callee, position))
                for keyword in node.keywords:
                    if keyword.arg is not None and isinstance(keyword.value, (ast.Name, ast.Attribute)):
                        qname = self._qualify(keyword.value, local)
                        if qname:
                            self.uses.passed.append((qname, callee, keyword.arg))
            stack.extend(ast.iter_child_nodes(node))


# Registrations of a callback that ends the request or test: a function that makes a
# session, registers one and returns the session lends it (warehouse's
# ``_create_session`` closes it in ``request.add_finished_callback(cleanup)``).
_CLEANUP_REGISTRARS = frozenset({"add_finished_callback", "add_response_callback", "addfinalizer", "call_on_close", "addCleanup"})


def _registers_cleanup(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for statement in _statements(node.body):
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            func = statement.value.func
            if isinstance(func, ast.Attribute) and func.attr in _CLEANUP_REGISTRARS:
                return True
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # ``@request.add_finished_callback`` on a nested ``def cleanup(request):``
            if any(isinstance(d, ast.Attribute) and d.attr in _CLEANUP_REGISTRARS for d in statement.decorator_list):
                return True
    return False


def _last_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Call):
        expr = expr.func
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    return None


def _registers_hook(call: ast.Call) -> bool:
    """``app.teardown_request(f)``, ``atexit.register(f)``, ``task_postrun.connect(f)``..."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr == "connect":
        return _last_name(func.value) in HOOK_SIGNALS
    if func.attr == "register":
        return _last_name(func.value) == "atexit"
    return func.attr in HOOK_REGISTRARS


def _registered_hooks(tree: ast.Module) -> frozenset[str]:
    """Names of the functions and methods a module registers as teardown hooks by a
    call (``app.after_request(ckan_after_request)``, ``atexit.register(self.close)``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _registers_hook(node):
            for arg in node.args:
                if isinstance(arg, (ast.Name, ast.Attribute)):
                    name = _last_name(arg)
                    if name is not None:
                        names.add(name)
    return frozenset(names)


def _is_hook(node: ast.FunctionDef | ast.AsyncFunctionDef, registered: frozenset[str]) -> bool:
    """A function that runs at the end of each request, task, test or process."""
    if node.name in registered or node.name in HOOK_METHODS:
        return True
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute):
            if target.attr == "connect":
                if _last_name(target.value) in HOOK_SIGNALS:
                    return True
            elif target.attr == "register":
                if _last_name(target.value) == "atexit":
                    return True
            elif target.attr in HOOK_REGISTRARS:
                return True
        if _last_name(target) == "fixture" and any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(node.body)):
            return True  # a pytest fixture: what follows its yield is the teardown
    return False


def _own_nodes(body: list[ast.stmt]) -> Iterable[ast.AST]:
    """Nodes of a function body, not descending into nested functions and lambdas."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                stack.append(child)


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
