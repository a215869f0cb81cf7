"""Stage 1: which files, and which top-level blocks of them, can hold a finding.

Every static finding starts from a *candidate site*: a session, connection, engine,
factory or registry, reached through a name that resolves to SQLAlchemy's API or to a
project symbol of that kind. So a top-level def or class that mentions none of a
module's *interesting names* cannot produce a finding, and a file with no interesting
name cannot either. Stage 2 (LibCST and the rules) then sees only the candidate
blocks; the others are replaced by empty lines, so every line and column stays where
it was.

Interesting names are found cheaply: a byte search for ``sqlalchemy`` and for the
names the project index knows to be interesting (a fixpoint over re-exports), then
the ``ast`` facts of the files that matched. The proof that nothing is lost is a test
that runs every fixture and a generated corpus with and without this stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sessionlint.analysis.kinds import Kind
from sessionlint.analysis.project import ModuleFacts, ProjectIndex
from sessionlint.analysis.evidence import FACTORY_WORDS, LENT_SESSION, spells_session_use
from sessionlint.analysis.sqla import API_NAMES, external_module, names_sqla, sqla_kind
from sessionlint.sources import PHYSICAL_LINES

# Module paths through which SQLAlchemy's API is reached (``import sqlalchemy as sa``,
# ``from sqlalchemy import orm``, ``from sqlalchemy.ext import asyncio``).
_SQLA_MODULES = frozenset(
    {"sqlalchemy", "orm", "engine", "ext", "asyncio", "pool", "session", "scoping", "create", "base", "url"}
)
# Kinds that make a name interesting; plain project functions are not (their calls
# do not create sessions unless configured as session factories).
_INTERESTING_TAGS = frozenset(
    {"session_class", "factory", "registry", "session", "engine", "engine_type", "connection", "connection_type", "api", "extension"}
)


@dataclass(frozen=True)
class Plan:
    """What stage 2 must look at in one file."""

    relevant: bool
    blank: tuple[tuple[int, int], ...] = ()  # 1-based inclusive line ranges to blank out
    apis: frozenset[str] = frozenset()  # SQLAlchemy API names the module's names resolve to

    def reduce(self, source: str) -> str:
        """``source`` with the blanked blocks replaced by empty lines."""
        if not self.blank:
            return source
        lines = PHYSICAL_LINES.findall(source)
        for first, last in self.blank:
            for number in range(first - 1, min(last, len(lines))):
                line = lines[number]
                ending = "\r\n" if line.endswith("\r\n") else line[-1] if line.endswith(("\n", "\r")) else ""
                lines[number] = ending
        return "".join(lines)


class Relevance:
    """Project-wide interesting names, computed once per index, and per-file plans."""

    def __init__(self, index: ProjectIndex) -> None:
        self.index = index
        self._names: frozenset[str] | None = None
        self._name_regex: _WordSearch | None = None
        self._modules: set[str] = set()  # project modules that define interesting names
        self._exported: set[str] = set()  # interesting names found so far (fixpoint)
        # Each file's contribution to the project-wide names (kept by the result cache).
        self.exports: dict[str, frozenset[str]] = {}

    @property
    def computed(self) -> bool:
        """Whether the project-wide names are known (computed or seeded)."""
        return self._names is not None

    @property
    def modules(self) -> frozenset[str]:
        return frozenset(self._modules)

    def seed(self, names: frozenset[str], modules: frozenset[str], exports: dict[str, frozenset[str]]) -> None:
        """Reuse project-wide names computed by an earlier run (see :meth:`added_names`)."""
        self._modules = set(modules)
        self._names = names
        self._exported = set(names)
        self._name_regex = _regex(names, attribute_too=True)
        self.exports = dict(exports)

    def added_names(self, names: frozenset[str], changed: dict[str, bytes]) -> frozenset[str]:
        """Names that files in ``changed`` (path -> new contents) now export and that
        the earlier run's ``names`` lack; records their new contributions. Names that
        stopped being exported need nothing: a superset of the true names only makes
        stage 1 keep a little more code, it never changes a finding."""
        regex = _regex(names, attribute_too=True)
        self._exported = set(names)
        added: set[str] = set()
        for path, data in changed.items():
            if not (path in self.exports or names_sqla(data) or (regex is not None and regex.search(data))):
                continue
            facts = self.index.facts_for_path(path)
            now = frozenset(self.module_tokens(facts, defined_only=True))
            if now:
                self.exports[path] = now
                if facts.name not in self._modules:
                    # A newly interesting module is reached through its own name too.
                    added.add(facts.name.rsplit(".", 1)[-1])
            else:
                self.exports.pop(path, None)
            added |= now - names
        return frozenset(added)

    # -- project-wide ----------------------------------------------------------

    def _interesting(self, qname: str | None) -> bool:
        if not qname:
            return False
        if qname.startswith("sqlalchemy"):
            return sqla_kind(qname) is not None or qname.rsplit(".", 1)[-1] in _SQLA_MODULES
        if self.index.is_configured_factory(qname):
            return True
        kind = self.index.kind_of(qname)
        if kind is not None and (kind.tag in _INTERESTING_TAGS or self._returns_interesting(kind)):
            return True
        return qname in self._modules or (kind is None and self._class_hands_out(qname))

    def _class_hands_out(self, qname: str, depth: int = 0) -> bool:
        """A project class with a classmethod or staticmethod returning something
        interesting (``SessionManager.session(url)``), which callers reach through the
        class's name. Instance methods are reached through instances, which name
        nothing interesting, so they are not counted."""
        module, _, name = qname.rpartition(".")
        facts = self.index.facts_for_module(module) if module else None
        if facts is None or depth > 5:
            return False
        if name in facts.imports:
            return self._class_hands_out(facts.imports[name], depth + 1)
        return any(
            summary.returns is not None
            and summary.params[:1] != ("self",)
            and self._returns_interesting(Kind("function", function=summary))
            for summary in facts.methods.get(name, {}).values()
        )

    def _returns_interesting(self, kind: Kind) -> bool:
        """A project function returning an engine, session, factory... (``get_engine()``)."""
        if kind.tag != "function" or kind.function is None or kind.function.returns is None:
            return False
        made = self.index.result_kind(kind, {}, "", None)
        return made is not None and made.tag in _INTERESTING_TAGS

    def project_names(self, prefetch: Callable[[list[str]], None] | None = None) -> frozenset[str]:
        """Names through which other modules can reach something interesting: what
        modules define or re-export (a fixpoint over re-exports). The modules that
        define them are kept apart (:attr:`modules`), for ``import app.db as d``.
        ``prefetch``, if given, is asked to build the facts of each round's files
        (in parallel, say) before they are read here."""
        if self._names is not None:
            return self._names
        names: set[str] = {f.rsplit(".", 1)[-1] for f in self.index.session_factories}
        self._exported = names
        scanned: set[str] = set()
        pending = [p for p in self.index.files() if names_sqla(self.index.file_bytes(p))]
        while pending:
            if prefetch is not None:
                prefetch(pending)
            for path in pending:
                scanned.add(path)
                exported = self.module_tokens(self.index.facts_for_path(path), defined_only=True)
                if exported:
                    self.exports[path] = frozenset(exported)
                    names |= exported
                    self._exported = names
                    self._add_module(self.index.facts_for_path(path).name)
            regex = _regex(names, attribute_too=True)
            pending = [
                p for p in self.index.files()
                if p not in scanned and regex is not None and regex.search(self.index.file_bytes(p))
            ]
        # ``app.db.SessionLocal`` still spells ``SessionLocal``: the symbol names are
        # enough for the byte search; module names would match nearly every file.
        self._names = frozenset(names)
        self._name_regex = _regex(self._names, attribute_too=True)
        return self._names

    def _add_module(self, name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            self._modules.add(".".join(parts[:i]))

    def module_tokens(self, facts: ModuleFacts, defined_only: bool = False) -> set[str]:
        """The module-level names of ``facts`` that denote something interesting."""
        tokens: set[str] = set()
        module = facts.name
        returning = (name for name, summary in facts.functions.items() if summary.returns is not None)
        for name in (*facts.values, *facts.classes, *facts.annotations, *returning):
            if self._interesting(f"{module}.{name}"):
                tokens.add(name)
        if not defined_only:
            names = self._names or frozenset()
            for name, qname in facts.imports.items():
                if self._worth_resolving(qname, names) and self._interesting(qname):
                    tokens.add(name)
            for star in facts.star_imports:
                # ``from db import *``: the project names that module gives meaning to.
                candidates = API_NAMES if star.startswith("sqlalchemy") else names
                for name in candidates:
                    if name not in tokens and self._interesting(f"{star}.{name}"):
                        tokens.add(name)
        else:
            known = self._exported
            for name, qname in facts.imports.items():
                # A re-export of something interesting: only names already known to be
                # interesting somewhere, or SQLAlchemy's own, can be.
                if not (qname.startswith("sqlalchemy") or qname.rsplit(".", 1)[-1] in known):
                    continue
                kind = self.index.kind_of(qname)
                if kind is not None and (kind.tag in _INTERESTING_TAGS or self._returns_interesting(kind)):
                    tokens.add(name)
        return tokens

    # -- per file ----------------------------------------------------------------

    def plan(self, path: str, data: bytes) -> Plan:
        """Which parts of the file at ``path`` (with contents ``data``) stage 2 needs."""
        self.project_names()
        # Factories known only by their names (``product.session_factory()``), and
        # sessions known only by their use (``self.session.commit()``).
        named: set[str] = set()
        if b"ession" in data:
            named = {word.decode() for word in FACTORY_WORDS.findall(data)}
            if _needs_session_use(data) or LENT_SESSION.search(data) is not None:
                named.add("session")
        ordinary = names_sqla(data) or (self._name_regex is not None and self._name_regex.search(data))
        if not named and not ordinary:
            return Plan(False)
        facts = self.index.facts_for_path(path)
        if not facts.parsed:
            return Plan(True)  # let stage 2 report the syntax error
        if named:
            named = _unresolved_names(named, facts, data)
            if not named and not ordinary:
                return Plan(False)
        tokens = self.module_tokens(facts)
        local = self._local_imports(data, facts) if _LOCAL_IMPORT_HINT.search(data) else {}
        tokens.update(local)
        if named and not tokens:
            tokens = named
        if not tokens:
            return Plan(False)
        apis = frozenset(self._apis(facts, tokens, local))
        # ``import sqlalchemy as sa``: a block needs ``sa`` only where it reaches the API
        # (``sa.create_engine``, ``sa.orm.Session``), not for ``sa.Column`` or ``sa.text``.
        modules = {t for t in tokens if _sqla_module(facts.imports.get(t) or local.get(t))}
        regex = _regex(tokens - modules)
        through = _through_modules(modules)
        lines = data.splitlines(keepends=True)
        blank = []
        for first, last in facts.blocks:
            block = b"".join(lines[first - 1 : last])
            if regex is not None and regex.search(block):
                continue
            if through is not None and through.search(block):
                continue
            if named and _names_one(block, named):
                continue
            blank.append((first, last))
        return Plan(True, tuple(blank), apis)

    def _worth_resolving(self, qname: str, names: frozenset[str]) -> bool:
        """Whether an import of ``qname`` can be interesting: resolving every import
        would parse half the project."""
        last = qname.rsplit(".", 1)[-1]
        return qname.startswith("sqlalchemy") or last in names or qname in self._modules or self.index.is_configured_factory(qname)

    def _local_imports(self, data: bytes, facts: ModuleFacts) -> dict[str, str]:
        """Interesting names that function-local imports bind (``def f(): from
        sqlalchemy import create_engine``), alias -> qualified name. Read from the
        bytes: single-line imports only, which is how function-local ones are written."""
        names = self._names or frozenset()
        found: dict[str, str] = {}
        for match in _LOCAL_IMPORT.finditer(data):
            if match["plain"] is not None:
                module = match["plain"].decode()
                alias = match["plain_as"]
                pairs = [(module, alias.decode()) if alias else (module.partition(".")[0],) * 2]
            else:
                module = match["module"].decode()
                dots = len(module) - len(module.lstrip("."))
                if dots:  # ``from .database.core import engine``
                    module = self.index.resolve_relative(facts.path, dots, module[dots:] or None)
                else:
                    module = self.index.resolve_absolute(module, facts.path) or module
                pairs = []
                for item in match["froms"].decode().strip("() \t\\").split(","):
                    parts = item.split()
                    if len(parts) == 1 or (len(parts) == 3 and parts[1] == "as"):
                        pairs.append((f"{module}.{parts[0]}", parts[-1]))
            for qname, alias in pairs:
                qname = external_module(qname)
                if alias not in facts.imports and self._worth_resolving(qname, names) and self._interesting(qname):
                    found[alias] = qname
        return found

    def _apis(self, facts: ModuleFacts, tokens: set[str], local: dict[str, str]) -> set[str]:
        apis: set[str] = set()
        for name in tokens:
            qname = facts.imports.get(name) or local.get(name) or f"{facts.name}.{name}"
            kind = sqla_kind(qname) if qname.startswith("sqlalchemy") else self.index.kind_of(qname)
            if kind is not None and kind.tag == "api":
                apis.add(kind.api)
        return apis


# Sessions typed by use matter to the rules that look at ``except`` clauses (SES201) and
# thread hand-offs (SES401): only blocks spelling one of these need them.
_USE_CONSUMERS = re.compile(rb"\bexcept\b|Thread|submit|run_in_executor|to_thread")


def _unresolved_names(named: set[str], facts: ModuleFacts, data: bytes) -> set[str]:
    """The names of ``named`` that only their spelling can explain: not imported or
    defined by the module (those resolve like any other name), and not annotated
    parameters (``sessionmaker: AsyncSessionMaker``: the annotation says what it is)."""
    named = named - {*facts.imports, *facts.values, *facts.classes, *facts.functions}
    return {word for word in named if word == "session" or not re.search(rb"\b" + re.escape(word.encode()) + rb"\s*:[^=]", data)}


def _names_one(block: bytes, named: set[str]) -> bool:
    """Whether a block spells one of the factory names or sessions-by-use of ``named``."""
    if "session" in named and (_needs_session_use(block) or LENT_SESSION.search(block) is not None):
        return True
    return any(word.encode() in block for word in named if word != "session")


# Function-local imports: an indented single-line ``from X import a, b as c`` or
# ``import X``; the hint is the cheap test that decides whether to look.
_LOCAL_IMPORT_HINT = re.compile(rb"\n[ \t]+(?:from|import)[ \t]")
_LOCAL_IMPORT = re.compile(
    rb"^[ \t]+(?:from[ \t]+(?P<module>[\w.]+)[ \t]+import[ \t]+(?P<froms>[^\n#;]+)|import[ \t]+(?P<plain>[\w.]+)(?:[ \t]+as[ \t]+(?P<plain_as>\w+))?)",
    re.MULTILINE,
)


def _sqla_module(qname: str | None) -> bool:
    """``sqlalchemy``, ``sqlalchemy.orm``...: a module of SQLAlchemy, not one of its API names."""
    return qname is not None and qname.startswith("sqlalchemy") and sqla_kind(qname) is None


_MODULE_ATTRIBUTES = b"|".join(sorted(n.encode() for n in API_NAMES | _SQLA_MODULES))


def _through_modules(modules: set[str]) -> re.Pattern[bytes] | None:
    """``sa.<API name or submodule>`` for module aliases ``modules``."""
    if not modules:
        return None
    aliases = b"|".join(re.escape(m.encode()) for m in sorted(modules))
    return re.compile(rb"(?<![\w.])(?:" + aliases + rb")\s*\.\s*(?:" + _MODULE_ATTRIBUTES + rb")\b")


def _needs_session_use(data: bytes) -> bool:
    return _USE_CONSUMERS.search(data) is not None and spells_session_use(data)


class _WordSearch:
    """Whole-word search for a few names: a plain substring test first (fast), the
    word-boundary regular expression only on a hit."""

    def __init__(self, names: set[str] | frozenset[str], attribute_too: bool) -> None:
        self.words = [n.encode() for n in sorted(names, key=len, reverse=True)]
        prefix = rb"\b" if attribute_too else rb"(?<![\w.])"
        self.regex = re.compile(prefix + rb"(?:" + b"|".join(re.escape(w) for w in self.words) + rb")\b")

    def search(self, data: bytes) -> bool:
        return any(w in data for w in self.words) and self.regex.search(data) is not None


def _regex(names: set[str] | frozenset[str], attribute_too: bool = False) -> _WordSearch | None:
    """Whole-word search for ``names``; unless ``attribute_too``, not after a dot
    (``self.engine`` is not the module's ``engine``)."""
    if not names:
        return None
    return _WordSearch(names, attribute_too)
