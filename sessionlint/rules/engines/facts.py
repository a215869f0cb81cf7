"""Facts about ``create_engine``/``create_async_engine`` calls.

For each call: where it runs (import time or inside a function), the dialect of its
URL when the URL is visible in the code (a string literal, an f-string whose scheme
is literal, ``URL.create(drivername=...)``, ``make_url(...)``, or a name assigned
exactly one of those), its pool keywords, and, inside a function, the *fate* of the
engine it builds: returned, stored, cached by a decorator, disposed, or abandoned
when the function returns. Facts only; SES501-SES503 decide what to report.
"""

from __future__ import annotations

import functools
import os
import re

from collections.abc import Iterator
from dataclasses import dataclass, field

import libcst as cst

from sessionlint.analysis.calls import (
    CallIndex,
    call_index,
    has_star,
    int_value,
    is_read,
    keyword_args,
    module_assignments,
    per_module,
    positional_args,
)
from sessionlint.analysis.scope import Resolver, Scope, ScopeNode, dotted, strip_await
from sessionlint.analysis.walk import SCOPE_NODES, children, walk, walk_scope

ENGINE_APIS = frozenset({"create_engine", "create_async_engine"})
MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})

# Decorators that make a function build its value once (per arguments / instance).
CACHE_DECORATORS = frozenset(
    {
        "functools.cache",
        "functools.lru_cache",
        "functools.cached_property",
        "cachetools.cached",
        "cachetools.func.lru_cache",
        "cachetools.func.ttl_cache",
        "async_lru.alru_cache",
    }
)

# Fates of an engine built inside a function, most permissive first.
ESCAPED, DISPOSED, ABANDONED = "escaped", "disposed", "abandoned"
# Built and only asked what it is (``engine.dialect`` to compile DDL): it never checks
# out a connection, so its pool stays empty.
IDLE = "idle"
_METADATA_ATTRS = frozenset({"dialect", "url", "name", "driver"})

# Calls that use an engine passed to them without keeping it (so the engine does not
# outlive the function through them): pandas I/O, schema DDL, reflection, logging.
_CONSUMER_FUNCS = frozenset(
    {
        "pandas.read_sql", "pandas.read_sql_query", "pandas.read_sql_table",
        "sqlalchemy.inspect", "print", "repr", "str",
    }
)
_CONSUMER_METHODS = frozenset(
    {
        "create_all", "drop_all", "reflect", "to_sql", "read_sql", "read_sql_query",
        "read_sql_table", "debug", "info", "warning", "error", "exception", "critical",
    }
)
# SQLAlchemy constructors whose result keeps the engine: a session or a factory bound
# to it. Their result is followed like the engine itself.
_HOLDER_APIS = frozenset({"sessionmaker", "async_sessionmaker", "scoped_session", "async_scoped_session"})
# Parents through which a value flows unchanged into the enclosing expression.
_TRANSPARENT = (
    cst.Element, cst.DictElement, cst.StarredElement, cst.StarredDictElement, cst.Tuple,
    cst.List, cst.Set, cst.Dict, cst.IfExp, cst.BooleanOperation, cst.Await,
)
# Parents that only read a value (a test, a comparison, an f-string).
_READS = (
    cst.If, cst.While, cst.Comparison, cst.ComparisonTarget, cst.UnaryOperation, cst.Assert,
    cst.FormattedStringExpression, cst.Expr, cst.Subscript, cst.SubscriptElement, cst.Index,
)


@dataclass
class EngineCall:
    call: cst.Call
    api: str  # "create_engine" | "create_async_engine"
    scope: ScopeNode
    at_import: bool  # runs at module level or in a class body
    url: cst.BaseExpression | None
    dialect: str | None  # "mysql", "postgresql", ... when visible; None when unknown
    keywords: dict[str, cst.BaseExpression]
    # The keywords whose value is an integer constant: a literal (``-1``, ``8 * 3600``)
    # or a name of this file assigned exactly one such value (``MAX_OVERFLOW = -1``).
    ints: dict[str, int]
    star_kwargs: bool  # ``**options``: any keyword may be set
    poolclass: str | None  # None: not given; SQLAlchemy pool class name; "?" unresolved
    var: str  # the first name the engine is bound to ("" if none)

    @property
    def is_mysql(self) -> bool:
        return self.dialect in MYSQL_DIALECTS


