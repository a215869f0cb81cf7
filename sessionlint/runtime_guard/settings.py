"""Guard settings and their parsing; no SQLAlchemy, no pytest.

Every parser takes the *source* of the value ("cli", "ini", "marker on
tests/test_x.py::test_y") so that an error names where the bad value came from:
"bad max-transaction '5x' from ini".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sessionlint.runtime_guard.codes import CODES_BY_ID

MODES = ("off", "warn", "fail")
DEFAULT_MODE = "warn"
DEFAULT_MAX_TRANSACTION = 2.0

_SECONDS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


class GuardConfigError(ValueError):
    """A bad guard setting; the message names the setting and its source."""


@dataclass(frozen=True)
class GuardSettings:
    """Thresholds of a tracker or of one scope.

    `max_transaction`: seconds an outermost transaction may stay open (SES902).
    `allow`: codes that are not reported in this scope.
    `stack_limit`: frames captured per stack (innermost first).
    `check_server`: at the end of a run, ask MariaDB/PostgreSQL for open
    transactions of this process.
    """

    max_transaction: float = DEFAULT_MAX_TRANSACTION
    allow: frozenset[str] = field(default_factory=frozenset)
    stack_limit: int = 48
    check_server: bool = True


def parse_seconds(value: object, *, setting: str, source: str) -> float:
    """Parse `2`, `0.5`, `1.5s` or `250ms` into seconds (>= 0)."""
    if isinstance(value, bool):
        raise GuardConfigError(f"bad {setting} {value!r} from {source}: expected seconds, e.g. 2 or 0.5")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _SECONDS.match(str(value))
        if match is None:
            raise GuardConfigError(f"bad {setting} '{value}' from {source}: expected seconds, e.g. 2, 0.5 or 250ms")
        seconds = float(match.group(1))
        if match.group(2) == "ms":
            seconds /= 1000.0
    if not math.isfinite(seconds) or seconds < 0:
        raise GuardConfigError(f"bad {setting} '{value}' from {source}: expected a non-negative number of seconds")
    return seconds


def parse_mode(value: object, *, source: str) -> str:
    text = str(value).strip().lower()
    if text not in MODES:
        raise GuardConfigError(f"bad mode '{value}' from {source}: expected one of {', '.join(MODES)}")
    return text


def parse_codes(value: object, *, setting: str, source: str) -> frozenset[str]:
    """Codes from a list/tuple or a comma/space separated string; each must be SES901-SES907."""
    items: Iterable[object]
    if isinstance(value, str):
        items = [part for part in re.split(r"[\s,]+", value) if part]
    elif isinstance(value, Iterable):
        items = value
    else:
        raise GuardConfigError(f"bad {setting} {value!r} from {source}: expected a list of codes such as ['SES901']")
    codes: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise GuardConfigError(f"bad {setting} entry {item!r} from {source}: expected a code such as 'SES901'")
        code = item.strip().upper()
        if code not in CODES_BY_ID:
            known = ", ".join(sorted(CODES_BY_ID))
            raise GuardConfigError(f"bad {setting} code '{item}' from {source}: runtime codes are {known}")
        codes.add(code)
    return frozenset(codes)
