"""SES3xx: scoped_session registries (remove(), async misuse)."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.sessions import analyzer_for
from sessionlint.rules.base import Rule
from sessionlint.rules.scoped.fix import finally_fix
from sessionlint.rules.scoped.facts import (
    instance_registries,
    is_teardown_hook,
    module_registries,
    used_after_remove,
    registry_calls,
    remove_guaranteed,
    thread_local_uses,
)


class ScopedSessionNotRemoved(Rule):
    """
    ## What it does
    Finds a `scoped_session` (or `async_scoped_session`) registry whose `.remove()` is
    called nowhere in the analysed project: no teardown hook, no `finally`, no signal
    handler. Calls in any module count, resolved through imports and aliases.

    ## Why is this bad?
    A registry keeps one session per thread (or per scope) until `remove()` is called.
    Without it, each thread's session lives forever: its identity map grows and serves
    stale objects to the next request on that thread, and a session left in a failed
    or open transaction poisons every later request on the thread.

    ## Example
    ```python
    from sqlalchemy.orm import scoped_session, sessionmaker

    audit_session = scoped_session(sessionmaker())

    def record(action):
        audit_session.add(AuditEvent(action=action))
        audit_session.commit()
    ```

    ## Use instead
    ```python
    from flask import Flask
    from sqlalchemy.orm import scoped_session, sessionmaker

    app = Flask(__name__)
    audit_session = scoped_session(sessionmaker())

    @app.teardown_appcontext
    def remove_audit_session(exc=None):
        audit_session.remove()

    def record(action):
        audit_session.add(AuditEvent(action=action))
        audit_session.commit()
    ```

    ## Known problems
    Registries assigned to a module-level name are checked, and registries a method
    stores on `self`; those count as removed when any module of the project calls or
    hands out `x.<attr>.remove`, or when the class passes the registry to a call. A
    registry handed to a library or framework call (`init_app(app, db_session)`) is
    assumed to be removed there; one handed to a project helper counts as removed
    when the helper calls `.remove()` on that parameter. Flask-SQLAlchemy's
    `db.session` removes itself.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/contextual.html#using-thread-local-scope-with-web-applications
    """

    code = "SES301"
    name = "scoped-session-not-removed"
    message = "scoped_session registry `{var}` is never removed: `.remove()` is called nowhere in the project"
    hint = "call `.remove()` at the end of every request, task or job: a teardown hook, a `finally`, a task_postrun handler"

    def visit_Module(self, node: cst.Module) -> None:
        index = self.ctx.index
        for registry in module_registries(self.ctx.resolver):
            origin = registry.kind.origin or f"{self.ctx.facts.name}.{registry.name}"
            if index.registry_released(origin):
                continue
            self.report(registry.call, var=registry.name)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        for registry in instance_registries(self.ctx.resolver, node):
            if not self.ctx.index.attribute_removed(registry.name):
                self.report(registry.call, var=f"self.{registry.name}")


class RemoveNotGuaranteed(Rule):
    """
    ## What it does
    Finds a `scoped_session` registry's `.remove()` that is reached only on the success
    path: something before it in the function may raise, and it is not in a `finally`
    block (nor covered by an `except` that removes too).

    ## Why is this bad?
    The failure path is exactly when the thread's session most needs discarding: it
    may hold a failed transaction or half-flushed objects. If an exception skips
    `remove()`, the next request or job on that thread inherits the broken session.

    ## Example
    ```python
    from sqlalchemy.orm import scoped_session, sessionmaker

    db_session = scoped_session(sessionmaker())

    def nightly_job():
        rebuild_totals(db_session)
        db_session.commit()
        db_session.remove()
    ```

    ## Use instead
    ```python
    from sqlalchemy.orm import scoped_session, sessionmaker

    db_session = scoped_session(sessionmaker())

    def nightly_job():
        try:
            rebuild_totals(db_session)
            db_session.commit()
        finally:
            db_session.remove()
    ```

    ## Known problems
    Logging calls, `print()` and `close()`/`rollback()` before the `remove()` are
    assumed not to raise. A teardown hook whose first statement is `remove()` is fine.
    When a teardown hook anywhere in the project removes the registry (`teardown_request`,
    `after_request`, `teardown_appcontext`, a Celery `task_postrun` handler,
    `atexit.register`, Pyramid's `add_finished_callback`, a pytest fixture after its
    `yield`, `tearDown`, `addCleanup`, Tornado's `on_finish`), an extra `remove()`
    elsewhere is not reported: the hook removes the session at the end of every
    request or task anyway. Flask-SQLAlchemy's `db.session` is left alone: the extension
    removes it itself when the application context ends.

    ## Fix safety
    `--fix --unsafe-fixes` moves a `remove()` that is a statement of the function's
    own body into a `finally` around the statements before it. Unsafe: the registry is
    then also removed when that work raises or returns early, which is the point, but
    a change. A `remove()` nested in a branch or loop is left to you.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/contextual.html#using-thread-local-scope-with-web-applications
    """

    code = "SES302"
    name = "remove-not-guaranteed"
    message = "`{var}.remove()` runs only if nothing before it raises"
    hint = "move `remove()` into a `finally` block (or a teardown hook)"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        tx = analyzer_for(self.ctx.resolver)
        for call, key, kind in registry_calls(tx, node, "remove"):
            if remove_guaranteed(tx, call, key, node) or used_after_remove(tx, call, key, node):
                continue
            if kind.origin and not is_teardown_hook(node) and self.ctx.resolver.index.registry_torn_down(kind.origin):
                continue  # a teardown hook removes it at the end of every request or task anyway
            self.report(call, fix=finally_fix(node, call), var=key)


class ThreadScopedSessionInAsync(Rule):
    """
    ## What it does
    Finds a thread-local `scoped_session` registry (one without a `scopefunc`) used
    inside an `async def`.

    ## Why is this bad?
    Every task on an event loop runs in the same thread, so a thread-local registry
    gives all of them one shared session. Concurrent tasks interleave their queries and
    flushes on it, see each other's uncommitted objects, and one task's `commit()` or
    `rollback()` ends the others' work. Sessions are not safe for concurrent use.

    ## Example
    ```python
    from sqlalchemy.orm import scoped_session, sessionmaker

    db_session = scoped_session(sessionmaker())

    async def stock_level(product_id):
        product = db_session.get(Product, product_id)
        return product.stock
    ```

    ## Use instead
    ```python
    from asyncio import current_task

    from sqlalchemy.ext.asyncio import async_scoped_session, async_sessionmaker

    AsyncSessionLocal = async_scoped_session(async_sessionmaker(), scopefunc=current_task)

    async def stock_level(product_id):
        product = await AsyncSessionLocal.get(Product, product_id)
        return product.stock
    ```

    ## Known problems
    Only registries that resolve to a `scoped_session(...)` call are recognised.
    Uses in a nested plain `def` or `lambda` (often run in a worker thread) are not
    reported, nor `remove()` / `configure()`.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#using-asyncio-scoped-session
    """

    code = "SES303"
    name = "thread-scoped-session-in-async"
    message = "thread-local scoped_session `{var}` used in `async def`: every task on the event loop shares one session"
    hint = "use `async_scoped_session(..., scopefunc=asyncio.current_task)` or a session per task (`async with AsyncSession() as s:`)"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if node.asynchronous is None:
            return
        for use, key in thread_local_uses(self.ctx.resolver, node):
            self.report(use, var=key)
