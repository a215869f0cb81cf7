"""Plain-data catalogue of the runtime guard's findings, SES901-SES907.

Imports nothing but the standard library so that the CLI (`sessionlint rules`,
`sessionlint explain SES901`) can list the runtime codes without importing
SQLAlchemy or pytest. Codes and names are fixed by `shared/spec/RULES.md`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeCode:
    """One runtime finding: its code, name, a one-line summary and a doc text."""

    code: str
    name: str
    summary: str
    doc: str


RUNTIME_CODES: tuple[RuntimeCode, ...] = (
    RuntimeCode(
        code="SES901",
        name="leaked-checkout",
        summary="a connection checked out of a pool during a test and not returned when the test ended",
        doc="""\
## What it finds
A pool checkout (`engine.connect()`, `engine.raw_connection()`, a Session's
connection) made while a test ran and still checked out once the test and its
function-scoped fixtures were torn down. A connection that only the garbage
collector returned to the pool is reported too. The finding carries the stack
that checked the connection out, trimmed to your own frames.

## Why is this bad?
Every leaked checkout holds one of the pool's `pool_size + max_overflow`
slots. In production the same path leaks once per request until the pool is
exhausted and requests fail with `QueuePool limit of size 5 overflow 10
reached`. A connection returned by the garbage collector is returned late,
at an arbitrary moment, and on asyncio drivers it cannot be reset at all.

## How to fix
Close what you open, on every path: `with engine.connect() as conn:`,
`with Session(engine) as session:`, or `close()` in a `finally`. Connections a
session- or module-scoped fixture holds on purpose are checked when that
fixture's scope ends, not at each test.
""",
    ),
    RuntimeCode(
        code="SES902",
        name="long-transaction",
        summary="a transaction (ORM session or Core connection) open longer than the threshold (default 2 s)",
        doc="""\
## What it finds
An outermost transaction, of a `Session` or of a Core `Connection`, that stayed
open longer than `--sessionguard-max-transaction` (default 2 seconds). It is
reported with its duration and the stack that began it. At the end of a run
against MariaDB/MySQL or PostgreSQL the guard also asks the server
(`information_schema.innodb_trx`, `pg_stat_activity` in state
`idle in transaction`) for transactions of this process that are still open,
and reports each with the age the server gives.

## Why is this bad?
A long transaction holds row locks and a pooled connection, blocks schema
migrations and vacuum, and on MySQL keeps a consistent-read snapshot alive.
`idle in transaction` sessions are the classic symptom of work done (HTTP
calls, sleeps, user think time) between a session's first query and its commit.

## How to fix
Keep transactions short: do slow work before the first query or after the
commit, commit or roll back as soon as the unit of work is done, and close the
session. Use the marker `@pytest.mark.sessionguard(max_transaction=10)` for a
test that is slow on purpose.
""",
    ),
    RuntimeCode(
        code="SES903",
        name="session-left-open",
        summary="a Session still holding a connection or transaction when the test ended",
        doc="""\
## What it finds
A `Session` (or the sync session of an `AsyncSession`) whose outermost
transaction began during the test and was still open when the test ended,
whether or not it had acquired a connection yet. A session that was garbage
collected while its transaction was open is reported too.

## Why is this bad?
An open session keeps its transaction, and with it a pooled connection and the
database locks of its work, until someone closes it. Objects in it keep stale
state, and the next use of the same session continues an old transaction.

## How to fix
Use `with Session(engine) as session:` (or `with session.begin():`), or call
`session.close()` in a `finally`. When a session's connection is reported as
SES903, the same connection is not reported again as SES901.
""",
    ),
    RuntimeCode(
        code="SES904",
        name="scoped-session-left",
        summary="a scoped_session registry still holding a session for a thread when the test ended",
        doc="""\
## What it finds
A `scoped_session` (or `async_scoped_session`) registry that gained a session
during the test and still holds it when the test ended: `remove()` was never
called. Thread-local registries are inspected for the thread that runs the
tests; registries with a `scopefunc` are inspected for every scope.

## Why is this bad?
The registry keeps the session, its identity map and any open transaction
alive for the next request served by the same thread, which then sees stale
objects or a connection that has been idle in a transaction. Under a
thread pool the leak is per worker thread and never ends.

## How to fix
Call `Session.remove()` at the end of every request or task, in a teardown hook
(`app.teardown_appcontext`) or a `finally`. A session left in a registry is
reported once as SES904, not again as SES903 or SES901.
""",
    ),
    RuntimeCode(
        code="SES905",
        name="cross-thread-session",
        summary="a session or connection used from a thread other than the one that began its transaction",
        doc="""\
## What it finds
A statement, commit or rollback on a Core `Connection` (including a Session's
connection) issued from a thread other than the one on which its current
transaction began.

## Why is this bad?
Neither `Session` nor `Connection` is thread-safe (see SQLAlchemy's
"Is the Session thread-safe?" FAQ). Two threads interleaving statements on one
DBAPI connection corrupt the protocol state, mix their transactions and
produce errors that are impossible to reproduce.

## How to fix
Give every thread its own session (`sessionmaker` called in the thread, or a
`scoped_session` that is removed at the end of each task). Pass ids or plain
data to worker threads, never sessions, connections or ORM objects.
""",
    ),
    RuntimeCode(
        code="SES906",
        name="pool-recycle-vs-wait-timeout",
        summary="on the first connection to MySQL/MariaDB, pool_recycle unset or not below the server's @@wait_timeout",
        doc="""\
## What it finds
On the first connection of each MySQL or MariaDB pool, the guard reads the
server's `@@wait_timeout` for that connection and compares it with the pool's
`pool_recycle`. It reports a pool whose `pool_recycle` is unset (-1) or not
strictly below `wait_timeout`.

## Why is this bad?
The server silently closes a connection that stayed idle longer than
`wait_timeout`. A pool that keeps such a connection hands it out again and the
next statement fails with "MySQL server has gone away" / "Lost connection to
MySQL server during query".

## How to fix
Pass `pool_recycle` below the server's `wait_timeout` (for example
`create_engine(url, pool_recycle=3600, pool_pre_ping=True)`), as SQLAlchemy's
"Dealing with Disconnects" documentation recommends.
""",
    ),
    RuntimeCode(
        code="SES907",
        name="pool-exhausted",
        summary="a checkout had to wait because pool_size + max_overflow connections were out (or timed out)",
        doc="""\
## What it finds
A checkout from a `QueuePool` (including the asyncio variant) that found all
`pool_size + max_overflow` connections checked out, so it had to wait for one
to come back, or timed out after `pool_timeout` with `QueuePool limit of size
N overflow M reached`. The finding lists the stacks currently holding the
pool's connections.

## Why is this bad?
Waiting checkouts add latency to every request under load and turn into
timeouts as soon as a holder is slow; usually the holders are leaks (SES901,
SES903) or long transactions (SES902) rather than a pool that is too small.

## How to fix
Return connections promptly (close sessions, shorten transactions). Size the
pool for the real concurrency of the process (threads, worker tasks), keeping
the total below the server's `max_connections`.
""",
    ),
)

CODES_BY_ID: dict[str, RuntimeCode] = {c.code: c for c in RUNTIME_CODES}


def name_of(code: str) -> str:
    """The fixed name of a runtime code, e.g. 'leaked-checkout' for SES901."""
    return CODES_BY_ID[code].name
