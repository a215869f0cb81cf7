"""The registry: codes well formed and unique, every rule documented and fixtured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixture_support import FIXTURES, read_expectations
from sessionlint import registry
from sessionlint.analysis.project import ProjectIndex
from sessionlint.config import Settings
from sessionlint.engine import Checker
from sessionlint.rules.base import code_block

SPEC_CODES = {
    "SES001": "cannot-parse", "SES002": "cannot-read",
    "SES101": "session-not-closed", "SES102": "close-not-guaranteed",
    "SES103": "connection-not-closed", "SES104": "session-used-after-with",
    "SES201": "missing-rollback", "SES202": "uncommitted-writes",
    "SES301": "scoped-session-not-removed", "SES302": "remove-not-guaranteed",
    "SES303": "thread-scoped-session-in-async", "SES401": "session-shared-with-thread",
    "SES402": "module-level-session", "SES501": "engine-per-call",
    "SES502": "mysql-pool-recycle", "SES503": "unbounded-pool",
    "SES901": "leaked-checkout", "SES902": "long-transaction",
    "SES903": "session-left-open", "SES904": "scoped-session-left",
    "SES905": "cross-thread-session", "SES906": "pool-recycle-vs-wait-timeout",
    "SES907": "pool-exhausted",
}
STATIC = [r for r in registry.rules().values() if r.kind == "static"]
REQUIRED_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead")


def test_codes_are_well_formed_and_match_the_spec() -> None:
    for code, info in registry.all_codes().items():
        assert re.fullmatch(r"SES\d{3}", code)
        assert SPEC_CODES.get(code) == info.name, f"{code} is named {info.name!r}, the spec says {SPEC_CODES.get(code)!r}"


def test_rule_class_is_the_name_in_camel_case() -> None:
    for rule in registry.rules().values():
        assert rule.__name__ == "".join(part.capitalize() for part in rule.name.split("-")), rule


@pytest.mark.parametrize("rule", STATIC, ids=[r.code for r in STATIC])
def test_rule_documents_itself(rule: type) -> None:
    sections = rule.doc_sections()  # type: ignore[attr-defined]
    for section in REQUIRED_SECTIONS:
        assert sections.get(section), f"{rule.code} has no '{section}' section"  # type: ignore[attr-defined]
    assert "{" not in rule.hint if rule.hint else True  # type: ignore[attr-defined]


def _check(snippet: str, code: str, tmp_path: Path) -> set[str]:
    settings = Settings(root=tmp_path)
    checker = Checker(settings, ProjectIndex(tmp_path))
    result = checker.check_source(snippet, str(tmp_path / "example.py"))
    assert not result.errors
    return {d.code for d in result.diagnostics}


@pytest.mark.parametrize("rule", STATIC, ids=[r.code for r in STATIC])
def test_doc_example_triggers_and_fix_does_not(rule: type, tmp_path: Path) -> None:
    sections = rule.doc_sections()  # type: ignore[attr-defined]
    example, fixed = code_block(sections["Example"]), code_block(sections["Use instead"])
    assert example and fixed
    assert rule.code in _check(example, rule.code, tmp_path)  # type: ignore[attr-defined]
    assert rule.code not in _check(fixed, rule.code, tmp_path)  # type: ignore[attr-defined]


@pytest.mark.parametrize("rule", STATIC, ids=[r.code for r in STATIC])
def test_rule_has_positive_and_negative_fixtures(rule: type) -> None:
    directory = FIXTURES / rule.code  # type: ignore[attr-defined]
    assert directory.is_dir(), f"no fixtures for {rule.code}"  # type: ignore[attr-defined]
    positive = negative = 0
    for entry in directory.iterdir():
        files = list(entry.rglob("*.py")) if entry.is_dir() else [entry]
        codes = {c for f in files for _l, c in read_expectations(f.read_text(encoding="utf-8"), str(f)).expected}
        if rule.code in codes:  # type: ignore[attr-defined]
            positive += 1
        else:
            negative += 1
    assert positive >= 10 and negative >= 10, (positive, negative)


def test_static_code_table_matches_the_rule_classes() -> None:
    classes = {code: (rule.name, rule.__module__.rsplit(".", 1)[-1]) for code, rule in registry.rules().items()}
    assert classes == registry.CODES
