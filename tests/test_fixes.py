"""Fixes (``--fix``, ``--unsafe-fixes``, ``--diff``): the properties every fix must have,
checked on every fixture, goldens beside some fixtures (``<scenario>.fixed.py``), and
the CLI, output formats and rewriting."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import pytest
from fixture_support import Scenario, read_expectations, run_cli, scenarios

from sessionlint.analysis.project import ProjectIndex
from sessionlint.config import Settings, parse_table
from sessionlint.diagnostics import Diagnostic
from sessionlint.engine import Checker
from sessionlint.fixes import apply, fix_source

FILE_SCENARIOS = [s for s in scenarios() if s.path.is_file()]


def checker_for(scenario: Scenario) -> tuple[str, object]:
    source = scenario.path.read_text(encoding="utf-8")
    config = read_expectations(source, scenario.id).config
    base = Settings(root=scenario.root)
    settings = parse_table(config, source=scenario.id, base=base) if config else base
    checker = Checker(settings, ProjectIndex(scenario.root, [str(scenario.path)], settings.session_factories))

    def check(text: str) -> list[Diagnostic]:
        result = checker.check_source(text, str(scenario.path))
        assert not result.errors, result.errors
        return result.diagnostics

    return source, check


def _top_level_span(source: str, line: int) -> tuple[int, int]:
    """Lines of the top-level statement holding ``line`` (decorators included)."""
    for node in ast.parse(source).body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        if first <= line <= (node.end_lineno or node.lineno):
            return first, node.end_lineno or node.lineno
    return line, line


@pytest.mark.parametrize("scenario", FILE_SCENARIOS, ids=lambda s: s.id)
def test_fix_properties(scenario: Scenario) -> None:
    source, check = checker_for(scenario)
    before = check(source)  # type: ignore[operator]
    fixable = [d for d in before if d.fix is not None]
    result = fix_source(source, check, unsafe=True)  # type: ignore[arg-type]
    assert not result.problem
    if not fixable:
        assert (result.source, result.fixed) == (source, 0)
        return
    # 1. The fixed file compiles.
    compile(result.source, scenario.id, "exec")
    # 2. Each fix removes its finding and adds none anywhere.
    counts_before = Counter(d.code for d in before)
    counts_after = Counter(d.code for d in result.diagnostics)
    assert result.fixed > 0
    for code, n in counts_after.items():
        assert n <= counts_before[code], f"{code}: {counts_before[code]} -> {n}\n{result.source}"
    # (A fix may bring out a finding a later round fixes: a hoisted MySQL engine now
    # outlives its call and needs pool_recycle. What is left is what counts.)
    assert sum(counts_after.values()) < sum(counts_before.values())
    # 3. A second --fix changes nothing.
    again = fix_source(result.source, check, unsafe=True)  # type: ignore[arg-type]
    assert (again.source, again.fixed) == (result.source, 0)
    # 4. Edits stay inside the statement that holds the finding (a hoisted engine
    #    lands just above it): everything else is byte-identical.
    for d in fixable:
        assert d.fix is not None
        first, last = _top_level_span(source, d.line)
        for edit in d.fix.edits:
            assert first - 3 <= edit.line and edit.end_line <= last + 1, (d, edit)
        one, taken = apply(source, [d.fix])
        assert taken == [d.fix]
        old_lines, new_lines = source.splitlines(True), one.splitlines(True)
        edit_first = min(e.line for e in d.fix.edits)
        assert old_lines[: edit_first - 1] == new_lines[: edit_first - 1]
        tail = len(old_lines) - max(e.end_line for e in d.fix.edits) + 1
        assert tail <= 0 or old_lines[-tail:] == new_lines[-tail:]
    # 5. Goldens, where one is kept.
    golden = scenario.path.with_name(scenario.path.name[: -len(".py")] + ".fixed.py")
    if golden.exists():
        assert result.source == golden.read_text(encoding="utf-8")


def test_goldens_exist_for_every_kind_of_fix() -> None:
    goldens = sorted(p.parent.name for p in Path(FILE_SCENARIOS[0].path.parents[1]).glob("*/*.fixed.py"))
    assert {"SES101", "SES102", "SES103", "SES201", "SES302", "SES501", "SES502"} <= set(goldens)


def test_safe_fixes_are_the_provable_ones() -> None:
    by_id = {s.id: s for s in FILE_SCENARIOS}

    def applicability(scenario_id: str) -> list[tuple[str, str]]:
        source, check = checker_for(by_id[scenario_id])
        return [(d.code, d.fix.applicability) for d in check(source) if d.fix is not None]  # type: ignore[operator]

    # close() ends the block and nothing leaves it early: the same behaviour.
    assert applicability("SES102/close_at_end_without_finally.py") == [("SES102", "safe")]
    # Read after close(): try/finally keeps the order, and the same close().
    assert applicability("SES102/read_after_close_gets_try_finally.py") == [("SES102", "safe")]
    # An early return now closes the session before the caller uses the result.
    assert applicability("SES101/flask_view_early_return.py") == [("SES101", "unsafe")]
    # A factory known only by its name may not be a context manager.
    assert applicability("SES101/factory_known_by_its_name.py") == [("SES101", "unsafe")]
    assert applicability("SES502/mysql_url_without_pool_recycle.py") == [("SES502", "safe")]
    assert ("SES502", "unsafe") in applicability("SES502/recycle_not_below_wait_timeout.py")
    assert applicability("SES201/loop_continue_without_rollback.py") == [("SES201", "unsafe")]


# -- the CLI ---------------------------------------------------------------------------

LEAKS = """\
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

