"""Code -> rule class: the one table of every code sessionlint knows.

Static rules come from ``sessionlint.rules.*``; the runtime guard's codes are listed
for ``sessionlint rules`` / ``explain`` from its plain-data table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from sessionlint.config import ConfigError

if TYPE_CHECKING:
    from sessionlint.rules.base import Rule

# The one place static codes are set: code -> (name, family module). Rule classes
# repeat code and name (a test checks they agree), and are imported only when files
# are actually checked: a warm, cached run never loads LibCST.
CODES: dict[str, tuple[str, str]] = {
    "SES001": ("cannot-parse", "input_errors"),
    "SES002": ("cannot-read", "input_errors"),
    "SES101": ("session-not-closed", "lifecycle"),
    "SES102": ("close-not-guaranteed", "lifecycle"),
    "SES103": ("connection-not-closed", "lifecycle"),
    "SES104": ("session-used-after-with", "lifecycle"),
    "SES201": ("missing-rollback", "transactions"),
    "SES202": ("uncommitted-writes", "transactions"),
    "SES301": ("scoped-session-not-removed", "scoped"),
    "SES302": ("remove-not-guaranteed", "scoped"),
    "SES303": ("thread-scoped-session-in-async", "scoped"),
    "SES401": ("session-shared-with-thread", "threads"),
    "SES402": ("module-level-session", "threads"),
    "SES501": ("engine-per-call", "engines"),
    "SES502": ("mysql-pool-recycle", "engines"),
    "SES503": ("unbounded-pool", "engines"),
}
_FAMILIES = ("input_errors", "lifecycle", "transactions", "scoped", "threads", "engines")


@dataclass(frozen=True)
class CodeInfo:
    """One code, static or runtime, for listings and ``explain``."""

    code: str
    name: str
    kind: str  # "input" | "static" | "runtime"
    summary: str
    doc: str
    status: str = "stable"
    default_enabled: bool = True


@cache
def rules() -> dict[str, type[Rule]]:
    """Static and input-error rules by code, in code order (imports the families)."""
    from sessionlint.rules.base import Rule

    found: dict[str, type[Rule]] = {}
    for name in _FAMILIES:
        family = importlib.import_module(f"sessionlint.rules.{name}")
        for value in vars(family).values():
            if isinstance(value, type) and issubclass(value, Rule) and value is not Rule and value.__module__ == family.__name__:
                if value.code in found:
                    raise RuntimeError(f"duplicate code {value.code}: {found[value.code].__name__} and {value.__name__}")
                found[value.code] = value
    return dict(sorted(found.items()))


@cache
def all_codes() -> dict[str, CodeInfo]:
    infos = {
        code: CodeInfo(code, rule.name, rule.kind, rule.summary(), rule.doc(), rule.status, rule.default_enabled)
        for code, rule in rules().items()
    }
    try:
        from sessionlint.runtime_guard.codes import RUNTIME_CODES
    except ImportError:  # pragma: no cover - the guard is part of the package
        RUNTIME_CODES = ()
    for entry in RUNTIME_CODES:
        infos[entry.code] = CodeInfo(entry.code, entry.name, "runtime", entry.summary, entry.doc)
    return dict(sorted(infos.items()))


def lookup(code_or_name: str) -> CodeInfo | None:
    wanted = code_or_name.strip()
    for info in all_codes().values():
        if info.code == wanted.upper() or info.name == wanted.lower():
            return info
    return None


def known_codes() -> list[str]:
    """Every code, static and runtime, without importing any rule."""
    from sessionlint.runtime_guard.codes import RUNTIME_CODES

    return [*CODES, *(entry.code for entry in RUNTIME_CODES)]


def validate_codes(codes: tuple[str, ...], where: str) -> None:
    """Every selector must name at least one known code (``SES1`` names SES101-SES104)."""
    known = known_codes()
    for selector in codes:
        if not any(code.startswith(selector) for code in known):
            raise ConfigError(f"{where}: unknown code '{selector}'")


def enabled_codes(select: tuple[str, ...], ignore: tuple[str, ...]) -> list[str]:
    """The static codes a selection switches on, from the table alone."""
    return [
        code for code in CODES
        if not code.startswith("SES0")
        and any(code.startswith(s) for s in select)
        and not any(code.startswith(i) for i in ignore)
    ]


def enabled_rules(select: tuple[str, ...], ignore: tuple[str, ...]) -> list[type[Rule]]:
    """Static rules switched on by the selection (input errors are always on)."""
    chosen = []
    for code, rule in rules().items():
        if rule.kind != "static" or rule.status == "removed":
            continue
        selected = any(code.startswith(s) for s in select)
        if not rule.default_enabled:
            selected = code in select
        if selected and not any(code.startswith(i) for i in ignore):
            chosen.append(rule)
    return chosen