@dataclass
class EngineFacts:
    calls: list[EngineCall] = field(default_factory=list)
    _fates: dict[int, str] = field(default_factory=dict)


def engine_calls(resolver: Resolver) -> list[EngineCall]:
    """Every ``create_engine``/``create_async_engine`` call of the resolver's module."""
    return _facts(resolver).calls


def _facts(resolver: Resolver) -> EngineFacts:
    return per_module(resolver.module, "engines", lambda: EngineFacts(list(_collect(resolver))))


def _collect(resolver: Resolver) -> Iterator[EngineCall]:
    index = call_index(resolver.module)
    module_values = module_assignments(resolver.module)
    for scoped in index.calls:
        call = scoped.call
        scope = resolver.scope(scoped.scope)
        kind = resolver.kind(call.func, scope)
        if kind is None or kind.tag != "api" or kind.api not in ENGINE_APIS:
            continue
        keywords = keyword_args(call)
        positional = positional_args(call)
        url = keywords.get("url") or (positional[0].value if positional else None)
        poolclass: str | None = None
        if "poolclass" in keywords:
            pool_kind = resolver.kind(keywords["poolclass"], scope)
            poolclass = pool_kind.api if pool_kind is not None and pool_kind.tag == "api" else "?"
        yield EngineCall(
            call=call,
            api=kind.api,
            scope=scoped.scope,
            at_import=isinstance(scoped.scope, cst.Module) or scoped.in_class_body,
            url=url,
            dialect=url_dialect(url, resolver, scope, module_values) if url is not None else None,
            keywords=keywords,
            ints={
                name: value
                for name, expr in keywords.items()
                if (value := int_constant(expr, resolver, scope, module_values)) is not None
            },
            star_kwargs=has_star(call, "**"),
            poolclass=poolclass,
            var=_bound_name(index, call),
        )


def _bound_name(index: CallIndex, call: cst.Call) -> str:
    parent = index.parent_of(call)
    if isinstance(parent, (cst.Assign, cst.AnnAssign)):
        targets = [t.target for t in parent.targets] if isinstance(parent, cst.Assign) else [parent.target]
        for target in targets:
            if isinstance(target, cst.Name):
                return target.value
            if isinstance(target, cst.Attribute):
                return dotted(target) or ""
    return ""


# -- URLs ------------------------------------------------------------------------------


_ENV_LOOKUPS = frozenset({"os.getenv", "os.environ.get"})

# -- project evidence of the dialect ---------------------------------------------------
#
# When the URL is not in the code (a settings value, a parameter), the project's own
# files can still say which database it runs on: a MySQL URL in a config file, a MySQL
# driver among its dependencies. Only one-sided evidence counts: a project that also
# names PostgreSQL, Oracle or SQL Server (URLs or drivers) could be using either.

_CONFIG_FILE = re.compile(r"(?:\.(?:ini|cfg|toml|ya?ml|conf|env)$)|(?:^\.env)|(?:^docker-compose)|(?:^requirements.*\.(?:txt|in)$)|(?:^setup\.py$)|(?:^Pipfile$)", re.IGNORECASE)
_SKIP_DIRS = frozenset({"node_modules", "site-packages", "__pycache__", "venv", "env", "build", "dist"})
_MYSQL_URL = re.compile(rb"\b(?:mysql|mariadb)(?:\+\w+)?://", re.IGNORECASE)
_MYSQL_DRIVER = re.compile(rb"(?<![\w.-])(pymysql|mysqlclient|mysql-connector-python|aiomysql|asyncmy|mariadb)(?![\w.-]*://)(?=[\s\"',=<>~!;\[]|$)", re.IGNORECASE | re.MULTILINE)
_OTHER_DIALECT = re.compile(
    rb"\b(?:postgres(?:ql)?|oracle|mssql)(?:\+\w+)?://|(?<![\w.-])(?:psycopg2?(?:-binary)?|asyncpg|pg8000|cx[_-]oracle|oracledb|pyodbc|pymssql)(?![\w-])",
    re.IGNORECASE,
)
_MAX_EVIDENCE_FILES = 400


