"""Every call of a module with the scope it runs in, and small expression helpers.

Rules see nodes one at a time, without parents; several facts (thread hand-offs,
``create_engine`` calls) need to know which function a call belongs to, whether it
runs at import time, and what surrounds it. One walk per file answers that for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libcst as cst

from sessionlint.analysis.walk import ScopeNode, children, walk_scope


@dataclass(frozen=True, slots=True)
class ScopedCall:
    """A call and the function (or lambda, or module) it runs in."""

    call: cst.Call
    scope: ScopeNode
    in_class_body: bool  # directly in a class body (runs when the class is defined)


@dataclass
class CallIndex:
    calls: list[ScopedCall]
    parent: dict[int, cst.CSTNode]  # id(node) -> parent node
    # id(function or lambda) -> (the scope it is written in, the class it is part of)
    scope_parents: dict[int, tuple[ScopeNode, cst.ClassDef | None]]

    def parent_of(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.parent.get(id(node))


T = TypeVar("T")

# Facts computed once per parsed module and shared by the rules checking it. LibCST
# nodes cannot be weakly referenced, so the cache keeps the few most recent modules
# (the engine checks one file at a time) and checks identity, not just ``id()``.
_PER_MODULE: dict[tuple[int, str], tuple[cst.Module, object]] = {}
_PER_MODULE_LIMIT = 32


def forget() -> None:
    """Drop the per-module facts (the engine calls this after each file)."""
    _PER_MODULE.clear()


def per_module(module: cst.Module, key: str, build: Callable[[], T]) -> T:
    """``build()`` once per (parsed module, key)."""
    slot = (id(module), key)
    found = _PER_MODULE.get(slot)
    if found is not None and found[0] is module:
        return found[1]  # type: ignore[return-value]
    value = build()
    if len(_PER_MODULE) >= _PER_MODULE_LIMIT:
        _PER_MODULE.pop(next(iter(_PER_MODULE)))
    _PER_MODULE[slot] = (module, value)
    return value


def call_index(module: cst.Module) -> CallIndex:
    """All calls of ``module`` (pre-order), computed once per parsed module."""
    return per_module(module, "calls", lambda: _build(module))


def _build(module: cst.Module) -> CallIndex:
    calls: list[ScopedCall] = []
    parent: dict[int, cst.CSTNode] = {}
    scope_parents: dict[int, tuple[ScopeNode, cst.ClassDef | None]] = {}
    call_type, class_type, function_types = cst.Call, cst.ClassDef, (cst.FunctionDef, cst.Lambda)
    # (node, scope its calls run in, directly in a class body, the function or lambda it
    # is part of (decorators and defaults included), the class it is part of)
    stack: list[tuple[cst.CSTNode, ScopeNode, bool, ScopeNode, cst.ClassDef | None]] = [
        (module, module, False, module, None)
    ]
    while stack:
        node, scope, in_class, owner, klass = stack.pop()
        kind = type(node)  # exact types: LibCST's node classes are final
        body = None
        if kind is call_type:
            calls.append(ScopedCall(node, scope, in_class))  # type: ignore[arg-type]
        elif kind in function_types:
            scope_parents[id(node)] = (owner, klass)
            body = node.body  # type: ignore[attr-defined]
            owner, klass = node, None  # type: ignore[assignment]
        elif kind is class_type:
            body = node.body  # type: ignore[attr-defined]
            klass = node  # type: ignore[assignment]
        for child in reversed(children(node)):
            parent[id(child)] = node
            if body is not None and child is body:
                if kind is class_type:
                    stack.append((child, scope, True, owner, klass))
                else:
                    stack.append((child, node, False, owner, klass))  # type: ignore[arg-type]
            else:
                stack.append((child, scope, in_class, owner, klass))
    return CallIndex(calls, parent, scope_parents)


def int_value(expr: cst.BaseExpression | None) -> int | None:
    """An integer constant: ``3600``, ``-1``, ``8 * 3600``, ``(60 * 60)``."""
    if isinstance(expr, cst.Integer):
        return int(expr.value.replace("_", ""), 0)
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        inner = int_value(expr.expression)
        return -inner if inner is not None else None
    if isinstance(expr, cst.BinaryOperation):
        left, right = int_value(expr.left), int_value(expr.right)
        if left is None or right is None:
            return None
        if isinstance(expr.operator, cst.Multiply):
            return left * right
        if isinstance(expr.operator, cst.Add):
            return left + right
        if isinstance(expr.operator, cst.Subtract):
            return left - right
    return None


def keyword_args(call: cst.Call) -> dict[str, cst.BaseExpression]:
    return {arg.keyword.value: arg.value for arg in call.args if arg.keyword is not None}


def positional_args(call: cst.Call) -> list[cst.Arg]:
    """Positional arguments up to the first ``*args`` (whose length is unknown)."""
    out: list[cst.Arg] = []
    for arg in call.args:
        if arg.keyword is not None or arg.star:
            break
        out.append(arg)
    return out


def has_star(call: cst.Call, star: str) -> bool:
    return any(arg.star == star for arg in call.args)


def is_read(index: CallIndex, node: cst.Name) -> bool:
    """Whether a Name node reads a variable (not an attribute, keyword or binding)."""
    parent = index.parent_of(node)
    if isinstance(parent, cst.Attribute):
        return parent.value is node
    if isinstance(parent, cst.Arg):
        return parent.value is node
    if isinstance(parent, (cst.AssignTarget, cst.AsName, cst.Param, cst.NameItem, cst.ImportAlias)):
        return False
    if isinstance(parent, (cst.FunctionDef, cst.ClassDef)) and parent.name is node:
        return False
    if isinstance(parent, (cst.AnnAssign, cst.AugAssign)) and parent.target is node:
        return False
    if isinstance(parent, (cst.For, cst.CompFor)) and parent.target is node:
        return False
    return True


def module_assignments(module: cst.Module) -> dict[str, list[cst.BaseExpression]]:
    """Values assigned to each module-level name (top level and if/try/with blocks)."""
    return per_module(module, "assignments", lambda: _module_assignments(module))


def _module_assignments(module: cst.Module) -> dict[str, list[cst.BaseExpression]]:
    out: dict[str, list[cst.BaseExpression]] = {}
    for node in walk_scope(module):
        if isinstance(node, cst.Assign):
            for target in node.targets:
                if isinstance(target.target, cst.Name):
                    out.setdefault(target.target.value, []).append(node.value)
        elif isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name) and node.value is not None:
            out.setdefault(node.target.value, []).append(node.value)
        elif isinstance(node, cst.AugAssign) and isinstance(node.target, cst.Name):
            out.setdefault(node.target.value, []).append(node.value)
    return out


def statement_call(statement: cst.BaseStatement) -> cst.Call | None:
    """The call a statement of its own consists of (``x.close()``, ``await x.close()``)."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return None
    small = statement.body[0]
    if not isinstance(small, cst.Expr):
        return None
    value = small.value.expression if isinstance(small.value, cst.Await) else small.value
    return value if isinstance(value, cst.Call) else None
