"""The result cache: reused when nothing a file depends on changed, and only then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sessionlint import runner
from sessionlint.cache import CACHE_DIR
from sessionlint.config import Settings
from sessionlint.runner import RunOptions, RunStats, check_files

DB = "from sqlalchemy.orm import sessionmaker\n\nSessionLocal = sessionmaker()\n"
VIEWS = "from app.db import SessionLocal\n\n\ndef view():\n    s = SessionLocal()\n    return s.query(int).all()\n"
JOBS = "from app.db import SessionLocal\n\n\ndef job():\n    with SessionLocal() as s:\n        s.query(int).all()\n"
OTHER = "def add(a, b):\n    return a + b\n"
REGISTRY = (
    "from sqlalchemy.orm import scoped_session, sessionmaker\n\n"
    "db_session = scoped_session(sessionmaker())\n"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\n")
    app = tmp_path / "app"
    app.mkdir()
    for name, text in {"__init__": "", "db": DB, "views": VIEWS, "jobs": JOBS, "other": OTHER}.items():
        (app / f"{name}.py").write_text(text)
    return tmp_path


def run(project: Path, use_cache: bool = True, **changes: object) -> tuple[set[tuple[str, int, str]], RunStats]:
    settings = Settings(root=project, **changes)  # type: ignore[arg-type]
    files = sorted(str(p) for p in (project / "app").rglob("*.py"))
    stats = RunStats()
    results = check_files(settings, files, RunOptions(jobs=1, use_cache=use_cache), stats)
    found = {(Path(d.path).name, d.line, d.code) for r in results for d in r.diagnostics}
    return found, stats


def names(paths: list[str]) -> set[str]:
    return {Path(p).name for p in paths}


def test_warm_run_reuses_everything_with_the_same_findings(project: Path) -> None:
    cold, stats = run(project)
    assert cold == {("views.py", 5, "SES101")} and len(stats.checked) == 5
    warm, stats = run(project)
    assert warm == cold and stats.checked == [] and len(stats.reused) == 5
    ignore = project / CACHE_DIR / ".gitignore"
    assert ignore.read_text().splitlines()[-1] == "*"


def test_changing_a_factory_rechecks_its_users_and_only_those(project: Path) -> None:
    run(project)
    (project / "app" / "db.py").write_text("SessionLocal = dict\n")
    found, stats = run(project)
    assert found == set()  # no longer a session factory
    assert names(stats.checked) == {"db.py", "views.py", "jobs.py"}
    (project / "app" / "db.py").write_text(DB)
    found, stats = run(project)
    assert found == {("views.py", 5, "SES101")}
    assert names(stats.checked) == {"db.py", "views.py", "jobs.py"}


def test_editing_an_unrelated_file_rechecks_only_it(project: Path) -> None:
    run(project)
    (project / "app" / "other.py").write_text(OTHER + "\n# edited\n")
    _, stats = run(project)
    assert names(stats.checked) == {"other.py"}


def test_project_wide_remove_scan_is_invalidated_by_a_new_remove_call(project: Path) -> None:
    (project / "app" / "registry.py").write_text(REGISTRY)
    found, _ = run(project)
    assert ("registry.py", 3, "SES301") in found
    (project / "app" / "other.py").write_text(OTHER + "\n# edited, still no teardown\n")
    found, stats = run(project)
    assert names(stats.checked) == {"other.py"} and ("registry.py", 3, "SES301") in found
    (project / "app" / "other.py").write_text(
        "from app.registry import db_session\n\n\ndef teardown(exc=None):\n    db_session.remove()\n"
    )
    found, stats = run(project)
    assert ("registry.py", 3, "SES301") not in found
    assert "registry.py" in names(stats.checked)


def test_an_unrelated_remove_call_leaves_the_registry_module_cached(project: Path) -> None:
    (project / "app" / "registry.py").write_text(REGISTRY)
    run(project)
    (project / "app" / "other.py").write_text(OTHER + "\n\ndef drop(items, x):\n    items.remove(x)\n")
    found, stats = run(project)
    assert names(stats.checked) == {"other.py"} and ("registry.py", 3, "SES301") in found


def test_a_remove_through_a_re_export_is_followed(project: Path) -> None:
    (project / "app" / "registry.py").write_text(REGISTRY)
    (project / "app" / "__init__.py").write_text("from app.registry import db_session as Registry\n")
    (project / "app" / "other.py").write_text(
        "from app import Registry\n\n\ndef teardown(exc=None):\n    Registry.remove()\n"
    )
    found, _ = run(project)
    assert ("registry.py", 3, "SES301") not in found
    (project / "app" / "other.py").write_text(OTHER)
    found, stats = run(project)
    assert ("registry.py", 3, "SES301") in found and "registry.py" in names(stats.checked)


def test_configuration_change_and_new_file_invalidate(project: Path) -> None:
    run(project)
    _, stats = run(project, ignore=("SES104",))
    assert len(stats.checked) == 5
    (project / "app" / "new.py").write_text(OTHER)
    _, stats = run(project, ignore=("SES104",))
    assert len(stats.checked) == 6


def test_a_change_to_sessionlint_itself_invalidates(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An editable install or a checkout changes the rules without changing __version__.
    run(project)
    _, stats = run(project)
    assert stats.checked == []
    monkeypatch.setattr(runner, "_code_stamp", lambda: "another build")
    _, stats = run(project)
    assert len(stats.checked) == 5


def test_code_stamp_follows_the_package_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "sessionlint"
    package.mkdir()
    (package / "runner.py").write_text("x = 1\n")
    monkeypatch.setattr(runner, "__file__", str(package / "runner.py"))
    runner._code_stamp.cache_clear()
    first = runner._code_stamp()
    runner._code_stamp.cache_clear()
    assert runner._code_stamp() == first
    (package / "rules.py").write_text("y = 2\n")
    runner._code_stamp.cache_clear()
    assert runner._code_stamp() != first
    runner._code_stamp.cache_clear()


def test_no_cache_neither_reads_nor_writes(project: Path) -> None:
    _, stats = run(project, use_cache=False)
    assert not (project / CACHE_DIR).exists() and len(stats.checked) == 5


def test_corrupt_or_foreign_cache_is_ignored(project: Path) -> None:
    run(project)
    cache_file = project / CACHE_DIR / "results.json"
    cache_file.write_text("{not json")
    found, stats = run(project)
    assert found == {("views.py", 5, "SES101")} and len(stats.checked) == 5
    data = json.loads(cache_file.read_text())
    data["format"] = -1
    cache_file.write_text(json.dumps(data))
    _, stats = run(project)
    assert len(stats.checked) == 5


def test_cli_warm_and_cold_agree(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from sessionlint.cli import main

    monkeypatch.chdir(project)
    outputs = []
    for args in (["check", "--no-cache", "app"], ["check", "app"], ["check", "app"], ["check", "-j", "2", "--no-cache", "app"]):
        assert main(args) == 1
        outputs.append(capsys.readouterr().out)
    assert len(set(outputs)) == 1 and "app/views.py:5:9: SES101" in outputs[0]


def test_a_name_becoming_interesting_rechecks_files_that_spell_it(project: Path) -> None:
    """Users of a name that was not interesting had no dependencies recorded (stage 1
    skipped them): the new project-wide name must bring them back, re-exports too."""
    (project / "app" / "db.py").write_text(DB + "Maker = dict\n")
    (project / "app" / "__init__.py").write_text("from .db import Maker as Factory\n")
    (project / "app" / "users.py").write_text("from app.db import Maker\n\n\ndef f():\n    s = Maker()\n    s.query(int)\n")
    (project / "app" / "users2.py").write_text("from app import Factory\n\n\ndef g():\n    s = Factory()\n    s.query(int)\n")
    found, _ = run(project)
    assert not {f for f in found if f[0].startswith("users")}
    (project / "app" / "db.py").write_text(DB + "Maker = sessionmaker()\n")
    found, stats = run(project)
    assert {("users.py", 5, "SES101"), ("users2.py", 5, "SES101")} <= found
    assert {"users.py", "users2.py", "db.py"} <= names(stats.checked)
    assert "other.py" not in names(stats.checked)


def test_a_module_becoming_interesting_rechecks_files_reaching_it_by_module_name(project: Path) -> None:
    """``db2`` newly defines a name that already exists elsewhere (no new name), and
    ``report.py`` reaches it only through the module: ``import app.db2 as d``."""
    (project / "app" / "db2.py").write_text("Other = dict\n")
    (project / "app" / "report.py").write_text("import app.db2 as d\n\n\ndef f():\n    s = d.SessionLocal()\n    s.query(int)\n")
    found, _ = run(project)
    assert not {f for f in found if f[0] == "report.py"}
    (project / "app" / "db2.py").write_text(DB)
    found, stats = run(project)
    assert ("report.py", 5, "SES101") in found
    assert "report.py" in names(stats.checked)


def test_parallel_run_matches_one_process_including_syntax_errors(tmp_path: Path) -> None:
    """``--jobs 2`` (a parallel prepass for the parse and the syntax check, then the
    check) gives exactly what one process gives, syntax errors included."""
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\n")
    app = tmp_path / "app"
    app.mkdir()
    files = {"__init__": "", "db": DB, "views": VIEWS, "jobs": JOBS}
    for n in range(24):
        files[f"util{n}"] = OTHER
    files["broken_plain"] = "def f(:\n    pass\n"  # no SQLAlchemy: only the syntax check sees it
    files["broken_sqla"] = "import sqlalchemy\n\nclass (:\n"
    files["duplicate_arg"] = "def f(a, a):\n    return a\n"  # compiles to an error, parses fine
    files["null_byte"] = "x = 1\0\n"
    for name, text in files.items():
        (app / f"{name}.py").write_text(text)
    paths = sorted(str(p) for p in app.rglob("*.py"))
    found = {}
    for jobs in (1, 2):
        results = check_files(Settings(root=tmp_path), paths, RunOptions(jobs=jobs, use_cache=False))
        found[jobs] = sorted((Path(d.path).name, d.line, d.column, d.code, d.message) for r in results for d in r.diagnostics)
    assert found[1] == found[2]
    codes = {(name, code) for name, _, _, code, _ in found[1]}
    assert {("broken_plain.py", "SES001"), ("broken_sqla.py", "SES001"), ("null_byte.py", "SES001"), ("views.py", "SES101")} <= codes
    assert not any(name == "duplicate_arg.py" for name, *_ in found[1])


def test_a_removed_registry_stays_settled_while_the_file_removing_it_is_unchanged(project: Path) -> None:
    app = project / "app"
    (app / "registry.py").write_text(REGISTRY)
    (app / "hooks.py").write_text("from app.registry import db_session\n\n\ndef teardown(exc=None):\n    db_session.remove()\n")
    user = "from app.registry import db_session\n\n\ndef count():\n    return db_session.query(int).count()\n"
    (app / "other.py").write_text(user)
    found, _ = run(project)
    assert not any(code == "SES301" for *_, code in found)
    (app / "other.py").write_text(user + "\n\ndef more():\n    return db_session.query(str).all()\n")
    found, stats = run(project)
    assert names(stats.checked) == {"other.py"} and not any(code == "SES301" for *_, code in found)
    (app / "hooks.py").write_text("def teardown(exc=None):\n    pass\n")
    found, stats = run(project)
    assert {"registry.py", "hooks.py"} <= names(stats.checked) and ("registry.py", 3, "SES301") in found


def test_an_edit_checked_by_the_prewarmed_process_matches_a_fresh_run(project: Path) -> None:
    """A cached run forks a process that imports the engine while the tree is read; a
    few changed files are checked there. In a fresh interpreter (where the engine is
    not imported yet), its findings must equal an uncached run's."""
    import subprocess
    import sys

    def cli(*extra: str) -> list[list[object]]:
        proc = subprocess.run(
            [sys.executable, "-m", "sessionlint", "check", "--format", "json", *extra, "app"],
            cwd=project, capture_output=True, text=True, check=False,
        )
        assert proc.returncode in (0, 1), proc.stderr
        return sorted([d["path"], d["line"], d["code"]] for d in json.loads(proc.stdout))

    cli()  # fills the cache
    (project / "app" / "jobs.py").write_text(VIEWS.replace("def view", "def job"))
    warm_after_edit = cli()
    assert warm_after_edit == cli("--no-cache")
    assert ["app/jobs.py", 5, "SES101"] in warm_after_edit
