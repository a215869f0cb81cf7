"""How a cold run grows with the size of a real tree.

Takes a tree exported by ``run.py --keep`` (default: prefect), keeps a deterministic
sample of its Python files (25%, 50%, 100%: the files whose path hashes lowest, so
each sample contains the smaller ones) plus every config file, and times
``sessionlint check --no-cache`` on each sample, ``--runs`` times, median. Prints
files, lines and seconds per sample, and seconds per 100k lines.

    .venv/bin/python benchmarks/realworld/scaling.py [--tree DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sample(tree: Path, share: float, into: Path) -> tuple[int, int]:
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    python = sorted((p for p in files if p.suffix == ".py"), key=lambda p: hashlib.sha256(str(p.relative_to(tree)).encode()).digest())
    kept = set(python[: round(len(python) * share)])
    lines = 0
    for path in files:
        if path.suffix == ".py" and path not in kept:
            continue
        target = into / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        if path.suffix == ".py":
            lines += path.read_bytes().count(b"\n")
    return len(kept), lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=Path("/tmp/sessionlint-realworld/trees/prefect"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.tree.is_dir():
        print(f"{args.tree}: no such tree (export it with benchmarks/realworld/run.py --keep)", file=sys.stderr)
        return 2
    print(f"tree: {args.tree.name}")
    print("| sample | files | lines | cold s (median) | s per 100k lines |")
    print("|---|---|---|---|---|")
    for share in (0.25, 0.5, 1.0):
        with tempfile.TemporaryDirectory(prefix="sessionlint-scale-") as work:
            root = Path(work)
            files, lines = sample(args.tree, share, root)
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "sessionlint", "check", "--no-cache", "."], cwd=root, capture_output=True)
                times.append(time.perf_counter() - started)
            median = statistics.median(times)
            print(f"| {share:.0%} | {files} | {lines} | {median:.2f} | {median / lines * 100_000:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
