"""The tracker's logic on SQLite, with a fake clock: every finding made by real code."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import Column, Integer, String
from sqlalchemy.orm import Session, declarative_base, scoped_session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool, SingletonThreadPool, StaticPool

from guard_compat import Engine, create_engine

from sessionlint.runtime_guard import tracker as tracker_module
from sessionlint.runtime_guard.settings import GuardSettings
from sessionlint.runtime_guard.tracker import Finding, GuardWarning, Tracker, patches_applied


def codes(findings: list[Finding]) -> list[str]:
    return sorted(f.code for f in findings)


# Classic declarative mapping: the same on SQLAlchemy 1.4, 2.0 and 2.1.
Base = declarative_base()


class Item(Base):
    __tablename__ = "item"
    id = Column(Integer, primary_key=True)
    name = Column(String)


def make_engine(url: str, **kw: Any) -> sa.Engine:
    engine = create_engine(url, **kw)
    Base.metadata.create_all(engine)
    return engine


def leak_a_connection(engine: sa.Engine, keep: list[object]) -> None:
    conn = engine.connect()
    conn.exec_driver_sql("SELECT 1")
    keep.append(conn)


@pytest.fixture(autouse=True, params=["patches", "events"])
def hook_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test twice: pool and Core hooks by method wrappers, and by SQLAlchemy's events.

    The guard wraps `_ConnectionFairy._checkout`, `_ConnectionRecord.checkin`
    and four `Connection` methods where they have the shape it expects, and
    listens to the PoolEvents and ConnectionEvents otherwise (another
    SQLAlchemy version); both must find the same things.
    """
    if request.param == "events":
        if tracker_module._ACTIVE:
            pytest.skip("another tracker (--sessionguard) holds the method wrappers")
        monkeypatch.setattr(tracker_module, "_POOL_BY_PATCH", False)
        monkeypatch.setattr(tracker_module, "_CORE_BY_PATCH", False)
        monkeypatch.setattr(tracker_module, "_FALLBACK_WARNED", True)  # said once, tested below
        # A ConnectionEvents listener on the Engine class sets this flag for
        # good (SQLAlchemy never clears it); restore it for the later tests.
        monkeypatch.setattr(Engine, "_has_events", Engine._has_events)
    return str(request.param)


# -- install / uninstall -------------------------------------------------------


def test_uninstall_removes_every_listener_and_patch(clock: Any) -> None:
    guard = Tracker(clock=clock).install()
    assert all(event.contains(*listener) for listener in guard.listeners())
    assert "connect" in QueuePool.__dict__
    guard.uninstall()
    assert not any(event.contains(*listener) for listener in guard.listeners())
    assert "connect" not in QueuePool.__dict__
    assert not getattr(scoped_session.__init__, "__wrapped__", None)
    assert not patches_applied()


def test_engines_created_before_install_are_tracked(sqlite_url: str, clock: Any) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:  # pool already used before install
        conn.exec_driver_sql("SELECT 1")
    keep: list[object] = []
    with Tracker(clock=clock) as guard, guard.scope("t") as scope:
        leak_a_connection(engine, keep)
    assert codes(scope.findings) == ["SES901"]
    keep[0].close()  # type: ignore[attr-defined]


# -- SES901 --------------------------------------------------------------------


@pytest.mark.parametrize("poolclass", [QueuePool, NullPool, StaticPool, SingletonThreadPool])
def test_leaked_checkout_on_every_pool_class(tracker: Tracker, sqlite_url: str, poolclass: type) -> None:
    engine = make_engine(sqlite_url, poolclass=poolclass)
    keep: list[object] = []
    with tracker.scope("leaky") as scope:
        leak_a_connection(engine, keep)
    assert codes(scope.findings) == ["SES901"]
    finding = scope.findings[0]
    assert finding.name == "leaked-checkout"
    assert finding.stack()[-1].startswith("tests/guard/test_tracker_sqlite.py:") or "test_tracker_sqlite.py:" in finding.stack()[-1]
    assert finding.stack()[-1].endswith("in leak_a_connection")
    assert not any("sqlalchemy" in frame for frame in finding.stack())
    keep[0].close()  # type: ignore[attr-defined]
    with tracker.scope("clean") as clean:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    assert clean.findings == []
    engine.dispose()


