"""Lint the real trees pinned in ``trees.tsv`` and read the findings against
``triage.tsv``.

Each tree is exported from its git mirror (see ``benchmarks/mirrors.py``) at the
pinned commit: every ``*.py`` plus the config files that carry project evidence,
with ``[tool.sessionlint]`` added to the root ``pyproject.toml``. Then
``sessionlint check --no-cache --format json`` runs on it, and the findings
(input errors aside) are written to ``OUT/findings.tsv``, one per line in the
layout of ``triage.tsv``, with the verdict from ``triage.tsv`` where one is
recorded (else ``untriaged``). Per code it prints the findings, how many are
judged true, false and debatable, and the precision, true / (true + false).

    .venv/bin/python benchmarks/realworld/run.py [--trees a,b] [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mirrors import export_tree, git_dir, python_and_config  # noqa: E402

VERDICTS = ("true", "false", "debatable")


def read_trees() -> list[tuple[str, str, str]]:
    rows = []
    for line in (HERE / "trees.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, repo, commit = line.split("\t")[:3]
        rows.append((name, repo, commit))
    return rows


def read_triage() -> dict[tuple[str, str, int, str], tuple[str, str]]:
    verdicts = {}
    with (HERE / "triage.tsv").open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["line"].isdigit() and row["verdict"] in VERDICTS:
                verdicts[(row["tree"], row["path"], int(row["line"]), row["code"])] = (row["verdict"], row["reason"])
    return verdicts


def lint_tree(root: Path) -> tuple[list[dict[str, object]], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sessionlint", "check", "--no-cache", "--format", "json", "."],
        capture_output=True, text=True, cwd=root,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1, 2) or not done.stdout.strip():  # 2: some files do not parse
        raise RuntimeError(f"sessionlint failed on {root} ({done.returncode}): {done.stderr[-500:]}")
    return json.loads(done.stdout), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", help="comma-separated short names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sessionlint-realworld"))
    parser.add_argument("--keep", action="store_true", help="reuse exported trees found in OUT")
    args = parser.parse_args()
    only = set(args.trees.split(",")) if args.trees else None
    triage = read_triage()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    skipped = []
    for name, repo, commit in read_trees():
        if only is not None and name not in only:
            continue
        git = git_dir(repo)
        if git is None:
            skipped.append(name)
            continue
        root = args.out / "trees" / name
        if not (args.keep and root.is_dir()):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            export_tree(git, commit, root, python_and_config)
        findings, elapsed = lint_tree(root)
        kept = [f for f in findings if not str(f["code"]).startswith("SES0")]
        print(f"{name:20} {len(kept):4} findings  {elapsed:6.1f} s", file=sys.stderr)
        for f in kept:
            path = os.path.relpath(root / str(f["path"]), root)
            verdict, reason = triage.get((name, path, int(f["line"]), str(f["code"])), ("untriaged", ""))  # type: ignore[call-overload]
            rows.append([name, path, str(f["line"]), str(f["code"]), verdict, reason, str(f["message"])])
    with (args.out / "findings.tsv").open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["tree", "path", "line", "code", "verdict", "reason", "message"])
        writer.writerows(rows)
    per_code: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        per_code[row[3]][row[4]] += 1
        per_code["all"][row[4]] += 1
    print("| code | findings | true | false | debatable | untriaged | precision |")
    print("|---|---|---|---|---|---|---|")
    for code in sorted(per_code, key=lambda c: (c == "all", c)):
        c = per_code[code]
        judged = c["true"] + c["false"]
        precision = f"{c['true'] / judged:.2f}" if judged else "-"
        print(f"| {code} | {sum(c.values())} | {c['true']} | {c['false']} | {c['debatable']} | {c['untriaged']} | {precision} |")
    if skipped:
        print(f"not fetched (skipped): {', '.join(skipped)}", file=sys.stderr)
    print(f"findings: {args.out / 'findings.tsv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
