"""The flake8 plugin, through real ``flake8`` runs, against the CLI.

Every fixture scenario is copied into a temporary tree as its own project: a directory
with a ``pyproject.toml`` holding ``[tool.sessionlint]`` (plus the fixture's
``# sessionlint-config:`` header), which is what both the CLI and the plugin take as
the project root. One flake8 run over the whole tree must then report, per file,
exactly what ``sessionlint check <scenario>`` reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_support import FIXTURES, Scenario, read_expectations, scenarios
from sessionlint import cli

VENV_BIN = Path(sys.executable).parent
FLAKE8 = [sys.executable, "-m", "flake8"]
ALL = scenarios()

Finding = tuple[str, int, int, str]  # path relative to the tree, line, column (1-based), code


def _project_dir(scenario: Scenario) -> str:
    return scenario.id.replace("/", "__").removesuffix(".py")


def _write_project(scenario: Scenario, dest: Path) -> None:
    """Copy a scenario to ``dest`` with a pyproject.toml carrying its config header."""
    if scenario.path.is_dir():
        shutil.copytree(scenario.path, dest, ignore=shutil.ignore_patterns("__pycache__", "*.fixed.py"))
    else:
        dest.mkdir(parents=True)
        shutil.copy(scenario.path, dest / scenario.path.name)
    headers: list[str] = []
    for f in sorted(dest.rglob("*.py")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("# sessionlint-config:"):
                headers.append(line.split(":", 1)[1].strip())
    (dest / "pyproject.toml").write_text("[tool.sessionlint]\n" + "".join(h + "\n" for h in headers), encoding="utf-8")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flake8-fixtures")
    for scenario in ALL:
        _write_project(scenario, root / _project_dir(scenario))
    return root


def run_flake8(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLAKE8, "--isolated", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def flake8_findings(stdout: str) -> set[Finding]:
    found = set()
    for line in stdout.splitlines():
        path, row, col, rest = line.split(":", 3)
        found.add((os.path.normpath(path).replace(os.sep, "/"), int(row), int(col), rest.split()[0]))
    return found


def cli_findings(tree: Path, tmp_path: Path) -> set[Finding]:
    """``sessionlint check <scenario dir>`` for every scenario, in process, as JSON."""
    found = set()
    for n, project in enumerate(sorted(p for p in tree.iterdir() if p.is_dir())):
        out = tmp_path / f"report-{n}.json"
        status = cli.main(["check", str(project), "--format", "json", "--output-file", str(out)])
        assert status in (0, 1), f"sessionlint check {project} exited {status}"
        for d in json.loads(out.read_text(encoding="utf-8")):
            rel = os.path.relpath(d["path"], tree).replace(os.sep, "/")
            found.add((rel, d["line"], d["column"], d["code"]))
    return found


@pytest.fixture(scope="module")
def expected(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> set[Finding]:
    return cli_findings(tree, tmp_path_factory.mktemp("cli-reports"))


def _diff(flake8: set[Finding], cli_: set[Finding]) -> str:
    lines = [f"only flake8: {f}" for f in sorted(flake8 - cli_)]
    lines += [f"only CLI:    {f}" for f in sorted(cli_ - flake8)]
    return "\n".join(lines)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_flake8_reports_what_the_cli_reports(tree: Path, expected: set[Finding], jobs: str) -> None:
    proc = run_flake8(["--select", "SES", "-j", jobs, "."], cwd=tree)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = flake8_findings(proc.stdout)
    assert found == expected, _diff(found, expected)


def test_every_scenario_with_expectations_has_findings(expected: set[Finding]) -> None:
    # Guards the comparison above against both sides reporting nothing.
    files_with_findings = {path for path, *_ in expected}
    missing = []
    for scenario in ALL:
        for f in scenario.files():
            if read_expectations(f.read_text(encoding="utf-8"), str(f)).expected:
                rel = f"{_project_dir(scenario)}/{f.relative_to(scenario.root if scenario.path.is_file() else scenario.path).as_posix()}"
                if rel not in files_with_findings:
                    missing.append(rel)
    assert not missing, missing
    assert len(expected) >= 20


def _cross_module_project(tmp_path: Path) -> Path:
    project = tmp_path / "shop"
    _write_project(Scenario(FIXTURES / "SES101" / "factory_reexported_from_package"), project)
    return project


def test_printed_path_line_col_equal_the_cli_text(tmp_path: Path) -> None:
    project = _cross_module_project(tmp_path)
    proc = run_flake8(["--select", "SES", "app"], cwd=project)
    cli_proc = subprocess.run(
        [sys.executable, "-m", "sessionlint", "check", "app"], cwd=project, capture_output=True, text=True, check=False
    )
    assert cli_proc.returncode == 1, cli_proc.stderr
    # Cross-module: the factory is defined in app/db.py, used in app/views.py.
    assert "app/views.py:" in cli_proc.stdout
    assert proc.stdout.splitlines() == cli_proc.stdout.splitlines()


def test_cross_module_index_covers_files_flake8_is_not_given(tmp_path: Path) -> None:
    # flake8 is handed only views.py; the factory in db.py comes from the project index.
    project = _cross_module_project(tmp_path)
    proc = run_flake8(["--select", "SES", "app/views.py"], cwd=project)
    assert [line.split(":")[:3] for line in proc.stdout.splitlines()] == [["app/views.py", "12", "15"]]


def test_noqa_extend_ignore_and_per_file_ignores(tmp_path: Path) -> None:
    project = _cross_module_project(tmp_path)
    assert run_flake8(["--select", "SES", "app"], cwd=project).returncode == 1
    for args in (
        ["--extend-ignore", "SES101"],
        ["--extend-ignore", "SES1"],
        ["--per-file-ignores", "app/views.py:SES101"],
        ["--per-file-ignores", "views.py:SES"],
    ):
        proc = run_flake8(["--select", "SES", *args, "app"], cwd=project)
        assert (proc.returncode, proc.stdout) == (0, ""), args

    views = project / "app" / "views.py"
    lines = views.read_text(encoding="utf-8").splitlines()
    lines[11] += "  # noqa: SES101"
    views.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_flake8(["--select", "SES", "app"], cwd=project)
    assert (proc.returncode, proc.stdout) == (0, "")
    # flake8 applies the noqa comment, so its --disable-noqa brings the finding back.
    proc = run_flake8(["--select", "SES", "--disable-noqa", "app"], cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [(line.split(":")[:3], line.split()[1]) for line in proc.stdout.splitlines()] == [
        (["app/views.py", "12", "15"], "SES101")
    ]


def test_flake8_config_file_per_file_ignores(tmp_path: Path) -> None:
    project = _cross_module_project(tmp_path)
    (project / ".flake8").write_text("[flake8]\nselect = SES\nper-file-ignores =\n    app/views.py: SES101\n")
    proc = subprocess.run([*FLAKE8, "app"], cwd=project, capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr


def test_tool_sessionlint_settings_apply_under_flake8(tmp_path: Path) -> None:
    project = _cross_module_project(tmp_path)
    (project / "pyproject.toml").write_text('[tool.sessionlint]\nignore = ["SES101"]\n')
    proc = run_flake8(["--select", "SES", "app"], cwd=project)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr

    (project / "pyproject.toml").write_text('[tool.sessionlint]\nper-file-ignores = { "app/views.py" = ["SES1"] }\n')
    proc = run_flake8(["--select", "SES", "app"], cwd=project)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr


def test_configured_session_factory_applies_under_flake8(tmp_path: Path) -> None:
    scenario = Scenario(FIXTURES / "SES101" / "configured_factory_not_closed.py")
    project = tmp_path / "configured"
    _write_project(scenario, project)
    with_config = flake8_findings(run_flake8(["--select", "SES", "."], cwd=project).stdout)
    assert with_config, "session-factories from [tool.sessionlint] should produce findings"
    (project / "pyproject.toml").write_text("[tool.sessionlint]\n")
    without = flake8_findings(run_flake8(["--select", "SES", "."], cwd=project).stdout)
    assert with_config != without


def test_syntax_error_is_left_to_e999(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\n")
    (tmp_path / "broken.py").write_text("from sqlalchemy.orm import Session\ndef f(:\n    s = Session()\n")
    proc = run_flake8(["--select", "E999,SES", "broken.py"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.startswith("broken.py:2:"), proc.stdout
    assert "E999" in proc.stdout and "SES" not in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_config_is_a_clear_error_not_a_traceback(tmp_path: Path, jobs: str) -> None:
    project = _cross_module_project(tmp_path)
    (project / "pyproject.toml").write_text('[tool.sessionlint]\nselect = ["SES999"]\n')
    proc = run_flake8(["--select", "SES", "-j", jobs, "app"], cwd=project)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "sessionlint configuration error" in output and "SES999" in output, output
    assert "pyproject.toml" in output
    assert "Traceback" not in output


def test_stdin(tmp_path: Path) -> None:
    project = _cross_module_project(tmp_path)
    source = (project / "app" / "views.py").read_text(encoding="utf-8")
    proc = run_flake8(["--select", "SES", "--stdin-display-name", "app/views.py", "-"], cwd=project, stdin=source)
    assert [line.split(":")[:4] for line in proc.stdout.splitlines()] == [["app/views.py", "12", "15", " SES101 session `session` is not closed on every path"]]
    # Plain `-`: flake8 names it "stdin"; the project is the working directory's.
    proc = run_flake8(["--select", "SES", "-"], cwd=project, stdin=source)
    assert [line.split(":")[:3] for line in proc.stdout.splitlines()] == [["stdin", "12", "15"]], proc.stdout + proc.stderr


def test_flake8_lists_the_plugin() -> None:
    proc = subprocess.run([*FLAKE8, "--version"], capture_output=True, text=True, check=True)
    assert "sessionlint" in proc.stdout


def test_index_is_built_once_per_project_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real in-process flake8 run over three files of one project builds one index."""
    from flake8.api import legacy
    from flake8.main.options import JobsArgument

    from sessionlint import flake8_plugin, runner

    project = _cross_module_project(tmp_path)
    (project / "app" / "more.py").write_text("from app.db import SessionLocal\n\ndef g():\n    s = SessionLocal()\n    return 1\n")
    calls: list[object] = []
    real = runner.build_index

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "build_index", counting)
    flake8_plugin._reset()
    monkeypatch.chdir(project)
    try:
        guide = legacy.get_style_guide(select=["SES"], jobs=JobsArgument("1"))
        report = guide.check_files(["app"])
    finally:
        flake8_plugin._reset()
    assert report.total_errors == 2
    assert len(calls) == 1


CRASHING_FLAKE8 = """
import sys
from sessionlint.rules import lifecycle

def boom(self, node):
    raise RuntimeError("boom")

lifecycle.CloseNotGuaranteed.visit_FunctionDef = boom
from flake8.main.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_crashing_rule_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    project = _cross_module_project(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_FLAKE8, "--isolated", "--select", "SES", "-j", "1", "app"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["app/views.py:12:15: SES101 session `session` is not closed on every path"]
    assert "internal error in SES102 (close-not-guaranteed)" in proc.stderr and "boom" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
