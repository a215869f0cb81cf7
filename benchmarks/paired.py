"""Cold-run timing of this checkout against another commit, paired and interleaved.

    .venv/bin/python benchmarks/paired.py BASE_COMMIT TREE_DIR [TREE_DIR ...] [--runs 3]

``BASE_COMMIT`` is checked out into a temporary worktree and imported ahead of the
installed package (``PYTHONPATH``), so both sides run under the same interpreter and
dependencies. Each round runs base then head on every tree with ``--no-cache``; the
table shows medians of wall time. Trees come from ``realworld/run.py --keep``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _time(pythonpath: str | None, tree: Path) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    else:
        env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sessionlint", "check", "--no-cache", "--exit-zero", "."],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.base], check=True)
        try:
            times: dict[Path, tuple[list[float], list[float]]] = {t: ([], []) for t in args.trees}
            for _ in range(args.runs):
                for tree in args.trees:
                    times[tree][0].append(_time(str(base), tree))
                    times[tree][1].append(_time(str(ROOT), tree))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print("| tree | base | head | ratio |\n|---|---|---|---|")
    for tree, (b, h) in times.items():
        mb, mh = statistics.median(b), statistics.median(h)
        print(f"| {tree.name} | {mb:.2f} s | {mh:.2f} s | {mh / mb:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
