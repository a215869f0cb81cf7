"""A read-only walk over LibCST trees.

``CSTNode.visit`` rebuilds every node it passes (it serves transformers too), which
costs more than the rules themselves; reading dataclass fields directly does not.
Whitespace, comments and punctuation are skipped: no rule looks at them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Union

import libcst as cst

# What owns a scope of names: the module, a def, a lambda.
ScopeNode = Union[cst.Module, cst.FunctionDef, cst.Lambda]

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


# Per-file memo of the read-only walks: several analyses walk the same function, and
# a node's children never change. Entries keep their node, so an ``id`` reused by a
# later object is never mistaken for it; :func:`forget` drops a finished file's trees.
_CHILDREN: dict[int, tuple[cst.CSTNode, tuple[cst.CSTNode, ...]]] = {}
_SCOPES: dict[int, tuple[cst.CSTNode, tuple[cst.CSTNode, ...]]] = {}


def forget() -> None:
    """Drop the memo (the engine calls this after each file)."""
    _CHILDREN.clear()
    _SCOPES.clear()
    _OF_TYPE.clear()


def children(node: cst.CSTNode) -> tuple[cst.CSTNode, ...]:
    """Direct children that can hold code (in field order, close to source order)."""
    entry = _CHILDREN.get(id(node))
    if entry is not None and entry[0] is node:
        return entry[1]
    out: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name)
        if _is_node(value):
            out.append(value)
        elif type(value) is list or type(value) is tuple:
            for item in value:  # type: ignore[attr-defined,unused-ignore]
                if _is_node(item):
                    out.append(item)
    kids = tuple(out)
    _CHILDREN[id(node)] = (node, kids)
    return kids


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """``node`` and every descendant, pre-order."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


SCOPE_NODES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)
# LibCST's node classes are final: an exact type test is an isinstance() test, minus
# the ABCMeta dispatch that makes isinstance() slow on them.
_SCOPE_TYPES = frozenset(SCOPE_NODES)


def walk_scope(node: cst.CSTNode) -> tuple[cst.CSTNode, ...]:
    """Descendants of ``node`` that belong to its own scope (not nested defs/lambdas),
    pre-order."""
    entry = _SCOPES.get(id(node))
    if entry is not None and entry[0] is node:
        return entry[1]
    out: list[cst.CSTNode] = []
    stack = list(reversed(children(node)))
    scope_types = _SCOPE_TYPES
    while stack:
        current = stack.pop()
        out.append(current)
        if type(current) in scope_types:
            continue
        stack.extend(reversed(children(current)))
    found = tuple(out)
    _SCOPES[id(node)] = (node, found)
    return found


_OF_TYPE: dict[tuple[int, object], tuple[cst.CSTNode, list[cst.CSTNode]]] = {}


def scope_nodes_of(node: cst.CSTNode, *types: type[cst.CSTNode]) -> list[cst.CSTNode]:
    """The nodes of :func:`walk_scope` whose type is one of ``types`` (concrete node
    classes), in walk order."""
    key = (id(node), types)
    entry = _OF_TYPE.get(key)
    if entry is not None and entry[0] is node:
        return entry[1]
    wanted = frozenset(types)
    found = [sub for sub in walk_scope(node) if type(sub) in wanted]
    _OF_TYPE[key] = (node, found)
    return found
