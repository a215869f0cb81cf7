"""Applying fixes: line edits, merged without conflict, re-checked until stable.

A fix is a list of line edits (see :class:`~sessionlint.diagnostics.Edit`). Fixes are
applied in one pass per round, top to bottom; a fix whose lines overlap a fix already
taken in that round waits for the next round, where the file is checked again and
the fix recomputed against the new text (ruff's convention). Rounds stop when no
applicable fix is left, after :data:`MAX_ROUNDS`, or if a round's result would not
compile, which keeps the last good text. No LibCST here.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sessionlint.diagnostics import Diagnostic, Edit, Fix
from sessionlint.sources import PHYSICAL_LINES

MAX_ROUNDS = 10


def compiles(source: str) -> None:
    """Raise SyntaxError (or ValueError) unless ``source`` compiles; warnings such as
    ``'int' object is not callable`` are the code's own business, not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile(source, "<fixed>", "exec", dont_inherit=True)


def line_edits(old: str, new: str) -> tuple[Edit, ...]:
    """The whole-line edits that turn ``old`` into ``new``."""
    before, after = PHYSICAL_LINES.findall(old), PHYSICAL_LINES.findall(new)
    # A fix changes a few lines of a long file: match the common head and tail
    # directly, and diff only what lies between.
    head = 0
    while head < min(len(before), len(after)) and before[head] == after[head]:
        head += 1
    tail = 0
    while tail < min(len(before), len(after)) - head and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    middle_before, middle_after = before[head : len(before) - tail], after[head : len(after) - tail]
    matcher = difflib.SequenceMatcher(None, middle_before, middle_after, autojunk=False)
    edits = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            edits.append(Edit(head + i1 + 1, 1, head + i2 + 1, 1, "".join(middle_after[j1:j2])))
    return tuple(edits)


def _span(fix: Fix) -> tuple[int, int]:
    return min(e.line for e in fix.edits), max(e.end_line for e in fix.edits)


def apply(source: str, fixes: Sequence[Fix]) -> tuple[str, list[Fix]]:
    """``source`` with every fix applied whose lines overlap no fix taken before it
    (in order of position), and the fixes taken."""
    taken: list[Fix] = []
    claimed: list[tuple[int, int]] = []
    for fix in sorted(fixes, key=_span):
        first, last = _span(fix)
        # Lines [first, last), compared closed: fixes that merely touch wait a round
        # too, so that two insertions at one line never land in an arbitrary order.
        if any(first <= b and a <= last for a, b in claimed):
            continue
        taken.append(fix)
        claimed.append((first, last))
    lines = PHYSICAL_LINES.findall(source)
    for edit in sorted((e for fix in taken for e in fix.edits), key=lambda e: e.line, reverse=True):
        lines[edit.line - 1 : edit.end_line - 1] = PHYSICAL_LINES.findall(edit.content)
    return "".join(lines), taken


@dataclass
class Fixed:
    source: str  # the text after every round
    fixed: int  # how many findings' fixes were applied
    diagnostics: list[Diagnostic]  # what the last check reported
    problem: str = ""  # why fixing stopped early, if it did


def fix_source(source: str, check: Callable[[str], list[Diagnostic]], unsafe: bool) -> Fixed:
    """Apply the applicable fixes of ``check(source)`` round by round."""
    fixed = 0
    diagnostics = check(source)
    for _ in range(MAX_ROUNDS):
        fixes = [d.fix for d in diagnostics if d.fix is not None and d.fix.applies(unsafe)]
        if not fixes:
            break
        new, taken = apply(source, fixes)
        try:
            compiles(new)
        except (SyntaxError, ValueError) as exc:
            return Fixed(source, fixed, diagnostics, f"a fix would not compile ({exc}); stopped before it")
        if new == source:
            break
        source, fixed = new, fixed + len(taken)
        diagnostics = check(source)
    return Fixed(source, fixed, diagnostics)
