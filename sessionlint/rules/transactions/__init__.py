"""SES2xx: transactions (rollback after failed flush, writes never committed)."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.sessions import analyzer_for
from sessionlint.rules.base import Rule
from sessionlint.rules.transactions.fix import awaits_on, rollback_fix
from sessionlint.rules.transactions.facts import swallowing_handlers, uncommitted_blocks, uncommitted_methods


class MissingRollback(Rule):
    """
    ## What it does
    Finds an `except` clause that catches a database error raised by session work in
    its `try` (a flush, commit, execute or query) and neither rolls the session back
    nor re-raises, while the session lives on: a loop or later statements keep using
    it, or it outlives the function (a `scoped_session`, a module-level session, a
    session on `self`).

    ## Why is this bad?
    After a failed flush the session refuses all work until it is rolled back
    (`PendingRollbackError: This Session's transaction has been rolled back due to a
    previous exception during flush`), and on PostgreSQL a failed statement aborts the
    whole transaction (`current transaction is aborted, commands ignored until end of
    transaction block`). Swallowing the error and carrying on makes every later
    statement fail, often far from the real cause, and only on some databases.

    ## Example
    ```python
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def import_rows(rows):
        with SessionLocal() as session:
            for row in rows:
                try:
                    session.execute(insert(Product).values(**row))
                except IntegrityError:
                    continue
            session.commit()
    ```

    ## Use instead
    ```python
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def import_rows(rows):
        with SessionLocal() as session:
            for row in rows:
                try:
                    with session.begin_nested():
                        session.execute(insert(Product).values(**row))
                except IntegrityError:
                    continue
            session.commit()
    ```

    ## Known problems
    Handlers are judged per path: one that rolls back (`rollback()`, `close()`, a
    project helper that rolls back), re-raises (`raise`, `raise ... from`), or calls
    `abort()` is fine, and so is a `try` inside `with session.begin():` or whose work
    sits in `with session.begin_nested():`. Only handlers catching a database error
    are considered: bare `except`, `Exception`, `sqlalchemy.exc` database errors and
    DB driver errors; `NoResultFound` and non-database exceptions are not. A local
    session counts as living on only when the code after the handler (or the next loop
    iteration) uses it; so does a session passed in as a parameter, since its owner
    (a FastAPI dependency, a fixture) usually closes it when the function returns.
    Flask-SQLAlchemy's `db.session` (of `db = SQLAlchemy(...)`, wherever `db` is
    imported from) lives on for the whole application context, like a `scoped_session`
    (also spelled `flask.ext.sqlalchemy`). A session lent by a `with` whose callee and
    variable are named for one (`with get_session() as session:`) counts as a session.

    ## Fix safety
    `--fix --unsafe-fixes` inserts `session.rollback()` (`await session.rollback()`
    for an async session) as the first statement of the `except`. Always unsafe: the
    code after the handler then sees a session whose failed transaction is rolled
    back (pending objects gone, loaded ones expired) instead of
    `PendingRollbackError`, which is usually what was meant but not the same.

    ## References
    - https://docs.sqlalchemy.org/en/20/faq/sessions.html#this-session-s-transaction-has-been-rolled-back-due-to-a-previous-exception-during-flush-or-similar
    - https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#using-savepoint
    """

    code = "SES201"
    name = "missing-rollback"
    message = "`except` swallows a database error from session `{var}` without `rollback()`; the session is used again"
    hint = "call `rollback()` in the handler (or re-raise), or wrap the work in `with session.begin_nested():`"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        tx = analyzer_for(self.ctx.resolver)
        for handler, ref in swallowing_handlers(tx, node):
            is_async = ref.kind.is_async or (node.asynchronous is not None and awaits_on(node, ref.key))
            self.report(handler, fix=rollback_fix(handler, ref.key, is_async), var=ref.key)


class UncommittedWrites(Rule):
    """
    ## What it does
    Finds a session block, `with Session() as s:` or a session created and closed in
    the function, that writes (`add`, `add_all`, `delete`, `merge`, `bulk_*`, or
    `execute` of an `insert`/`update`/`delete`) and never commits.

    ## Why is this bad?
    Leaving `with Session() as s:` closes the session, and closing rolls back whatever
    was not committed: the writes silently disappear. Only `with Session.begin() as
    s:` (or `with s.begin():`) commits by itself when the block ends without an error.

    ## Example
    ```python
    from sqlalchemy import update
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def record_view(product_id):
        with SessionLocal() as session:
            session.execute(
                update(Product).where(Product.id == product_id).values(views=Product.views + 1)
            )
    ```

    ## Use instead
    ```python
    from sqlalchemy import update
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def record_view(product_id):
        with SessionLocal.begin() as session:
            session.execute(
                update(Product).where(Product.id == product_id).values(views=Product.views + 1)
            )
    ```

    A session kept on `self` (a repository or data-access object) is judged per class:
    a public method that writes through it and never commits is reported at its first
    write when a sibling method writes through the same session and commits, since the
    class commits its own writes.

    ## Known problems
    A block that calls `commit()`, `begin()` or `rollback()` (a deliberate dry run) is
    not reported, nor one that hands the session to another call, returns, yields or
    stores it (someone else may commit), nor a session bound to a caller's connection
    (`Session(bind=conn)`, `join_transaction_mode=...`), whose transaction the caller
    owns. Changes made by setting attributes on loaded objects are not seen as writes.
    For a session on `self`, a method that flushes, is private (`_stage()`), is called
    by another method of the class, hands the session on, or calls a method that
    commits is left to its caller.

    ## References
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#framing-out-a-begin-commit-rollback-block
    - https://docs.sqlalchemy.org/en/20/orm/session_basics.html#closing
    """

    code = "SES202"
    name = "uncommitted-writes"
    message = "session `{var}` writes{where} but is never committed{there}: closing it rolls the writes back"
    hint = "call `commit()`, or open the session with `Session.begin()` / `with session.begin():`"

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        tx = analyzer_for(self.ctx.resolver)
        facts = self.ctx.flow(node)
        sites = [
            (site.node, facts.name_of(site))
            for site in facts.sites
            if site.kind == "session" and site.owned and site.index in facts.explicitly_closed
            and site.index in facts.names
        ]
        for report_node, var in uncommitted_blocks(tx, node, sites):
            self.report(report_node, var=var, where="", there="")

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        tx = analyzer_for(self.ctx.resolver)
        for write, var, method, sibling in uncommitted_methods(tx, node):
            self.report(write, var=var, where=f" in `{method}()`", there=f" there, unlike in `{sibling}()`")