def test_checkout_returned_by_garbage_collector_is_reported(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("gc") as scope:
        def forget() -> None:
            conn = engine.connect()
            conn.exec_driver_sql("SELECT 1")

        forget()
        gc.collect()
    assert codes(scope.findings) == ["SES901"]
    assert "garbage collector" in scope.findings[0].message
    assert tracker.outstanding() == 0


def test_detached_connection_never_closed(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    keep: list[object] = []
    with tracker.scope("detach") as scope:
        conn = engine.connect()
        conn.detach()
        keep.append(conn)
    assert codes(scope.findings) == ["SES901"]
    assert "detached" in scope.findings[0].message
    keep[0].close()  # type: ignore[attr-defined]


def test_finding_reported_once_across_scopes(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    keep: list[object] = []
    with tracker.scope("first") as first:
        leak_a_connection(engine, keep)
    with tracker.scope("second") as second:
        pass
    assert codes(first.findings) == ["SES901"]
    assert second.findings == []
    assert tracker.end_run(check_server=False) == []
    keep[0].close()  # type: ignore[attr-defined]


# -- SES902 --------------------------------------------------------------------


def test_long_session_transaction(tracker: Tracker, clock: Any, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("slow") as scope:
        with Session(engine) as session:
            session.add(Item(name="a"))
            session.flush()
            clock.advance(1.5)
            session.commit()
    assert codes(scope.findings) == ["SES902"]
    finding = scope.findings[0]
    assert finding.duration == pytest.approx(1.5)
    assert "test_long_session_transaction" in finding.stack()[-1]


def test_transaction_below_threshold_is_quiet(tracker: Tracker, clock: Any, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("fast") as scope:
        with Session(engine) as session, session.begin():
            session.add(Item(name="a"))
            clock.advance(0.5)
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
            clock.advance(0.9)
    assert scope.findings == []


def test_long_core_transaction_and_savepoints_time_only_the_outermost(
    tracker: Tracker, clock: Any, sqlite_url: str
) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("core") as scope:
        with engine.connect() as conn:
            with conn.begin():
                conn.exec_driver_sql("SELECT 1")
                with conn.begin_nested():
                    clock.advance(3)
    assert codes(scope.findings) == ["SES902"]
    assert "Core transaction" in scope.findings[0].message


def test_session_transaction_is_not_reported_twice(tracker: Tracker, clock: Any, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("orm") as scope:
        with Session(engine) as session:
            session.execute(sa.text("SELECT 1"))
            clock.advance(2)
            session.rollback()
    assert codes(scope.findings) == ["SES902"]
    assert "Session transaction" in scope.findings[0].message


def test_scope_threshold_overrides_the_default(tracker: Tracker, clock: Any, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("patient", max_transaction=10) as scope:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
            clock.advance(5)
    assert scope.findings == []


def test_allow_suppresses_a_code(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    keep: list[object] = []
    with tracker.scope("allowed", allow=["SES901"]) as scope:
        leak_a_connection(engine, keep)
    assert scope.findings == []
    keep[0].close()  # type: ignore[attr-defined]


# -- SES903 / SES904 -----------------------------------------------------------------


def test_session_left_open(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    keep: list[Session] = []
    with tracker.scope("open") as scope:
        session = Session(engine)
        session.scalars(sa.select(Item)).all()
        keep.append(session)
    # The session's connection is covered by SES903, not reported again as SES901.
    assert codes(scope.findings) == ["SES903"]
    assert "holding 1 connection" in scope.findings[0].message
    keep[0].close()


def test_session_with_pending_work_but_no_connection(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    keep: list[Session] = []
    with tracker.scope("pending") as scope:
        session = Session(engine)
        session.add(Item(name="never flushed"))
        keep.append(session)
    assert codes(scope.findings) == ["SES903"]
    assert "no connection yet" in scope.findings[0].message
    keep[0].close()


def test_session_collected_without_close(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with tracker.scope("collected") as scope:
        def forget() -> None:
            session = Session(engine)
            session.execute(sa.text("SELECT 1"))

        forget()
        gc.collect()
    assert codes(scope.findings) == ["SES903"]
    assert "garbage-collected" in scope.findings[0].message


def test_scoped_session_left_in_registry(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    registry = scoped_session(sessionmaker(engine))
    with tracker.scope("request") as scope:
        registry().execute(sa.text("SELECT 1"))
    # One finding: the registry covers the open session and its connection.
    assert codes(scope.findings) == ["SES904"]
    assert "remove()" in scope.findings[0].message
    registry.remove()
    with tracker.scope("request2") as clean:
        try:
            registry().execute(sa.text("SELECT 1"))
        finally:
            registry.remove()
    assert clean.findings == []


def test_scoped_session_with_scopefunc(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    current = ["req-1"]
    registry = scoped_session(sessionmaker(engine), scopefunc=lambda: current[0])
    with tracker.scope("requests") as scope:
        registry().execute(sa.text("SELECT 1"))
        registry().commit()
        current[0] = "req-2"
        registry().execute(sa.text("SELECT 1"))
        registry.remove()  # only req-2 is removed
    assert codes(scope.findings) == ["SES904"]
    assert "'req-1'" in scope.findings[0].message
    current[0] = "req-1"
    registry.remove()


def test_registry_created_before_install_is_found(sqlite_url: str, clock: Any) -> None:
    engine = make_engine(sqlite_url)
    registry = scoped_session(sessionmaker(engine))
    with Tracker(clock=clock) as guard, guard.scope("t") as scope:
        registry().execute(sa.text("SELECT 1"))
    assert codes(scope.findings) == ["SES904"]
    registry.remove()


# -- SES905 ----------------------------------------------------------------------------


def test_connection_used_from_another_thread(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, connect_args={"check_same_thread": False})
    with tracker.scope("threads") as scope:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            worker = threading.Thread(target=conn.exec_driver_sql, args=("SELECT 2",), name="worker-1")
            worker.start()
            worker.join()
            worker = threading.Thread(target=conn.exec_driver_sql, args=("SELECT 3",), name="worker-1b")
            worker.start()
            worker.join()
    assert codes(scope.findings) == ["SES905", "SES905"]
    assert {f.thread for f in scope.findings} == {"worker-1", "worker-1b"}
    assert "began on thread 'MainThread'" in scope.findings[0].message


def test_session_committed_from_another_thread(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, connect_args={"check_same_thread": False})
    with tracker.scope("threads") as scope:
        with Session(engine) as session:
            session.add(Item(name="x"))
            session.flush()
            worker = threading.Thread(target=session.commit, name="committer")
            worker.start()
            worker.join()
    assert codes(scope.findings) == ["SES905"]
    assert scope.findings[0].message.startswith("Session")


def test_each_thread_with_its_own_session_is_quiet(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, connect_args={"check_same_thread": False})
    factory = sessionmaker(engine)

    def work() -> None:
        with factory() as session:
            session.execute(sa.text("SELECT 1"))
            session.commit()

    with tracker.scope("threads") as scope:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert scope.findings == []


# -- SES907 -------------------------------------------------------------------------------


def test_pool_exhausted_timeout(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    with tracker.scope("exhaust") as scope:
        with engine.connect() as holder:
            holder.exec_driver_sql("SELECT 1")
            with pytest.raises(sa.exc.TimeoutError):
                engine.connect()
    assert codes(scope.findings) == ["SES907"]
    finding = scope.findings[0]
    assert "1 timed out" in finding.message
    assert "pool_size 1 + max_overflow 0" in finding.message
    assert finding.related and "test_pool_exhausted_timeout" in finding.related_stacks()[0][1][-1]


def test_pool_exhausted_wait(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=30,
                         connect_args={"check_same_thread": False})
    holder = engine.connect()
    holder.exec_driver_sql("SELECT 1")
    got = threading.Event()

    def waiter() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        got.set()

    with tracker.scope("exhaust") as scope:
        thread = threading.Thread(target=waiter)
        thread.start()
        # The waiter blocks inside the pool until the holder is returned.
        _wait_for_blocked_checkout(engine)
        holder.close()
        thread.join()
    assert got.is_set()
    assert codes(scope.findings) == ["SES907"]
    assert "1 checkout(s) had to wait" in scope.findings[0].message


def _wait_for_blocked_checkout(engine: sa.Engine) -> None:
    """Wait until another thread is blocked on the pool's queue (no timing assumptions)."""
    queue = engine.pool._pool  # type: ignore[attr-defined]
    for _ in range(10_000):
        if queue.not_empty._waiters:  # the waiter sits in Condition.wait()
            return
        threading.Event().wait(0.001)
    raise AssertionError("no checkout ever blocked on the pool")


def test_pool_within_capacity_is_quiet(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=2, max_overflow=1)
    with tracker.scope("ok") as scope:
        with engine.connect(), engine.connect(), engine.connect():
            pass
    assert scope.findings == []


# -- robustness ------------------------------------------------------------------------------


def test_listener_errors_become_warnings_and_never_reach_the_app(sqlite_url: str) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock exploded")

    engine = make_engine(sqlite_url)
    with Tracker(clock=broken_clock) as guard:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 42").scalar() == 42
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # `-W error` must not turn it into an app error
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 43").scalar() == 43
    assert any(issubclass(w.category, GuardWarning) and "clock exploded" in str(w.message) for w in caught)
    assert guard.errors


def test_asyncio_engine_leak_points_at_the_coroutine(tracker: Tracker, tmp_path: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    async def open_and_forget(engine: Any, keep: list[object]) -> None:
        conn = await engine.connect()
        await conn.exec_driver_sql("SELECT 1")
        keep.append(conn)

    async def main() -> list[Finding]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/a.db")
        keep: list[object] = []
        with tracker.scope("async") as scope:
            await open_and_forget(engine, keep)
        await keep[0].close()  # type: ignore[attr-defined]
        await engine.dispose()
        return scope.findings

    findings = asyncio.run(main())
    assert codes(findings) == ["SES901"]
    assert findings[0].stack()[-1].endswith("in open_and_forget")


def test_handover_moves_items_to_the_owner_scope(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    owner = tracker.begin_scope("module fixture", activate=False)
    with tracker.scope("test") as test_scope:
        pass
    session = Session(engine)
    inner = tracker.begin_scope("test2")
    session.execute(sa.text("SELECT 1"))  # lazily checked out during a test
    findings = tracker.end_scope(inner, handover=[({"db": session}, owner)])
    assert findings == [] and test_scope.findings == []
    assert codes(tracker.end_scope(owner)) == ["SES903"]
    session.close()


def test_no_records_lost_under_threads(tracker: Tracker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=3, max_overflow=2, connect_args={"check_same_thread": False})
    before = tracker.stats.checkouts

    def work() -> None:
        for _ in range(50):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

    with tracker.scope("threads", allow=["SES907"]) as scope:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert tracker.stats.checkouts - before == 400
    assert tracker.stats.checkins == tracker.stats.checkouts
    assert tracker.outstanding() == 0
    assert scope.findings == []


def test_gc_finalizer_while_the_guard_holds_its_lock(tracker: Tracker, sqlite_url: str) -> None:
    """A pool finalizer run by the GC on a thread inside the guard must not deadlock."""
    engine = make_engine(sqlite_url)
    outcome: list[list[Finding]] = []

    def scenario() -> None:
        with tracker.scope("gc") as scope:
            def forget() -> None:
                conn = engine.connect()  # Connection <-> transaction cycle: freed only by the GC
                conn.exec_driver_sql("SELECT 1")

            forget()
            with tracker._lock:  # as while the guard inspects registries or ends a scope
                gc.collect()
        outcome.append(scope.findings)

    thread = threading.Thread(target=scenario, daemon=True)
    thread.start()
    thread.join(60)  # a hang guard, not a timing assertion
    assert not thread.is_alive(), "deadlock: checkin listener blocked on the guard's own lock"
    assert codes(outcome[0]) == ["SES901"]


def test_other_internals_fall_back_to_events_with_one_warning(monkeypatch: pytest.MonkeyPatch, clock: Any, sqlite_url: str) -> None:
    # A SQLAlchemy whose pool methods differ from what the wrappers expect (a
    # future version) is detected, and the guard says so once, then uses events.
    if tracker_module._ACTIVE:
        pytest.skip("another tracker (--sessionguard) holds the method wrappers")
    from sqlalchemy.pool.base import _ConnectionFairy

    real = _ConnectionFairy.__dict__["_checkout"]
    monkeypatch.setattr(_ConnectionFairy, "_checkout", classmethod(lambda cls, pool, how=None: None))
    detected = tracker_module._pool_methods_as_expected()
    monkeypatch.setattr(_ConnectionFairy, "_checkout", real)
    assert detected is False
    monkeypatch.setattr(tracker_module, "_POOL_BY_PATCH", detected)
    monkeypatch.setattr(tracker_module, "_FALLBACK_WARNED", False)
    with pytest.warns(GuardWarning, match=r"listening to SQLAlchemy's events for them instead") as caught:
        guard = Tracker(clock=clock).install()
        Tracker(clock=clock).install().uninstall()  # a second install says nothing more
    assert len(caught) == 1 and "pool checkout/checkin" in str(caught[0].message)
    try:
        engine = make_engine(sqlite_url)
        with guard.scope("leak") as scope:
            conn = engine.connect()
        conn.close()
        assert codes(scope.findings) == ["SES901"]
    finally:
        guard.uninstall()


def test_create_engine_keywords_still_work_while_installed(tracker: Tracker, sqlite_url: str) -> None:
    # create_engine takes its keywords from Engine.__init__'s parameter names;
    # the guard's wrapper of it must keep them (flask-sqlalchemy passes echo=).
    engine = create_engine(sqlite_url, echo=False, logging_name="app", hide_parameters=True, query_cache_size=10)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert engine.hide_parameters is True
    assert engine in tracker_module._ENGINES  # still recorded, to name its pool
    engine.dispose()
