"""The pre-commit hook, through a real ``pre-commit try-repo``.

``try-repo`` installs the hook from a git repository's commit, so the test commits a
copy of this working tree's package (pyproject.toml, README.md, sessionlint/, the hook
manifest) to a temporary repository and points ``try-repo`` at it. pre-commit builds
the hook's virtualenv there with pip (PRE_COMMIT_HOME is a temporary directory shared
by the tests of one process).

The user's repository keeps the session factory in ``app/db.py``, committed and
unchanged; only ``app/views.py`` is staged, so pre-commit passes only that file, and the
finding needs the project index of the whole repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PRE_COMMIT = [sys.executable, "-m", "pre_commit"]

DB = """\
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

engine = create_engine("sqlite://")
SessionLocal = sessionmaker(bind=engine)
"""

LEAKY_VIEW = """\
from app.db import SessionLocal


def count_users():
    session = SessionLocal()
    return session.execute("select count(*) from users").scalar()
"""

FIXED_VIEW = """\
from app.db import SessionLocal


def count_users():
    with SessionLocal() as session:
        return session.execute("select count(*) from users").scalar()
"""


def _git_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="sessionlint tests",
        GIT_AUTHOR_EMAIL="tests@example.invalid",
        GIT_COMMITTER_NAME="sessionlint tests",
        GIT_COMMITTER_EMAIL="tests@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        PRE_COMMIT_HOME=str(home),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.pop("GIT_DIR", None)
    env.pop("GIT_INDEX_FILE", None)
    return env


def _git(cwd: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_manifest_offers_the_static_check_and_the_fix() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    by_id = {hook["id"]: hook for hook in hooks}
    hook = by_id["sessionlint"]
    assert hook["entry"] == "sessionlint check"
    assert hook["language"] == "python"
    assert hook["types"] == ["python"]
    assert by_id["sessionlint-fix"]["entry"] == "sessionlint check --fix"
    proc = subprocess.run(
        [*PRE_COMMIT, "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory, pre_commit_home: Path) -> Path:
    """This working tree's package, committed to a scratch repository."""
    repo = tmp_path_factory.mktemp("hook-repo")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "sessionlint", repo / "sessionlint", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = _git_env(pre_commit_home)
    _git(repo, env, "init", "-q")
    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-q", "-m", "sessionlint under test")
    return repo


def test_try_repo_fails_on_misuse_then_passes_on_the_fix(tmp_path: Path, hook_repo: Path, pre_commit_home: Path) -> None:
    env = _git_env(pre_commit_home)
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "db.py").write_text(DB)
    _git(project, env, "init", "-q")
    _git(project, env, "add", "-A")
    _git(project, env, "commit", "-q", "-m", "the factory, committed and unchanged from here on")

    def run_hook() -> subprocess.CompletedProcess[str]:
        # Without --all-files pre-commit passes only the staged files: app/views.py.
        return subprocess.run(
            [*PRE_COMMIT, "try-repo", str(hook_repo), "sessionlint", "--verbose"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    (project / "app" / "views.py").write_text(LEAKY_VIEW)
    _git(project, env, "add", "app/views.py")
    staged = subprocess.run(
        ["git", "diff", "--cached", "--name-only"], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    assert staged.stdout.split() == ["app/views.py"]  # what pre-commit hands the hook
    proc = run_hook()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    # SES101 needs SessionLocal's definition from the unchanged app/db.py.
    assert "app/views.py:5:15: SES101" in output, output

    (project / "app" / "views.py").write_text(FIXED_VIEW)
    _git(project, env, "add", "app/views.py")
    proc = run_hook()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "SES101" not in output
    assert "Passed" in output


TWO_LEAKS_VIEW = LEAKY_VIEW + """

def count_orders():
    session = SessionLocal()
    return session.execute("select count(*) from orders").scalar()
"""


def test_hook_honours_the_configured_baseline(tmp_path: Path, hook_repo: Path, pre_commit_home: Path) -> None:
    from sessionlint.cli import main

    env = _git_env(pre_commit_home)
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.sessionlint]\nbaseline = "sessionlint-baseline.json"\n')
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "db.py").write_text(DB)
    (project / "app" / "views.py").write_text(LEAKY_VIEW)
    # The existing leak goes into the baseline; the hook then stops only new ones.
    assert main(["check", "--write-baseline", str(project / "sessionlint-baseline.json"), str(project / "app")]) == 0
    _git(project, env, "init", "-q")
    _git(project, env, "add", "-A")
    _git(project, env, "commit", "-q", "-m", "existing code and its baseline")

    (project / "app" / "views.py").write_text(TWO_LEAKS_VIEW)
    _git(project, env, "add", "app/views.py")
    proc = subprocess.run(
        [*PRE_COMMIT, "try-repo", str(hook_repo), "sessionlint", "--verbose"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "app/views.py:10:15: SES101" in output, output  # the new leak in count_orders()
    assert "app/views.py:5:15: SES101" not in output  # the baselined one in count_users()
    assert "1 finding in the baseline not shown" in output


MYSQL_VIEW = """\
from sqlalchemy import create_engine, text

engine = create_engine("mysql+pymysql://app@db/shop")


def count_users():
    with engine.connect() as conn:
        return conn.execute(text("select count(*) from users")).scalar()
"""


def test_fix_hook_rewrites_the_staged_file_and_fails_the_commit(tmp_path: Path, hook_repo: Path, pre_commit_home: Path) -> None:
    env = _git_env(pre_commit_home)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.sessionlint]\n")
    _git(project, env, "init", "-q")
    (project / "db.py").write_text(MYSQL_VIEW)
    _git(project, env, "add", "-A")

    def run_fix_hook() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PRE_COMMIT, "try-repo", str(hook_repo), "sessionlint-fix", "--verbose"],
            cwd=project, env=env, capture_output=True, text=True, check=False,
        )

    proc = run_fix_hook()
    output = proc.stdout + proc.stderr
    # pre-commit fails a hook that modified files, so the user reviews and stages the fix.
    assert proc.returncode == 1, output
    assert "files were modified by this hook" in output, output
    assert "fixed 1 finding in 1 file, 0 remaining" in output
    assert 'create_engine("mysql+pymysql://app@db/shop", pool_recycle=3600, pool_pre_ping=True)' in (project / "db.py").read_text()
    _git(project, env, "add", "-A")
    proc = run_fix_hook()
    assert proc.returncode == 0, proc.stdout + proc.stderr
