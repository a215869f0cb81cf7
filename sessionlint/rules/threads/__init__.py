"""SES4xx: sessions shared across threads, processes and requests."""

from __future__ import annotations

import libcst as cst

from sessionlint.rules.base import Rule
from sessionlint.rules.threads.facts import import_time_sessions, thread_facts


class SessionSharedWithThread(Rule):
    """
    ## What it does
    Finds a session or connection handed to another thread or process: passed to
    `threading.Thread(target=..., args=..., kwargs=...)`, `Executor.submit`/`map`,
    `loop.run_in_executor`, `asyncio.to_thread`, `multiprocessing.Process` or a
    `multiprocessing` pool, or captured by the callable given to them (a lambda, a
    nested `def`, `functools.partial`, a bound method such as `session.commit`).

    ## Why is this bad?
    A `Session` (and a `Connection`) is not thread-safe: it is meant to be used by one
    thread at a time. Two threads using it at once interleave statements on one
    DBAPI connection, corrupt the identity map and the transaction state, and fail
    intermittently (`This session is in 'prepared' state`, `Packet sequence number
    wrong`, objects flushed on the wrong transaction). A process cannot use a session
    or connection from its parent at all: the socket is shared after `fork`, or the
    object does not pickle.

    ## Example
    ```python
    import threading

    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def send_receipt(session, order_id):
        session.get(Order, order_id).receipt_sent = True
        session.flush()

    def confirm(order_id):
        with SessionLocal() as session:
            worker = threading.Thread(target=send_receipt, args=(session, order_id))
            worker.start()
            worker.join()
            session.commit()
    ```

    ## Use instead
    ```python
    import threading

    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def send_receipt(session_factory, order_id):
        with session_factory.begin() as session:
            session.get(Order, order_id).receipt_sent = True

    def confirm(order_id):
        worker = threading.Thread(target=send_receipt, args=(SessionLocal, order_id))
        worker.start()
        worker.join()
    ```

    Also found: a session given to the constructor of a project class derived from
    `threading.Thread` or `multiprocessing.Process` (in any module), and a session on
    `self` (assigned in a method, or annotated `Session` in the class body) passed as
    `self.<attr>`, or read by a bound-method target such as `target=self.load` (or by
    the methods it calls on `self`). Executors are recognised as names, module globals
    or `self.<attr>` assigned a `ThreadPoolExecutor`/`ProcessPoolExecutor`.

    ## Known problems
    A session created inside the thread's target (including `self.session = ...` in
    the target method), and session factories or `scoped_session` registries passed
    to it, are fine and not reported. A thread subclass is followed through its
    constructor's arguments, not through attributes set on it after construction.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#is-the-session-thread-safe-is-asyncsession-safe-to-share-in-concurrent-tasks
    - https://docs.sqlalchemy.org/en/20/core/pooling.html#using-connection-pools-with-multiprocessing-or-os-fork
    """

    code = "SES401"
    name = "session-shared-with-thread"
    # No byte shortcut: a project's own `threading.Thread` subclass, defined in another
    # module, is handed its session under a name this file need not spell.
    message = "{what} `{var}` is {how} another {worker} (`{via}`)"
    hint = "pass a session factory (or the ids of the rows) and create the session inside the thread"

    def visit_Module(self, node: cst.Module) -> None:
        facts = thread_facts(self.ctx)
        for handoff, scope in facts.handoffs():
            for shared in facts.shared(handoff, scope):
                self.report(
                    handoff.call,
                    what=shared.kind,
                    var=shared.var,
                    how="captured by a callable run in" if shared.captured else "handed to",
                    worker=handoff.worker,
                    via=handoff.via,
                )
                break  # one finding per hand-off call


class ModuleLevelSession(Rule):
    """
    ## What it does
    Finds a session instance (not a factory, not a `scoped_session` registry) created
    while a module or class body runs, or as a default argument value, and kept there.

    ## Why is this bad?
    That one session is shared by every thread, request and task that imports the
    module. It is not thread-safe; it keeps its connection and transaction open from
    the first query on (so the connection never returns to the pool), its identity
    map serves stale objects forever, and after any database error every later
    request fails with `PendingRollbackError`.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()
    session = SessionLocal()

    def featured_products():
        return session.scalars(select(Product).where(Product.featured)).all()
    ```

    ## Use instead
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def featured_products():
        with SessionLocal() as session:
            return session.scalars(select(Product).where(Product.featured)).all()
    ```

    ## Known problems
    A session assigned to a module global from inside a function (`global s; if s is
    None: s = Session()`, a lazily created shared session) is reported too. Sessions
    created in an `if __name__ == "__main__":` block, used as a `with` block, or
    closed at module level (a script) are not reported.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#when-do-i-construct-a-session-when-do-i-commit-it-and-when-do-i-close-it
    - https://docs.sqlalchemy.org/en/20/orm/contextual.html
    """

    code = "SES402"
    name = "module-level-session"
    message = "session `{var}` is created {where} and shared by every thread and request"
    hint = "create a session per request or unit of work (`with SessionLocal() as session:`), or use a `scoped_session` registry"

    def visit_Module(self, node: cst.Module) -> None:
        for found in import_time_sessions(self.ctx):
            self.report(found.call, var=found.var, where=found.where)
