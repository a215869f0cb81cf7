"""Queries the guard sends to the database server itself.

All queries run on raw DBAPI cursors so that SQLAlchemy sees neither a
statement nor a transaction, and the guard's own listeners are suspended
around them by the caller.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

SERVER_DIALECTS = frozenset({"mysql", "mariadb", "postgresql"})


@dataclass(frozen=True)
class ServerTx:
    """A transaction the server reports as open for one of our connections."""

    backend_id: int
    age: float
    state: str
    query: str | None


def mysql_wait_timeout(proxied: Any) -> int | None:
    """`@@SESSION.wait_timeout` read on a pool's proxied DBAPI connection.

    Called from the pool's `checkout` event, where the connection has just
    been checked out, so it is valid and no statement or transaction of the
    application is in progress on it.
    """
    cursor = proxied.cursor()
    try:
        cursor.execute("SELECT @@SESSION.wait_timeout")
        row = cursor.fetchone()
    finally:
        with contextlib.suppress(Exception):
            cursor.close()
    if not row:
        return None
    return int(row[0])


def backend_id(driver_connection: Any) -> int | None:
    """The server's id for a driver connection, read without a query.

    psycopg 3: `info.backend_pid`; psycopg2: `get_backend_pid()`; asyncpg:
    `get_server_pid()`; PyMySQL, mysqlclient and aiomysql: `thread_id()`.
    """
    if driver_connection is None:
        return None
    info = getattr(driver_connection, "info", None)
    pid = getattr(info, "backend_pid", None)
    if isinstance(pid, int):
        return pid
    for method in ("get_backend_pid", "get_server_pid", "thread_id"):
        fn = getattr(driver_connection, method, None)
        if callable(fn):
            try:
                value = fn()
            except Exception:  # noqa: BLE001 - a closed connection has no id
                return None
            if isinstance(value, int):
                return value
    return None


_MYSQL_SQL = (
    "SELECT t.trx_mysql_thread_id, "
    "TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1000000.0, "
    "p.COMMAND, t.trx_query "
    "FROM information_schema.innodb_trx t "
    "JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id "
    "WHERE t.trx_mysql_thread_id IN ({ids})"
)

_PG_SQL = (
    "SELECT pid, EXTRACT(EPOCH FROM (now() - xact_start)), state, query "
    "FROM pg_stat_activity "
    "WHERE pid IN ({ids}) AND state LIKE 'idle in transaction%%'"
)


def open_transactions(pool: Any, dialect: str, ids: list[int]) -> list[ServerTx]:
    """Ask the server which of the backends `ids` are idle in an open transaction.

    A fresh connection comes from `pool.recreate()` (same creator, same
    connect arguments, same dialect hooks; SQLAlchemy's Pool.recreate docs),
    so credentials never have to be handled here. Ids are integers we read
    from the drivers and are inlined, which avoids per-driver paramstyles.
    """
    if not ids:
        return []
    id_list = ", ".join(str(int(i)) for i in ids)
    if dialect == "postgresql":
        sql = _PG_SQL.format(ids=id_list)
    else:
        sql = _MYSQL_SQL.format(ids=id_list)
    probe = pool.recreate()
    try:
        proxied = probe.connect()
        try:
            cursor = proxied.cursor()
            try:
                if dialect == "postgresql":
                    # psycopg treats `%%` as a literal `%` only when parameters are given.
                    cursor.execute(sql.replace("%%", "%"))
                else:
                    cursor.execute(sql)
                rows = cursor.fetchall()
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()
        finally:
            with contextlib.suppress(Exception):
                proxied.rollback()
            proxied.close()
    finally:
        probe.dispose()
    out: list[ServerTx] = []
    for row in rows:
        backend, age, state, query = row[0], row[1], row[2], row[3]
        if dialect != "postgresql" and str(state).lower() != "sleep":
            continue  # still executing: not idle in a transaction
        text = str(query) if query is not None else None
        if text is not None and len(text) > 200:
            text = text[:197] + "..."
        out.append(
            ServerTx(
                int(backend),
                float(age or 0.0),
                "idle in transaction" if dialect != "postgresql" else str(state),
                text,
            )
        )
    return out