@functools.lru_cache(maxsize=8)
def mysql_evidence(root: str) -> str | None:
    """Where the project at ``root`` shows that it runs on MySQL/MariaDB (``"pymysql in
    requirements.txt"``), when nothing in its config and dependency files names another
    server dialect; None otherwise. Reads files up to three directories deep."""
    found: str | None = None
    seen = 0
    for directory, dirs, files in os.walk(root):
        depth = os.path.relpath(directory, root).count(os.sep) + (directory != root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS and depth < 3]
        for name in sorted(files):
            if not _CONFIG_FILE.search(name):
                continue
            seen += 1
            if seen > _MAX_EVIDENCE_FILES:
                return found
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read(1 << 20)
            except OSError:
                continue
            if _OTHER_DIALECT.search(data):
                return None
            if found is None:
                rel = os.path.relpath(path, root)
                url = _MYSQL_URL.search(data)
                driver = _MYSQL_DRIVER.search(data)
                if url is not None:
                    found = f"a MySQL URL in {rel}"
                elif driver is not None:
                    found = f"{driver.group(1).decode()} in {rel}"
    return found


# The module's own code may say it runs on MySQL: it imports MySQL's dialect types or
# passes MySQL-only table options. That holds even where the project names other
# databases too (one schema, several servers): the MySQL deployments need the recycle.
_MODULE_MYSQL = re.compile(
    rb"\bsqlalchemy\.dialects\.mysql\b|\bfrom\s+sqlalchemy\.dialects\s+import\s+(?:\(\s*)?(?:\w+\s*,\s*)*mysql\b"
    rb"|\b(mysql_(?:engine|charset|collate|default_charset|row_format))\s*="
)


def module_mysql_evidence(data: bytes) -> str | None:
    """What in a module's source (``data``) shows that it targets MySQL, or None."""
    found = _MODULE_MYSQL.search(data)
    if found is None:
        return None
    return f"this module passes `{found.group(1).decode()}=`" if found.group(1) else "this module imports MySQL's dialect types"


def dialect_of_scheme(text: str) -> str | None:
    """``mysql+pymysql://u@h/db`` -> ``mysql``; None when there is no scheme."""
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0].strip()
    if not scheme or not all(c.isalnum() or c in "+_-." for c in scheme):
        return None
    return scheme.split("+", 1)[0].lower()


def url_dialect(
    expr: cst.BaseExpression,
    resolver: Resolver,
    scope: Scope,
    module_values: dict[str, list[cst.BaseExpression]],
    depth: int = 0,
) -> str | None:
    """The dialect of a URL expression, when the code spells it out."""
    expr = strip_await(expr)
    if depth > 4:
        return None
    if isinstance(expr, (cst.SimpleString, cst.ConcatenatedString)):
        value = expr.evaluated_value
        return dialect_of_scheme(value) if isinstance(value, str) else None
    if isinstance(expr, cst.FormattedString):
        first = expr.parts[0] if expr.parts else None
        if isinstance(first, cst.FormattedStringText):
            return dialect_of_scheme(first.value)  # the scheme must be literal
        return None
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Modulo, cst.Add)):
        # ``"mysql://%s@%s/db" % (user, host)``, ``"mysql://" + host``: the literal prefix
        return url_dialect(expr.left, resolver, scope, module_values, depth + 1)
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "format":
        if isinstance(expr.func.value, (cst.SimpleString, cst.ConcatenatedString)):
            return url_dialect(expr.func.value, resolver, scope, module_values, depth + 1)  # "mysql://{}".format(...)
        return None
    if isinstance(expr, cst.Call) and resolver.qualify(expr.func, scope) in _ENV_LOOKUPS:
        # ``os.getenv("DATABASE_URL", "mysql://...")``: the default says which dialect
        positional = positional_args(expr)
        default = keyword_args(expr).get("default") or (positional[1].value if len(positional) > 1 else None)
        return url_dialect(default, resolver, scope, module_values, depth + 1) if default is not None else None
    if isinstance(expr, cst.Call):
        qname = resolver.qualify(expr.func, scope) or ""
        if not qname.startswith("sqlalchemy."):
            return None
        keywords = keyword_args(expr)
        positional = positional_args(expr)
        if qname.endswith(".URL.create"):
            driver = keywords.get("drivername") or (positional[0].value if positional else None)
            if isinstance(driver, (cst.SimpleString, cst.ConcatenatedString)):
                value = driver.evaluated_value
                return value.split("+", 1)[0].lower() if isinstance(value, str) and value else None
            return None
        if qname.endswith(".make_url"):
            inner = keywords.get("name_or_url") or (positional[0].value if positional else None)
            return url_dialect(inner, resolver, scope, module_values, depth + 1) if inner is not None else None
        return None
    if isinstance(expr, cst.Name):
        values = _values_of(expr.value, resolver, scope, module_values)
        if values is None or len(values) != 1:
            return None  # reassigned: which one reaches the call is not known
        owner = scope if scope.binds(expr.value) else resolver.scope(resolver.module)
        return url_dialect(values[0], resolver, owner, module_values, depth + 1)
    return None


