"""Where the runtime guard's cost goes, inside the ORM workload of guard_overhead.py.

Run:  .venv/bin/python benchmarks/guard_breakdown.py listeners [--db mariadb]
      .venv/bin/python benchmarks/guard_breakdown.py ab [--db mariadb] [--cpu]

A diagnostic for whoever works on the overhead, not a target check (that is
guard_overhead.py). It reaches into the tracker's private methods, so it
follows the tracker's code, not a stable API.

``listeners`` times each listener body where it runs, with the workload's
caches as they are (the same body called again at once costs two to three
times less): per call (median) and per ORM unit (mean). The timer adds one frame
between each listener and its caller, so stacks hold one more library frame
than usual; the capture line is the stack capture alone, inside the bodies.

``ab`` runs paired rounds (order alternating) of the workload with the guard
off and with variants of it on, and prints each variant's median added time
per unit: the guard as is; with empty listener bodies (what SQLAlchemy's
dispatch and the guard's method wrappers cost alone); without session stack
captures; without any stack capture (checkouts and Core transactions then
keep their own records, as when no owned code is recognised).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from guard_overhead import Base, _reset_engine_event_flag, orm_workload  # noqa: E402

from sessionlint.runtime_guard.settings import GuardSettings  # noqa: E402
from sessionlint.runtime_guard.stack import EMPTY  # noqa: E402
from sessionlint.runtime_guard.tracker import Tracker  # noqa: E402

LISTENERS = ("_on_tx_create", "_on_after_begin", "_on_tx_end", "_on_checkout", "_on_checkin", "_on_begin", "_end_core")


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _engine(db: str, tmp: str) -> sa.Engine:
    if db == "mariadb":
        url = os.environ.get("SESSIONGUARD_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
        engine = sa.create_engine(url, pool_recycle=3600)
        Base.metadata.drop_all(engine)
    else:
        engine = sa.create_engine(f"sqlite:///{tmp}/breakdown.db")

        @sa.event.listens_for(engine, "connect")
        def _fast_sqlite(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.execute("PRAGMA synchronous = OFF")

    Base.metadata.create_all(engine)
    return engine


def listeners(run: Callable[[int], None], units: int) -> None:
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {name: [] for name in (*LISTENERS, "stack capture")}

    def timed(name: str, fn: Callable[..., Any], extra_skip: int = 0) -> Callable[..., Any]:
        out = times[name]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if extra_skip:  # capture_at(site, skip, ...): one more frame, this wrapper
                args = (args[0], args[1] + extra_skip, *args[2:]) if len(args) > 1 else (args[0], 2)
            start = clock()
            result = fn(*args, **kwargs)
            out.append(clock() - start)
            return result

        return wrapper

    guard = Tracker(GuardSettings(check_server=False))
    guard.stop_stacks_at(listeners)  # as guard_overhead.py does
    for name in LISTENERS:
        setattr(guard, name, timed(name, getattr(guard, name)))
    guard._stacks.capture_at = timed("stack capture", guard._stacks.capture_at, extra_skip=1)  # type: ignore[method-assign]
    guard.install()
    scope = guard.begin_scope("breakdown")
    try:
        run(units)
    finally:
        guard.end_scope(scope)
        guard.uninstall()
        _reset_engine_event_flag()
    empty: list[int] = []
    for _ in range(10_000):
        start = clock()
        empty.append(clock() - start)
    base = statistics.median(empty)
    print(f"{'listener':<16} {'calls/unit':>10} {'median/call':>12} {'per unit':>10}")
    for name, samples in times.items():
        if not samples:
            continue
        per_call = max(0.0, statistics.median(samples) - base)
        # Per unit: the mean (a listener's calls differ, e.g. a nested transaction's
        # early return), leaving out the slowest 1% (garbage collections).
        kept = sorted(samples)[: max(1, len(samples) * 99 // 100)]
        per_unit = max(0.0, statistics.fmean(kept) - base) * len(samples) / units
        print(f"{name:<16} {len(samples) / units:>10.1f} {per_call / 1000:>9.2f} us {per_unit / 1000:>7.2f} us")


def _variant(name: str, guard: Tracker) -> None:
    if name == "empty bodies":
        for listener in LISTENERS + ("_on_statement",):
            setattr(guard, listener, _noop)
    elif name == "no session stacks":
        capture = guard._stacks.capture_at
        session_site = guard._session_site

        def without_session(site: Any, skip: int = 1, *, owned: bool = True) -> Any:
            return EMPTY if site is session_site else capture(site, skip + 1, owned=owned)

        guard._stacks.capture_at = without_session  # type: ignore[method-assign]
    elif name == "no stacks":
        guard._stacks.capture_at = lambda site, skip=1, *, owned=True: EMPTY  # type: ignore[method-assign]


VARIANTS = ("as is", "empty bodies", "no session stacks", "no stacks")


def ab(run: Callable[[int], None], units: int, rounds: int, cpu: bool) -> None:
    clock = time.thread_time if cpu else time.perf_counter

    guards: dict[str, Tracker] = {}  # one per variant, reused as in guard_overhead.py

    def measure(variant: str | None) -> float:
        guard = None
        if variant is not None:
            guard = guards.get(variant)
            if guard is None:
                guard = guards[variant] = Tracker(GuardSettings(check_server=False))
                guard.stop_stacks_at(measure)  # as guard_overhead.py does
                _variant(variant, guard)
            guard.install()
            scope = guard.begin_scope("breakdown")
        gc.collect()
        start = clock()
        run(units)
        elapsed = (clock() - start) / units
        if guard is not None:
            guard.end_scope(scope)
            guard.uninstall()
            _reset_engine_event_flag()
        return elapsed

    added: dict[str, list[float]] = {name: [] for name in VARIANTS}
    offs: list[float] = []
    for i in range(rounds):
        order = VARIANTS if i % 2 else tuple(reversed(VARIANTS))
        off = measure(None)
        offs.append(off)
        for name in order:
            added[name].append(measure(name) - off)
    off = statistics.median(offs)
    print(f"guard off: {off * 1e6:.1f} us per unit ({'CPU' if cpu else 'wall'} time, {rounds} rounds)")
    for name in VARIANTS:
        extra = statistics.median(added[name])
        print(f"{name:<18} +{extra * 1e6:6.1f} us  ({extra / off * 100:+.1f}%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("listeners", "ab"))
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--units", type=int, default=None, help="ORM units per measurement (default 3000 / 150)")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--cpu", action="store_true", help="ab: this thread's CPU time instead of wall time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(args.db, tmp)
        try:
            run = orm_workload(engine)
            run(200)  # warm up the pool, the dialect and statement caches
            if args.mode == "listeners":
                listeners(run, args.units or 3000)
            else:
                ab(run, args.units or 150, args.rounds, args.cpu)
        finally:
            if args.db == "mariadb":
                Base.metadata.drop_all(engine)
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
