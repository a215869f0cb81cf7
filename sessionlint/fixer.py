"""``--fix`` and ``--diff``: fix the files that have applicable fixes, round by round.

Each file with a fix the run may apply is fixed with :func:`sessionlint.fixes.fix_source`,
checking it again after every round against one project index (so names still
resolve across modules) with the run's selection, ``# noqa`` and baseline. ``--fix``
writes the result through :func:`sessionlint.rewrite.rewrite_file`; ``--diff`` only
prints it as a unified diff.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sessionlint.config import Settings
from sessionlint.diagnostics import Diagnostic
from sessionlint.fixes import Fixed, fix_source
from sessionlint.rewrite import rewrite_file
from sessionlint.sources import SourceError, read_source

if TYPE_CHECKING:
    from sessionlint.baseline import Baseline

_INPUT_ERRORS = frozenset({"SES001", "SES002"})


@dataclass(frozen=True)
class FixRequest:
    settings: Settings
    baseline: Baseline | None  # as loaded by the run (its entries; each check takes a fresh copy)
    baseline_dir: Path | None  # the directory its paths are relative to
    unsafe: bool
    write: bool  # --fix (else --diff)
    sources: dict[str, str] = field(default_factory=dict)  # text already read (stdin)


@dataclass
class FixOutcome:
    diagnostics: list[Diagnostic]  # what is left to report, every file
    diff: str = ""
    errors: list[str] = field(default_factory=list)
    summary: str = ""


def run_fixes(request: FixRequest, diagnostics: list[Diagnostic], checked: list[str]) -> FixOutcome:
    from sessionlint.engine import Checker
    from sessionlint.runner import build_index

    wanted = sorted({d.path for d in diagnostics if d.fix is not None and d.fix.applies(request.unsafe)})
    outcome = FixOutcome([d for d in diagnostics if d.path not in wanted])
    if not wanted:
        outcome.summary = _summary(request, 0, 0, outcome.diagnostics)
        return outcome
    checker = Checker(request.settings, build_index(request.settings, checked))
    fixed_findings = fixed_files = 0
    for path in wanted:
        index_path = os.path.abspath(path) if path != "-" else None
        before = [d for d in diagnostics if d.path == path]

        def check(text: str, path: str = path, index_path: str | None = index_path) -> list[Diagnostic]:
            found = checker.check_source(text, path, index_path=index_path).diagnostics
            return _without_baselined(request, found, path, text)

        if request.write:
            result: list[Fixed] = []

            def transform(text: str, check: Callable[[str], list[Diagnostic]] = check, result: list[Fixed] = result) -> str:
                result.append(fix_source(text, check, request.unsafe))
                return result[-1].source

            done = rewrite_file(path, transform)
            if done.problem or not result:
                outcome.errors.append(f"sessionlint: {path}: {done.problem}")
                outcome.diagnostics.extend(before)
                continue
            fixed = result[-1]
        else:
            try:
                original = request.sources[path] if path in request.sources else read_source(path)
            except SourceError as exc:
                outcome.errors.append(f"sessionlint: {path}: cannot read: {exc}")
                continue
            fixed = fix_source(original, check, request.unsafe)
            outcome.diff += "".join(
                difflib.unified_diff(
                    original.splitlines(keepends=True), fixed.source.splitlines(keepends=True), f"a/{path}", f"b/{path}"
                )
            )
        if fixed.problem:
            outcome.errors.append(f"sessionlint: {path}: {fixed.problem}")
        if fixed.fixed:
            fixed_findings += fixed.fixed
            fixed_files += 1
        outcome.diagnostics.extend(fixed.diagnostics)
    outcome.diagnostics.sort(key=lambda d: (d.path, d.line, d.column, d.code))
    outcome.summary = _summary(request, fixed_findings, fixed_files, outcome.diagnostics)
    return outcome


def _without_baselined(request: FixRequest, found: list[Diagnostic], path: str, text: str) -> list[Diagnostic]:
    if request.baseline is None or request.baseline_dir is None:
        return found
    from sessionlint.baseline import fingerprinted, relative

    base = request.baseline_dir
    return request.baseline.for_paths({relative(path, base)}).filter(fingerprinted(found, base, {path: text}))[0]


def _summary(request: FixRequest, findings: int, files: int, left: list[Diagnostic]) -> str:
    verb = "fixed" if request.write else "would fix"
    remaining = sum(1 for d in left if d.code not in _INPUT_ERRORS)
    text = f"sessionlint: {verb} {findings} finding{'s' * (findings != 1)} in {files} file{'s' * (files != 1)}"
    text += f", {remaining} remaining" if request.write else ""
    hidden = sum(1 for d in left if d.fix is not None and not d.fix.applies(request.unsafe))
    if hidden:
        text += f" ({hidden} more with --unsafe-fixes)"
    return text
