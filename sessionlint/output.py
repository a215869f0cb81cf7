"""Formatting diagnostics: one function per ``--format``."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sessionlint import __version__
from sessionlint.diagnostics import Diagnostic

if TYPE_CHECKING:
    from sessionlint.rules.base import Rule


def text(diagnostics: Sequence[Diagnostic], unsafe_fixes: bool = False) -> str:
    """``path:line:col: CODE message``, with ``[*]`` after the code when ``--fix``
    would fix it (a safe fix, or an unsafe one under ``--unsafe-fixes``)."""
    return "".join(
        f"{d.path}:{d.line}:{d.column}: {d.code} {'[*] ' if d.fix is not None and d.fix.applies(unsafe_fixes) else ''}{d.message}\n"
        for d in diagnostics
    )


def fix_summary(diagnostics: Sequence[Diagnostic], unsafe_fixes: bool) -> str:
    """What ``--fix`` could do with these findings, for the end of a text report."""
    safe = sum(1 for d in diagnostics if d.fix is not None and d.fix.applies(unsafe_fixes))
    hidden = sum(1 for d in diagnostics if d.fix is not None and not d.fix.applies(unsafe_fixes))
    parts = []
    if safe:
        parts.append(f"[*] {safe} fixable with --fix" + (" --unsafe-fixes" if unsafe_fixes else ""))
    if hidden:
        parts.append(f"{hidden} more with --fix --unsafe-fixes")
    return f"sessionlint: {'; '.join(parts)}" if parts else ""


def json_format(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([d.as_dict() for d in diagnostics], indent=2) + "\n"


def statistics(diagnostics: Sequence[Diagnostic]) -> str:
    counts = Counter((d.code, d.name) for d in diagnostics)
    return "".join(f"{n:<5} {code} {name}\n" for (code, name), n in sorted(counts.items()))


# -- SARIF 2.1.0 ----------------------------------------------------------------------

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_SRCROOT = "%SRCROOT%"


def level(code: str) -> str:
    """SARIF level of a code: input errors and stable rules fail the run; preview warns."""
    from sessionlint import registry

    rule = registry.rules().get(code)
    if rule is None or rule.kind == "input" or rule.status == "stable":
        return "error"
    return "warning"


def _relative(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` with forward slashes, or None if it lies outside."""
    if path == "-":
        return path
    try:
        rel = os.path.relpath(os.path.abspath(path), base)
    except ValueError:  # another drive on Windows
        return None
    if rel == ".." or rel.startswith(".." + os.sep):
        return None
    return rel.replace(os.sep, "/")


def _rule_descriptor(rule: type[Rule]) -> dict[str, object]:
    sections = rule.doc_sections()
    what = " ".join(sections.get("What it does", "").split())
    why = " ".join(sections.get("Why is this bad?", "").split())
    full = " ".join(part for part in (what, why) if part) or rule.summary()
    doc = rule.doc()
    descriptor: dict[str, object] = {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary()},
        "fullDescription": {"text": full},
        "help": {"text": doc or rule.summary(), "markdown": doc or rule.summary()},
        "defaultConfiguration": {"enabled": rule.default_enabled, "level": level(rule.code)},
        "properties": {"tags": ["sqlalchemy", rule.kind], "status": rule.status},
    }
    return descriptor


def sarif(diagnostics: Sequence[Diagnostic], base_dir: str | None = None) -> str:
    """A SARIF 2.1.0 log of one run, for code-scanning dashboards.

    Artifact URIs are relative to ``base_dir`` (default: the working directory, which
    in CI is the repository checkout) under the ``%SRCROOT%`` base id; a file outside
    it gets an absolute ``file:`` URI. Columns count Unicode code points, as sessionlint's
    do, and ``endColumn`` is the column just past the reported node (SARIF's convention).
    """
    from sessionlint import registry

    base = os.path.abspath(base_dir or os.getcwd())
    rules = [r for r in registry.rules().values() if r.status != "removed"]
    index = {r.code: i for i, r in enumerate(rules)}
    results: list[dict[str, object]] = []
    for d in diagnostics:
        rel = _relative(d.path, base)
        location: dict[str, object]
        if rel is None:
            location = {"uri": Path(os.path.abspath(d.path)).as_uri()}
        else:
            location = {"uri": quote(rel), "uriBaseId": _SRCROOT}
        end_line = d.end_line or d.line
        end_column = d.end_column or d.column
        if (end_line, end_column) < (d.line, d.column):
            end_line, end_column = d.line, d.column
        text = d.message if not d.hint else f"{d.message} ({d.hint})"
        result: dict[str, object] = {
            "ruleId": d.code,
            "level": level(d.code),
            "message": {"text": text},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": location,
                        "region": {
                            "startLine": d.line,
                            "startColumn": d.column,
                            "endLine": end_line,
                            "endColumn": end_column,
                        },
                    }
                }
            ],
        }
        if d.code in index:
            result["ruleIndex"] = index[d.code]
        if d.fix is not None:
            replacements = [
                {
                    "deletedRegion": {"startLine": e.line, "startColumn": e.column, "endLine": e.end_line, "endColumn": e.end_column},
                    "insertedContent": {"text": e.content},
                }
                for e in d.fix.edits
            ]
            result["fixes"] = [
                {
                    "description": {"text": f"{d.fix.message} ({d.fix.applicability})"},
                    "artifactChanges": [{"artifactLocation": location, "replacements": replacements}],
                }
            ]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sessionlint",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": [_rule_descriptor(r) for r in rules],
                    }
                },
                "originalUriBaseIds": {_SRCROOT: {"uri": Path(base).as_uri().rstrip("/") + "/"}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


# -- GitHub Actions workflow commands -------------------------------------------------


def _escape_data(value: str) -> str:
    # As actions/toolkit's command.ts escapeData: the message after "::".
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    # As escapeProperty: a key=value property also may not contain ":" or ",".
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(diagnostics: Sequence[Diagnostic], base_dir: str | None = None) -> str:
    """``::error file=...,line=...::message`` annotations, one per diagnostic.

    ``file`` is relative to ``base_dir`` (default: the working directory, the workspace
    in a workflow), which is what GitHub matches against the repository.
    """
    base = os.path.abspath(base_dir or os.getcwd())
    out = []
    for d in diagnostics:
        rel = _relative(d.path, base) or d.path
        props = {
            "file": rel,
            "line": str(d.line),
            "col": str(d.column),
            "endLine": str(d.end_line or d.line),
            "endColumn": str(d.end_column or d.column),
            "title": f"{d.code} {d.name}",
        }
        joined = ",".join(f"{key}={_escape_property(value)}" for key, value in props.items())
        message = d.message if not d.hint else f"{d.message}\n{d.hint}"
        out.append(f"::{level(d.code)} {joined}::{_escape_data(message)}\n")
    return "".join(out)


FORMATS: dict[str, Callable[[Sequence[Diagnostic]], str]] = {
    "text": text,
    "json": json_format,
    "sarif": sarif,
    "github": github,
}
