"""Reading fixture expectations and checking a fixture scenario.

Expectations are trailing comments, read with ``tokenize`` (never ``eval``):
``# expect: SES101``, ``# expect: SES101, SES102``, ``# expect: SES101 ~ "regex"``,
``# expect(+1): SES101`` (applies to a later line), ``# known-miss: SES101 why``,
and a header ``# sessionlint-config: key = value`` (TOML) for options.
"""

from __future__ import annotations

import io
import os
import re
import tokenize
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sessionlint.analysis.project import ProjectIndex
from sessionlint.config import Settings, parse_table
from sessionlint.diagnostics import Diagnostic
from sessionlint.engine import Checker

FIXTURES = Path(__file__).parent / "fixtures"

_EXPECT = re.compile(r"#\s*expect(?:\((?P<shift>[+-]\d+)\))?:\s*(?P<body>.*)$")
_KNOWN_MISS = re.compile(r"#\s*known-miss(?:\((?P<shift>[+-]\d+)\))?:\s*(?P<code>SES\d{3})\b")
_CONFIG = re.compile(r"#\s*sessionlint-config:\s*(?P<body>.*)$")
_ITEM = re.compile(r'^\s*(?P<code>SES\d{3})(?:\s*~\s*"(?P<regex>(?:[^"\\]|\\.)*)")?\s*$')


@dataclass
class Expectations:
    expected: set[tuple[int, str]] = field(default_factory=set)
    regexes: dict[tuple[int, str], str] = field(default_factory=dict)
    known_misses: set[tuple[int, str]] = field(default_factory=set)
    config: dict[str, object] = field(default_factory=dict)


def _split_items(body: str) -> list[str]:
    """``SES101, SES102 ~ "a, b"``: split on commas outside quotes."""
    items, current, quoted = [], "", False
    for char in body:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [i for i in items if i.strip()]


def read_expectations(source: str, where: str) -> Expectations:
    result = Expectations()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = tok.start[0]
        if m := _CONFIG.search(tok.string):
            result.config.update(tomllib.loads(m.group("body")))
        elif m := _EXPECT.search(tok.string):
            target = line + int(m.group("shift") or 0)
            for item in _split_items(m.group("body")):
                parsed = _ITEM.match(item)
                if parsed is None:
                    raise ValueError(f"{where}:{line}: malformed expectation {item!r}")
                key = (target, parsed.group("code"))
                result.expected.add(key)
                if parsed.group("regex"):
                    result.regexes[key] = parsed.group("regex")
        elif m := _KNOWN_MISS.search(tok.string):
            result.known_misses.add((line + int(m.group("shift") or 0), m.group("code")))
    return result


@dataclass
class Scenario:
    """A fixture file, or a directory of files linted together as one project."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.relative_to(FIXTURES).as_posix()

    @property
    def root(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def files(self) -> list[Path]:
        return sorted(self.path.rglob("*.py")) if self.path.is_dir() else [self.path]


def scenarios() -> list[Scenario]:
    found = []
    for code_dir in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        for entry in sorted(code_dir.iterdir()):
            if entry.name.startswith((".", "_")) or entry.name.endswith(".fixed.py"):
                continue
            if entry.is_dir() or entry.suffix == ".py":
                found.append(Scenario(entry))
    return found


def run_scenario(scenario: Scenario, settings: Settings | None = None) -> dict[Path, tuple[Expectations, list[Diagnostic]]]:
    """Lint a scenario; per file, its expectations and what was reported."""
    files = scenario.files()
    sources = {f: f.read_text(encoding="utf-8") for f in files}
    expectations = {f: read_expectations(s, str(f)) for f, s in sources.items()}
    config: dict[str, object] = {}
    for exp in expectations.values():
        config.update(exp.config)
    base = settings or Settings(root=scenario.root)
    effective = parse_table(config, source=scenario.id, base=base) if config else base
    index = ProjectIndex(scenario.root, [str(f) for f in files], effective.session_factories)
    checker = Checker(effective, index)
    out = {}
    for f in files:
        result = checker.check_source(sources[f], str(f))
        assert not result.errors, result.errors
        out[f] = (expectations[f], result.diagnostics)
    return out


def lint(root: Path, files: list[Path], stage1: bool, settings: Settings | None = None) -> list[Diagnostic]:
    """Every finding over ``files`` of the project at ``root``; fails on an internal error."""
    settings = settings or Settings(root=root)
    index = ProjectIndex(root, [str(f) for f in files], settings.session_factories)
    checker = Checker(settings, index, stage1=stage1)
    out: list[Diagnostic] = []
    for f in files:
        result = checker.check_path(str(f))
        assert not result.errors, result.errors
        out.extend(result.diagnostics)
    return sorted(out)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], cwd: Path | None = None) -> tuple[int, str, str]:
    """``sessionlint <args>`` in-process, from ``cwd``: (exit status, stdout, stderr)."""
    from sessionlint.cli import main

    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code = main(args)
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err