def int_constant(
    expr: cst.BaseExpression,
    resolver: Resolver,
    scope: Scope,
    module_values: dict[str, list[cst.BaseExpression]],
    depth: int = 0,
) -> int | None:
    """An integer constant (see :func:`int_value`), also through a name of this file
    assigned exactly once (a reassigned name, or one from another module, is unknown)."""
    value = int_value(expr)
    if value is not None or depth > 4 or not isinstance(expr, cst.Name):
        return value
    values = _values_of(expr.value, resolver, scope, module_values)
    if values is None or len(values) != 1:
        return None
    owner = scope if scope.binds(expr.value) else resolver.scope(resolver.module)
    return int_constant(values[0], resolver, owner, module_values, depth + 1)


def _values_of(
    name: str, resolver: Resolver, scope: Scope, module_values: dict[str, list[cst.BaseExpression]]
) -> list[cst.BaseExpression] | None:
    """The values assigned to ``name`` where it is bound; None if bound otherwise."""
    current: Scope | None = scope
    while current is not None and not current.is_module:
        if current.binds(name):
            if name in current.params or name in current.imports:
                return None
            # Bound by something other than a plain assignment (for, with, ...): unknown.
            return current.assigned.get(name) or None
        current = current.parent
    return module_values.get(name)


# -- fate of an engine built in a function ------------------------------------------------


def engine_fate(resolver: Resolver, engine: EngineCall) -> str:
    """ESCAPED, DISPOSED or ABANDONED for an engine built inside a function."""
    facts = _facts(resolver)
    found = facts._fates.get(id(engine.call))
    if found is None:
        found = _FateFinder(resolver, engine).run()
        facts._fates[id(engine.call)] = found
    return found


