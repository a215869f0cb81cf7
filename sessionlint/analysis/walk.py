"""A read-only walk over LibCST trees.

``CSTNode.visit`` rebuilds every node it passes (it serves transformers too), which
costs more than the rules themselves; reading dataclass fields directly does not.
Whitespace, comments and punctuation are skipped: no rule looks at them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import libcst as cst

_SKIP_FIELDS = frozenset(
    {
        "lpar", "rpar", "leading_lines", "lines_after_decorators", "header", "footer",
        "indent", "comma", "semicolon", "equal", "colon", "dot", "newline",
        "trailing_whitespace", "lbracket", "rbracket", "lbrace", "rbrace", "star",
        "walrus", "first_line", "empty_lines", "arrow", "asynchronous", "operator",
        "whitespace", "posonly_ind",
    }
)
_FIELDS: dict[type[cst.CSTNode], tuple[str, ...]] = {}
# LibCST node classes use ABCMeta, so isinstance() on them is slow; the walk only
# needs "is this value a node?", answered once per type.
_IS_NODE: dict[type, bool] = {}


def _is_node(value: object) -> bool:
    kind = type(value)
    known = _IS_NODE.get(kind)
    if known is None:
        known = _IS_NODE[kind] = issubclass(kind, cst.CSTNode)
    return known


def _fields(cls: type[cst.CSTNode]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in _SKIP_FIELDS and not f.name.startswith("whitespace")
        )
        _FIELDS[cls] = names
    return names


def children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Direct children that can hold code (in field order, close to source order)."""
    for name in _fields(type(node)):
        value = getattr(node, name)
        if _is_node(value):
            yield value  # type: ignore[misc,unused-ignore]
        elif type(value) is list or type(value) is tuple:
            for item in value:  # type: ignore[attr-defined,unused-ignore]
                if _is_node(item):
                    yield item


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """``node`` and every descendant, pre-order."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(children(current))))


SCOPE_NODES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def walk_scope(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Descendants of ``node`` that belong to its own scope (not nested defs/lambdas)."""
    stack = list(reversed(list(children(node))))
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, SCOPE_NODES):
            continue
        stack.extend(reversed(list(children(current))))
