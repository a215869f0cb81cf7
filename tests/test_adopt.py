"""Adopting sessionlint on existing code: ``--write-baseline``/``--baseline`` and
``--add-noqa``, from the CLI and (for the baseline) through flake8."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sessionlint.cli import main
from sessionlint.rewrite import rewrite_file
from fixture_support import run_cli as run

HEADER = """\
from sqlalchemy.orm import sessionmaker

SessionLocal = sessionmaker()


"""
LEAKS = HEADER + """\
def get(user_id):
    session = SessionLocal()
    return session.get(dict, user_id)


class Repo:
    def load(self, key):
        session = SessionLocal()
        return session.get(dict, key)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose one module has two leaks, in a function and in a method."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "leaks.py").write_text(LEAKS)
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\n")
    return tmp_path


def codes_and_lines(out: str) -> list[tuple[str, int]]:
    found = []
    for line in out.splitlines():
        path, number, _column, rest = line.split(":", 3)
        found.append((rest.split()[0], int(number)))
    return found


# -- baseline ------------------------------------------------------------------------


def test_write_baseline_then_nothing_is_reported(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    assert code == 0 and out == ""
    assert "wrote 2 findings to baseline.json" in err
    code, out, err = run(["check", "--baseline", "baseline.json", "app"], capsys, project)
    assert code == 0 and out == ""
    assert "2 findings in the baseline not shown" in err
    assert "no longer match" not in err


def test_baseline_file_is_sorted_stable_and_readable(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    first = (project / "baseline.json").read_bytes()
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    assert (project / "baseline.json").read_bytes() == first
    data = json.loads(first)
    assert data["sessionlint_baseline"] == 1
    entries = data["findings"]
    assert [(e["code"], e["path"], e["function"], e["source"], e["count"]) for e in entries] == [
        ("SES101", "app/leaks.py", "Repo.load", "session = SessionLocal()", 1),
        ("SES101", "app/leaks.py", "get", "session = SessionLocal()", 1),
    ]
    assert "line" not in entries[0]  # line numbers are not the key
    assert first.decode() == json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_moved_and_reindented_findings_stay_baselined(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    moved = LEAKS.replace("def get(user_id):\n", "# a comment\n\n\ndef helper():\n    return 1\n\n\ndef get(user_id):\n")
    moved = moved.replace(
        "        session = SessionLocal()\n        return session.get(dict, key)",
        "        if key:\n            session  =  SessionLocal()  # reformatted\n            return session.get(dict, key)",
    )
    (project / "app" / "leaks.py").write_text(moved)
    code, out, _ = run(["check", "--no-baseline", "app"], capsys, project)
    assert code == 1 and len(out.splitlines()) == 2  # both still found, on other lines
    code, out, _ = run(["check", "--baseline", "baseline.json", "app"], capsys, project)
    assert (code, out) == (0, "")


def test_second_copy_in_the_same_function_is_new(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    doubled = LEAKS.replace(
        "    session = SessionLocal()\n    return session.get(dict, user_id)",
        "    session = SessionLocal()\n    session.get(dict, 0)\n    session = SessionLocal()\n    return session.get(dict, user_id)",
    )
    (project / "app" / "leaks.py").write_text(doubled)
    code, out, _ = run(["check", "--no-baseline", "app"], capsys, project)
    assert sorted(codes_and_lines(out)) == [("SES101", 7), ("SES101", 9), ("SES101", 15)]
    code, out, _ = run(["check", "--baseline", "baseline.json", "app"], capsys, project)
    assert code == 1
    assert len(codes_and_lines(out)) == 1  # one of the two copies in get() is new


def test_a_finding_in_a_renamed_function_is_new_and_the_old_entry_stale(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    (project / "app" / "leaks.py").write_text(LEAKS.replace("def get(", "def fetch("))
    code, out, err = run(["check", "--baseline", "baseline.json", "app"], capsys, project)
    assert code == 1 and codes_and_lines(out) == [("SES101", 7)]
    assert "1 finding in the baseline not shown; 1 baseline entry no longer matches any finding" in err
    assert "--write-baseline" in err


def test_fixed_findings_are_counted_as_stale(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    (project / "app" / "leaks.py").write_text(LEAKS.replace("    session = SessionLocal()\n    return", "    with SessionLocal() as session:\n        return"))
    code, out, err = run(["check", "--baseline", "baseline.json", "app"], capsys, project)
    assert (code, out) == (0, "")
    assert "1 baseline entry no longer matches any finding" in err


def test_writing_a_baseline_for_some_files_keeps_the_others(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "more.py").write_text(LEAKS)
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    assert len(json.loads((project / "baseline.json").read_text())["findings"]) == 4
    (project / "app" / "more.py").write_text(LEAKS.replace("class Repo", "class Store"))
    code, _, err = run(["check", "--write-baseline", "baseline.json", "app/more.py"], capsys, project)
    assert code == 0 and "wrote 4 findings" in err
    functions = sorted((e["path"], e["function"]) for e in json.loads((project / "baseline.json").read_text())["findings"])
    assert functions == [("app/leaks.py", "Repo.load"), ("app/leaks.py", "get"), ("app/more.py", "Store.load"), ("app/more.py", "get")]


def test_stale_entries_are_counted_only_for_the_files_checked(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "more.py").write_text(LEAKS)
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    code, out, err = run(["check", "--baseline", "baseline.json", "app/more.py"], capsys, project)
    assert (code, out) == (0, "")
    assert "no longer match" not in err  # leaks.py's entries were not checked, not stale


def test_configured_baseline_is_used_and_can_be_switched_off(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "pyproject.toml").write_text('[tool.sessionlint]\nbaseline = "ci/sessionlint-baseline.json"\n')
    (project / "ci").mkdir()
    run(["check", "--write-baseline", "ci/sessionlint-baseline.json", "app"], capsys, project)
    entries = json.loads((project / "ci" / "sessionlint-baseline.json").read_text())["findings"]
    assert {e["path"] for e in entries} == {"../app/leaks.py"}  # relative to the baseline's directory
    code, out, _ = run(["check", "app"], capsys, project)
    assert (code, out) == (0, "")
    code, out, _ = run(["check", "leaks.py"], capsys, project / "app")  # another way to name the file
    assert (code, out) == (0, "")
    code, out, _ = run(["check", "--no-baseline", "app"], capsys, project)
    assert code == 1 and len(out.splitlines()) == 2


def test_missing_or_broken_baseline_is_a_clear_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--baseline", "nope.json", "app"], capsys, project)
    assert code == 2 and out == ""
    assert "nope.json: baseline not found (create it with --write-baseline nope.json)" in err
    (project / "bad.json").write_text("{not json")
    code, _, err = run(["check", "--baseline", "bad.json", "app"], capsys, project)
    assert code == 2 and "bad.json: not a sessionlint baseline (invalid JSON" in err
    (project / "other.json").write_text('{"findings": []}')
    code, _, err = run(["check", "--baseline", "other.json", "app"], capsys, project)
    assert code == 2 and "not a sessionlint baseline" in err
    (project / "pyproject.toml").write_text("[tool.sessionlint]\nbaseline = 3\n")
    code, _, err = run(["check", "app"], capsys, project)
    assert code == 2 and "[tool.sessionlint] baseline: expected a file path, got 3" in err
    assert "Traceback" not in err


def test_conflicting_flags_are_usage_errors(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--add-noqa", "--write-baseline", "b.json"], ["--baseline", "b.json", "--no-baseline"], ["--write-baseline", "a.json", "--baseline", "b.json"]):
        code, _, err = run(["check", *flags, "app"], capsys, project)
        assert code == 2 and "cannot be combined" in err


def test_input_errors_are_still_reported_when_writing_a_baseline(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "broken.py").write_text("def broken(:\n")
    code, _, err = run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    assert code == 2
    assert "broken.py:1" in err and "SES001" in err
    assert "wrote 2 findings" in err


def test_flake8_honours_the_configured_baseline(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.sessionlint]\nbaseline = "baseline.json"\n')
    assert main(["check", "--write-baseline", str(project / "baseline.json"), str(project / "app")]) == 0
    (project / "app" / "leaks.py").write_text(LEAKS.replace("def get(", "def fetch("))

    def flake8() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flake8", "--select", "SES", "app"], cwd=project, capture_output=True, text=True, check=False
        )

    proc = flake8()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["app/leaks.py:7:15: SES101 session `session` is not closed on every path"]
    (project / "baseline.json").unlink()
    proc = flake8()
    assert proc.returncode == 1
    assert "baseline not found" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# -- --add-noqa ----------------------------------------------------------------------


def test_add_noqa_silences_every_finding_and_is_idempotent(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--add-noqa", "app"], capsys, project)
    assert (code, out) == (0, "")
    assert "added 2 noqa directives" in err
    text = (project / "app" / "leaks.py").read_text()
    assert text == LEAKS.replace("    session = SessionLocal()\n", "    session = SessionLocal()  # noqa: SES101\n")
    code, out, _ = run(["check", "app"], capsys, project)
    assert (code, out) == (0, "")
    code, _, err = run(["check", "--add-noqa", "app"], capsys, project)
    assert code == 0 and "added 0 noqa directives" in err
    assert (project / "app" / "leaks.py").read_text() == text


def test_add_noqa_keeps_existing_comments_codes_and_line_endings(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (
        "# -*- coding: latin-1 -*-\n"
        + HEADER
        + "def one():\n"
        "    s = SessionLocal()  # caf\u00e9\n"
        "    return s.get(dict, 1)\n"
        "\n"
        "\n"
        "def two():\n"
        "    s = SessionLocal()  # noqa: E501  (long)\n"
        "    return s.get(dict, 2)\n"
        "\n"
        "\n"
        "def three():\n"
        "    s = SessionLocal(\n"
        "    )\n"
        "    return s.get(dict, 3)\n"
    ).replace("\n", "\r\n")
    path = project / "app" / "legacy.py"
    path.write_bytes(source.encode("latin-1"))
    code, _, err = run(["check", "--add-noqa", "app/legacy.py"], capsys, project)
    assert code == 0 and "added 3 noqa directives" in err
    expected = (
        source.replace("# caf\u00e9\r\n", "# caf\u00e9  # noqa: SES101\r\n")
        .replace("# noqa: E501  (long)", "# noqa: E501, SES101  (long)")
        .replace("    s = SessionLocal(\r\n", "    s = SessionLocal(  # noqa: SES101\r\n")
    )
    assert path.read_bytes() == expected.encode("latin-1")
    code, out, _ = run(["check", "app/legacy.py"], capsys, project)
    assert (code, out) == (0, "")


def test_add_noqa_leaves_lines_a_comment_cannot_end(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (
        HEADER
        + "def report():\n"
        '    s = SessionLocal(info={"sql": """\n'
        '        select 1"""})\n'
        "    return s.execute(s.info['sql'])\n"
    )
    path = project / "app" / "strings.py"
    path.write_text(source)
    code, out, err = run(["check", "--add-noqa", "app/strings.py"], capsys, project)
    assert code == 0
    assert "app/strings.py:7: no `# noqa` added" in err
    assert path.read_text() == source


def test_add_noqa_refuses_standard_input(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "--add-noqa", "-"], capsys, project)
    assert code == 2 and "cannot rewrite standard input" in err


def test_add_noqa_after_a_baseline_marks_only_new_findings(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["check", "--write-baseline", "baseline.json", "app"], capsys, project)
    (project / "app" / "leaks.py").write_text(LEAKS.replace("def get(", "def fetch("))
    code, _, err = run(["check", "--baseline", "baseline.json", "--add-noqa", "app"], capsys, project)
    assert code == 0 and "added 1 noqa directive" in err
    lines = (project / "app" / "leaks.py").read_text().splitlines()
    assert lines[6].endswith("# noqa: SES101") and not lines[12].endswith("# noqa: SES101")


def test_rewrite_leaves_a_file_that_changed_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")

    def transform(text: str) -> str:
        path.write_text("x = 2\n")  # an editor saves the file while we work
        return text + "y = 1\n"

    done = rewrite_file(str(path), transform)
    assert not done.changed and "changed while sessionlint was rewriting it" in done.problem
    assert path.read_text() == "x = 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]  # no temporary file left behind


def test_rewrite_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "tool.py"
    path.write_text("x = 1\n")
    path.chmod(0o755)
    done = rewrite_file(str(path), lambda text: text + "y = 2\n")
    assert done.changed and path.read_text() == "x = 1\ny = 2\n"
    assert path.stat().st_mode & 0o777 == 0o755
