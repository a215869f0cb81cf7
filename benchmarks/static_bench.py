"""Time `sessionlint check` on a big tree against flake8, ruff and leakguard.

Run:  .venv/bin/python benchmarks/static_bench.py [--corpus DIR | --tree DIR] [--runs N]

Each measurement runs its tool N times (default 5) in a subprocess and keeps the wall
time and the peak memory of every run: the peak RSS of the largest process of the
run (from ``os.wait4``, which covers the worker processes it reaped) and the peak of
the summed RSS of the whole process tree (sampled from /proc every 50 ms). The memory
column is the larger of the two. Measurements:

* sessionlint cold      ``sessionlint check --format json --no-cache DIR``
* sessionlint warm      ``sessionlint check --format json DIR`` (one untimed run first
                        fills the cache; nothing changes between the timed runs)
* sessionlint touched   the same, after appending a comment to one file that uses the
                        project's session factories (restored after each run)
* sessionlint --jobs 1  ``sessionlint check --format json --jobs 1 --no-cache DIR``
* flake8 -j2            ``flake8 -j2 DIR``
* ruff --no-cache       ``ruff check --no-cache DIR``
* leakguard -w 2        ``leakguard scan -w 2 DIR``

If this sessionlint has no ``--no-cache``/``--jobs`` (``sessionlint check --help``
does not list them), the runs go without them (said on the output); a cold run then
deletes DIR/.sessionlint_cache first. flake8, ruff and leakguard come from
benchmarks/.venv-tools (``pip install -r benchmarks/requirements.txt``); a tool that
is missing or fails is reported as such.

The targets (PASS/FAIL): cold <= 0.15x flake8 -j2 and < leakguard -w 2; warm <= 1.0x
ruff --no-cache; touched < 1.5x warm; sessionlint peak memory < 300 MB; the same
findings cold, warm and with --jobs 1 (sorted ``--format json`` outputs, order
ignored). Results also go to benchmarks/results.json, and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = "/tmp/sessionlint-corpus"
TOOLS_VENV = HERE / ".venv-tools"
PAGE = os.sysconf("SC_PAGE_SIZE")
OK_CODES = {0, 1}  # every tool here exits 1 when it has findings


# ---------------------------------------------------------------------------
# running one command
# ---------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def _tree_rss(root: int) -> int:
    kids = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(kids.get(pid, ()))
    return total


@dataclass
class Run:
    wall: float
    rc: int
    max_rss: int  # bytes, largest single process (wait4)
    tree_peak: int  # bytes, sampled sum over the process tree
    stdout: str = ""
    stderr: str = ""

    @property
    def peak(self) -> int:
        return max(self.max_rss, self.tree_peak)


def run_once(cmd: list[str], cwd: Path, timeout: float) -> Run:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            wall = time.perf_counter() - start
            killer.cancel()
            done.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, proc.returncode, usage.ru_maxrss * 1024, peak[0],
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


@dataclass
class Measurement:
    name: str
    cmd: list[str]
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)

    def stat(self, fn) -> float | None:  # type: ignore[no-untyped-def]
        return fn([r.wall for r in self.runs]) if self.ok else None

    @property
    def median(self) -> float | None:
        return self.stat(statistics.median)

    @property
    def peak_mb(self) -> float | None:
        return max(r.peak for r in self.runs) / 2**20 if self.ok else None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "command": " ".join(self.cmd),
            "ok": self.ok,
            "error": self.error,
            "note": self.note,
            "median_s": self.median,
            "min_s": self.stat(min),
            "max_s": self.stat(max),
            "walls_s": [round(r.wall, 3) for r in self.runs],
            "peak_rss_mb": self.peak_mb,
            "max_rss_largest_process_mb": [round(r.max_rss / 2**20, 1) for r in self.runs],
            "tree_rss_peak_mb": [round(r.tree_peak / 2**20, 1) for r in self.runs],
            "exit_codes": [r.rc for r in self.runs],
        }


def measure(m: Measurement, n: int, cwd: Path, timeout: float, before=None, after=None) -> Measurement:  # type: ignore[no-untyped-def]
    exe = m.cmd[0]
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        m.error = f"not installed ({exe})"
        print(f"  {m.name}: {m.error}", flush=True)
        return m
    for i in range(n):
        if before:
            before(i)
        try:
            run = run_once(m.cmd, cwd, timeout)
        finally:
            if after:
                after(i)
        if run.rc not in OK_CODES:
            tail = (run.stderr.strip() or run.stdout.strip())[-600:]
            m.error = f"exit code {run.rc}" + (f" after {timeout:.0f}s timeout" if run.rc == -9 else "") + f": {tail}"
            m.runs.append(run)
            print(f"  {m.name}: FAILED ({m.error.splitlines()[0]})", flush=True)
            m.runs = []
            return m
        m.runs.append(run)
        print(f"  {m.name} run {i + 1}/{n}: {run.wall:.2f} s, peak {run.peak / 2**20:.0f} MB, exit {run.rc}", flush=True)
    return m


# ---------------------------------------------------------------------------
# the tree
# ---------------------------------------------------------------------------


def count_tree(root: Path) -> tuple[int, int]:
    files = lines = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        for f in filenames:
            if f.endswith(".py"):
                files += 1
                with open(os.path.join(dirpath, f), "rb") as fh:
                    lines += fh.read().count(b"\n")
    return files, lines


def pick_touch_file(root: Path, stats: dict[str, object]) -> Path | None:
    if isinstance(stats.get("touch_file"), str):
        return root / str(stats["touch_file"])
    fallback = None
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        fallback = fallback or path
        if "session" in text.lower() and "sqlalchemy" not in text:
            return path
    return fallback


def normalized_findings(stdout: str, root: Path) -> list[tuple[object, ...]] | None:
    try:
        data = json.loads(stdout)
    except ValueError:
        return None
    out = []
    for d in data:
        path = os.path.relpath(str(d.get("path", "")), root)
        out.append((path, d.get("line"), d.get("column"), d.get("code"), d.get("message")))
    return sorted(out)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="sessionlint speed benchmark (see the module docstring)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--corpus", default=DEFAULT_CORPUS,
                     help=f"generated corpus; made by corpus.py if missing (default {DEFAULT_CORPUS})")
    src.add_argument("--tree", help="any existing directory to check instead (never generated)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per measurement (default 5)")
    ap.add_argument("--sessionlint", default=None, help="the sessionlint executable (default: beside this Python)")
    ap.add_argument("--tools-venv", default=str(TOOLS_VENV), help="venv holding flake8, ruff and leakguard")
    ap.add_argument("--touch", help="file (relative to the tree) to append a comment to for the 'touched' runs")
    ap.add_argument("--only", help="comma-separated measurement names to run: cold,warm,touched,jobs1,flake8,ruff,leakguard")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before one run is killed (default 1800)")
    ap.add_argument("--json-out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)

    if args.tree:
        root = Path(args.tree).resolve()
        if not root.is_dir():
            sys.exit(f"--tree {root}: not a directory")
    else:
        root = Path(args.corpus).resolve()
        if not root.is_dir():
            print(f"generating the corpus in {root} ...", flush=True)
            subprocess.run([sys.executable, str(HERE / "corpus.py"), str(root)], check=True, stdout=subprocess.DEVNULL)
    stats: dict[str, object] = {}
    if (root / ".corpus-stats.json").is_file():
        stats = json.loads((root / ".corpus-stats.json").read_text())
    files, lines = count_tree(root)

    sl = args.sessionlint or str(Path(sys.executable).parent / "sessionlint")
    if not os.path.exists(sl):
        sl = shutil.which("sessionlint") or sl
    tools = Path(args.tools_venv) / "bin"
    only = set(args.only.split(",")) if args.only else None
    want = lambda key: only is None or key in only  # noqa: E731

    # which flags does this sessionlint have?
    notes: list[str] = []
    try:
        help_text = subprocess.run([sl, "check", "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        help_text = ""
        notes.append(f"`sessionlint check --help` failed: {exc}")
    has_no_cache = "--no-cache" in help_text
    has_jobs = "--jobs" in help_text
    no_cache = ["--no-cache"] if has_no_cache else []
    jobs1 = ["--jobs", "1"] if has_jobs else []
    if not has_no_cache:
        notes.append("sessionlint has no --no-cache: ran without it (cold runs delete DIR/.sessionlint_cache first)")
    if not has_jobs:
        notes.append("sessionlint has no --jobs: the '--jobs 1' row ran without it")
    for n in notes:
        print("NOTE:", n, flush=True)

    nproc = os.cpu_count() or 0
    print(f"tree: {root}: {files} Python files, {lines} lines; machine: nproc={nproc}, {platform.machine()}, "
          f"Python {platform.python_version()}", flush=True)
    if stats:
        print(f"corpus: {stats.get('files_importing_sqlalchemy')} files import sqlalchemy "
              f"({stats.get('share_importing_sqlalchemy')}), huge files {stats.get('huge_files')}", flush=True)

    cache_dir = root / ".sessionlint_cache"

    def clear_cache(_i: int = 0) -> None:
        if not has_no_cache and cache_dir.exists():
            shutil.rmtree(cache_dir, ignore_errors=True)

    slj = [sl, "check", "--format", "json"]
    ms: dict[str, Measurement] = {}
    t = args.timeout
    if want("cold"):
        print("sessionlint cold", flush=True)
        ms["cold"] = measure(Measurement("sessionlint cold", slj + no_cache + [str(root)]), args.runs, root, t,
                             before=clear_cache)
    if want("warm") or want("touched"):
        print("sessionlint warm: filling the cache (untimed)", flush=True)
        fill = run_once(slj + [str(root)], root, t)
        print(f"  fill run: {fill.wall:.2f} s, exit {fill.rc}", flush=True)
    if want("warm"):
        ms["warm"] = measure(Measurement("sessionlint warm", slj + [str(root)]), args.runs, root, t)
    if want("touched"):
        touch = (root / args.touch) if args.touch else pick_touch_file(root, stats)
        m = Measurement("sessionlint touched", slj + [str(root)])
        if touch is None or not touch.is_file():
            m.error = f"no file to touch ({touch})"
        else:
            m.note = f"appends a comment to {touch.relative_to(root)} before each run"
            original = touch.read_bytes()
            stamp = time.time_ns()

            def before(i: int) -> None:
                touch.write_bytes(original + f"\n# sessionlint bench touch {stamp} {i}\n".encode())

            def after(_i: int) -> None:
                touch.write_bytes(original)

            print(f"sessionlint touched ({m.note})", flush=True)
            measure(m, args.runs, root, t, before=before, after=after)
        ms["touched"] = m
    if want("jobs1"):
        print("sessionlint --jobs 1", flush=True)
        ms["jobs1"] = measure(Measurement("sessionlint --jobs 1", slj + jobs1 + no_cache + [str(root)]), args.runs,
                              root, t, before=clear_cache)
    if want("flake8"):
        print("flake8 -j2", flush=True)
        ms["flake8"] = measure(Measurement("flake8 -j2", [str(tools / "flake8"), "-j2", str(root)]), args.runs, root, t)
    if want("ruff"):
        print("ruff check --no-cache", flush=True)
        ms["ruff"] = measure(Measurement("ruff --no-cache", [str(tools / "ruff"), "check", "--no-cache", str(root)]),
                             args.runs, root, t)
    if want("leakguard"):
        print("leakguard scan -w 2", flush=True)
        ms["leakguard"] = measure(Measurement("leakguard -w 2", [str(tools / "leakguard"), "scan", "-w", "2", str(root)]),
                                  args.runs, root, t)

    # ---- targets ----------------------------------------------------------
    def med(key: str) -> float | None:
        return ms[key].median if key in ms and ms[key].ok else None

    checks: list[dict[str, object]] = []

    def ratio_check(label: str, num: str, den: str, limit: float, strict: bool = False) -> None:
        a, b = med(num), med(den)
        if a is None or b is None:
            checks.append({"target": label, "value": None, "result": "n/a"})
            return
        r = a / b
        ok = r < limit if strict else r <= limit
        checks.append({"target": label, "value": round(r, 3), "result": "PASS" if ok else "FAIL"})

    ratio_check("cold <= 0.15x flake8 -j2", "cold", "flake8", 0.15)
    ratio_check("cold < leakguard -w 2", "cold", "leakguard", 1.0, strict=True)
    ratio_check("warm <= 1.0x ruff --no-cache", "warm", "ruff", 1.0)
    ratio_check("touched < 1.5x warm", "touched", "warm", 1.5, strict=True)
    sl_peaks = [ms[k].peak_mb for k in ("cold", "warm", "touched", "jobs1") if k in ms and ms[k].ok]
    peak = max(sl_peaks) if sl_peaks else None  # type: ignore[type-var]
    checks.append({"target": "sessionlint peak memory < 300 MB", "value": round(peak, 1) if peak else None,
                   "result": "n/a" if peak is None else ("PASS" if peak < 300 else "FAIL")})
    outputs: dict[str, list[tuple[object, ...]] | None] = {}
    for key in ("cold", "warm", "jobs1", "touched"):
        if key in ms and ms[key].ok:
            for i, r in enumerate(ms[key].runs):
                outputs[f"{key}#{i + 1}"] = normalized_findings(r.stdout, root)
    compared = {k: v for k, v in outputs.items() if not k.startswith("touched")}
    distinct = {json.dumps(v) for v in compared.values()}
    if not {"cold", "warm", "jobs1"} <= {k.split("#")[0] for k in compared}:
        same = "n/a"
    else:
        same = "PASS" if len(distinct) == 1 and None not in compared.values() else "FAIL"
    n_findings = {k: (len(v) if v is not None else None) for k, v in outputs.items()}
    checks.append({"target": "same findings cold, warm, --jobs 1", "value": n_findings, "result": same})
    touched_same = [k for k, v in outputs.items() if k.startswith("touched") and compared and json.dumps(v) not in distinct]
    if touched_same:
        notes.append(f"touched runs with findings that differ from the others: {touched_same}")

    # ---- print ------------------------------------------------------------
    def fmt(x: float | None, spec: str = ".2f") -> str:
        return "-" if x is None else format(x, spec)

    rows = []
    for m in ms.values():
        if m.ok:
            rows.append((m.name, fmt(m.median), fmt(m.stat(min)), fmt(m.stat(max)), fmt(m.peak_mb, ".0f"), ""))
        else:
            rows.append((m.name, "-", "-", "-", "-", (m.error or "no runs").splitlines()[0][:70]))
    head = ("tool", "median s", "min s", "max s", "peak RSS MB", "status")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
    print()
    print(f"{files} Python files, {lines} lines; nproc={nproc}; {args.runs} run(s) each")
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) if i == 0 or i == 5 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    for c in checks:
        v = c["value"]
        vs = json.dumps(v) if isinstance(v, dict) else ("-" if v is None else f"{v}")
        print(f"{c['result']:4}  {c['target']}: {vs}")
    for n in notes:
        print("NOTE:", n)

    print("\nMarkdown:\n")
    print(f"Tree: {files} Python files, {lines:,} lines; machine: nproc={nproc}; median of {args.runs} run(s).\n")
    print("| tool | command | median s | min s | max s | peak RSS MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for m in ms.values():
        cmd = " ".join(Path(m.cmd[0]).name if i == 0 else c for i, c in enumerate(m.cmd)).replace(str(root), "DIR")
        if m.ok:
            print(f"| {m.name} | `{cmd}` | {fmt(m.median)} | {fmt(m.stat(min))} | {fmt(m.stat(max))} | {fmt(m.peak_mb, '.0f')} |")
        else:
            print(f"| {m.name} | `{cmd}` | {(m.error or '').splitlines()[0][:40]} | | | |")
    print("\n| target | value | result |")
    print("| --- | ---: | --- |")
    for c in checks:
        v = c["value"]
        vs = ", ".join(f"{k}: {x}" for k, x in v.items()) if isinstance(v, dict) else ("-" if v is None else f"{v}")
        print(f"| {c['target']} | {vs} | {c['result']} |")

    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tree": str(root),
        "python_files": files,
        "lines": lines,
        "corpus_stats": stats,
        "nproc": nproc,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runs": args.runs,
        "sessionlint_flags": {"--no-cache": has_no_cache, "--jobs": has_jobs},
        "measurements": {k: m.as_dict() for k, m in ms.items()},
        "checks": checks,
        "notes": notes,
    }
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
