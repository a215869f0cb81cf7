"""Overhead of the runtime guard: checkout+checkin cycles and a small ORM workload.

Run:  .venv/bin/python benchmarks/guard_overhead.py [--skip-mariadb] [--memory-cycles N]

In one run it measures, guard off and guard on (a `Tracker` installed with a
scope active and its stacks ending at the harness's frames, as during a test
under the pytest plugin) in interleaved rounds whose order alternates,
so that drift and other load on the machine hit both sides alike:

* checkout+checkin cycles (`with engine.connect(): pass`) on SQLite and MariaDB;
* a small ORM workload (insert one row, commit, query it back, close);
* memory growth (RSS and tracemalloc-free counters) over a million cycles with
  the guard on, on SQLite.

Targets: at most +15% per MariaDB cycle, at most +5% on the ORM workload, less
than 5 MB of growth per million cycles. The guard adds the same absolute cost
per cycle everywhere (a few microseconds); SQLite cycles are so cheap that the
ratio there is much larger and carries no target.

Each line shows the median wall time per operation off and on, and the
overhead two ways, both medians over the paired rounds: the ratio of wall
times (what the targets mean; the middle half of the rounds' ratios shows how
steady the machine was), and the guard's added CPU time of this thread
(`time.thread_time`) over the wall time off. On a shared machine the second
is the steadier estimate: the server's time and other processes' scheduling
do not enter it. A target passes when both are within it. The MariaDB line
starts with the server's round trip, which every cycle pays once (the
rollback on checkin): the same guard is a smaller share where it is slower.
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

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessionlint.runtime_guard.settings import GuardSettings  # noqa: E402
from sessionlint.runtime_guard.tracker import Tracker  # noqa: E402


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "sg_bench_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[int], None], n: int) -> tuple[float, float]:
    """(wall, CPU of this thread) seconds per operation."""
    gc.collect()
    start, cpu = time.perf_counter(), time.thread_time()
    fn(n)
    return (time.perf_counter() - start) / n, (time.thread_time() - cpu) / n


def cycles(engine: sa.Engine) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            with engine.connect():
                pass

    return run


def orm_workload(engine: sa.Engine) -> Callable[[int], None]:
    counter = [0]

    def run(n: int) -> None:
        for _ in range(n):
            counter[0] += 1
            with Session(engine) as session:
                session.add(Row(id=counter[0], name=f"row {counter[0]}"))
                session.commit()
                session.scalars(sa.select(Row).where(Row.id == counter[0])).one()

    return run


def _guarded(guard: Tracker, fn: Callable[[int], None], n: int) -> tuple[float, float]:
    """`fn` timed with `guard` installed and a scope active, as during one test.

    One tracker serves every round, installed and uninstalled around each, as one
    serves a whole pytest run: what it learns about call sites (see
    `stack.StackCapture`) is learned once, not again in every round.
    """
    guard.install()
    scope = guard.begin_scope("benchmark")
    try:
        return timed(fn, n)
    finally:
        findings = guard.end_scope(scope)
        guard.uninstall()
        _reset_engine_event_flag()
        assert not findings, [f.message for f in findings]


def compare(label: str, make: Callable[[], Callable[[int], None]], n: int, rounds: int) -> tuple[float, float]:
    """(wall ratio, 1 + CPU overhead share), guard on vs off, as medians over paired rounds.

    Each round runs `n` operations off and `n` on, back to back, in an order
    that alternates; a burst of other load or a slow spell of the server hits
    one round, and the median over rounds leaves it out. The wall ratio is the
    median of the rounds' on/off ratios; the CPU overhead is the median of the
    rounds' added CPU time of this thread, over the median wall time off.
    """
    fn = make()
    fn(max(50, n // 10))  # warm up the pool, the dialect and statement caches
    guard = Tracker(GuardSettings(check_server=False))
    # The workload stands for a test function, `timed` for pytest's call of it and
    # `_guarded` for pluggy's hook caller, where the pytest plugin ends its stacks
    # (frames above it are the framework's): stacks end there here too.
    guard.stop_stacks_at(_guarded)
    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    for i in range(rounds):
        if i % 2:
            on.append(_guarded(guard, fn, n))
            off.append(timed(fn, n))
        else:
            off.append(timed(fn, n))
            on.append(_guarded(guard, fn, n))
    ratios = sorted(b[0] / a[0] for a, b in zip(off, on))
    added = sorted(b[1] - a[1] for a, b in zip(off, on))
    off_wall = statistics.median(w for w, _ in off)
    on_wall = statistics.median(w for w, _ in on)
    wall_ratio = statistics.median(ratios)
    cpu_added = statistics.median(added)
    cpu_share = cpu_added / off_wall
    q = len(ratios) // 4
    print(
        f"{label:<26} off {off_wall * 1e6:8.1f} us   on {on_wall * 1e6:8.1f} us   "
        f"wall {(wall_ratio - 1) * 100:+6.1f}% (middle half {(ratios[q] - 1) * 100:+.1f}..{(ratios[-q - 1] - 1) * 100:+.1f})"
        f"   CPU +{cpu_added * 1e6:6.1f} us = {cpu_share * 100:+6.1f}%"
    )
    return wall_ratio, 1 + cpu_share


_ENGINE_HAD_EVENTS = sa.Engine.__dict__.get("_has_events", False)


def _reset_engine_event_flag() -> None:
    """Make "off" a true baseline again.

    The guard wraps Connection methods instead of listening to
    ConnectionEvents, unless this SQLAlchemy lacks them; in that fallback,
    listening on the Engine class sets the class flag `Engine._has_events`
    (SQLAlchemy's ConnectionEvents._listen), which stays set after the
    listeners are removed and sends every later Connection through the event
    dispatch path. The benchmark has no listeners of its own, so it restores
    the flag to measure "off" as a process that never installed the guard.
    """
    if not _ENGINE_HAD_EVENTS:
        sa.Engine._has_events = False


def round_trip(engine: sa.Engine, n: int = 2000) -> None:
    """Print the server's round trip: the MariaDB ratios scale with it.

    Every checkout+checkin cycle makes one round trip (the rollback on
    return), so the same guard costs a smaller share where the trip is slower.
    """
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        times = []
        for _ in range(n):
            start = time.perf_counter()
            raw.ping(False)  # type: ignore[union-attr]
            times.append(time.perf_counter() - start)
    times.sort()
    print(f"MariaDB round trip (ping)  min {times[0] * 1e6:.1f} us, median {times[n // 2] * 1e6:.1f} us")


def memory(engine: sa.Engine, total: int) -> float:
    guard = Tracker(GuardSettings(check_server=False)).install()
    scope = guard.begin_scope("memory")
    run = cycles(engine)
    try:
        run(20_000)  # reach steady state before the baseline
        gc.collect()
        before = rss_bytes()
        done = 0
        while done < total:
            step = min(100_000, total - done)
            run(step)
            done += step
        gc.collect()
        after = rss_bytes()
        assert guard.outstanding() == 0
        findings = guard.end_scope(scope)
    finally:
        guard.uninstall()
    growth = (after - before) / 1e6
    print(
        f"{'memory, ' + format(total, ',') + ' cycles (guard on)':<38} RSS growth {growth:.2f} MB, "
        f"findings {len(findings)}, checkouts {guard.stats.checkouts:,}"
    )
    return growth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=2000, help="checkout+checkin cycles per round (MariaDB: /2)")
    parser.add_argument("--orm", type=int, default=150, help="ORM units of work per round")
    parser.add_argument("--rounds", type=int, default=41, help="paired off/on rounds (order alternating); medians are reported")
    parser.add_argument("--memory-cycles", type=int, default=1_000_000)
    parser.add_argument("--mariadb-url", default=os.environ.get("SESSIONGUARD_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"))
    parser.add_argument("--skip-mariadb", action="store_true")
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}, {args.rounds} paired rounds")
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = sa.create_engine(f"sqlite:///{tmp}/bench.db")

        @sa.event.listens_for(sqlite, "connect")
        def _fast_sqlite(dbapi_connection: object, record: object) -> None:
            # fsync noise would drown the guard's cost in the ORM numbers.
            dbapi_connection.execute("PRAGMA synchronous = OFF")  # type: ignore[attr-defined]

        Base.metadata.create_all(sqlite)
        results["sqlite cycle"] = compare("SQLite checkout+checkin", lambda: cycles(sqlite), args.cycles, args.rounds)
        results["sqlite orm"] = compare("SQLite ORM unit of work", lambda: orm_workload(sqlite), args.orm, args.rounds)
        if not args.skip_mariadb:
            maria = sa.create_engine(args.mariadb_url, pool_recycle=3600)
            Base.metadata.drop_all(maria)
            Base.metadata.create_all(maria)
            round_trip(maria)
            try:
                results["mariadb cycle"] = compare(
                    "MariaDB checkout+checkin", lambda: cycles(maria), args.cycles // 2, args.rounds
                )
                results["mariadb orm"] = compare("MariaDB ORM unit of work", lambda: orm_workload(maria), args.orm, args.rounds)
            finally:
                Base.metadata.drop_all(maria)
                maria.dispose()
        growth = memory(sqlite, args.memory_cycles)
        sqlite.dispose()

    def within(key: str, limit: float) -> bool:
        return all(ratio <= limit for ratio in results[key])

    verdicts = []
    if "mariadb cycle" in results:
        verdicts.append(("MariaDB checkout+checkin <= +15%", within("mariadb cycle", 1.15)))
        verdicts.append(("MariaDB ORM workload <= +5%", within("mariadb orm", 1.05)))
    verdicts.append(("SQLite ORM workload <= +5%", within("sqlite orm", 1.05)))
    verdicts.append((f"memory growth < 5 MB per {args.memory_cycles:,} cycles", growth < 5.0))
    for name, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
