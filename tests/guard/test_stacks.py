"""Stacks taken through learned shortcuts report exactly what a full walk reports.

`StackCapture` skips the library frames below the first user frame once it
has seen a call path, and recognises a Session's connection acquisition
without walking. These tests compare, for the same event, a tracker that has
learned those shortcuts with one installed just before (whose first walk at
each site is a full one), and check that the shortcuts were really taken.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, Integer, String
from sqlalchemy.orm import Session, declarative_base
from sqlalchemy.pool import QueuePool

from guard_compat import create_engine

from sessionlint.runtime_guard.settings import GuardSettings
from sessionlint.runtime_guard.tracker import Finding, Tracker


# Classic declarative mapping: the same on SQLAlchemy 1.4, 2.0 and 2.1.
Base = declarative_base()


class Note(Base):
    __tablename__ = "note"
    id = Column(Integer, primary_key=True)
    text = Column(String)


def only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, [f.message for f in findings]
    return matching[0]


@pytest.fixture
def fresh(clock: Any) -> Iterator[Any]:
    """Installs a second tracker on demand, next to `tracker`; uninstalls it after the test."""
    made: list[Tracker] = []

    def make() -> Tracker:
        guard = Tracker(GuardSettings(max_transaction=1.0, check_server=False), clock=clock).install()
        made.append(guard)
        return guard

    yield make
    for guard in made:
        guard.uninstall()


def warm_up(engine: sa.Engine) -> None:
    """Teach every site its paths: plain checkouts, Core transactions, sessions."""
    for _ in range(3):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
        with Session(engine) as session:
            session.add(Note(text="warm"))
            session.commit()
            session.scalars(sa.select(Note)).all()


def open_connection(engine: sa.Engine, keep: list[Any]) -> None:
    conn = engine.connect()
    conn.exec_driver_sql("SELECT 1")
    keep.append(conn)


def test_leaked_checkout_stack_matches_a_full_walk(tracker: Tracker, fresh: Any, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    warm_up(engine)
    keep: list[Any] = []
    for attempt in range(2):  # the second leak comes from another line of this test
        other = fresh()
        with tracker.scope("warm") as warm, other.scope("fresh") as cold:
            if attempt == 0:
                open_connection(engine, keep)
            else:
                open_connection(engine, keep)  # a different call site
        learned, full = only(warm.findings, "SES901"), only(cold.findings, "SES901")
        assert learned.stack() == full.stack()
        assert learned.stack()[-1].endswith("in open_connection")
        assert "in test_leaked_checkout_stack_matches_a_full_walk" in learned.stack()[-2]
        # The shortcut was taken: the library frames were never walked.
        assert len(learned.raw_stack) < len(full.raw_stack)
    for conn in keep:
        conn.close()
    engine.dispose()


def test_each_leak_reports_its_own_call_site(tracker: Tracker, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    warm_up(engine)
    keep: list[Any] = []
    reported: list[str] = []
    expected: list[int] = []
    for call in range(2):
        with tracker.scope(f"leak {call}") as scope:
            if call == 0:
                expected.append(sys._getframe().f_lineno + 1)
                open_connection(engine, keep)
            else:
                expected.append(sys._getframe().f_lineno + 1)
                open_connection(engine, keep)
        reported.append(only(scope.findings, "SES901").stack()[-2])
    assert [int(frame.split(":")[1].split()[0]) for frame in reported] == expected
    for conn in keep:
        conn.close()
    engine.dispose()


def test_session_stacks_match_a_full_walk(tracker: Tracker, fresh: Any, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    warm_up(engine)
    keep: list[Session] = []
    other = fresh()
    with tracker.scope("warm") as warm, other.scope("fresh") as cold:
        session = Session(engine)
        session.add(Note(text="left open"))
        session.flush()  # holds a connection: SES903 covers it
        keep.append(session)
    learned, full = only(warm.findings, "SES903"), only(cold.findings, "SES903")
    assert learned.stack() == full.stack()
    assert "in test_session_stacks_match_a_full_walk" in learned.stack()[-1]
    assert len(learned.raw_stack) < len(full.raw_stack)
    assert warm.findings == [learned]  # its connection is not reported again as SES901
    keep[0].close()
    engine.dispose()


def test_core_transaction_stacks_match_a_full_walk(tracker: Tracker, fresh: Any, clock: Any, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    warm_up(engine)
    other = fresh()
    with tracker.scope("warm") as warm, other.scope("fresh") as cold:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
            clock.advance(2)
    learned, full = only(warm.findings, "SES902"), only(cold.findings, "SES902")
    assert learned.stack() == full.stack()
    assert "in test_core_transaction_stacks_match_a_full_walk" in learned.stack()[-1]
    engine.dispose()


def test_session_checkout_and_begin_take_the_sessions_stack(tracker: Tracker, sqlite_url: str) -> None:
    """A Session's own checkout and Core begin are recognised without a walk, and use its begin stack."""
    engine = create_engine(sqlite_url, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    warm_up(engine)
    with tracker.scope("threads") as scope:
        with Session(engine) as session:
            session.add(Note(text="x"))  # the session's transaction begins here
            session.flush()
            holder = next(co for co in tracker._checkouts.values())
            state = next(iter(tracker._sessions.values()))
            assert holder.stack is state.stack
            worker = threading.Thread(target=session.commit, name="committer")
            worker.start()
            worker.join()
    finding = only(scope.findings, "SES905")
    assert finding.thread == "committer"
    assert finding.related[0][1] is state.stack
    engine.dispose()


class AuditedPool(QueuePool):
    """A pool of the user's: its frame sits between Engine.connect and the checkout."""

    def connect(self) -> Any:
        return super().connect()


def test_frames_of_a_users_pool_class_are_kept(tracker: Tracker, fresh: Any, sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, poolclass=AuditedPool)
    for _ in range(3):
        with engine.connect():
            pass
    keep: list[Any] = []
    other = fresh()
    with tracker.scope("warm") as warm, other.scope("fresh") as cold:
        open_connection(engine, keep)
    learned, full = only(warm.findings, "SES901"), only(cold.findings, "SES901")
    assert learned.stack() == full.stack()
    assert any(frame.endswith("in connect") and "test_stacks.py" in frame for frame in learned.stack())
    keep[0].close()
    engine.dispose()


def test_asyncio_leak_after_learning_points_at_the_coroutine(tracker: Tracker, fresh: Any, tmp_path: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    async def use(engine: Any) -> None:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def open_and_forget(engine: Any, keep: list[Any]) -> None:
        conn = await engine.connect()
        await conn.exec_driver_sql("SELECT 1")
        keep.append(conn)

    async def main() -> tuple[Finding, Finding]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/a.db")
        for _ in range(3):
            await use(engine)
        keep: list[Any] = []
        other = fresh()
        with tracker.scope("warm") as warm, other.scope("fresh") as cold:
            await open_and_forget(engine, keep)
        await keep[0].close()
        await engine.dispose()
        return only(warm.findings, "SES901"), only(cold.findings, "SES901")

    learned, full = asyncio.run(main())
    assert learned.stack() == full.stack()
    assert learned.stack()[-1].endswith("in open_and_forget")
