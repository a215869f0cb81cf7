"""Every finding made by real code against real MariaDB and PostgreSQL pools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from guard_compat import POSTGRES_ASYNC_DRIVER, create_engine

from sessionlint.runtime_guard.settings import GuardSettings
from sessionlint.runtime_guard.tracker import Finding, Tracker


def codes(findings: list[Finding]) -> list[str]:
    return sorted(f.code for f in findings)


@pytest.fixture
def engine(server_url: str, table: str) -> Iterator[sa.Engine]:
    eng = create_engine(server_url, pool_size=5, max_overflow=0, pool_recycle=600, pool_timeout=30)
    with eng.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    yield eng
    with eng.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    eng.dispose()


def test_leaked_checkout(tracker: Tracker, engine: sa.Engine, table: str) -> None:
    keep: list[sa.Connection] = []
    with tracker.scope("leak") as scope:
        conn = engine.connect()
        conn.exec_driver_sql(f"SELECT * FROM {table}")
        keep.append(conn)
    assert codes(scope.findings) == ["SES901"]
    assert scope.findings[0].engine == engine.url.render_as_string(hide_password=True)
    assert "test_leaked_checkout" in scope.findings[0].stack()[-1]
    keep[0].close()


def test_long_transaction(tracker: Tracker, clock: Any, engine: sa.Engine, table: str) -> None:
    with tracker.scope("slow") as scope:
        with Session(engine) as session:
            session.execute(sa.text(f"INSERT INTO {table} (id, name) VALUES (1, 'a')"))
            clock.advance(2.5)
            session.commit()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {table} SET name = 'b'")
            clock.advance(1.5)
    assert codes(scope.findings) == ["SES902", "SES902"]


def test_session_left_open(tracker: Tracker, engine: sa.Engine, table: str) -> None:
    keep: list[Session] = []
    with tracker.scope("open") as scope:
        session = Session(engine)
        session.execute(sa.text(f"SELECT * FROM {table}"))
        keep.append(session)
    assert codes(scope.findings) == ["SES903"]
    keep[0].close()


def test_scoped_session_left(tracker: Tracker, engine: sa.Engine, table: str) -> None:
    registry = scoped_session(sessionmaker(engine))
    with tracker.scope("request") as scope:
        registry.execute(sa.text(f"INSERT INTO {table} (id, name) VALUES (2, 'b')"))
        registry.commit()
    assert codes(scope.findings) == ["SES904"]
    registry.remove()


def test_cross_thread_session(tracker: Tracker, engine: sa.Engine, table: str) -> None:
    with tracker.scope("threads") as scope:
        with Session(engine) as session:
            session.execute(sa.text(f"INSERT INTO {table} (id, name) VALUES (3, 'c')"))
            worker = threading.Thread(
                target=session.execute, args=(sa.text(f"SELECT * FROM {table}"),), name="report-worker"
            )
            worker.start()
            worker.join()
            session.commit()
    assert codes(scope.findings) == ["SES905"]
    assert scope.findings[0].thread == "report-worker"


def test_pool_exhausted(tracker: Tracker, server_url: str) -> None:
    eng = create_engine(server_url, pool_size=2, max_overflow=0, pool_timeout=0.2, pool_recycle=600)
    with tracker.scope("exhaust") as scope:
        with eng.connect() as a, eng.connect() as b:
            a.exec_driver_sql("SELECT 1")
            b.exec_driver_sql("SELECT 1")
            with pytest.raises(sa.exc.TimeoutError):
                eng.connect()
    eng.dispose()
    assert codes(scope.findings) == ["SES907"]
    assert len(scope.findings[0].related) == 2  # both holders listed


def test_password_never_shown(tracker: Tracker, postgres_url: str) -> None:
    # Trust auth ignores the password, so the URL connects and must be masked.
    url = sa.engine.make_url(postgres_url).set(password="s3cr3t-pw")
    eng = create_engine(url)
    keep: list[sa.Connection] = []
    with tracker.scope("leak") as scope:
        conn = eng.connect()
        conn.exec_driver_sql("SELECT 1")
        keep.append(conn)
    keep[0].close()
    eng.dispose()
    assert codes(scope.findings) == ["SES901"]
    text = repr(scope.findings[0].to_dict())
    assert "s3cr3t-pw" not in text and "***" in text


# -- SES906 (MariaDB) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["SES906"]),
        ({"pool_recycle": 28800}, ["SES906"]),
        ({"pool_recycle": 3600}, []),
        ({"pool_recycle": 3600, "connect_args": {"init_command": "SET SESSION wait_timeout = 600"}}, ["SES906"]),
        ({"pool_recycle": 300, "connect_args": {"init_command": "SET SESSION wait_timeout = 600"}}, []),
    ],
    ids=["unset", "equal-to-default", "below", "above-session-timeout", "below-session-timeout"],
)
def test_pool_recycle_vs_wait_timeout(tracker: Tracker, mariadb_url: str, kwargs: dict[str, Any], expected: list[str]) -> None:
    eng = create_engine(mariadb_url, **kwargs)
    with tracker.scope("connect") as scope:
        for _ in range(3):  # queried once per pool, not per connection
            with eng.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
    eng.dispose()
    assert codes(scope.findings) == expected
    if expected:
        assert "wait_timeout" in scope.findings[0].message and "pool_recycle" in scope.findings[0].message


def test_pool_recycle_not_checked_on_postgresql(tracker: Tracker, postgres_url: str) -> None:
    eng = create_engine(postgres_url)
    with tracker.scope("connect") as scope:
        with eng.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    eng.dispose()
    assert scope.findings == []


# -- the server's own view of open transactions -------------------------------------


def test_server_reports_transaction_left_open(clock: Any, engine: sa.Engine, table: str) -> None:
    guard = Tracker(GuardSettings(max_transaction=1.0, check_server=True), clock=clock).install()
    try:
        with guard.scope("leak") as scope:
            conn = engine.connect()
            conn.exec_driver_sql(f"INSERT INTO {table} (id, name) VALUES (7, 'open')")
        assert codes(scope.findings) == ["SES901"]
        run = guard.end_run()
        conn.close()
    finally:
        guard.uninstall()
    assert codes(run) == ["SES902"]
    message = run[0].message
    assert "still has a transaction open" in message and "idle in transaction" in message
    assert "test_server_reports_transaction_left_open" in run[0].stack()[-1]


def test_server_check_quiet_when_everything_is_closed(clock: Any, engine: sa.Engine, table: str) -> None:
    guard = Tracker(GuardSettings(check_server=True), clock=clock).install()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {table} (id, name) VALUES (8, 'ok')")
        run = guard.end_run()
    finally:
        guard.uninstall()
    assert run == []


# -- asyncio engines ---------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["mariadb+aiomysql", POSTGRES_ASYNC_DRIVER])
def test_async_engine_leak_and_server_view(
    clock: Any, driver: str, mariadb_url: str, postgres_url: str, table: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    base = mariadb_url if driver.startswith("mariadb") else postgres_url
    sync_engine = create_engine(base)
    with sync_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    url = sa.engine.make_url(base).set(drivername=driver)
    guard = Tracker(GuardSettings(max_transaction=1.0, check_server=True), clock=clock).install()

    async def leak(engine: Any, keep: list[Any]) -> None:
        conn = await engine.connect()
        await conn.exec_driver_sql(f"INSERT INTO {table} (id) VALUES (1)")
        keep.append(conn)

    async def scenario() -> tuple[list[Finding], list[Finding]]:
        engine = create_async_engine(url, pool_recycle=600)
        keep: list[Any] = []
        with guard.scope("async") as scope:
            await leak(engine, keep)
        run = guard.end_run()  # the server check runs while this loop is running
        await keep[0].close()
        await engine.dispose()
        return scope.findings, run

    try:
        findings, run = asyncio.run(scenario())
    finally:
        guard.uninstall()
        with sync_engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        sync_engine.dispose()
    assert codes(findings) == ["SES901"]
    assert findings[0].stack()[-1].endswith("in leak")
    assert codes(run) == ["SES902"]
    assert "idle in transaction" in run[0].message
