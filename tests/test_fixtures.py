"""Every fixture: the exact set of (line, code) per file, two-sided."""

from __future__ import annotations

import re

import pytest

from fixture_support import Scenario, run_scenario, scenarios

ALL = scenarios()


@pytest.mark.parametrize("scenario", ALL, ids=[s.id for s in ALL])
def test_fixture(scenario: Scenario) -> None:
    problems = []
    for path, (expected, diagnostics) in run_scenario(scenario).items():
        found = {(d.line, d.code) for d in diagnostics}
        wanted = expected.expected
        rel = path.relative_to(scenario.root.parent)
        for line, code in sorted(wanted - found):
            problems.append(f"{rel}:{line}: missing {code}")
        for line, code in sorted(found - wanted - expected.known_misses):
            message = next(d.message for d in diagnostics if (d.line, d.code) == (line, code))
            problems.append(f"{rel}:{line}: unexpected {code} {message}")
        for key, regex in expected.regexes.items():
            messages = [d.message for d in diagnostics if (d.line, d.code) == key]
            if messages and not any(re.search(regex, m) for m in messages):
                problems.append(f"{rel}:{key[0]}: {key[1]} message {messages} does not match {regex!r}")
    assert not problems, "\n".join(problems)


KNOWN_MISSES = [
    (s, path, key)
    for s in ALL
    for path in s.files()
    for key in __import__("fixture_support").read_expectations(path.read_text(encoding="utf-8"), str(path)).known_misses
]


@pytest.mark.parametrize(
    ("scenario", "path", "key"),
    KNOWN_MISSES,
    ids=[f"{s.id}:{k[0]}:{k[1]}" for s, _p, k in KNOWN_MISSES],
)
@pytest.mark.xfail(strict=True, reason="known false negative; remove the known-miss comment once found")
def test_known_miss(scenario: Scenario, path: object, key: tuple[int, str]) -> None:
    diagnostics = run_scenario(scenario)[path][1]  # type: ignore[index]
    assert key in {(d.line, d.code) for d in diagnostics}
