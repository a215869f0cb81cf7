"""Formatting diagnostics: one function per ``--format``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence

from sessionlint.diagnostics import Diagnostic


def text(diagnostics: Sequence[Diagnostic]) -> str:
    return "".join(f"{d.path}:{d.line}:{d.column}: {d.code} {d.message}\n" for d in diagnostics)


def json_format(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([d.as_dict() for d in diagnostics], indent=2) + "\n"


def statistics(diagnostics: Sequence[Diagnostic]) -> str:
    counts = Counter((d.code, d.name) for d in diagnostics)
    return "".join(f"{n:<5} {code} {name}\n" for (code, name), n in sorted(counts.items()))


FORMATS: dict[str, Callable[[Sequence[Diagnostic]], str]] = {
    "text": text,
    "json": json_format,
}
