"""The runtime guard on real projects' test suites: added wall time, and what it finds.

Each suite below is exported from its git mirror at a pinned commit (bring the
mirrors with the search tool's ``fetch``, see ``benchmarks/README.md``), installed
with its test dependencies and this checkout (``sessionlint[guard]``) into a venv of
its own, then run with and without ``--sessionguard``, paired and alternating
(off/on, on/off, ...) in one run, ``--runs`` rounds each; the table shows medians.
Findings are written by ``--sessionguard-report`` and printed for reading.

    .venv/bin/python benchmarks/guard_real_suites.py [--runs 5] [--only NAME] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from mirrors import git_dir  # noqa: E402

# (name, repository, commit, pip requirements besides the project itself, pytest arguments)
SUITES = [
    (
        "flask-sqlalchemy",
        "pallets-eco/flask-sqlalchemy",
        "3e3e92ba557649ab5251eda860a67656cc8c10af",
        # This commit predates SQLAlchemy 2.1 (its dataclass base fails there).
        ["flask>=2.2.5", "sqlalchemy>=2.0.16,<2.1", "pytest"],
        ["tests"],
    ),
    (
        "sqlmodel",
        "fastapi/sqlmodel",
        "a6469ef61bb903cbf7fd8749c70d8ceb8046c368",
        ["sqlalchemy>=2.0.14,<2.1", "pydantic>=2.11", "dirty-equals", "fastapi", "httpx", "jinja2", "pytest", "typer", "black"],
        ["tests"],
    ),
    (
        "fastapi-users-db-sqlalchemy",
        "fastapi-users/fastapi-users-db-sqlalchemy",
        "6397ace506d829a2ee12786da5d724c3f4c6b634",
        ["fastapi-users", "sqlalchemy[asyncio]", "aiosqlite", "pytest", "pytest-asyncio", "pytest-mock"],
        ["tests", "-k", "not postgres and not mysql"],
    ),
]


def prepare(name: str, repo: str, commit: str, requirements: list[str], work: Path) -> tuple[Path, Path] | None:
    git = git_dir(repo)
    if git is None:
        print(f"{name}: mirror of {repo} not fetched, skipped", file=sys.stderr)
        return None
    tree = work / name
    python = work / f"venv-{name}" / "bin" / "python"
    if not tree.is_dir():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", f"--git-dir={git}", "archive", commit], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements, "-e", f"{ROOT}[guard]"], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(tree)], check=True)
    return tree, python


def run_suite(tree: Path, python: Path, args: list[str], guard: bool, report: Path) -> tuple[float, int, str]:
    extra = ["--sessionguard", f"--sessionguard-report={report}"] if guard else []
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, *extra],
        cwd=tree, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    tail = (done.stdout.strip().splitlines() or [""])[-1]
    return elapsed, done.returncode, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessionlint-guard-suites"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, repo, commit, requirements, pytest_args in SUITES:
        if args.only and name != args.only:
            continue
        prepared = prepare(name, repo, commit, requirements, args.work)
        if prepared is None:
            continue
        tree, python = prepared
        report = args.work / f"{name}-findings.json"
        times: dict[bool, list[float]] = {False: [], True: []}
        outcome = {}
        for i in range(args.runs):
            for guard in ((False, True) if i % 2 == 0 else (True, False)):
                elapsed, code, tail = run_suite(tree, python, pytest_args, guard, report)
                if code not in (0, 1):
                    print(f"{name}: pytest exited {code} ({'on' if guard else 'off'}): {tail}", file=sys.stderr)
                times[guard].append(elapsed)
                outcome[guard] = (code, tail)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        findings = json.loads(report.read_text()) if report.exists() else []
        rows.append((name, commit[:10], outcome[False][1], off, on, on / off, findings))
    print("| suite | commit | tests | guard off | guard on | ratio | findings |")
    print("|---|---|---|---|---|---|---|")
    for name, commit, tail, off, on, ratio, findings in rows:
        print(f"| {name} | {commit} | {tail} | {off:.2f} s | {on:.2f} s | {ratio:.3f} | {len(findings)} |")
    for name, *_, findings in rows:
        for f in findings:
            print(f"{name}: {f['code']} {f['nodeid']}: {f['message']}", file=sys.stderr)
            for frame in f.get("stack", [])[-3:]:
                print(f"    {frame}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