engine = create_engine("mysql+pymysql://app@db/shop")  # the primary


def count(table):
    session = Session(engine)
    n = session.execute(text(f"select count(*) from {table}")).scalar()
    session.close()
    return n


def first(table):
    session = Session(engine)
    return session.execute(text(f"select * from {table}")).first()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\n")
    (tmp_path / "app.py").write_text(LEAKS)
    return tmp_path


def test_text_output_marks_what_fix_would_fix(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check", "--no-cache", "app.py"], capsys, project)
    assert code == 1
    assert out.splitlines() == [
        "app.py:4:10: SES502 [*] MySQL engine `engine` has no `pool_recycle`: pooled connections outlive the server's "
        "`wait_timeout`; set `pool_recycle` below it (e.g. 3600) and `pool_pre_ping=True`",
        "app.py:8:15: SES102 [*] session `session` is closed, but not in `finally`: an exception before `close()` leaks it",
        "app.py:15:15: SES101 session `session` is not closed on every path",
    ]
    assert "[*] 2 fixable with --fix; 1 more with --fix --unsafe-fixes" in err
    _, out, _ = run_cli(["check", "--no-cache", "--unsafe-fixes", "app.py"], capsys, project)
    assert "SES101 [*] session" in out


def test_json_and_sarif_carry_the_fix(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(["check", "--no-cache", "--format", "json", "app.py"], capsys, project)
    found = {d["code"]: d for d in json.loads(out)}
    fix = found["SES502"]["fix"]
    assert fix["applicability"] == "safe"
    assert fix["message"] == "add `pool_recycle=3600` and `pool_pre_ping=True`"
    assert fix["edits"] == [
        {
            "line": 4,
            "column": 1,
            "end_line": 5,
            "end_column": 1,
            "content": 'engine = create_engine("mysql+pymysql://app@db/shop", pool_recycle=3600, pool_pre_ping=True)  # the primary\n',
        }
    ]
    assert found["SES101"]["fix"]["applicability"] == "unsafe"
    _, out, _ = run_cli(["check", "--no-cache", "--format", "sarif", "app.py"], capsys, project)
    results = {r["ruleId"]: r for r in json.loads(out)["runs"][0]["results"]}
    change = results["SES502"]["fixes"][0]["artifactChanges"][0]
    assert change["artifactLocation"]["uri"] == "app.py"
    assert change["replacements"][0]["deletedRegion"] == {"startLine": 4, "startColumn": 1, "endLine": 5, "endColumn": 1}
    assert "pool_recycle=3600" in change["replacements"][0]["insertedContent"]["text"]


def test_diff_changes_nothing_and_exits_1(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check", "--no-cache", "--diff", "app.py"], capsys, project)
    assert code == 1
    assert out.startswith("--- a/app.py\n+++ b/app.py\n")
    assert out.count("+    with Session(engine) as session:\n") == 1  # the unsafe one in first() is not applied
    assert "would fix 2 findings in 1 file (1 more with --unsafe-fixes)" in err
    assert (project / "app.py").read_text() == LEAKS
    run_cli(["check", "--no-cache", "--fix", "--unsafe-fixes", "app.py"], capsys, project)
    code, out, _ = run_cli(["check", "--no-cache", "--diff", "app.py"], capsys, project)
    assert (code, out) == (0, "")


def test_fix_applies_safe_fixes_then_reports_the_rest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check", "--no-cache", "--fix", "app.py"], capsys, project)
    assert code == 1
    assert out.splitlines() == ["app.py:14:15: SES101 session `session` is not closed on every path"]
    assert "fixed 2 findings in 1 file, 1 remaining (1 more with --unsafe-fixes)" in err
    fixed = (project / "app.py").read_text()
    assert 'create_engine("mysql+pymysql://app@db/shop", pool_recycle=3600, pool_pre_ping=True)  # the primary' in fixed
    assert "    with Session(engine) as session:\n        n = session.execute(" in fixed
    assert "session.close()" not in fixed
    code, out, err = run_cli(["check", "--no-cache", "--fix", "--unsafe-fixes", "app.py"], capsys, project)
    assert (code, out) == (0, "")
    assert "fixed 1 finding in 1 file, 0 remaining" in err
    compile((project / "app.py").read_text(), "app.py", "exec")


def test_fix_honours_the_baseline(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(["check", "--no-cache", "--write-baseline", "baseline.json", "app.py"], capsys, project)
    code, out, err = run_cli(["check", "--no-cache", "--baseline", "baseline.json", "--fix", "app.py"], capsys, project)
    assert (code, out) == (0, "")
    assert (project / "app.py").read_text() == LEAKS  # baselined findings are let in, not fixed


def test_diff_reads_standard_input_and_fix_refuses_it(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LEAKS.encode())))
    code, out, _ = run_cli(["check", "--diff", "--stdin-filename", "app.py", "-"], capsys, project)
    assert code == 1 and "+    with Session(engine) as session:" in out
    code, _, err = run_cli(["check", "--fix", "-"], capsys, project)
    assert code == 2 and "--fix rewrites files" in err


def test_fix_conflicts_with_other_rewriting_flags(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--fix", "--diff"], ["--fix", "--add-noqa"], ["--diff", "--write-baseline", "b.json"]):
        code, _, err = run_cli(["check", *flags, "app.py"], capsys, project)
        assert code == 2 and "cannot be combined" in err


def fix_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, source: str) -> tuple[int, str, str]:
    """``source`` as ``name`` in a fresh project, after ``--fix --unsafe-fixes``:
    (exit status, standard output, the file's new text)."""
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\n")
    (tmp_path / name).write_text(source)
    code, out, _ = run_cli(["check", "--no-cache", "--fix", "--unsafe-fixes", name], capsys, tmp_path)
    return code, out, (tmp_path / name).read_text()


def test_overlapping_fixes_are_applied_in_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One block holds an engine built per call (SES501, hoisted), a MySQL URL
    # (SES502) and a session closed without finally (SES102): their edits overlap.
    code, out, fixed = fix_everything(
        tmp_path,
        capsys,
        "job.py",
        "from sqlalchemy import create_engine, text\n"
        "from sqlalchemy.orm import Session\n"
        "\n"
        "\n"
        "def nightly():\n"
        '    engine = create_engine("mysql+pymysql://app@db/shop")\n'
        "    session = Session(engine)\n"
        '    session.execute(text("delete from carts where stale"))\n'
        "    session.commit()\n"
        "    session.close()\n",
    )
    assert (code, out) == (0, "")
    assert fixed == (
        "from sqlalchemy import create_engine, text\n"
        "from sqlalchemy.orm import Session\n"
        "\n"
        "\n"
        'engine = create_engine("mysql+pymysql://app@db/shop", pool_recycle=3600, pool_pre_ping=True)\n'
        "\n"
        "\n"
        "def nightly():\n"
        "    with Session(engine) as session:\n"
        '        session.execute(text("delete from carts where stale"))\n'
        "        session.commit()\n"
    )


def test_explain_shows_how_a_fix_behaves(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(["explain", "SES502"], capsys, tmp_path)
    assert code == 0
    assert "## Fix safety" in out and "`pool_recycle=3600`" in out
    _, out, _ = run_cli(["explain", "SES104"], capsys, tmp_path)
    assert "## Fix safety" not in out  # no fix, only the hint


def test_hoisted_engine_leaves_the_functions_comment_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, fixed = fix_everything(
        tmp_path,
        capsys,
        "health.py",
        'from sqlalchemy import create_engine, text\n\nURL = "postgresql://app@db/app"\n\n\n'
        "# The health view, polled every second.\n"
        "def health():\n"
        "    engine = create_engine(URL)\n"
        "    with engine.connect() as conn:\n"
        '        return conn.execute(text("select 1")).scalar()\n',
    )
    assert code == 0
    assert fixed == (
        'from sqlalchemy import create_engine, text\n\nURL = "postgresql://app@db/app"\n\n\n'
        "engine = create_engine(URL)\n\n\n"
        "# The health view, polled every second.\n"
        "def health():\n"
        "    with engine.connect() as conn:\n"
        '        return conn.execute(text("select 1")).scalar()\n'
    )
