"""Score sessionlint on real bug-fix commits (``corpus.jsonl`` beside this file).

Each entry names a repository, a fix commit, its parent, the file and the buggy
lines in the parent, and the rule family (``SES1`` ... ``SES5``) the bug belongs to.
The script lints the parent's and the fix's version of that file twice: alone (the
file copied into an empty project), and within its whole tree (every ``*.py`` and
config file of that commit, as a user's checkout has them, with a ``pyproject.toml``
at the root so that names resolve across modules). Per family it prints how many bugs are

* detected: a finding of the right family on one of the buggy lines of the parent;
* cleared: the fix's version has fewer findings of that family in the file;
* cleared, bug's code: it has fewer findings of the entry's own codes (``codes``), so
  a fix that closes a session on the success path only counts (SES101 gone, while
  SES102 still, and rightly, reports the exception path).

The repositories' git mirrors are read from ``/work/.mirror`` (bring one with the
search tool's ``fetch``, see ``benchmarks/README.md``); an entry whose mirror is
missing is listed as not scored, never counted as a miss or a hit.

    .venv/bin/python benchmarks/realbugs/score.py [--only alone|tree] [--json OUT] [-v]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mirrors import export_tree, git_dir, python_and_config  # noqa: E402

HERE = Path(__file__).resolve().parent
SESSIONLINT = [sys.executable, "-m", "sessionlint"]


def show(git: Path, commit: str, path: str) -> bytes | None:
    done = subprocess.run(["git", f"--git-dir={git}", "show", f"{commit}:{path}"], capture_output=True)
    return done.stdout if done.returncode == 0 else None


def lint(root: Path, path: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [*SESSIONLINT, "check", "--no-cache", "--format", "json", str(root / path)],
        capture_output=True, text=True, cwd=root,
    )
    if done.returncode not in (0, 1, 2) or not done.stdout.strip():
        raise RuntimeError(f"sessionlint failed on {root / path}: {done.stderr[-500:]}")
    return [d for d in json.loads(done.stdout) if not str(d["code"]).startswith("SES0")]


def family_findings(findings: list[dict[str, object]], family: str) -> list[tuple[int, str]]:
    """(line, code) of the findings of ``family``."""
    return [(int(d["line"]), str(d["code"])) for d in findings if str(d["code"]).startswith(family)]  # type: ignore[call-overload]


def score_entry(entry: dict[str, object], modes: list[str], work: Path, trees: dict[tuple[str, str], Path]) -> dict[str, object]:
    git = git_dir(str(entry["repo"]))
    result: dict[str, object] = {"id": f"{entry['repo']}@{str(entry['fix'])[:10]}:{entry['path']}", "category": entry["category"]}
    if git is None:
        result["skipped"] = "mirror not fetched"
        return result
    family = str(entry["category"])
    lines = {int(n) for n in entry["lines"]}  # type: ignore[union-attr]
    for mode in modes:
        counts = {}
        for side, commit, path in (("buggy", entry["parent"], entry["path"]), ("fixed", entry["fix"], entry.get("fixed_path") or entry["path"])):
            commit, path = str(commit), str(path)
            if mode == "tree":
                key = (str(entry["repo"]), commit)
                if key not in trees:
                    trees[key] = Path(tempfile.mkdtemp(dir=work))
                    export_tree(git, commit, trees[key], python_and_config)  # as users run it: config files too
                root = trees[key]
                if not (root / path).is_file():
                    counts[side] = None
                    continue
            else:
                data = show(git, commit, path)
                root = Path(tempfile.mkdtemp(dir=work))
                (root / "pyproject.toml").write_text("[tool.sessionlint]\n")
                if data is None:
                    counts[side] = None
                    continue
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data)
            counts[side] = family_findings(lint(root, path), family)
        buggy, fixed = counts["buggy"] or [], counts["fixed"]
        codes = set(entry.get("codes") or ())  # type: ignore[arg-type]
        result[mode] = {
            "detected": bool(lines & {line for line, _ in buggy}),
            "cleared": fixed is not None and len(fixed) < len(buggy),
            # The bug's own code (SES101 "never closed") gone, while the family still
            # has a finding: most often a fix that closes on the success path only,
            # which SES102 rightly still reports.
            "cleared_code": fixed is not None
            and sum(code in codes for _, code in fixed) < sum(code in codes for _, code in buggy),
            "buggy_findings": [f"{line}:{code}" for line, code in buggy],
            "fixed_findings": None if fixed is None else [f"{line}:{code}" for line, code in fixed],
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus.jsonl")
    parser.add_argument("--only", choices=("alone", "tree"))
    parser.add_argument("--json", type=Path, help="write per-entry results here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    modes = [args.only] if args.only else ["alone", "tree"]
    entries = [json.loads(line) for line in args.corpus.read_text().splitlines() if line.strip()]
    work = Path(tempfile.mkdtemp(prefix="sessionlint-realbugs-"))
    trees: dict[tuple[str, str], Path] = {}
    results = []
    try:
        for entry in entries:
            results.append(score_entry(entry, modes, work, trees))
            if args.verbose:
                print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        row = table[str(r["category"])]
        if "skipped" in r:
            row["skipped"] += 1
            continue
        row["scored"] += 1
        for mode in modes:
            facts = r[mode]
            assert isinstance(facts, dict)
            row[f"{mode}.detected"] += facts["detected"]
            row[f"{mode}.cleared"] += facts["cleared"]
            row[f"{mode}.cleared_code"] += facts["cleared_code"]
            row["any.detected"] += 0
        row["any.detected"] += any(r[m]["detected"] for m in modes)  # type: ignore[index]
    header = ["family", "scored", *(f"{m} detected" for m in modes), *(f"{m} cleared" for m in modes), *(f"{m} cleared, bug's code" for m in modes), "detected either", "skipped"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    total: dict[str, int] = defaultdict(int)
    for family in sorted(table):
        row = table[family]
        for k, v in row.items():
            total[k] += v
        cells = [family, row["scored"], *(row[f"{m}.detected"] for m in modes), *(row[f"{m}.cleared"] for m in modes), *(row[f"{m}.cleared_code"] for m in modes), row["any.detected"], row["skipped"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    cells = ["all", total["scored"], *(total[f"{m}.detected"] for m in modes), *(total[f"{m}.cleared"] for m in modes), *(total[f"{m}.cleared_code"] for m in modes), total["any.detected"], total["skipped"]]
    print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
