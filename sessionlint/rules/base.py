"""The base every rule derives from: metadata plus ``report``.

A rule declares ``code``, ``name``, ``message`` (a template naming the variable, no
advice), an optional ``hint``, and a docstring with the sections What it does / Why is
this bad? / Example / Use instead. It defines ``visit_<Node>``/``leave_<Node>`` methods
that read facts from ``self.ctx`` (the analysis layer) and call ``self.report``. Rules
never format output, read files, or import other rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import libcst as cst

from sessionlint.analysis.context import FileContext


@dataclass(frozen=True, slots=True)
class FixSpec:
    """A fix as a rule states it: replace ``old`` (a node of the module being checked)
    with ``new``. The engine turns it into line edits of the file. ``applicability``
    is ``"safe"`` only when the code's behaviour is provably the same."""

    message: str
    old: cst.CSTNode
    new: cst.CSTNode
    applicability: str = "unsafe"


@dataclass(frozen=True, slots=True)
class Report:
    rule: type[Rule]
    node: cst.CSTNode
    message: str
    fix: FixSpec | None = None


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    message: ClassVar[str]
    hint: ClassVar[str | None] = None
    status: ClassVar[str] = "stable"  # "preview" | "stable" | "removed"
    default_enabled: ClassVar[bool] = True
    kind: ClassVar[str] = "static"  # "static" | "input" | "runtime"
    # Stage 1 for one rule: it cannot report in a file whose bytes hold none of these
    # (empty: no such shortcut). Must be sound: what the rule recognises spells one.
    needs: ClassVar[tuple[bytes, ...]] = ()
    # ... or none of these SQLAlchemy APIs is reachable through the module's names.
    needs_apis: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def may_apply(cls, data: bytes, apis: frozenset[str]) -> bool:
        if not cls.needs and not cls.needs_apis:
            return True
        return any(t in data for t in cls.needs) or not apis.isdisjoint(cls.needs_apis)

    def __init__(self, ctx: FileContext, sink: list[Report]) -> None:
        self.ctx = ctx
        self._sink = sink

    def report(self, node: cst.CSTNode, fix: FixSpec | None = None, **fields: Any) -> None:
        self._sink.append(Report(type(self), node, self.message.format(**fields), fix))

    @classmethod
    def doc(cls) -> str:
        return _dedent(cls.__doc__ or "")

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """``{"What it does": "...", ...}`` parsed from the docstring's ``## `` headings."""
        sections: dict[str, str] = {}
        current = ""
        for line in cls.doc().splitlines():
            match = re.match(r"^##\s+(.*?)\s*$", line)
            if match:
                current = match.group(1)
                sections[current] = ""
            elif current:
                sections[current] += line + "\n"
        return {k: v.strip("\n") for k, v in sections.items()}

    @classmethod
    def summary(cls) -> str:
        what = " ".join(cls.doc_sections().get("What it does", "").split())
        if not what:
            return cls.name
        # The first sentence: a period followed by a space (not `engine.connect()`).
        return re.split(r"(?<=\.)\s", what, maxsplit=1)[0]


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text)


def code_block(section: str) -> str:
    """The first ```python block of a doc section."""
    match = re.search(r"```python\n(.*?)```", section, re.S)
    return match.group(1) if match else ""
