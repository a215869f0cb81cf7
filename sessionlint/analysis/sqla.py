"""SQLAlchemy's public names, matched by the last component of a qualified name.

Any ``sqlalchemy.*`` path ending in a known name counts (``sqlalchemy.orm.Session``,
``sqlalchemy.orm.session.Session``), so SQLAlchemy moving a class between private
modules does not hide it. Names outside ``sqlalchemy`` never match.
"""

from __future__ import annotations

from sessionlint.analysis.kinds import FLASK_SQLALCHEMY_API, Kind

# Methods that release a session's or connection's resources. ``Session.close()``,
# ``Session.reset()`` (2.0.22+) and ``Session.invalidate()`` all end the transaction
# and return connections to the pool (SQLAlchemy docs, "Closing").
CLOSE_METHODS = frozenset({"close", "invalidate", "reset"})
CONNECTION_CLOSE_METHODS = frozenset({"close", "invalidate"})
ROLLBACK_METHODS = frozenset({"rollback"})

_API = {
    "Session": Kind("session_class", api="Session"),
    "AsyncSession": Kind("session_class", is_async=True, api="AsyncSession"),
    "Engine": Kind("engine_type", api="Engine"),
    "AsyncEngine": Kind("engine_type", is_async=True, api="AsyncEngine"),
    "Connection": Kind("connection_type", api="Connection"),
    "AsyncConnection": Kind("connection_type", is_async=True, api="AsyncConnection"),
}
for _name in (
    "sessionmaker",
    "async_sessionmaker",
    "scoped_session",
    "async_scoped_session",
    "create_engine",
    "create_async_engine",
    "URL",
    "make_url",
    "NullPool",
    "StaticPool",
    "QueuePool",
    "AsyncAdaptedQueuePool",
    "SingletonThreadPool",
    "AssertionPool",
    "close_all_sessions",
):
    _API[_name] = Kind("api", api=_name)


API_NAMES = frozenset(_API)

def sqla_kind(qname: str) -> Kind | None:
    """The kind of a ``sqlalchemy.*`` qualified name, or None."""
    if not qname.startswith("sqlalchemy"):
        return None
    return _API.get(qname.rsplit(".", 1)[-1])


# Flask-SQLAlchemy: ``db = SQLAlchemy(app)`` is an extension object whose ``db.session``
# is a ``scoped_session`` registry scoped to the Flask application context, which the
# extension removes itself at app-context teardown (its docs, "Sessions").
FLASK_SQLALCHEMY = "flask_sqlalchemy"
_FLASK_EXTENSION = Kind("api", api=FLASK_SQLALCHEMY_API)
# Subclasses of the extension in installed packages, whose source is not analysed:
# Flask-AppBuilder's ``SQLA`` (re-exported by the package).
_EXTENSION_SUBCLASSES = frozenset({"flask_appbuilder.SQLA", "flask_appbuilder.models.sqla.SQLA"})
EXTENSION_PREFIXES = (FLASK_SQLALCHEMY + ".", "flask_appbuilder.")


def names_sqla(data: bytes) -> bool:
    """Whether a file's bytes can name SQLAlchemy (also through SQLModel) or a
    Flask-SQLAlchemy extension."""
    return b"sqlalchemy" in data or b"sqlmodel" in data or b"flask_appbuilder" in data


# Packages that re-export SQLAlchemy's API under their own name: SQLModel's
# ``Session`` (a subclass adding ``exec()``), ``create_engine``, ``select`` and
# ``sqlmodel.ext.asyncio.session.AsyncSession`` behave as SQLAlchemy's do.
_REEXPORTERS = ("sqlmodel",)


def external_module(dotted: str) -> str:
    """The module name an import of ``dotted`` (not a project module) stands for.
    Old Flask redirected ``flask.ext.sqlalchemy`` to ``flask_sqlalchemy``."""
    if dotted.startswith("flask.ext."):
        dotted = "flask_" + dotted[len("flask.ext."):]
    for package in _REEXPORTERS:
        if dotted == package or dotted.startswith(package + "."):
            return "sqlalchemy" + dotted[len(package):]
    return dotted


def extension_kind(qname: str) -> Kind | None:
    """The kind of a ``flask_sqlalchemy.*`` qualified name ending in ``SQLAlchemy``, or
    of a known installed subclass of it."""
    if qname.startswith(FLASK_SQLALCHEMY + ".") and qname.rsplit(".", 1)[-1] == "SQLAlchemy":
        return _FLASK_EXTENSION
    if qname in _EXTENSION_SUBCLASSES:
        return _FLASK_EXTENSION
    return None


def extension_session(extension: Kind, origin: str) -> Kind:
    """``<extension>.session``: the extension's registry, managed (removed) by the framework."""
    return Kind("registry", scopefunc=True, api=extension.api, origin=origin, where=extension.where)
