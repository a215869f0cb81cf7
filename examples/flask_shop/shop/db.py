"""Engine, session factory and the request-scoped session registry."""
import os

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import scoped_session, sessionmaker

from .models import Base

DEFAULT_DATABASE_URL = "sqlite:///shop.db"


def make_engine(database_url: str) -> Engine:
    return create_engine(database_url, pool_size=5, max_overflow=10,
                         pool_timeout=10, pool_pre_ping=True)


engine: Engine = make_engine(os.environ.get("SHOP_DATABASE_URL", DEFAULT_DATABASE_URL))
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)

# One session per request thread; removed by the teardown hook in create_app().
db_session = scoped_session(SessionLocal)


def use_database(database_url: str) -> Engine:
    """Point the app at another database (no-op if it is the current one)."""
    global engine
    if database_url != engine.url.render_as_string(hide_password=False):
        engine.dispose()
        engine = make_engine(database_url)
        SessionLocal.configure(bind=engine)
    return engine


def create_schema() -> None:
    Base.metadata.create_all(engine)


def ping() -> bool:
    # misuse: the health-check connection is never closed (no `with`, no close()),
    # so every probe strands a pooled connection until the garbage collector finds it.
    conn = engine.connect()
    return conn.execute(text("SELECT 1")).scalar() == 1
