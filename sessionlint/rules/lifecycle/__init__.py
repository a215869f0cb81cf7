"""SES1xx: sessions and connections that are not closed, or used after closing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import libcst as cst

from sessionlint.analysis.calls import call_index
from sessionlint.analysis.context import FileContext
from sessionlint.analysis.flow import Site
from sessionlint.analysis.scope import Scope, dotted
from sessionlint.analysis.sessions import analyzer_for
from sessionlint.analysis.walk import scope_nodes_of
from sessionlint.rules.base import Rule
from sessionlint.rules.lifecycle.fix import with_fix


def report_leaks(rule: Rule, fn: cst.FunctionDef, wanted: Callable[[Site, bool], bool], **fields: str) -> None:
    """Report each site of ``fn`` leaking on some path (``normal``: a path without an
    exception) that ``wanted`` keeps, with the ``with`` fix where it applies."""
    facts = rule.ctx.flow(fn)
    for site, normal in facts.sites_leaking():
        if not wanted(site, normal):
            continue
        var = facts.name_of(site)
        # Of connections, only ``engine.connect()`` is closed the same way by a
        # ``with``: ``with engine.begin()`` would commit, and a raw DBAPI connection
        # has no context manager.
        rewritable = site.kind == "session" or (
            isinstance(site.node.func, cst.Attribute) and site.node.func.attr.value == "connect"
        )
        fix = with_fix(fn, site.node, var, site.is_async, not site.evidence) if rewritable else None
        rule.report(site.node, fix=fix, var=var, **fields)


class SessionNotClosed(Rule):
    """
    ## What it does
    Finds a session the function creates and owns that is not closed on some path:
    no `with` block, and no `close()` reached on that path (an early `return`, a
    `break`, a branch that skips it, or the variable being overwritten while open).
    Also a session a method stores on `self` (`self._session = Factory()`) that
    nothing in the project ever closes: it stays open for the object's life, and
    each call that stores a new one leaks the last.

    ## Why is this bad?
    An unclosed session keeps its connection checked out of the pool and its
    transaction open until garbage collection happens to reclaim it. Under load the
    pool runs dry: `QueuePool limit of size 5 overflow 10 reached, connection timed
    out`, and the database shows connections `idle in transaction` holding locks.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def get_user(user_id):
        session = SessionLocal()
        user = session.get(User, user_id)
        if user is None:
            return None
        session.close()
        return user
    ```

    ## Use instead
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def get_user(user_id):
        with SessionLocal() as session:
            return session.get(User, user_id)
    ```

    ## Known problems
    Ownership leaving the function is recognised when the session is returned,
    yielded to a consumer, stored on an attribute, in a container or a global, wrapped
    by a constructor that is returned or stored, or registered with a closing construct
    (`contextlib.closing`, `ExitStack`, `atexit.register(s.close)`). A helper that
    closes its argument is recognised when it is defined in the analysed project.
    A session on `self` counts as closed when any module of the project closes an
    attribute of that name (`x.<attr>.close()`, `with x.<attr>:`,
    `closing(x.<attr>)`), or calls `close_all_sessions()`.
    Sessions returned by a `scoped_session` registry belong to the registry (see
    SES301) and are not reported here. Nor is a session bound to a connection rather
    than an engine (`Session(bind=conn)`, alembic's `Session(bind=op.get_bind())` in a
    data migration), here or by SES102: it checks out no connection of its own, and
    SES103 follows the connection.

    ## Options
    `session-factories`: qualified names of functions that return new sessions.

    ## Fix safety
    `--fix` rewrites `s = Session()` ... `s.close()` as `with Session() as s:`
    around the statements that use it, when the session lives only there (used through
    its methods or passed to calls; never returned, stored, rebound or captured).
    The fix is safe when that `close()` ends the block and nothing leaves it early;
    otherwise (a `return`, `break`, `continue`, `raise` or `yield` inside, a missing
    or extra `close()`, a factory known only by its name) it is unsafe: a `return`
    inside now closes the session before the caller uses what it returned. When the
    name is still read after its `close()` (`s.close(); log(s.info)`), the work goes
    into `try:` and the `close()` into `finally:` instead, so the order stays.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#opening-and-closing-a-session
    """

    code = "SES101"
    name = "session-not-closed"
    message = "session `{var}` is not closed {how}"
    hint = "use a `with` block, or close it in a `finally` block"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        report_leaks(self, node, lambda site, normal: site.kind == "session" and normal, how="on every path")

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        for call, attr in sessions_kept_on_self(self.ctx, node):
            self.report(call, var=f"self.{attr}", how="anywhere: it stays open as long as the object, and storing a new one leaks the last")


def sessions_kept_on_self(ctx: FileContext, cls: cst.ClassDef) -> Iterator[tuple[cst.Call, str]]:
    """(creating call, attribute) for sessions a method of ``cls`` creates and stores
    on ``self.<attribute>`` (``self._session = self._factory()``) when nothing in the
    project ever closes a ``.<attribute>``: the session lives as long as the object,
    holding its connection and transaction, and a second call leaks the first."""
    parents = call_index(ctx.module)
    for method in cls.body.body:
        if not isinstance(method, cst.FunctionDef):
            continue
        facts = ctx.flow(method)
        for site in facts.sites:
            if site.kind != "session" or not site.owned or site.bound_to_connection:
                continue
            assign = parents.parent_of(site.node)
            if not (isinstance(assign, cst.Assign) and len(assign.targets) == 1):
                continue
            target = assign.targets[0].target
            if not (isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self"):
                continue
            if not ctx.index.attribute_closed(target.attr.value):
                yield site.node, target.attr.value


class CloseNotGuaranteed(Rule):
    """
    ## What it does
    Finds a session whose `close()` is called, but not in a `finally` block (or by a
    `with` block), so an exception raised between creating and closing it skips the
    `close()`.

    ## Why is this bad?
    The exception path is exactly when a session is most likely to hold a broken
    transaction. Skipping `close()` there leaks the connection to the pool and leaves
    the transaction open on the server until garbage collection: under a burst of
    errors, the pool is exhausted and healthy requests start failing too.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def rename(user_id, name):
        session = SessionLocal()
        session.get(User, user_id).name = name
        session.commit()
        session.close()
    ```

    ## Use instead
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def rename(user_id, name):
        with SessionLocal() as session:
            session.get(User, user_id).name = name
            session.commit()
    ```

    ## Known problems
    Every call, `await`, subscript, `yield` and `assert` is assumed to be able to
    raise; `close()` and `rollback()` themselves are assumed not to.

    ## Fix safety
    As for SES101: `with Session() as s:` replaces the assignment and the `close()`,
    safe when that `close()` ended the block and nothing left it early.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#framing-out-a-begin-commit-rollback-block
    """

    code = "SES102"
    name = "close-not-guaranteed"
    message = "session `{var}` is closed, but not in `finally`: an exception before `close()` leaks it"
    hint = "use a `with` block, or move `close()` into `finally`"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        report_leaks(self, node, lambda site, normal: site.kind == "session" and not normal)


class ConnectionNotClosed(Rule):
    """
    ## What it does
    Finds a Core connection the function owns (`engine.connect()`,
    `engine.raw_connection()`, or a bare `engine.begin()` outside a `with`) that is not
    closed on every path, normal or exceptional, and not used as a context manager.

    ## Why is this bad?
    A connection that is never closed stays checked out of the engine's pool. A few
    leaks per minute exhaust a pool of five; on MySQL and PostgreSQL its open
    transaction also holds locks and keeps old row versions alive.

    ## Example
    ```python
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql://app@db/app")

    def health():
        conn = engine.connect()
        return conn.execute(text("select 1")).scalar()
    ```

    ## Use instead
    ```python
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql://app@db/app")

    def health():
        with engine.connect() as conn:
            return conn.execute(text("select 1")).scalar()
    ```

    ## Known problems
    An engine is recognised when it is bound to `create_engine(...)` or
    `create_async_engine(...)` (in this module or imported from another), or annotated
    as `Engine`/`AsyncEngine`. Engines reached through attributes (`self.engine`) are
    not followed.

    ## Fix safety
    As for SES101, with `with engine.connect() as conn:` (`async with` for an
    `AsyncEngine`). Only `engine.connect()` is rewritten: `with engine.begin()` would
    commit, and a raw DBAPI connection is no context manager.

    ## References
    - https://docs.sqlalchemy.org/en/20/core/connections.html#basic-usage
    """

    code = "SES103"
    name = "connection-not-closed"
    message = "connection `{var}` is not closed on every path"
    hint = "use `with engine.connect() as conn:` (or `with engine.begin() as conn:`)"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        report_leaks(self, node, lambda site, _normal: site.kind == "connection")


class SessionUsedAfterWith(Rule):
    """
    ## What it does
    Finds a session used after the `with` block that closed it, typically a
    `rollback()` in an `except` clause placed outside the `with`, or a lazy `Query`
    returned from inside the block and run by the caller.

    ## Why is this bad?
    A closed session is not dead: the next use silently begins a new transaction on a
    new connection, and nothing closes that one. The `rollback()` meant to clean up
    instead opens a connection that leaks, and the original transaction was already
    rolled back by the `with` block's exit.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def create(order):
        try:
            with SessionLocal() as session:
                session.add(order)
                session.commit()
        except Exception:
            session.rollback()
            raise
    ```

    ## Use instead
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def create(order):
        with SessionLocal() as session:
            try:
                session.add(order)
                session.commit()
            except Exception:
                session.rollback()
                raise
    ```

    ## Known problems
    Any attribute use other than `close()` counts, and so does passing the session to
    a call. `with session.begin():` does not close the session, so uses after it are
    fine. Besides sessions the code creates, a `with` whose callee and variable are
    both named for a session (`async with db.session_context() as session:`, `with
    store.get_session() as db_session:`) lends one, unless the callee is outside the
    project (`requests.Session()`). A `return` inside the block of an unexecuted
    `session.query(...)` (or of a name bound only to one and refined in place) is
    reported too: the caller runs the query after the session closed.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#closing
    """

    code = "SES104"
    name = "session-used-after-with"
    message = "session `{var}` is used after the `with` block that closed it{how}"
    hint = "move this use inside the `with` block"

    def _check(self, node: cst.Module | cst.FunctionDef) -> None:
        facts = self.ctx.flow(node)
        for use, site_index in facts.uses_after_with.values():
            self.report(use, var=facts.name_of(facts.sites[site_index]), how="")

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._check(node)
        for returned, var in lazy_queries_returned(self.ctx, node):
            self.report(returned, var=var, how=": the query returned from inside it runs when the caller iterates it")

    def visit_Module(self, node: cst.Module) -> None:
        self._check(node)


# ``Query`` methods that return a new, still unexecuted query.
_QUERY_BUILDERS = frozenset(
    {
        "filter", "filter_by", "where", "order_by", "group_by", "having", "limit", "offset", "slice",
        "join", "outerjoin", "options", "distinct", "select_from", "with_entities", "add_columns",
        "union", "union_all", "execution_options", "yield_per", "params", "correlate", "enable_eagerloads",
    }
)


def lazy_queries_returned(ctx: FileContext, fn: cst.FunctionDef) -> Iterator[tuple[cst.Return, str]]:
    """``return`` statements inside ``with <session> as s:`` that return an unexecuted
    ``s.query(...)`` (or a name only ever bound to one, refined in place): the caller
    runs it after the block closed the session, which reopens a connection that
    nothing closes."""
    facts = analyzer_for(ctx.resolver).function(fn)
    for block in facts.withs:
        if block.kind.scoped or block.kind.is_async:
            continue
        for statement in scope_nodes_of(block.node.body, cst.Return):
            assert isinstance(statement, cst.Return)
            if statement.value is not None and _lazy_query(statement.value, block.name, facts.scope, 0):
                yield statement, block.name


def _lazy_query(expr: cst.BaseExpression, key: str, scope: Scope, depth: int) -> bool:
    if isinstance(expr, cst.Name):
        values = scope.assigned.get(expr.value, ())
        if not values or depth > 3:
            return False
        # Every binding is a query of the session, or refines the same name
        # (``q = q.filter(...)``, ``q = hook(q)``).
        return any(_lazy_query(v, key, scope, depth + 1) for v in values) and all(
            _lazy_query(v, key, scope, depth + 1) or _refines(v, expr.value) for v in values
        )
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
        method = expr.func.attr.value
        if method == "query":
            return dotted(expr.func.value) == key
        if method in _QUERY_BUILDERS:
            return _lazy_query(expr.func.value, key, scope, depth)
    return False


def _refines(value: cst.BaseExpression, name: str) -> bool:
    """``name.<builder>(...)`` chains, or a call handing ``name`` over first."""
    while isinstance(value, cst.Call):
        if isinstance(value.func, cst.Attribute) and value.func.attr.value in _QUERY_BUILDERS:
            value = value.func.value
            continue
        return bool(value.args) and isinstance(value.args[0].value, cst.Name) and value.args[0].value.value == name
    return isinstance(value, cst.Name) and value.value == name