class _FateFinder:
    """Follows the engine (and sessions/factories bound to it) through one function.

    Flow-insensitive and conservative: any way out of the function (returned,
    yielded, stored on an attribute, in a container, a global, captured by a nested
    function, handed to a call that may keep it) counts as escaping.
    """

    def __init__(self, resolver: Resolver, engine: EngineCall) -> None:
        self.resolver = resolver
        self.engine = engine
        self.index = call_index(resolver.module)
        assert isinstance(engine.scope, (cst.FunctionDef, cst.Lambda))
        self.fn = engine.scope
        self.scope = resolver.scope(engine.scope)
        self.tracked: dict[str, str] = {}  # local name -> "engine" | "holder"
        self.outcomes: set[str] = set()

    def run(self) -> str:
        if isinstance(self.fn, cst.Lambda):
            return ESCAPED  # a lambda returns what it builds
        pending = self._climb(self.engine.call, "engine")
        done: set[str] = set()
        while pending and ESCAPED not in self.outcomes:
            name = pending.pop()
            if name in done:
                continue
            done.add(name)
            for occurrence, nested in self._references(name):
                if nested:
                    self.outcomes.add(ESCAPED)  # captured by a closure
                    break
                pending.extend(self._climb(occurrence, self.tracked[name]))
        if ESCAPED in self.outcomes:
            return ESCAPED
        if DISPOSED in self.outcomes:
            return DISPOSED
        return IDLE if self._only_metadata() else ABANDONED

    def _only_metadata(self) -> bool:
        """Whether the engine is bound to a local name whose every read is
        ``name.dialect`` (``.url``, ``.name``, ``.driver``), never called."""
        parent = self.index.parent_of(self.engine.call)
        if not (
            isinstance(parent, cst.Assign)
            and len(parent.targets) == 1
            and isinstance(parent.targets[0].target, cst.Name)
        ):
            return False
        for occurrence, nested in self._references(parent.targets[0].target.value):
            read = self.index.parent_of(occurrence)
            if nested or not (isinstance(read, cst.Attribute) and read.attr.value in _METADATA_ATTRS):
                return False
            call = self.index.parent_of(read)
            if isinstance(call, cst.Call) and call.func is read:
                return False
        return ESCAPED not in self.outcomes

    def _track(self, target: cst.BaseExpression, role: str) -> list[str]:
        if isinstance(target, cst.Name) and self.scope.binds(target.value):
            name = target.value
            if self.tracked.get(name) != "engine":
                self.tracked[name] = role
            return [name]
        if (
            isinstance(target, cst.Attribute)
            and isinstance(target.value, cst.Name)
            and self.scope.binds(target.value.value)
            and target.value.value not in self.scope.params
        ):
            # ``metadata = copy(Base.metadata); metadata.bind = engine``: a local object
            # holds the engine, which lives on only if that object does.
            name = target.value.value
            self.tracked.setdefault(name, "holder")
            return [name]
        self.outcomes.add(ESCAPED)  # an attribute, a subscript, a global, a tuple
        return []

    def _climb(self, node: cst.CSTNode, role: str) -> list[str]:
        """Where the value of ``node`` goes; returns local names it is bound to."""
        current = node
        while True:
            parent = self.index.parent_of(current)
            if parent is None:
                self.outcomes.add(ESCAPED)
                return []
            if isinstance(parent, cst.Attribute) and parent.value is current:
                attr = parent.attr.value
                if role == "engine" and attr == "dispose":
                    self.outcomes.add(DISPOSED)  # engine.dispose() or atexit.register(engine.dispose)
                    return []
                grand = self.index.parent_of(parent)
                if isinstance(grand, cst.Call) and grand.func is parent:
                    if (role == "engine" and attr == "execution_options") or (role == "holder" and attr == "begin"):
                        current = grand  # the same engine / a session of the factory
                        continue
                return []  # a method call or attribute read on it
            if isinstance(parent, cst.Call) and parent.func is current:
                if role == "holder":
                    current = parent  # Factory() -> a session bound to the engine
                    continue
                return []
            if isinstance(parent, cst.Arg) and parent.value is current:
                call = self.index.parent_of(parent)
                if not isinstance(call, cst.Call):
                    self.outcomes.add(ESCAPED)
                    return []
                effect = self._call_effect(call)
                if effect == "holder":
                    # ``sessionmaker(bind=engine)``, and ``scoped_session(sessionmaker(...))``
                    # around it: the registry holds the factory, which holds the engine.
                    role, current = "holder", call
                    continue
                if role == "holder":
                    return []  # a session handed to a helper does not keep the engine alive
                if effect == "consumer":
                    return []
                self.outcomes.add(ESCAPED)
                return []
            if isinstance(parent, _TRANSPARENT):
                current = parent
                continue
            if isinstance(parent, cst.NamedExpr):
                bound = self._track(parent.target, role)
                return bound + self._climb(parent, role) if bound else []
            if isinstance(parent, (cst.Assign, cst.AnnAssign)) and parent.value is current:
                targets = [t.target for t in parent.targets] if isinstance(parent, cst.Assign) else [parent.target]
                names: list[str] = []
                for target in targets:
                    names.extend(self._track(target, role))
                return names
            if isinstance(parent, cst.WithItem) and parent.item is current:
                if parent.asname is None:
                    return []
                return self._track(parent.asname.name, role)
            if isinstance(parent, _READS):
                return []
            if isinstance(parent, cst.Yield) and role == "holder":
                return []  # a session lent by a generator: it comes back; the engine stays here
            # return, yield, lambda body, augmented assignment, anything else
            self.outcomes.add(ESCAPED)
            return []

    def _call_effect(self, call: cst.Call) -> str:
        """What a call does with an engine argument: "holder", "consumer" or "keeps"."""
        kind = self.resolver.kind(call.func, self.scope)
        if kind is not None:
            if kind.tag == "session_class" or (kind.tag == "api" and kind.api in _HOLDER_APIS):
                return "holder"
        qname = self.resolver.qualify(call.func, self.scope)
        if qname in _CONSUMER_FUNCS:
            return "consumer"
        if qname is None and isinstance(call.func, cst.Name) and call.func.value in _CONSUMER_FUNCS:
            return "consumer"  # builtins
        if isinstance(call.func, cst.Attribute) and call.func.attr.value in _CONSUMER_METHODS:
            return "consumer"
        return "keeps"

    def _references(self, name: str) -> Iterator[tuple[cst.Name, bool]]:
        """Reads of ``name`` in the function: (node, inside a nested def/lambda?)."""
        if name in self.scope.globals or name in self.scope.nonlocals:
            self.outcomes.add(ESCAPED)
            return
        body: cst.CSTNode = self.fn.body
        stack: list[tuple[cst.CSTNode, bool]] = [(body, False)]
        while stack:
            node, nested = stack.pop()
            if isinstance(node, cst.Name) and node.value == name and is_read(self.index, node):
                yield node, nested
            for child in reversed(children(node)):
                stack.append((child, nested or isinstance(node, SCOPE_NODES)))


