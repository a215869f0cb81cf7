"""The engines family's fixes: SES502's `pool_recycle`/`pool_pre_ping`, SES501's hoisted engine."""

from __future__ import annotations

import libcst as cst

from sessionlint.analysis.calls import module_assignments
from sessionlint.analysis.scope import Resolver
from sessionlint.analysis.walk import walk
from sessionlint.rules.base import FixSpec

# Below every common ``wait_timeout`` (MySQL's default is 8 h; managed servers often
# use less), and the value SQLAlchemy's MySQL documentation uses.
RECYCLE_SECONDS = 3600


def recycle_fix(call: cst.Call, keywords: dict[str, cst.BaseExpression]) -> FixSpec | None:
    """Add ``pool_recycle=3600`` (and ``pool_pre_ping=True`` when missing): safe, it
    only replaces connections before the server drops them. A literal ``pool_recycle``
    at or above ``wait_timeout`` (or ``-1``) is lowered: unsafe, a deliberate value
    is changed. Any other value (a name, an expression) is left to the user."""
    args = list(call.args)
    recycle = keywords.get("pool_recycle")
    added: list[tuple[str, cst.BaseExpression]]
    if recycle is None:
        applicability = "safe"
        added = [("pool_recycle", cst.Integer(str(RECYCLE_SECONDS)))]
    else:
        if not _int_literal(recycle):
            return None
        applicability = "unsafe"
        args = [
            a.with_changes(value=cst.Integer(str(RECYCLE_SECONDS))) if a.keyword is not None and a.keyword.value == "pool_recycle" else a
            for a in args
        ]
        added = []
    if "pool_pre_ping" not in keywords:
        added.append(("pool_pre_ping", cst.Name("True")))
    what = " and ".join(f"`{k}={cst.Module([]).code_for_node(v)}`" for k, v in added)
    message = f"add {what}" if recycle is None else f"set `pool_recycle={RECYCLE_SECONDS}`" + (f", add {what}" if added else "")
    return FixSpec(message, call, call.with_changes(args=_append_keywords(call, args, added)), applicability)


def _int_literal(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        expr = expr.expression
    return isinstance(expr, cst.Integer)


def _append_keywords(call: cst.Call, args: list[cst.Arg], added: list[tuple[str, cst.BaseExpression]]) -> list[cst.Arg]:
    """``args`` plus ``name=value`` keywords, laid out like the existing arguments: on
    one line, or one per line when the call has a trailing comma."""
    if not added:
        return args
    equal = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))
    new = [cst.Arg(value=value, keyword=cst.Name(name), equal=equal) for name, value in added]
    last = args[-1]
    if isinstance(last.comma, cst.Comma):
        # A trailing comma: the new arguments take the separator between the existing
        # ones (or the one before the first), and the last keeps the trailing comma.
        between = args[-2].comma if len(args) > 1 and isinstance(args[-2].comma, cst.Comma) else cst.Comma(
            whitespace_after=call.whitespace_before_args
        )
        args[-1] = last.with_changes(comma=between)
        new = [arg.with_changes(comma=between) for arg in new[:-1]] + [new[-1].with_changes(comma=last.comma)]
    else:
        # On the last argument's line; what followed it (a comment, the line break
        # before the closing parenthesis) now follows the new last argument.
        space = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        args[-1] = last.with_changes(comma=space, whitespace_after_arg=cst.SimpleWhitespace(""))
        new = [arg.with_changes(comma=space) for arg in new[:-1]] + [new[-1].with_changes(whitespace_after_arg=last.whitespace_after_arg)]
    return [*args, *new]


def hoist_fix(resolver: Resolver, fn: cst.FunctionDef, call: cst.Call, var: str) -> FixSpec | None:
    """SES501: ``var = create_engine(<constants>)`` in a top-level function moves to
    module level, just above the function, so one engine serves every call. Only when
    the arguments are literals or names the module binds once above that point, the
    function binds ``var`` nowhere else, and the module does not bind ``var`` itself.
    Unsafe: the engine is now built at import time, and shared."""
    module = resolver.module
    at = next((i for i, s in enumerate(module.body) if s is fn), None)
    body = fn.body
    if at is None or not var or not isinstance(body, cst.IndentedBlock):
        return None
    position = next(
        (i for i, s in enumerate(body.body) if isinstance(s, cst.SimpleStatementLine) and len(s.body) == 1
         and isinstance(s.body[0], cst.Assign) and s.body[0].value is call),
        None,
    )
    if position is None or len(body.body) == 1:
        return None
    statement = body.body[position]
    assert isinstance(statement, cst.SimpleStatementLine)
    facts = resolver.facts  # what the module binds at its top level, from the project index
    if facts.star_imports or any(var in names for names in (facts.imports, facts.values, facts.classes, facts.functions)):
        return None
    if var in _bound_in(fn, skip=statement):
        return None
    bound_above = _bound_once_above(module, at)
    for arg in call.args:
        if arg.star or not _constant(arg.value, bound_above):
            return None
    hoisted = statement.with_changes(leading_lines=())
    new_fn = fn.with_changes(body=body.with_changes(body=[*body.body[:position], *body.body[position + 1 :]]))
    # The blank lines above the function now separate the engine from what precedes
    # it; comments above the function stay with the function.
    lines = list(fn.leading_lines)
    blanks = 0
    while blanks < len(lines) and lines[blanks].comment is None:
        blanks += 1
    moved = list(module.body)
    moved[at] = new_fn.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine(), *lines[blanks:]])
    moved.insert(at, hoisted.with_changes(leading_lines=lines[:blanks]))
    return FixSpec(f"create `{var}` once, at module level", module, module.with_changes(body=moved))


def _constant(expr: cst.BaseExpression, names: set[str]) -> bool:
    if isinstance(expr, (cst.SimpleString, cst.Integer, cst.Float)):
        return True
    if isinstance(expr, cst.Name):
        return expr.value in ("True", "False", "None") or expr.value in names
    if isinstance(expr, cst.UnaryOperation):
        return _constant(expr.expression, names)
    return False


def _bound_once_above(module: cst.Module, at: int) -> set[str]:
    """Names the module assigns exactly once, by a top-level statement above ``at``."""
    above = {
        id(small.value)
        for statement in module.body[:at]
        if isinstance(statement, cst.SimpleStatementLine)
        for small in statement.body
        if isinstance(small, (cst.Assign, cst.AnnAssign))
    }
    return {name for name, values in module_assignments(module).items() if len(values) == 1 and id(values[0]) in above}


def _bound_in(fn: cst.FunctionDef, skip: cst.CSTNode) -> set[str]:
    """Names ``fn`` binds (parameters, assignments, loop and ``with`` targets...)
    anywhere but in ``skip``."""
    names = {p.name.value for p in (*fn.params.params, *fn.params.posonly_params, *fn.params.kwonly_params)}
    skipped = {id(n) for n in walk(skip)}
    for node in walk(fn.body):
        if id(node) in skipped:
            continue
        if isinstance(node, (cst.AssignTarget, cst.AugAssign, cst.AnnAssign, cst.For, cst.AsName, cst.NamedExpr)):
            target = getattr(node, "target", None) or getattr(node, "name", None)
            for sub in walk(target) if target is not None else ():
                if isinstance(sub, cst.Name):
                    names.add(sub.value)
        elif isinstance(node, (cst.Global, cst.Nonlocal)):
            names.update(n.name.value for n in node.names)
    return names
