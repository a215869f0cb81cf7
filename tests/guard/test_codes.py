"""The plain-data catalogue of runtime codes that the CLI lists."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from sessionlint.runtime_guard.codes import RUNTIME_CODES, RuntimeCode

# Fixed by shared/spec/RULES.md ("Runtime findings (the guard)").
SPEC = {
    "SES901": "leaked-checkout",
    "SES902": "long-transaction",
    "SES903": "session-left-open",
    "SES904": "scoped-session-left",
    "SES905": "cross-thread-session",
    "SES906": "pool-recycle-vs-wait-timeout",
    "SES907": "pool-exhausted",
}


def test_codes_and_names_match_the_spec() -> None:
    assert isinstance(RUNTIME_CODES, tuple)
    assert {c.code: c.name for c in RUNTIME_CODES} == SPEC
    assert [c.code for c in RUNTIME_CODES] == sorted(SPEC)


@pytest.mark.parametrize("entry", RUNTIME_CODES, ids=lambda c: c.code)
def test_each_code_is_frozen_with_summary_and_doc_sections(entry: RuntimeCode) -> None:
    assert dataclasses.is_dataclass(entry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.code = "SES999"  # type: ignore[misc]
    assert entry.summary and "\n" not in entry.summary
    positions = [entry.doc.find(h) for h in ("## What it finds", "## Why is this bad?", "## How to fix")]
    assert -1 not in positions and positions == sorted(positions)


def test_catalogue_imports_nothing_heavy() -> None:
    code = (
        "import sys; import sessionlint.runtime_guard.codes, sessionlint.runtime_guard; "
        "heavy = [m for m in ('sqlalchemy', 'pytest', 'libcst') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