def disposed_in_its_function(resolver: Resolver, engine: EngineCall) -> bool:
    """Whether an engine bound to a local name is disposed (``name.dispose()``) in the
    function that builds it, whatever else that function does with it."""
    if not isinstance(engine.scope, cst.FunctionDef):
        return False
    index = call_index(resolver.module)
    parent = index.parent_of(engine.call)
    if not (isinstance(parent, cst.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0].target, cst.Name)):
        return False
    name = parent.targets[0].target.value
    for node in walk_scope(engine.scope.body):
        if (
            type(node) is cst.Attribute
            and node.attr.value == "dispose"
            and type(node.value) is cst.Name
            and node.value.value == name
        ):
            return True
    return False


def dropped_undisposed(resolver: Resolver, fn: cst.FunctionDef, var: str) -> bool:
    """Whether another method of ``fn``'s class (not ``__init__``, where ``= None``
    only declares it) sets ``self.<attr>`` (``var``) to None, a close path, and no
    module of the project disposes a ``.<attr>``."""
    cls = resolver.enclosing_class(fn)
    if cls is None:
        return False
    dropped = any(
        isinstance(node, cst.Assign)
        and any(dotted(target.target) == var for target in node.targets)
        and isinstance(node.value, cst.Name)
        and node.value.value == "None"
        for method in cls.body.body
        if isinstance(method, cst.FunctionDef) and method.name.value not in ("__init__", fn.name.value)
        for node in walk(method)
    )
    return dropped and not resolver.index.attribute_disposed(var[len("self."):])


def is_cached_function(resolver: Resolver, fn: cst.FunctionDef) -> bool:
    """Decorated with ``functools.cache``/``lru_cache``/``cached_property`` or similar."""
    scope = resolver.scope(resolver.module)
    for decorator in fn.decorators:
        expr = decorator.decorator
        if isinstance(expr, cst.Call):
            expr = expr.func
        if resolver.qualify(expr, scope) in CACHE_DECORATORS:
            return True
    return False
