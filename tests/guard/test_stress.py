"""32 threads on a pool of 5 against MariaDB: no record lost, no false finding."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from guard_compat import create_engine

from sessionlint.runtime_guard.settings import GuardSettings
from sessionlint.runtime_guard.tracker import Tracker

THREADS = 32
CYCLES = 25
LEAKERS = 3


def _wait_for_blocked_checkout(engine: sa.Engine) -> None:
    queue = engine.pool._pool  # type: ignore[attr-defined]
    for _ in range(20_000):
        if queue.not_empty._waiters:
            return
        threading.Event().wait(0.001)
    raise AssertionError("no checkout ever blocked on the pool")


def test_threaded_stress_on_mariadb(mariadb_url: str, table: str, clock: Any) -> None:
    engine = create_engine(mariadb_url, pool_size=5, max_overflow=0, pool_timeout=120, pool_recycle=600)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, thread VARCHAR(40))")
    guard = Tracker(GuardSettings(max_transaction=1.0, check_server=False), clock=clock).install()
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS + 1)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(CYCLES):
                with Session(engine) as session:
                    session.execute(
                        sa.text(f"INSERT INTO {table} (id, thread) VALUES (:id, :t)"),
                        {"id": n * 1000 + i, "t": threading.current_thread().name},
                    )
                    session.commit()
                with engine.connect() as conn:
                    conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    leaked: list[sa.Connection] = []
    leak_lock = threading.Lock()

    def leak() -> None:
        conn = engine.connect()
        conn.exec_driver_sql("SELECT 1")
        with leak_lock:
            leaked.append(conn)

    try:
        before = guard.stats.checkouts
        with guard.scope("stress") as scope:
            # 1. Hold every slot, so that the workers provably queue on the pool.
            held = [engine.connect() for _ in range(5)]
            workers = [threading.Thread(target=work, args=(n,), name=f"worker-{n}") for n in range(THREADS)]
            for t in workers:
                t.start()
            start.wait()
            _wait_for_blocked_checkout(engine)
            for conn in held:
                conn.close()
            for t in workers:
                t.join()
            # 2. A few threads leak one connection each.
            leakers = [threading.Thread(target=leak, name=f"leaker-{n}") for n in range(LEAKERS)]
            for t in leakers:
                t.start()
            for t in leakers:
                t.join()
        assert errors == []
        expected = 5 + THREADS * CYCLES * 2 + LEAKERS
        assert guard.stats.checkouts - before == expected
        assert guard.stats.checkins - before == expected - LEAKERS
        assert guard.outstanding() == LEAKERS
        by_code: dict[str, list[Any]] = {}
        for finding in scope.findings:
            by_code.setdefault(finding.code, []).append(finding)
        assert sorted(by_code) == ["SES901", "SES907"], [f.message for f in scope.findings]
        assert sorted(f.thread for f in by_code["SES901"]) == [f"leaker-{n}" for n in range(LEAKERS)]
        assert all(f.stack()[-1].endswith("in leak") for f in by_code["SES901"])
        assert len(by_code["SES907"]) == 1
        with engine.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == THREADS * CYCLES
    finally:
        for conn in leaked:
            conn.close()
        guard.uninstall()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
