"""Fixtures of the runtime-guard tests: real servers, unique tables, fake clock.

MariaDB (127.0.0.1:3306, root, no password, database `test`) and PostgreSQL
(127.0.0.1:5432, postgres, trust auth, database `test`) are required: under
`CI=true` an unreachable server fails the run loudly; locally the tests that
need it skip with a hint (`scripts/ensure-services` starts both; `make test`
runs it).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from guard_compat import POSTGRES_DRIVER, create_engine

from sessionlint.runtime_guard.settings import GuardSettings
from sessionlint.runtime_guard import tracker as tracker_module
from sessionlint.runtime_guard.tracker import Tracker, patches_applied

MARIADB_URL = os.environ.get("SESSIONGUARD_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get("SESSIONGUARD_POSTGRES_URL", f"postgresql+{POSTGRES_DRIVER}://postgres@127.0.0.1:5432/test")
HINT = "start the servers with scripts/ensure-services (make test runs it)"

_reachable: dict[str, str | None] = {}
_lock = threading.Lock()


def _probe(url: str) -> str | None:
    """None if the server answers, else the error text (cached per process)."""
    with _lock:
        if url not in _reachable:
            engine = create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                _reachable[url] = None
            except Exception as exc:  # noqa: BLE001 - any failure means unreachable
                _reachable[url] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            finally:
                engine.dispose()
        return _reachable[url]


def require_server(url: str, name: str) -> str:
    error = _probe(url)
    if error is None:
        return url
    message = f"{name} is not reachable at {sa.engine.make_url(url).render_as_string(hide_password=True)}: {error}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} -- CI requires it; {HINT}", pytrace=False)
    pytest.skip(f"{message}; {HINT}")


@pytest.fixture
def mariadb_url() -> str:
    return require_server(MARIADB_URL, "MariaDB")


@pytest.fixture
def postgres_url() -> str:
    return require_server(POSTGRES_URL, "PostgreSQL")


@pytest.fixture(params=["mariadb", "postgresql"])
def server_url(request: pytest.FixtureRequest) -> str:
    if request.param == "mariadb":
        return require_server(MARIADB_URL, "MariaDB")
    return require_server(POSTGRES_URL, "PostgreSQL")


@pytest.fixture
def table(request: pytest.FixtureRequest) -> str:
    """A table name unique to this test and xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"sg_{worker}_{uuid.uuid4().hex[:12]}"


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> Iterator[Tracker]:
    """An installed tracker (threshold 1 s, fake clock), uninstalled after the test."""
    guard = Tracker(GuardSettings(max_transaction=1.0, check_server=False), clock=clock).install()
    try:
        yield guard
    finally:
        guard.uninstall()
        assert not any(sa.event.contains(*listener) for listener in guard.listeners())
        # The class patches stay only while another tracker (e.g. --sessionguard) is active.
        assert not patches_applied() or tracker_module._ACTIVE


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/guard.db"

