"""SES201's fix: ``rollback()`` as the first statement of the swallowing ``except``."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.scope import dotted
from sessionlint.analysis.walk import walk
from sessionlint.rules.base import FixSpec


def rollback_fix(handler: cst.ExceptHandler | cst.ExceptStarHandler, session: str, is_async: bool) -> FixSpec | None:
    """Unsafe: the code after the handler then sees a session with the failed
    transaction's changes rolled back (expired objects, lost pending ones) where it
    used to get ``PendingRollbackError``; usually what was meant, never the same."""
    call = f"await {session}.rollback()" if is_async else f"{session}.rollback()"
    try:
        rollback = cst.parse_statement(call)
    except cst.ParserSyntaxError:
        return None
    assert isinstance(rollback, cst.SimpleStatementLine)
    body = handler.body
    if isinstance(body, cst.IndentedBlock):
        first = body.body[0] if body.body else None
        if isinstance(first, (cst.SimpleStatementLine, cst.BaseCompoundStatement)) and first.leading_lines:
            # Comments heading the handler stay on top of it, above the rollback.
            rollback = rollback.with_changes(leading_lines=first.leading_lines)
            first = first.with_changes(leading_lines=())
            new_body = body.with_changes(body=[rollback, first, *body.body[1:]])
        else:
            new_body = body.with_changes(body=[rollback, *body.body])
    elif isinstance(body, cst.SimpleStatementSuite):
        # ``except IntegrityError: pass`` on one line becomes an indented block.
        new_body = cst.IndentedBlock(
            body=[rollback, cst.SimpleStatementLine(body=list(body.body), trailing_whitespace=body.trailing_whitespace)]
        )
    else:
        return None
    return FixSpec(f"call `{call}` first in the handler", handler, handler.with_changes(body=new_body))


def awaits_on(fn: cst.FunctionDef, session: str) -> bool:
    """``await <session>.<method>(...)`` somewhere in ``fn``: an ``AsyncSession`` (or
    ``AsyncConnection``) whatever the analysis could tell of its kind."""
    return any(
        isinstance(node, cst.Await)
        and isinstance(node.expression, cst.Call)
        and isinstance(node.expression.func, cst.Attribute)
        and dotted(node.expression.func.value) == session
        for node in walk(fn)
    )
