"""Stage 1 loses nothing on real code: the findings of each real tree with and
without stage 1 (the byte and ``ast`` prefilter that keeps most of a tree from
LibCST) must be identical.

``tests/test_stage1.py`` proves it over every fixture and a generated corpus; this
runs the same comparison over the trees of ``trees.tsv`` (exported by ``run.py
--keep`` into ``/tmp/sessionlint-realworld/trees``, or fresh from the mirrors), in one
process each way, without the cache. Without stage 1 every file that names
SQLAlchemy is parsed by LibCST, so this takes minutes on the larger trees.

    .venv/bin/python benchmarks/realworld/stage1_equivalence.py [--trees a,b] [--out DIR]

Exit status 1 if any tree differs; the differing findings are printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
from mirrors import export_tree, git_dir, python_and_config  # noqa: E402
from run import read_trees  # noqa: E402

from sessionlint.discovery import discover  # noqa: E402
from sessionlint.runner import RunOptions, check_files, project_settings  # noqa: E402


def findings(root: Path, stage1: bool) -> tuple[set[tuple[str, int, int, str]], float]:
    settings = project_settings([str(root)])
    files, _missing, _empty = discover([str(root)], settings.root, (*settings.exclude, *settings.extend_exclude))
    started = time.perf_counter()
    results = check_files(settings, files, RunOptions(jobs=1, use_cache=False, stage1=stage1))
    elapsed = time.perf_counter() - started
    found = {(d.path, d.line, d.column, d.code) for r in results for d in r.diagnostics}
    return found, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", help="comma-separated short names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sessionlint-realworld"))
    args = parser.parse_args()
    only = set(args.trees.split(",")) if args.trees else None
    print("| tree | diagnostics | with stage 1 | without | identical |")
    print("|---|---|---|---|---|")
    differing = 0
    for name, repo, commit in read_trees():
        if only is not None and name not in only:
            continue
        root = args.out / "trees" / name
        if not root.is_dir():
            git = git_dir(repo)
            if git is None:
                print(f"{name}: mirror not fetched, skipped", file=sys.stderr)
                continue
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            export_tree(git, commit, root, python_and_config)
        with_stage1, fast = findings(root, True)
        without, slow = findings(root, False)
        same = with_stage1 == without
        differing += not same
        print(f"| {name} | {len(without)} | {fast:.1f} s | {slow:.1f} s | {'yes' if same else 'NO'} |", flush=True)
        for extra in sorted(with_stage1 - without):
            print(f"  only with stage 1: {extra}", file=sys.stderr)
        for lost in sorted(without - with_stage1):
            print(f"  lost by stage 1: {lost}", file=sys.stderr)
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
