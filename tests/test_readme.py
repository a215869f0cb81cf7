"""Every command README.md shows is run here, so that README cannot rot.

The ``console`` blocks are read line by line (a trailing ``# comment`` dropped).
``sessionlint``, ``flake8`` and ``pytest`` commands run for real, in README order, in
a copy of the bundled example app (``examples/flask_shop``, full of real misuse);
``make demo`` runs the demo script its target runs, ``make test`` (this suite) only
as a dry run; ``pip install`` lines must name this package and its extras; the
benchmark scripts must start (``--help``). The TOML and pre-commit YAML blocks must
be what the tool accepts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def commands() -> list[str]:
    found = []
    for block in blocks("console"):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                found.append(command)
    return found


def test_readme_shows_the_commands_this_file_knows() -> None:
    known = ("sessionlint ", "flake8 ", "pytest ", "make ", "pip install ", ".venv/bin/python benchmarks/")
    assert commands(), "README lost its console blocks"
    for command in commands():
        assert command.startswith(known), f"README shows a command no test runs: {command}"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("readme") / "flask_shop"
    shutil.copytree(ROOT / "examples" / "flask_shop", where, ignore=shutil.ignore_patterns("__pycache__", ".sessionlint_cache"))
    (where / "pyproject.toml").write_text("[tool.sessionlint]\n")
    return where


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    if argv[0] in ("sessionlint", "flake8", "pytest"):
        argv[0] = str(BIN / argv[0])
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, check=False, timeout=600)


def test_tool_commands_run_in_readme_order(app: Path) -> None:
    ran = 0
    for command in commands():
        if not command.startswith(("sessionlint ", "flake8 ", "pytest ")):
            continue
        proc = run(command, app)
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output, f"{command}\n{output}"
        # 0 clean, 1 findings (the example app is full of them); never a usage error.
        assert proc.returncode in (0, 1), f"{command} exited {proc.returncode}\n{output}"
        ran += 1
    assert ran >= 12
    assert (app / "sessionlint-baseline.json").is_file()  # --write-baseline ran before --baseline


def test_pip_install_lines_name_this_package_and_its_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for command in commands():
        if command.startswith("pip install "):
            spec = shlex.split(command)[2]
            name, _, extras = spec.partition("[")
            assert name == project["name"]
            for extra in filter(None, extras.rstrip("]").split(",")):
                assert extra in project["optional-dependencies"], spec


def test_make_targets_exist_and_the_demo_runs() -> None:
    shown = [c for c in commands() if c.startswith("make ")]
    assert shown[:2] == ["make demo", "make test"]
    for command in set(shown):
        target = command.split()[1]
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False)
        assert dry.returncode == 0, dry.stderr
    assert "./scripts/demo" in subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True).stdout
    demo = subprocess.run(["./scripts/demo"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "SES101" in demo.stdout and "passed" in demo.stdout


def test_benchmark_commands_start() -> None:
    for command in commands():
        if command.startswith(".venv/bin/python benchmarks/"):
            script = ROOT / command.split()[1]
            proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stderr


def test_configuration_block_is_valid(tmp_path: Path) -> None:
    from sessionlint.config import load_settings

    (toml,) = blocks("toml")
    (tmp_path / "pyproject.toml").write_text(toml)
    settings = load_settings(tmp_path / "pyproject.toml")
    assert settings.baseline == tmp_path / "sessionlint-baseline.json"
    assert settings.per_file_ignores == (("tests/*", ("SES1",)),)


def test_pre_commit_block_names_the_offered_hooks() -> None:
    offered = {hook["id"] for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
    (block,) = blocks("yaml")
    shown = set(re.findall(r"id: ([\w-]+)", block))
    assert shown == {"sessionlint", "sessionlint-fix"} and shown <= offered
