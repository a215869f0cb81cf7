"""What a name or expression denotes, as far as session analysis cares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ValueSummary:
    """What a module-level name was last assigned: a call, an alias, or anything else."""

    shape: str  # "call" | "alias" | "annotation" (a declared type) | "other"
    target: str | None = None  # callee (call) or aliased name (alias), qualified
    keywords: tuple[tuple[str, str | None], ...] = ()  # keyword -> qualified value if a name
    called_twice: bool = False  # ``sessionmaker(...)()``: the callee's result is called
    line: int = 0
    positional: int = 0  # positional arguments of the call (``scoped_session(f, scopefunc)``)


@dataclass(frozen=True, slots=True)
class FunctionSummary:
    """Which parameters a helper closes or rolls back somewhere in its body."""

    params: tuple[str, ...]
    closes: frozenset[str]
    rollbacks: frozenset[str]
    removes: frozenset[str] = frozenset()  # parameters on which ``.remove()`` is called
    rolls_back_any: bool = False  # the body calls ``rollback()`` on anything
    never_returns: bool = False  # ``-> NoReturn``, or every path of the body raises
    returns: ValueSummary | None = None  # what it returns, when that can be named
    declared: ValueSummary | None = None  # its declared type, when ``returns`` is a call


# ``api`` of Flask-SQLAlchemy's extension class, and of the registry its objects hold.
FLASK_SQLALCHEMY_API = "FlaskSQLAlchemy"


@dataclass(frozen=True, slots=True)
class Kind:
    """A resolved meaning.

    ``tag`` is one of:

    - ``session_class``: ``Session``/``AsyncSession`` or a project subclass;
    - ``factory``: a ``sessionmaker``/``async_sessionmaker`` (or configured factory);
    - ``registry``: a ``scoped_session``/``async_scoped_session`` registry;
    - ``session``: a session instance (``scoped`` when it came from a registry);
    - ``engine`` / ``engine_type``: an ``Engine`` value / the ``Engine`` class;
    - ``connection``: a Core connection value;
    - ``function``: a project helper (``function`` summarises its parameters);
    - ``extension``: a framework's database object (Flask-SQLAlchemy's ``db``), whose
      ``session`` attribute is a registry the framework manages (``api`` names it);
    - ``api``: another SQLAlchemy name of interest (``api`` holds it).
    """

    tag: str
    is_async: bool = False
    scoped: bool = False
    scopefunc: bool = False
    configured: bool = False
    api: str = ""
    origin: str = ""
    where: tuple[str, int] | None = None
    function: FunctionSummary | None = None
    # What typed it (``analysis/evidence.py``): "" the code (a constructor, a summary),
    # "declared" an annotation, "name" its name, "use" its name and its use.
    evidence: str = ""

    @property
    def managed(self) -> bool:
        """A registry the framework removes itself (Flask-SQLAlchemy's ``db.session``)."""
        return self.tag == "registry" and self.api == FLASK_SQLALCHEMY_API
