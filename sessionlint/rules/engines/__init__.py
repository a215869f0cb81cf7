"""SES5xx: engines and pools (engine per call, MySQL pool_recycle, unbounded pools)."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.entry import is_entry_point
from sessionlint.rules.base import Rule
from sessionlint.rules.engines.fix import hoist_fix, recycle_fix
from sessionlint.rules.engines.facts import (
    ABANDONED,
    ESCAPED,
    disposed_in_its_function,
    dropped_undisposed,
    engine_calls,
    engine_fate,
    mysql_evidence,
    module_mysql_evidence,
    is_cached_function,
)

# MySQL's default ``wait_timeout`` is 28800 s (8 h): a pooled connection idle longer
# than that has been closed by the server.
MYSQL_WAIT_TIMEOUT = 28800


class EnginePerCall(Rule):
    """
    ## What it does
    Finds `create_engine(...)`/`create_async_engine(...)` called inside a function
    whose engine is neither returned, stored (on an attribute, in a container or a
    global), cached (`@functools.cache`, `@lru_cache`, `@cached_property`), nor
    disposed: every call of the function builds a new engine and connection pool and
    abandons it.

    ## Why is this bad?
    An engine is a connection pool, meant to be created once per process and shared.
    Building one per request or per loop iteration opens a fresh DBAPI connection
    every time (no pooling at all) and leaves the old pool's connections open until
    the garbage collector finds the engine: the server's `max_connections` fills up
    with idle connections and every call pays the connect handshake.

    ## Example
    ```python
    from sqlalchemy import create_engine, text

    def order_count(database_url):
        engine = create_engine(database_url)
        with engine.connect() as conn:
            return conn.execute(text("select count(*) from orders")).scalar()
    ```

    ## Use instead
    ```python
    from functools import cache

    from sqlalchemy import create_engine, text

    @cache
    def engine_for(database_url):
        return create_engine(database_url)

    def order_count(database_url):
        with engine_for(database_url).connect() as conn:
            return conn.execute(text("select count(*) from orders")).scalar()
    ```

    ## Known problems
    The engine is followed through local names, `execution_options()` copies, and
    sessions or session factories bound to it. Handing the engine itself to a call
    other than pandas I/O, `MetaData.create_all`/`drop_all`/`reflect`,
    `sqlalchemy.inspect` or logging is assumed to keep it (not reported). Functions
    that run once per process are not reported: those called at module level of
    their own module (`if __name__ == "__main__": main()`), CLI commands
    (`@click.command()`, `@app.cli.command()`) and pytest `test_*` functions.
    Engines with `poolclass=NullPool` are not reported: they keep no connections
    between uses, so abandoning one leaks nothing (building it still costs a little).
    Nor are engines only asked what they are (`engine.dialect` to compile DDL,
    `engine.url`, `engine.name`): they never open a connection. An engine stored on
    `self` in `__init__` is reported when a request handler (`@app.route`,
    `@router.get`...) creates the object, directly or through another class's
    `__init__`, and no module of the project disposes an attribute of that name
    (`x.engine.dispose()`); classes are matched by name. So is an engine a method
    other than `__init__` stores on `self` when another method of the class sets that
    attribute to None (`close()`) and nothing disposes it.

    ## Fix safety
    `--fix --unsafe-fixes` moves `engine = create_engine(...)` from a top-level
    function to module level, just above it, when its arguments are literals or names
    the module binds once above that point and nothing else binds `engine`. Unsafe:
    the engine is then built at import time and shared by every call.

    ## References
    - https://docs.sqlalchemy.org/en/20/core/connections.html#basic-usage
    - https://docs.sqlalchemy.org/en/20/core/pooling.html#using-connection-pools-with-multiprocessing-or-os-fork
    """

    code = "SES501"
    # ``create_engine`` spelled in the file (also in ``create_async_engine``), or a name
    # resolving to it (a project alias).
    needs = (b"create_engine",)
    needs_apis = ("create_engine", "create_async_engine")
    name = "engine-per-call"
    message = "`{var}` builds a new engine and connection pool on every call{how} and never disposes it"
    hint = (
        "create the engine once (module level or a `@functools.cache` factory) and share it; "
        "if it must be temporary, call `dispose()` in a `finally` block"
    )

    def visit_Module(self, node: cst.Module) -> None:
        resolver = self.ctx.resolver
        for engine in engine_calls(resolver):
            fn = engine.scope
            if engine.at_import or not isinstance(fn, cst.FunctionDef):
                continue
            if is_cached_function(resolver, fn) or is_entry_point(resolver, fn):
                continue
            if engine.poolclass == "NullPool":
                # A NullPool engine keeps no connections: abandoning it abandons no pool.
                continue
            if engine_fate(resolver, engine) == ABANDONED:
                fix = hoist_fix(resolver, fn, engine.call, engine.var)
                self.report(engine.call, fix=fix, var=engine.var or f"{engine.api}(...)", how="")
            elif engine.var.startswith("self.") and fn.name.value != "__init__" and dropped_undisposed(resolver, fn, engine.var):
                # ``open()`` stores a new engine on self, ``close()`` sets it to None:
                # every open/close cycle leaves a pool behind.
                self.report(engine.call, var=engine.var, how=" (another method sets it to None without `dispose()`)")
            elif fn.name.value == "__init__" and engine.var.startswith("self."):
                cls = resolver.enclosing_class(fn)
                index = self.ctx.index
                if cls is None or index.attribute_disposed(engine.var[len("self."):]):
                    continue
                handler = index.instantiated_per_request(f"{self.ctx.facts.name}.{cls.name.value}")
                if handler is not None:
                    # ``DataService.__init__`` builds the engine; a request handler builds
                    # a ``DataService`` per request.
                    self.report(engine.call, var=engine.var, how=f" of `{cls.name.value}()`, made per request in `{handler}`,")


class MysqlPoolRecycle(Rule):
    """
    ## What it does
    Finds an engine for a MySQL or MariaDB URL (a string literal, an f-string whose
    scheme is literal, `URL.create(drivername=...)` or `make_url(...)`) created
    without `pool_recycle`, or with `pool_recycle` of 28800 seconds or more (or `-1`,
    which never recycles).

    ## Why is this bad?
    MySQL closes connections that have been idle longer than `wait_timeout` (28800
    seconds, 8 hours, by default; often much less on managed servers and behind
    proxies). The pool does not notice: the next checkout hands out a dead connection
    and the query fails with `(2013, 'Lost connection to MySQL server during query')`
    or `MySQL server has gone away`. `pool_recycle` replaces connections older than
    the given age before they are used; `pool_pre_ping=True` tests each connection at
    checkout and replaces dead ones.

    ## Example
    ```python
    from sqlalchemy import create_engine

    engine = create_engine("mysql+pymysql://app@db.internal/shop", pool_size=10)
    ```

    ## Use instead
    ```python
    from sqlalchemy import create_engine

    engine = create_engine(
        "mysql+pymysql://app@db.internal/shop",
        pool_size=10,
        pool_recycle=3600,
        pool_pre_ping=True,
    )
    ```

    ## Known problems
    A URL read from configuration, the environment or a parameter is not visible; such
    an engine is checked when the project's config and dependency files (`*.ini`,
    `*.cfg`, `*.toml`, `*.yaml`, `.env*`, `docker-compose*`, `requirements*.txt`,
    `setup.py`, `Pipfile`) show MySQL (a `mysql://` URL, or `pymysql`, `mysqlclient`,
    `mysql-connector-python`, `aiomysql`, `asyncmy`, `mariadb`) and name no other
    server database (PostgreSQL, Oracle, SQL Server), or when the engine's own module
    imports MySQL's dialect types (`sqlalchemy.dialects.mysql`) or passes MySQL table
    options (`mysql_engine=`, `mysql_charset=`); the message says which evidence.
    A `**options` call (it may set `pool_recycle`), and a `pool_recycle` whose
    value is not a literal or a name of the same file assigned once. Engines with
    `poolclass=NullPool` keep no connections between uses and are not reported, nor
    are engines that do not outlive the function that builds them (disposed, thrown
    away, which SES501 reports, or built only to read their `dialect`). The
    server's real `wait_timeout` is checked at runtime by SES906.

    ## Fix safety
    `--fix` adds `pool_recycle=3600` and, when missing, `pool_pre_ping=True`: safe,
    the pool only replaces connections before the server drops them. A literal
    `pool_recycle` at or above 28800 (or `-1`) is lowered to 3600 under
    `--unsafe-fixes` only, since a deliberate value changes.

    ## References
    - https://docs.sqlalchemy.org/en/20/dialects/mysql.html#connection-timeouts-and-disconnects
    - https://docs.sqlalchemy.org/en/20/core/pooling.html#setting-pool-recycle
    - https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-pessimistic
    """

    code = "SES502"
    # ``create_engine`` spelled in the file (also in ``create_async_engine``), or a name
    # resolving to it (a project alias).
    needs = (b"create_engine",)
    needs_apis = ("create_engine", "create_async_engine")
    name = "mysql-pool-recycle"
    message = (
        "{dialect} engine{var} {problem}: pooled connections outlive the server's "
        "`wait_timeout`; set `pool_recycle` below it (e.g. 3600) and `pool_pre_ping=True`"
    )
    hint = "pass pool_recycle below the server's wait_timeout (e.g. pool_recycle=3600) and pool_pre_ping=True"

    def visit_Module(self, node: cst.Module) -> None:
        evidence: str | None = None
        for engine in engine_calls(self.ctx.resolver):
            by_project = ""
            if engine.dialect is None and engine.url is not None:
                # The URL is not in the code: the module's own MySQL-only code, else the
                # project's config and dependencies.
                if evidence is None:
                    in_module = module_mysql_evidence(self.ctx.index.file_bytes(self.ctx.path))
                    evidence = (
                        in_module if in_module
                        else f"the project's MySQL: {found}" if (found := mysql_evidence(self.ctx.resolver.index.root))
                        else ""
                    )
                if not evidence:
                    continue
                by_project = f" (the URL is not in the code; {evidence})"
            elif not engine.is_mysql:
                continue
            if engine.poolclass == "NullPool" or engine.poolclass == "?":
                continue
            if not engine.at_import and isinstance(engine.scope, cst.FunctionDef):
                if engine_fate(self.ctx.resolver, engine) != ESCAPED or disposed_in_its_function(self.ctx.resolver, engine):
                    # Disposed or thrown away when the call ends (SES501's finding), or
                    # only asked for its dialect: no pool lives on to go stale.
                    continue
            recycle = engine.keywords.get("pool_recycle")
            if recycle is None:
                if engine.star_kwargs:
                    continue
                problem = "has no `pool_recycle`"
            else:
                seconds = engine.ints.get("pool_recycle")
                if seconds is None or 0 <= seconds < MYSQL_WAIT_TIMEOUT:
                    continue
                problem = (
                    "has `pool_recycle=-1` (never recycles)"
                    if seconds < 0
                    else f"has `pool_recycle={seconds}`, not below MySQL's default `wait_timeout` (28800)"
                )
            self.report(
                engine.call,
                fix=recycle_fix(engine.call, engine.keywords),
                dialect="MariaDB" if engine.dialect == "mariadb" else "MySQL",
                var=f" `{engine.var}`" if engine.var else "",
                problem=problem + by_project,
            )


class UnboundedPool(Rule):
    """
    ## What it does
    Finds `create_engine(...)`/`create_async_engine(...)` with `max_overflow=-1` or
    `pool_size=0` on a queue pool (the default pool of most dialects): both remove
    the limit on how many connections the engine opens.

    ## Why is this bad?
    The pool's limit is what protects the database: with `pool_size + max_overflow`
    bounded, a burst of requests waits for a connection (`pool_timeout`) instead of
    opening one each. Unbounded, a traffic spike or a slow query opens connections
    until the server's `max_connections` is reached, and then every client of that
    database, not only this application, gets `Too many connections`.

    ## Example
    ```python
    from sqlalchemy import create_engine

    engine = create_engine("postgresql://app@db/shop", pool_size=10, max_overflow=-1)
    ```

    ## Use instead
    ```python
    from sqlalchemy import create_engine

    engine = create_engine("postgresql://app@db/shop", pool_size=10, max_overflow=20, pool_timeout=30)
    ```

    ## Known problems
    Values are checked when the code spells them out: a literal, or a name of the same
    file assigned exactly once (`MAX_OVERFLOW = -1`); a value from configuration,
    another module or a parameter is not. Engines with a `poolclass` other than
    `QueuePool`/`AsyncAdaptedQueuePool` (e.g. `NullPool`) are not reported.

    ## References
    - https://docs.sqlalchemy.org/en/20/core/pooling.html#sqlalchemy.pool.QueuePool.__init__
    - https://docs.sqlalchemy.org/en/20/core/engines.html#sqlalchemy.create_engine.params.max_overflow
    """

    code = "SES503"
    # ``create_engine`` spelled in the file (also in ``create_async_engine``), or a name
    # resolving to it (a project alias).
    needs = (b"create_engine",)
    needs_apis = ("create_engine", "create_async_engine")
    name = "unbounded-pool"
    message = "engine{var} has an unbounded pool: `{setting}` puts no limit on its connections"
    hint = "set pool_size and max_overflow to bounded values that fit the server's max_connections"

    def visit_Module(self, node: cst.Module) -> None:
        for engine in engine_calls(self.ctx.resolver):
            if engine.poolclass is not None and engine.poolclass not in ("QueuePool", "AsyncAdaptedQueuePool"):
                continue
            setting = None
            if engine.ints.get("max_overflow") == -1:
                setting = "max_overflow=-1"
            elif engine.ints.get("pool_size") == 0:
                setting = "pool_size=0"
            if setting is not None:
                self.report(engine.call, var=f" `{engine.var}`" if engine.var else "", setting=setting)
