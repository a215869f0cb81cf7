"""What the guard's tests need to run the same on SQLAlchemy 1.4, 2.0 and 2.1.

On 1.4 an engine is made with ``future=True``: its connections begin a transaction
on the first statement and have ``commit()``, as on 2.x (a legacy 1.4 connection
autocommits and begins none, so there is no transaction to time or share). 1.4 also
gives a file SQLite database a ``NullPool``, so a test that sizes its pool asks for
a ``QueuePool``. PostgreSQL goes through psycopg 3 on 2.x, psycopg2 on 1.4 (which has
no psycopg 3 dialect), and asyncio PostgreSQL through asyncpg there.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

SA14 = sa.__version__.startswith("1.")
POSTGRES_DRIVER = "psycopg2" if SA14 else "psycopg"
POSTGRES_ASYNC_DRIVER = "postgresql+asyncpg" if SA14 else "postgresql+psycopg_async"
Engine = sa.engine.Engine


def create_engine(url: str | sa.engine.URL, **kw: Any) -> Engine:
    if SA14:
        kw.setdefault("future", True)
        if str(url).startswith("sqlite") and {"pool_size", "max_overflow", "pool_timeout"} & kw.keys():
            kw.setdefault("poolclass", QueuePool)
    return sa.create_engine(url, **kw)
