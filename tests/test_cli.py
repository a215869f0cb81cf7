"""The CLI adapter: exit codes, formats, selection, config, noqa, discovery, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_support import run_cli as run
from sessionlint.cli import main

LEAK = """\
from sqlalchemy.orm import sessionmaker

SessionLocal = sessionmaker()


def get(user_id):
    session = SessionLocal()
    return session.get(dict, user_id)
"""
CLEAN = """\
from sqlalchemy.orm import sessionmaker

SessionLocal = sessionmaker()


def get(user_id):
    with SessionLocal() as session:
        return session.get(dict, user_id)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "leak.py").write_text(LEAK)
    (tmp_path / "app" / "clean.py").write_text(CLEAN)
    return tmp_path


def test_findings_exit_1_with_path_line_col(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "app"], capsys, cwd=project)
    assert code == 1
    assert out == "app/leak.py:7:15: SES101 session `session` is not closed on every path\n"


def test_clean_exit_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "app/clean.py"], capsys, cwd=project)
    assert (code, out) == (0, "")


def test_default_path_is_current_directory(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check"], capsys, cwd=project)
    assert code == 1 and out.startswith("app/leak.py:7:15:")


def test_exit_zero(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--exit-zero", "app"], capsys, cwd=project)
    assert code == 0 and "SES101" in out


def test_json_format(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--format", "json", "app"], capsys, cwd=project)
    assert code == 1
    [item] = json.loads(out)
    assert {k: item[k] for k in ("path", "line", "column", "end_line", "end_column", "code", "name")} == {
        "path": "app/leak.py", "line": 7, "column": 15, "end_line": 7, "end_column": 29,
        "code": "SES101", "name": "session-not-closed",
    }
    assert "session" in item["message"]


def test_select_and_ignore_take_prefixes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "--ignore", "SES1", "app"], capsys, cwd=project)[0] == 0
    assert run(["check", "--select", "SES102", "app"], capsys, cwd=project)[0] == 0
    assert run(["check", "--select", "SES10", "app"], capsys, cwd=project)[0] == 1


def test_unknown_code_is_a_usage_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "--select", "SES199", "app"], capsys, cwd=project)
    assert code == 2 and "unknown code 'SES199'" in err
    code, _, err = run(["check", "--ignore", "E501", "app"], capsys, cwd=project)
    assert code == 2 and "'E501' is not a sessionlint code" in err


def test_statistics(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["check", "--statistics", "app"], capsys, cwd=project)
    assert out.splitlines()[-1].split() == ["1", "SES101", "session-not-closed"]


def test_noqa(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = project / "app" / "leak.py"
    for comment, expected in [
        ("  # noqa", 0), ("  # noqa: SES101", 0), ("  # NOQA:SES1", 0), ("  # noqa: SES102", 1), ("  # noqa: E501,SES101", 0)
    ]:
        path.write_text(LEAK.replace("SessionLocal()\n    return", f"SessionLocal(){comment}\n    return"))
        assert run(["check", "app"], capsys, cwd=project)[0] == expected, comment


def test_stdin_with_filename(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LEAK.encode())))
    code, out, _ = run(["check", "--stdin-filename", "app/leak.py", "-"], capsys, cwd=project)
    assert code == 1 and out.startswith("app/leak.py:7:15: SES101")


def test_stdin_uses_factories_from_other_files(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "db.py").write_text("from sqlalchemy.orm import sessionmaker\nSessionLocal = sessionmaker()\n")
    views = "from app.db import SessionLocal\n\ndef view():\n    s = SessionLocal()\n    s.query(int)\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(views.encode())))
    code, out, _ = run(["check", "--stdin-filename", "app/views.py", "-"], capsys, cwd=project)
    assert code == 1 and out.startswith("app/views.py:4:9: SES101")


