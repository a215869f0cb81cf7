"""Run ``sessionlint check --fix --unsafe-fixes`` over the real trees of ``trees.tsv``
and check what the fixes did.

Each tree is exported fresh from its mirror at the pinned commit (``*.py`` plus
config files, as ``run.py`` does), linted (JSON), fixed with every fix, and linted
again. Per tree it prints the findings before, how many carried a safe or an unsafe
fix, how many the run fixed, the findings after, the files changed, and whether every
changed file still compiles. It fails (exit 1) if a changed file does not compile, if
any code has more findings after than before, or if a second ``--fix`` changes
anything.

    .venv/bin/python benchmarks/realworld/fix_trees.py [--trees a,b] [--keep-trees DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mirrors import export_tree, git_dir, python_and_config  # noqa: E402
from run import read_trees  # noqa: E402

SESSIONLINT = [sys.executable, "-m", "sessionlint", "check", "--no-cache"]


def lint(root: Path) -> list[dict[str, object]]:
    done = subprocess.run([*SESSIONLINT, "--format", "json", "."], capture_output=True, text=True, cwd=root)
    if done.returncode not in (0, 1, 2) or not done.stdout.strip():
        raise RuntimeError(f"sessionlint failed on {root}: {done.stderr[-500:]}")
    return [f for f in json.loads(done.stdout) if not str(f["code"]).startswith("SES0")]


def hashes(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.py") if p.is_file()}


def fix(root: Path) -> str:
    done = subprocess.run([*SESSIONLINT, "--fix", "--unsafe-fixes", "."], capture_output=True, text=True, cwd=root)
    if done.returncode not in (0, 1, 2):
        raise RuntimeError(f"sessionlint --fix failed on {root}: {done.stderr[-500:]}")
    return done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", help="comma-separated short names (default: all)")
    parser.add_argument("--keep-trees", type=Path, help="leave the fixed trees here (default: a temporary directory)")
    args = parser.parse_args()
    only = set(args.trees.split(",")) if args.trees else None
    work = args.keep_trees or Path(tempfile.mkdtemp(prefix="sessionlint-fix-"))
    print("| tree | findings | safe fixes | unsafe fixes | fixed | findings after | files changed | all compile |")
    print("|---|---|---|---|---|---|---|---|")
    failures = []
    totals: Counter[str] = Counter()
    try:
        for name, repo, commit in read_trees():
            if only is not None and name not in only:
                continue
            git = git_dir(repo)
            if git is None:
                print(f"{name}: mirror not fetched, skipped", file=sys.stderr)
                continue
            root = work / name
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            export_tree(git, commit, root, python_and_config)
            before = lint(root)
            old = hashes(root)
            fix(root)
            changed = [p for p, digest in hashes(root).items() if old.get(p) != digest]
            compiles = True
            for path in changed:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        compile(path.read_bytes(), str(path), "exec")
                except SyntaxError as exc:
                    compiles = False
                    failures.append(f"{name}: {path.relative_to(root)} does not compile after --fix: {exc}")
            after = lint(root)
            counts_before = Counter(str(f["code"]) for f in before)
            counts_after = Counter(str(f["code"]) for f in after)
            for code, n in counts_after.items():
                if n > counts_before[code]:
                    failures.append(f"{name}: {code} went from {counts_before[code]} to {n}")
            again = hashes(root)
            fix(root)
            if hashes(root) != again:
                failures.append(f"{name}: a second --fix changed files")
            safe = sum(1 for f in before if isinstance(f.get("fix"), dict) and f["fix"]["applicability"] == "safe")  # type: ignore[index]
            unsafe = sum(1 for f in before if isinstance(f.get("fix"), dict) and f["fix"]["applicability"] == "unsafe")  # type: ignore[index]
            row = Counter(findings=len(before), safe=safe, unsafe=unsafe, fixed=len(before) - len(after), after=len(after), files=len(changed))
            totals.update(row)
            print(
                f"| {name} | {len(before)} | {safe} | {unsafe} | {len(before) - len(after)} | {len(after)} | {len(changed)} | "
                f"{'yes' if compiles else 'NO'} |",
                flush=True,
            )
        print(
            f"| all | {totals['findings']} | {totals['safe']} | {totals['unsafe']} | {totals['fixed']} | {totals['after']} | "
            f"{totals['files']} | {'yes' if not any('compile' in f for f in failures) else 'NO'} |"
        )
    finally:
        if args.keep_trees is None:
            shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
