"""Runtime guard: catches at test time what static analysis cannot see.

`Tracker` (in `tracker.py`) attaches listeners to SQLAlchemy's pool, engine and
session events and reports SES901-SES907; `pytest_plugin.py` drives it from
pytest. Importing this package imports neither SQLAlchemy nor pytest: the
tracker is loaded on first attribute access, so the pytest plugin (loaded by
entry point in every pytest run) costs nothing while it is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionlint.runtime_guard.codes import RUNTIME_CODES, RuntimeCode
from sessionlint.runtime_guard.settings import GuardConfigError, GuardSettings

if TYPE_CHECKING:
    from sessionlint.runtime_guard.tracker import Finding, GuardWarning, Scope, Tracker

__all__ = [
    "RUNTIME_CODES",
    "Finding",
    "GuardConfigError",
    "GuardSettings",
    "GuardWarning",
    "RuntimeCode",
    "Scope",
    "Tracker",
]

_LAZY = {"Finding", "GuardWarning", "Scope", "Tracker"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from sessionlint.runtime_guard import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