def test_rules_and_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rules"], capsys)
    assert code == 0
    codes = [line.split()[0] for line in out.splitlines()]
    assert codes == sorted(codes) and {"SES001", "SES101", "SES104"} <= set(codes)
    code, out, _ = run(["explain", "SES101"], capsys)
    assert code == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
        assert heading in out
    assert run(["explain", "session-not-closed"], capsys)[1] == out
    code, _, err = run(["explain", "SES999"], capsys)
    assert code == 2 and "unknown rule" in err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([], capsys)[0] == 2
    with pytest.raises(SystemExit) as exc:
        main(["check", "--format", "nope"])
    assert exc.value.code == 2


# -- configuration ------------------------------------------------------------------


def write_config(project: Path, body: str) -> None:
    (project / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.sessionlint]\n{body}\n")


def test_config_ignore_and_cli_wins(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(project, 'ignore = ["SES101"]')
    assert run(["check", "app"], capsys, cwd=project)[0] == 0
    assert run(["check", "--ignore", "SES102", "app"], capsys, cwd=project)[0] == 1


def test_config_found_from_a_subdirectory(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(project, 'select = ["SES2"]')
    assert run(["check", "."], capsys, cwd=project / "app")[0] == 0


def test_per_file_ignores_and_exclude(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(project, '[tool.sessionlint.per-file-ignores]\n"app/leak.py" = ["SES1"]')
    assert run(["check", "app"], capsys, cwd=project)[0] == 0
    write_config(project, 'extend-exclude = ["leak.py"]')
    assert run(["check", "app"], capsys, cwd=project)[0] == 0
    write_config(project, 'exclude = ["app"]')
    assert run(["check", "."], capsys, cwd=project)[0] == 2  # nothing left to check


def test_session_factories(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "custom.py").write_text(
        "from app.db import new_session\n\ndef f():\n    s = new_session()\n    s.query(int)\n"
    )
    assert run(["check", "app/custom.py"], capsys, cwd=project)[0] == 0
    write_config(project, 'session-factories = ["app.db.new_session"]')
    code, out, _ = run(["check", "app/custom.py"], capsys, cwd=project)
    assert code == 1 and "app/custom.py:4:9: SES101" in out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("colour = 1", "unknown key 'colour'"),
        ('select = "SES1, X9"', "'X9' is not a sessionlint code"),
        ("select = 3", "expected a list of codes"),
        ("exclude = [1]", "expected a list of strings"),
        ('select = ["SES777"]', "unknown code 'SES777'"),
        ("per-file-ignores = []", "expected a table"),
        ("select = [", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_key(project: Path, capsys: pytest.CaptureFixture[str], body: str, message: str) -> None:
    write_config(project, body)
    code, out, err = run(["check", "app"], capsys, cwd=project)
    assert code == 2 and out == ""
    assert "pyproject.toml" in err and message in err and "Traceback" not in err


# -- discovery ----------------------------------------------------------------------


def test_discovery_skips_venvs_build_and_gitignored(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for skipped in ("build/x.py", ".venv/lib/x.py", "node_modules/x.py", "env2/x.py", "generated/x.py", "app/tmp_x.py"):
        path = project / skipped
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LEAK)
    (project / "env2" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / ".git").mkdir()
    (project / ".gitignore").write_text("generated/\napp/tmp_*.py\n!app/leak.py\n")
    code, out, _ = run(["check", "."], capsys, cwd=project)
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines()] == ["app/leak.py"]


def test_explicit_file_is_checked_even_if_ignored(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / ".git").mkdir()
    (project / ".gitignore").write_text("leak.py\n")
    assert run(["check", "app"], capsys, cwd=project)[0] == 0
    assert run(["check", "app/leak.py"], capsys, cwd=project)[0] == 1


# -- bad input ----------------------------------------------------------------------


def test_bad_input_is_reported_and_other_files_still_checked(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = project / "app"
    (app / "broken.py").write_text("def f(:\n    pass\n")
    (app / "latin.py").write_bytes(b"x = '\xe9t\xe9'\n")
    os.symlink("loop_b.py", app / "loop_a.py")
    os.symlink("loop_a.py", app / "loop_b.py")
    (project / "empty").mkdir()
    (project / "empty" / "notes.txt").write_text("no python here")
    code, out, err = run(["check", "app", "missing.py", "empty"], capsys, cwd=project)
    assert code == 2
    lines = out.splitlines()
    assert "app/broken.py:1:7: SES001 cannot parse: invalid syntax" in lines or any(
        l.startswith("app/broken.py:1:") and "SES001 cannot parse" in l for l in lines
    )
    assert any(l.startswith("app/latin.py:1:1: SES002 cannot read: not valid utf-8") for l in lines), lines
    assert any(l.startswith("app/loop_a.py:1:1: SES002 cannot read:") for l in lines), lines
    assert "missing.py:1:1: SES002 cannot read: No such file or directory" in lines
    assert any(l.startswith("app/leak.py:7:15: SES101") for l in lines)  # still checked
    assert "no Python files found under 'empty'" in err
    assert "Traceback" not in out + err


def test_bad_input_in_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "broken.py").write_text("x = (\n")
    code, out, _ = run(["check", "--format", "json", "app"], capsys, cwd=project)
    assert code == 2
    codes = {(d["path"], d["code"]) for d in json.loads(out)}
    assert ("app/broken.py", "SES001") in codes and ("app/leak.py", "SES101") in codes


def test_null_byte_is_a_parse_error_where_it_stands(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Python refuses a NUL anywhere, even in a comment, which LibCST would accept;
    found by tests/test_fuzz.py. Both a file that names SQLAlchemy (stage 2) and
    one that does not (stage 1's syntax check)."""
    (project / "app" / "db_nul.py").write_bytes(b"import sqlalchemy\r\n# note \x00\r\n")
    (project / "app" / "plain_nul.py").write_bytes(b"x = 1\n\ny = 2  # \x00\n")
    code, out, _ = run(["check", "app"], capsys, cwd=project)
    assert code == 2
    lines = out.splitlines()
    assert "app/db_nul.py:2:8: SES001 cannot parse: source code cannot contain null bytes" in lines
    assert "app/plain_nul.py:3:10: SES001 cannot parse: source code cannot contain null bytes" in lines
    assert any(l.startswith("app/leak.py:7:15: SES101") for l in lines)


def test_encoding_cookie_is_honoured(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nx = '\xe9t\xe9'\n")
    assert run(["check", "app/latin.py"], capsys, cwd=project)[0] == 0


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="needs setpriv to drop root privileges")
def test_unreadable_file_and_directory() -> None:
    """Permission errors, for real: as root, run the CLI as an unprivileged user."""
    import tempfile

    project = Path(tempfile.mkdtemp(prefix="sessionlint-perm-"))
    os.chmod(project, 0o755)
    (project / "app").mkdir(mode=0o755)
    (project / "app" / "leak.py").write_text(LEAK)
    (project / "locked").mkdir()
    (project / "locked" / "x.py").write_text(LEAK)
    (project / "locked").chmod(0)
    secret = project / "app" / "secret.py"
    secret.write_text(LEAK)
    secret.chmod(0)
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "sessionlint", "check", "app", "locked"],
        cwd=project, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    (project / "locked").chmod(0o755)
    shutil.rmtree(project)
    assert proc.returncode == 2, proc.stderr
    assert "app/secret.py:1:1: SES002 cannot read: Permission denied" in proc.stdout
    assert "locked:1:1: SES002 cannot read: Permission denied" in proc.stdout
    assert "app/leak.py:7:15: SES101" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback_of_internal_errors(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sessionlint.rules import lifecycle

    def boom(self: object, node: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(lifecycle.SessionNotClosed, "visit_FunctionDef", boom)
    code, out, err = run(["check", "app"], capsys, cwd=project)
    assert code == 2
    assert "internal error in SES101 (session-not-closed): ZeroDivisionError: boom" in err
    assert "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main(["check", "--debug", str(project / "app")])


def test_console_script_and_module_entry_points(project: Path) -> None:
    exe = Path(sys.executable).with_name("sessionlint")
    for command in ([str(exe)], [sys.executable, "-m", "sessionlint"]):
        proc = subprocess.run([*command, "check", "app"], cwd=project, capture_output=True, text=True)
        assert proc.returncode == 1 and proc.stdout.startswith("app/leak.py:7:15: SES101"), proc.stderr
