"""What a name is when the code does not say: the evidence of its name and its use.

The resolver (``scope.py``) asks the code first: a SQLAlchemy constructor, a project
function's return summary, an annotation (``Kind.evidence`` is ``""`` or
``"declared"``: the code says so). When the code is silent, real projects still say
what a name is in two weaker ways, weighed here and nowhere else:

* its **name**: ``product.session_factory()``, ``self.get_sessionmaker()`` call
  something that makes sessions (``Kind.evidence == "name"``);
* its **name and its use**: ``self.db_session.commit()``, a parameter ``session`` on
  which the function calls ``.add()`` and ``.commit()`` (``"use"``).

A name alone never types a session: ``session`` is also an HTTP session, a Flask
session, a requests session. Only names that say "session factory" unmistakably, or a
session-like name on which a method only a database session has is called, do.
Stage 1 (``relevance.py``) keeps the blocks that spell this evidence, with the byte
patterns below.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from sessionlint.analysis.walk import walk, walk_scope

# Evidence strengths, as ``Kind.evidence`` records them.
CODE = ""  # a constructor, a qualified name, a project summary
DECLARED = "declared"  # an annotation
NAMED = "name"
USED = "use"

# Names that say "session factory", for calls whose callee cannot be traced
# (``product.session_factory()``); a getter of one hands out the factory itself
# (``self.get_sessionmaker()``), a setter registers one.
FACTORY_NAME = re.compile(r"^_*(?:\w+_)?(?:session_?factory|session_?maker)$|^Session(?:Local|Factory|Maker)$", re.IGNORECASE)
FACTORY_GETTER = re.compile(r"^_*(?:get|make|create|build|new)_", re.IGNORECASE)
FACTORY_SETTER = re.compile(r"^_*(?:set|register|add|configure|init|install)_", re.IGNORECASE)

# Methods only a SQLAlchemy session (or a DB-API connection, which needs the same
# rollback) has: a name like a session on which one is called is a session.
SESSION_ONLY_METHODS = frozenset({"commit", "flush", "rollback", "query", "add_all", "merge", "expunge", "scalars"})
_SESSION_WORD = r"_*(?:\w+_)?(?:session|sess|db_?session)"
_SESSION_NAME = re.compile(f"^{_SESSION_WORD}$", re.IGNORECASE)

# Byte patterns for stage 1: the file spells a factory name, or a session by its use:
# ``self.<...session...>.commit()``, or ``session.commit()`` where some ``def`` takes a
# session-like parameter without an annotation (an annotated one resolves by its type).
FACTORY_WORDS = re.compile(rb"\b\w*(?:session_?factory|session_?maker)\b|\bSession(?:Local|Factory|Maker)\b", re.IGNORECASE)
_USE_METHODS = rb"\.(?:" + "|".join(sorted(SESSION_ONLY_METHODS)).encode() + rb")\("
SELF_SESSION_USE = re.compile(rb"\bself\.\w*[Ss]ession\w*" + _USE_METHODS)
NAME_SESSION_USE = re.compile(rb"\b" + _SESSION_WORD.encode() + _USE_METHODS, re.IGNORECASE)
UNANNOTATED_SESSION_PARAM = re.compile(
    rb"\bdef\s+\w+\s*\([^)]*?\b" + _SESSION_WORD.encode() + rb"\s*[,)=]", re.IGNORECASE
)


# A ``with`` that lends a session by name: ``async with db.session_context() as
# session:``, ``with get_session() as db_session:``. The callee's name says it hands out
# a session and the block's name says it got one; the session is closed when the block
# ends (so a use after it meets a closed session).
_LENDER_WORD = r"_*(?:\w+_)?session(?:_?(?:context|scope|manager|ctx))?|_*(?:get|new|open|make|create|start)_(?:\w+_)?session"
LENDER_NAME = re.compile(f"^(?:{_LENDER_WORD})$", re.IGNORECASE)
LENT_SESSION = re.compile(
    rb"\bwith\s+(?:await\s+)?(?:[\w.]*\.)?(?:" + _LENDER_WORD.encode() + rb")\([^()\n]*\)\s+as\s+" + _SESSION_WORD.encode() + rb"\s*:",
    re.IGNORECASE,
)


def lends_session(callee: str, asname: str) -> bool:
    """Whether ``with <...>.<callee>(...) as <asname>:`` lends a session by its names."""
    return LENDER_NAME.match(callee) is not None and _SESSION_NAME.match(asname) is not None


def spells_session_use(data: bytes) -> bool:
    """Whether the source ``data`` may hold a session known only by its use."""
    if SELF_SESSION_USE.search(data) is not None:
        return True
    return NAME_SESSION_USE.search(data) is not None and UNANNOTATED_SESSION_PARAM.search(data) is not None


def factory_call(name: str) -> str | None:
    """What calling something named ``name`` (not traceable) returns, by its name:
    ``"factory"`` for a getter of a factory, ``"session"`` for a factory, else None."""
    if not FACTORY_NAME.match(name) or FACTORY_SETTER.match(name):
        return None
    return "factory" if FACTORY_GETTER.match(name) else "session"


def session_attrs_by_use(cls: cst.ClassDef) -> Iterator[str]:
    """``self.<attr>`` named like a session (``session``, ``db_session``,
    ``get_session``) on which a method of ``cls`` calls ``commit()``, ``flush()``,
    ``query()``..."""
    seen: set[str] = set()
    for node in walk(cls):
        if not (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)):
            continue
        if node.func.attr.value not in SESSION_ONLY_METHODS:
            continue
        holder = node.func.value
        if (
            isinstance(holder, cst.Attribute)
            and isinstance(holder.value, cst.Name)
            and holder.value.value == "self"
            and "session" in holder.attr.value.lower()
            and holder.attr.value not in seen
        ):
            seen.add(holder.attr.value)
            yield holder.attr.value


def param_used_as_session(fn: cst.FunctionDef, name: str) -> bool:
    """Whether the unannotated parameter ``name`` of ``fn`` is a session by its name
    (``session``, ``db_session``, ``sess``) and its use: ``fn`` itself calls one of
    :data:`SESSION_ONLY_METHODS` on it."""
    if not _SESSION_NAME.match(name):
        return False
    for node in walk_scope(fn.body):
        if (
            type(node) is cst.Call
            and type(node.func) is cst.Attribute
            and node.func.attr.value in SESSION_ONLY_METHODS
            and type(node.func.value) is cst.Name
            and node.func.value.value == name
        ):
            return True
    return False
