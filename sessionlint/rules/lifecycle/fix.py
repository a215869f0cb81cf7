"""SES101/SES102/SES103's fix: ``s = Session(); ...; s.close()`` becomes
``with Session() as s: ...`` (or, when the name is still read after its ``close()``,
``try: ... finally: s.close()``).

The creating assignment must be a statement of its own (``s = Session()``, or
``conn = await engine.connect()``) and the name must live only in the statements that
follow it in the same block, up to its ``close()``: used through its methods and as
a call argument, never rebound, returned, stored, aliased or captured by a nested
function, and not read after the block. Those statements become the ``with`` body
and the ``close()`` goes.

Safe when that ``close()`` ends the wrapped statements and nothing inside leaves them
early (``return``, ``break``, ``continue``, ``raise``, ``yield``): the session is then
closed exactly where it was, and also when an exception escapes, which is the leak
being fixed. Otherwise unsafe: a ``return`` inside the block now closes the session
before the caller uses what it returned (detached ORM objects, a closed result).
"""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from sessionlint.analysis.calls import statement_call
from sessionlint.analysis.walk import children, walk, walk_scope
from sessionlint.rules.base import FixSpec

_EXITS = (cst.Return, cst.Break, cst.Continue, cst.Raise, cst.Yield)


def with_fix(fn: cst.FunctionDef, call: cst.Call, var: str, is_async: bool, certain: bool = True) -> FixSpec | None:
    """``certain``: the call is known from code to make a session or connection (not
    only from its name or use), so it is a context manager; else the fix is unsafe."""
    found = _find_assignment(fn.body, call, var)
    if found is None:
        return None
    block, index = found
    statement = block.body[index]
    assert isinstance(statement, cst.SimpleStatementLine)
    if is_async and fn.asynchronous is None:
        return None
    rest = list(block.body[index + 1 :])
    close = next((k for k, s in enumerate(rest) if _is_close(s, var)), None)
    inside, after = (rest[:close], rest[close + 1 :]) if close is not None else (rest, [])
    if not inside:
        return None
    if not all(_only_used(s, var) for s in inside):
        return None
    linear = not any(_exits(s) for s in inside) and not any(_closes(s, var) for s in inside)
    # The name lives only in the creating statement and the wrapped ones; or also
    # after its ``close()`` in the same block (``s.close(); log(s.info)``), where
    # a ``with`` would not reach but a ``try``/``finally`` keeps the same order.
    allowed: set[int] = set()
    for part in (statement, *inside, *([rest[close]] if close is not None else [])):
        allowed.update(id(n) for n in walk(part))
    outside = [n for n in walk(fn) if isinstance(n, cst.Name) and n.value == var and id(n) not in allowed]
    if outside:
        if close is None:
            return None
        later = {id(n) for part in after for n in walk(part)}
        if not all(id(n) in later for n in outside):
            return None
        return _finally_fix(block, index, inside, rest[close], after, var, linear)
    safe = close is not None and linear and certain
    with_statement = cst.With(
        items=[cst.WithItem(item=call, asname=cst.AsName(name=cst.Name(var)))],
        body=cst.IndentedBlock(body=inside, header=statement.trailing_whitespace),
        asynchronous=cst.Asynchronous() if is_async else None,
        leading_lines=statement.leading_lines,
    )
    new_block = block.with_changes(body=[*block.body[:index], with_statement, *after])
    keyword = "async with" if is_async else "with"
    code = cst.Module([]).code_for_node(call)
    return FixSpec(f"use `{keyword} {code} as {var}:`", block, new_block, "safe" if safe else "unsafe")


def _finally_fix(
    block: cst.IndentedBlock,
    index: int,
    inside: list[cst.BaseStatement],
    close: cst.BaseStatement,
    after: list[cst.BaseStatement],
    var: str,
    safe: bool,
) -> FixSpec:
    """``var = make(); work; var.close()`` becomes ``var = make(); try: work finally:
    var.close()``: the same ``close()``, now also reached when the work raises."""
    assert isinstance(close, cst.SimpleStatementLine)
    statement = cst.Try(
        body=cst.IndentedBlock(body=inside),
        finalbody=cst.Finally(body=cst.IndentedBlock(body=[close.with_changes(leading_lines=())])),
    )
    new_block = block.with_changes(body=[*block.body[: index + 1], statement, *after])
    return FixSpec(f"close `{var}` in a `finally` block", block, new_block, "safe" if safe else "unsafe")


def _find_assignment(
    block: cst.BaseSuite, call: cst.Call, var: str
) -> tuple[cst.IndentedBlock, int] | None:
    """The block and position of ``var = call`` (or ``var = await call``)."""
    if not isinstance(block, cst.IndentedBlock):
        return None
    for i, statement in enumerate(block.body):
        if isinstance(statement, cst.SimpleStatementLine):
            if len(statement.body) == 1 and _assigns(statement.body[0], call, var):
                return block, i
            continue
        for inner in _blocks(statement):
            found = _find_assignment(inner, call, var)
            if found is not None:
                return found
    return None


def _assigns(small: cst.BaseSmallStatement, call: cst.Call, var: str) -> bool:
    if not isinstance(small, cst.Assign) or len(small.targets) != 1:
        return False
    target = small.targets[0].target
    value = small.value.expression if isinstance(small.value, cst.Await) else small.value
    return isinstance(target, cst.Name) and target.value == var and value is call


def _blocks(statement: cst.BaseStatement) -> Iterator[cst.BaseSuite]:
    """The suites directly inside a compound statement (not nested defs or classes)."""
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return
    for attr in ("body", "orelse", "finalbody"):
        part = getattr(statement, attr, None)
        if isinstance(part, cst.BaseSuite):
            yield part
        elif isinstance(part, (cst.Else, cst.Finally, cst.If)):
            yield from _blocks(part) if isinstance(part, cst.If) else (part.body,)
    for handler in getattr(statement, "handlers", ()):
        yield handler.body


def _closes_it(call: cst.Call | None, var: str) -> bool:
    """``call`` is ``var.close()``."""
    return (
        call is not None
        and not call.args
        and isinstance(call.func, cst.Attribute)
        and call.func.attr.value == "close"
        and isinstance(call.func.value, cst.Name)
        and call.func.value.value == var
    )


def _is_close(statement: cst.BaseStatement, var: str) -> bool:
    """``var.close()`` (or ``await var.close()``) as a statement of its own."""
    return _closes_it(statement_call(statement), var)


def _only_used(statement: cst.CSTNode, var: str) -> bool:
    """``var`` read only as ``var.attr`` or as a call argument, and no nested def."""
    parents: dict[int, cst.CSTNode] = {}
    for node in walk(statement):
        if isinstance(node, (cst.FunctionDef, cst.Lambda, cst.ClassDef)) and any(
            isinstance(n, cst.Name) and n.value == var for n in walk(node)
        ):
            return False
        for child in children(node):
            parents[id(child)] = node
    for node in walk(statement):
        if isinstance(node, cst.Name) and node.value == var:
            parent = parents.get(id(node))
            if isinstance(parent, cst.Attribute) and parent.value is node:
                continue
            if isinstance(parent, cst.Arg) and parent.value is node and not parent.star:
                continue
            return False
    return True


def _exits(statement: cst.CSTNode) -> bool:
    return any(isinstance(node, _EXITS) for node in (statement, *walk_scope(statement)))


def _closes(statement: cst.CSTNode, var: str) -> bool:
    return any(isinstance(node, cst.Call) and _closes_it(node, var) for node in walk(statement))
