"""SES302's fix: the success-path ``remove()`` moves into a ``finally``."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.calls import statement_call
from sessionlint.rules.base import FixSpec


def finally_fix(fn: cst.FunctionDef, call: cst.Call) -> FixSpec | None:
    """``work(); registry.remove(); return x`` becomes ``try: work() finally:
    registry.remove()`` then ``return x``, when the ``remove()`` is a statement of the
    function's own body (not nested in a branch or loop). Unsafe: the registry is now
    also removed when the work raises, and on early returns, which is the point, but
    not what the code did."""
    body = fn.body
    if not isinstance(body, cst.IndentedBlock):
        return None
    at = next((i for i, s in enumerate(body.body) if statement_call(s) is call), None)
    if at is None:
        return None
    start = 1 if at > 0 and _is_docstring(body.body[0]) else 0
    work = list(body.body[start:at])
    if not work:
        return None
    remove = body.body[at]
    assert isinstance(remove, cst.SimpleStatementLine)
    first = work[0]
    leading = first.leading_lines if isinstance(first, (cst.SimpleStatementLine, cst.BaseCompoundStatement)) else ()
    if leading:
        work[0] = first.with_changes(leading_lines=())
    statement = cst.Try(
        body=cst.IndentedBlock(body=work),
        finalbody=cst.Finally(body=cst.IndentedBlock(body=[remove.with_changes(leading_lines=())])),
        leading_lines=leading,
    )
    new_body = body.with_changes(body=[*body.body[:start], statement, *body.body[at + 1 :]])
    return FixSpec("move `remove()` into a `finally` block", body, new_body)


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )
