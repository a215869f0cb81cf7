"""The generated rule docs are current: regenerate with the commands in the messages."""

from __future__ import annotations

import re
from pathlib import Path

from sessionlint import docs

ROOT = Path(__file__).resolve().parents[1]


def test_docs_rules_md_is_generated_from_the_registry() -> None:
    current = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert current == docs.rules_markdown(), "run: sessionlint rules --format markdown > docs/rules.md"


def test_readme_rules_table_is_generated_from_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- rules-table:start -->\n(.*?)<!-- rules-table:end -->", readme, re.S)
    assert match, "README.md lost its rules-table markers"
    assert match.group(1) == docs.rules_table(), "regenerate the table: sessionlint rules --format table"


def test_readme_quick_start_is_exactly_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    assert quick.splitlines() == ["make demo", "make test"]
