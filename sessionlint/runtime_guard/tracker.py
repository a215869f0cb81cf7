"""The runtime guard's core: SQLAlchemy event listeners and scope bookkeeping.

Framework-free: no pytest, no LibCST. `Tracker.install()` attaches listeners to
the *classes* `Pool` and `Session`, so every pool and session in the process is
covered, whether it was created before or after install (SQLAlchemy propagates
class-level listeners to existing and future instances; see "Event
Registration" / "Targets" in the SQLAlchemy event docs). Core transactions are
followed by class patches of `Connection` rather than ConnectionEvents, which
cost every statement SQLAlchemy's dispatch (see "process-wide patches").
`Tracker.uninstall()` removes each listener with `event.remove`, and the last
tracker out restores the patched classes.

What is tracked, keyed by `id()` and validated by a weak reference so that a
recycled id is never mistaken for the old object:

* checkouts, keyed by connection record (the pool's `_ConnectionRecord`):
  thread, time, the checkout stack (captured cheaply, formatted on report);
* outermost transactions: ORM (`after_transaction_create` with
  `transaction.parent is None`) and Core (`Connection._begin_impl`), with the
  thread that began them;
* sessions holding connections (`after_begin`), and `scoped_session`
  registries holding sessions.

Findings go to *scopes*. A scope is what a test, a fixture or a web request is
to the framework driving the guard: `with tracker.scope("name") as s:` then
`s.findings`, or `begin_scope()` / `end_scope()`.

Listeners never raise into the application: any error inside the guard becomes
a `GuardWarning` and is kept in `Tracker.errors`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import inspect
import itertools
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import CodeType, FunctionType
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction, scoped_session
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.pool.base import _ConnectionFairy, _ConnectionRecord
from sqlalchemy.util import ScopedRegistry, ThreadLocalRegistry

from sessionlint.runtime_guard import server as _server
from sessionlint.runtime_guard.codes import name_of
from sessionlint.runtime_guard.settings import GuardSettings
from sessionlint.runtime_guard.stack import (
    EMPTY,
    RawStack,
    Site,
    StackCapture,
    capture,
    format_stack,
    innermost_user_frame,
)

__all__ = ["Finding", "GuardWarning", "Scope", "Tracker"]

_MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})
# Frames a listener's stack capture skips: the listener itself, SQLAlchemy's
# event dispatcher (`_ListenerCollection.__call__`) and the SQLAlchemy method
# that fired the event. All three are always SQLAlchemy's or the guard's, so
# no reported frame is lost.
_LISTENER_SKIP = 3


class GuardWarning(UserWarning):
    """An error inside the guard; the application was not affected."""


@dataclass(frozen=True, eq=False)
class Finding:
    """One runtime finding. The stack is kept raw and formatted on demand."""

    code: str
    message: str
    scope: str
    raw_stack: RawStack = EMPTY
    duration: float | None = None
    thread: str | None = None
    engine: str | None = None
    related: tuple[tuple[str, RawStack], ...] = ()

    @property
    def name(self) -> str:
        return name_of(self.code)

    def stack(self, *, trim: bool = True, cwd: str | None = None) -> list[str]:
        """`path:line in function` strings, innermost last, trimmed to user frames."""
        return format_stack(self.raw_stack, trim=trim, cwd=cwd)

    def related_stacks(self, cwd: str | None = None) -> list[tuple[str, list[str]]]:
        return [(label, format_stack(raw, cwd=cwd)) for label, raw in self.related]

    def to_dict(self, cwd: str | None = None) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "scope": self.scope,
            "stack": self.stack(cwd=cwd),
            "duration": self.duration,
            "thread": self.thread,
            "engine": self.engine,
            "related": [{"label": label, "stack": frames} for label, frames in self.related_stacks(cwd)],
        }


@dataclass
class _Wait:
    """Exhaustion of one pool within one scope, aggregated into one SES907."""

    pool_label: str
    capacity: str
    stack: RawStack
    thread: str
    holders: tuple[tuple[str, RawStack], ...]
    waits: int = 0
    timeouts: int = 0
    longest: float = 0.0


class Scope:
    """A unit of blame: items begun while it is active belong to it."""

    def __init__(self, name: str, settings: GuardSettings, kind: str = "scope") -> None:
        self.name = name
        self.kind = kind
        self.settings = settings
        self.findings: list[Finding] = []
        self.closed = False
        self.data: dict[str, Any] = {}
        self._registry_start: frozenset[tuple[int, int]] = frozenset()
        self._waits: dict[int, _Wait] = {}

    @property
    def max_transaction(self) -> float:
        return self.settings.max_transaction

    def allows(self, code: str) -> bool:
        return code in self.settings.allow

    def __repr__(self) -> str:
        return f"<Scope {self.name!r} {'closed' if self.closed else 'open'} findings={len(self.findings)}>"


# The records below have no `__init__`: the listeners make them with `cls()`
# (all C) and store each slot, which costs about a third of a Python
# `__init__` call (the call itself dominated a checkout's bookkeeping). Slot
# reads and writes are specialized by the interpreter; a list subclass, tried
# too, is not (`list.__getitem__` on a subclass takes the slow generic path).


class _Checkout:
    __slots__ = ("record", "proxy_ref", "pool", "thread_obj", "start", "stack", "scope", "reported")
    # The pool's `_ConnectionRecord`, held strongly while checked out: the
    # pool holds it too, and every checked-out record gets a checkin (or a
    # detach) event, which drops the entry; a strong reference also means its
    # id cannot be reused while the entry exists. A detached entry holds a
    # weak reference instead (`record_of`): its record may leave the pool.
    record: Any
    # The fairy's weak reference: SQLAlchemy's own `record.fairy_ref`, reused.
    proxy_ref: Callable[[], Any]
    pool: Any
    thread_obj: Any
    start: float
    stack: RawStack
    scope: Scope
    reported: bool

    @property
    def thread(self) -> str:
        return _thread_name(self.thread_obj)

    def record_of(self) -> Any:
        record = self.record
        return record() if isinstance(record, weakref.ref) else record


class _CoreTx:
    __slots__ = (
        "conn_ref",
        "thread_ident",
        "thread_obj",
        "start",
        "seq",
        "stack",
        "scope",
        "pool_id",
        "session_owned",
        "cross",
    )
    conn_ref: Callable[[], Any]
    thread_ident: int
    thread_obj: Any
    start: float
    seq: int
    stack: RawStack
    scope: Scope
    pool_id: int
    session_owned: bool
    cross: set[tuple[int, str]] | None  # None until a foreign thread is seen

    @property
    def thread(self) -> str:
        return _thread_name(self.thread_obj)


class _SessionState:
    __slots__ = (
        "session_ref",
        "thread_ident",
        "thread_obj",
        "start",
        "seq",
        "stack",
        "scope",
        "records",
        "pool_id",
        "reported",
    )
    session_ref: Callable[[], Any]
    thread_ident: int
    thread_obj: Any
    start: float
    seq: int
    stack: RawStack
    scope: Scope
    records: set[int]
    pool_id: int | None
    reported: bool

    @property
    def thread(self) -> str:
        return _thread_name(self.thread_obj)


def _thread_name(thread: Any) -> str:
    name = getattr(thread, "name", None)
    return name if isinstance(name, str) else str(thread)


class _PoolInfo:
    """What a pool is: its engine's URL (password hidden) and dialect, if an engine was found.

    `site` holds the stack shortcuts learned from this pool's checkouts (see
    `stack.StackCapture`); per pool, so that a pool class of the user's never
    shares the shortcuts of SQLAlchemy's own.
    """

    __slots__ = ("pool_ref", "url", "dialect", "site")

    def __init__(self, pool_ref: Callable[[], Any], url: str | None, dialect: str) -> None:
        self.pool_ref = pool_ref
        self.url = url
        self.dialect = dialect
        self.site = Site()


@dataclass
class Stats:
    """Counters for the stress test and the benchmark: nothing may go missing."""

    checkouts: int = 0
    checkins: int = 0
    transactions: int = 0
    session_transactions: int = 0
    findings: int = 0


def _count_of(counter: itertools.count[int]) -> int:
    """How many times `next()` was called on `counter` (started at 0).

    The hot path counts with `next(counter)`: one C call, atomic under the GIL
    from any thread, no lock and no per-thread object. The value is read back
    from the counter's repr, `count(N)`.
    """
    text = repr(counter)
    return int(text[text.index("(") + 1 : -1])


class _ThreadState(threading.local):
    """One thread's `Thread` object, looked up once per thread (`current_thread()` is Python code)."""

    def __init__(self) -> None:
        self.thread = threading.current_thread()


# -- process-wide patches ---------------------------------------------------
#
# Some things have no SQLAlchemy event: a checkout waiting on an exhausted
# QueuePool, the creation of a scoped_session registry, the creation of an
# Engine (which tells a pool's URL). Others have events that are too dear:
# any ConnectionEvents listener on the Engine class sets `Engine._has_events`,
# after which SQLAlchemy dispatches (mostly empty) event collections around
# every connect and statement, which alone cost ~7% of a small ORM unit of
# work, more than the guard's whole budget (benchmarks/guard_overhead.py).
# So Core transactions and statements are followed by wrapping the
# `Connection` methods that fire those events (`_begin_impl`, `_commit_impl`,
# `_rollback_impl`, `_execute_context`; engine/base.py) at the same point;
# if a SQLAlchemy version lacks one of them, the guard listens to the
# ConnectionEvents instead (`_CORE_BY_PATCH`). Pool checkouts and checkins
# are followed the same way, by wrapping `_ConnectionFairy._checkout` and
# `_ConnectionRecord.checkin` where they have the expected shape
# (`_POOL_BY_PATCH`): a wrapper is one Python call where a listener is
# SQLAlchemy's dispatch and a call (about a quarter of the guard's cost per
# checkout); tests run every tracker test both ways.
#
# The wrappers are installed while at least one tracker is, restored exactly
# when the last one is uninstalled, and dispatch to every installed tracker.
# `_ACTIVE` is a tuple, replaced whole under `_ACTIVE_LOCK`, so a wrapper
# reads it without a lock.

_ACTIVE: tuple[Tracker, ...] = ()
_ACTIVE_LOCK = threading.Lock()
_MISSING = object()
# (class, attribute, what the class's own __dict__ held before, or _MISSING).
_saved: list[tuple[type, str, Any]] = []
# Engines seen (created while patched, or found by `install`), to name pools.
_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()

get_ident = threading.get_ident

def _parent_of(transaction: Any) -> Any:
    """`transaction.parent` (SessionEvents: None for the outermost transaction).

    The public `parent` is a Python property returning `_parent`; session
    events fire for every subtransaction a flush opens, so the listeners read
    the attribute directly where SQLAlchemy has it, and call this otherwise.
    """
    return transaction.parent


def _dead_ref() -> None:
    """Stands in for a weak reference whose object is gone (or never was)."""
    return None


_CORE_METHODS = ("_begin_impl", "_commit_impl", "_rollback_impl", "_execute_context")
_CORE_BY_PATCH = all(isinstance(Connection.__dict__.get(name), FunctionType) for name in _CORE_METHODS)


def _pool_methods_as_expected() -> bool:
    """True if the pool methods that fire checkout and checkin are the ones the wrappers expect.

    `_ConnectionFairy._checkout(cls, pool, threadconns=None, fairy=None)`
    fires PoolEvents.checkout for a fairy's first checkout (`_counter == 1`)
    just before returning it; `_ConnectionRecord.checkin(self,
    _fairy_was_created=True)` fires PoolEvents.checkin unless it is a double
    checkin (`fairy_ref` already None, with a fairy created). Wrapping them
    costs one Python call where a listener costs SQLAlchemy's dispatch too
    (about a quarter of the guard's cost per checkout); on another SQLAlchemy
    the guard listens to the events instead (`_POOL_BY_PATCH`).
    """
    checkout = _ConnectionFairy.__dict__.get("_checkout")
    checkin = _ConnectionRecord.__dict__.get("checkin")
    if not isinstance(checkout, classmethod) or not isinstance(checkin, FunctionType):
        return False
    func = checkout.__func__
    return (
        isinstance(func, FunctionType)
        and func.__code__.co_varnames[:4] == ("cls", "pool", "threadconns", "fairy")
        and checkin.__code__.co_varnames[:2] == ("self", "_fairy_was_created")
    )


_POOL_BY_PATCH = _pool_methods_as_expected()
_FALLBACK_WARNED = False


def _warn_fallback_once() -> None:
    """One line, once per process, when this SQLAlchemy lacks the internals the
    method wrappers expect (a newer version, say): the guard then listens to the
    documented events instead, finding the same things a little more slowly."""
    global _FALLBACK_WARNED
    if _FALLBACK_WARNED or (_POOL_BY_PATCH and _CORE_BY_PATCH):
        return
    _FALLBACK_WARNED = True
    missing = [what for what, ok in (("pool checkout/checkin", _POOL_BY_PATCH), ("Connection transactions", _CORE_BY_PATCH)) if not ok]
    message = (
        f"sessionguard: SQLAlchemy {sqlalchemy.__version__} does not have the internals the guard wraps for "
        f"{' and '.join(missing)}; listening to SQLAlchemy's events for them instead (same findings, somewhat slower)"
    )
    try:
        warnings.warn(message, GuardWarning, stacklevel=3)
    except Exception:  # noqa: BLE001 - e.g. `-W error`: a warning must not stop the run
        pass


def _registry_classes() -> list[type]:
    classes: list[type] = [scoped_session]
    try:
        from sqlalchemy.ext.asyncio import async_scoped_session
    except ImportError:  # pragma: no cover - asyncio extension needs greenlet
        pass
    else:
        classes.append(async_scoped_session)
    return classes


def _patch(
    cls: type, name: str, make: Callable[[Any], Callable[..., Any]], kind: Callable[[Any], Any] | None = None
) -> None:
    """Replace `cls.name` by `make(original)` (wrapped in `kind`, e.g. classmethod), remembering how to restore it."""
    original = getattr(cls, name)
    _saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
    wrapper = make(original)
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper.__sessionguard__ = True  # type: ignore[attr-defined]
    attribute: Any = wrapper if kind is None else kind(wrapper)
    if kind is not None:
        attribute.__sessionguard__ = True
    setattr(cls, name, attribute)


def _with_signature_of(original: Callable[..., None], after: Callable[[Any], None]) -> Callable[..., None]:
    """A function with exactly ``original``'s parameters (names, kinds, defaults) that
    calls it, then ``after(first argument)``: code that inspects the parameters
    (SQLAlchemy's ``get_cls_kwargs`` reads ``__code__``) sees the original's."""
    params: list[str] = []
    passed: list[str] = []
    env: dict[str, Any] = {"_original": original, "_after": after}
    kinds = inspect.Parameter
    signature = inspect.signature(original)
    star_seen = any(p.kind is kinds.VAR_POSITIONAL for p in signature.parameters.values())
    slash_after = max((i for i, p in enumerate(signature.parameters.values()) if p.kind is kinds.POSITIONAL_ONLY), default=-1)
    for i, p in enumerate(signature.parameters.values()):
        default = ""
        if p.default is not kinds.empty:
            env[f"_default{i}"] = p.default
            default = f"=_default{i}"
        if p.kind is kinds.VAR_POSITIONAL:
            params.append(f"*{p.name}")
            passed.append(f"*{p.name}")
        elif p.kind is kinds.VAR_KEYWORD:
            params.append(f"**{p.name}")
            passed.append(f"**{p.name}")
        elif p.kind is kinds.KEYWORD_ONLY:
            if not star_seen:
                params.append("*")
                star_seen = True
            params.append(f"{p.name}{default}")
            passed.append(f"{p.name}={p.name}")
        else:
            params.append(f"{p.name}{default}")
            passed.append(p.name)
        if i == slash_after:
            params.append("/")
    first = next(iter(signature.parameters))
    source = (
        f"def {original.__name__}({', '.join(params)}):\n"
        f"    _original({', '.join(passed)})\n"
        f"    _after({first})\n"
    )
    exec(source, env)  # noqa: S102 - built from the signature's own names, nothing external
    wrapper: Callable[..., None] = env[original.__name__]
    wrapper.__qualname__ = getattr(original, "__qualname__", original.__name__)
    wrapper.__doc__ = original.__doc__
    return wrapper


def _apply_patches() -> None:
    def make_connect(base_connect: Callable[[Any], Any]) -> Callable[..., Any]:
        def connect(pool: Any) -> Any:
            # Fast path, the common case: overflow connections can still be
            # made, so `QueuePool._do_get` cannot block.
            try:
                if pool._max_overflow < 0 or pool._overflow < pool._max_overflow:
                    return base_connect(pool)
            except AttributeError:
                return base_connect(pool)
            trackers = _ACTIVE
            waiting = False
            for tracker in trackers:
                waiting = tracker._pool_full(pool) or waiting
            if not waiting:
                return base_connect(pool)
            stack = capture(1) or EMPTY
            start = time.monotonic()
            try:
                result = base_connect(pool)
            except sa_exc.TimeoutError:
                for tracker in trackers:
                    tracker._pool_waited(pool, stack, time.monotonic() - start, timed_out=True)
                raise
            for tracker in trackers:
                tracker._pool_waited(pool, stack, time.monotonic() - start, timed_out=False)
            return result

        return connect

    _patch(QueuePool, "connect", make_connect)

    if _POOL_BY_PATCH:

        def make_fairy_checkout(original: Callable[..., Any]) -> Callable[..., Any]:
            func = original.__func__  # type: ignore[attr-defined]  # the classmethod's function

            def _checkout(cls: Any, pool: Any, threadconns: Any = None, fairy: Any = None) -> Any:
                result = func(cls, pool, threadconns, fairy)
                # PoolEvents.checkout: a fairy's first checkout only.
                if result._counter == 1:
                    for tracker in _ACTIVE:
                        tracker._on_checkout(result.dbapi_connection, result._connection_record, result)
                return result

            return _checkout

        def make_record_checkin(original: Callable[..., Any]) -> Callable[..., Any]:
            def checkin(record: Any, _fairy_was_created: bool = True) -> Any:
                # PoolEvents.checkin: not for a double checkin, which only warns.
                if record.fairy_ref is not None or not _fairy_was_created:
                    for tracker in _ACTIVE:
                        tracker._on_checkin(record.dbapi_connection, record)
                return original(record, _fairy_was_created)

            return checkin

        _patch(_ConnectionFairy, "_checkout", make_fairy_checkout, classmethod)
        _patch(_ConnectionRecord, "checkin", make_record_checkin)

    for cls in _registry_classes():

        def make_registry_init(original: Callable[..., None]) -> Callable[..., None]:
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                original(self, *args, **kwargs)
                for tracker in _ACTIVE:
                    tracker._register_registry(self, capture(1) or EMPTY)

            return __init__

        _patch(cls, "__init__", make_registry_init)

    def make_engine_init(original: Callable[..., None]) -> Callable[..., None]:
        # ``create_engine`` reads the keywords it may pass (``echo``, ``logging_name``...)
        # from the parameter names of ``Engine.__init__`` (``util.get_cls_kwargs``): a
        # ``*args, **kwargs`` wrapper would make it refuse them.
        return _with_signature_of(original, _ENGINES.add)

    _patch(Engine, "__init__", make_engine_init)

    if not _CORE_BY_PATCH:
        return

    def make_begin(original: Callable[..., Any]) -> Callable[..., Any]:
        def _begin_impl(conn: Any, transaction: Any) -> Any:
            for tracker in _ACTIVE:
                tracker._on_begin(conn)
            return original(conn, transaction)

        return _begin_impl

    def make_end(original: Callable[..., Any], how: str) -> Callable[..., Any]:
        def end(conn: Any, *args: Any, **kwargs: Any) -> Any:
            # SQLAlchemy 1.4 passes ``autocommit=``; 2.x passes nothing.
            for tracker in _ACTIVE:
                tracker._end_core(conn, how)
            return original(conn, *args, **kwargs)

        end.__name__ = f"_{how}_impl"
        return end

    def make_execute(original: Callable[..., Any]) -> Callable[..., Any]:
        def _execute_context(conn: Any, *args: Any, **kwargs: Any) -> Any:
            # Runs for every statement: the common case (no transaction
            # tracked, or the thread that began it) is decided right here.
            for tracker in _ACTIVE:
                tx = tracker._core.get(id(conn))
                if tx is not None and tx.thread_ident != get_ident():
                    tracker._on_statement(conn)
            return original(conn, *args, **kwargs)

        return _execute_context

    _patch(Connection, "_begin_impl", make_begin)
    _patch(Connection, "_commit_impl", lambda original: make_end(original, "commit"))
    _patch(Connection, "_rollback_impl", lambda original: make_end(original, "rollback"))
    _patch(Connection, "_execute_context", make_execute)


def _restore_patches() -> None:
    while _saved:
        cls, name, before = _saved.pop()
        if before is _MISSING:
            with contextlib.suppress(AttributeError):
                delattr(cls, name)
        else:
            setattr(cls, name, before)


def patches_applied() -> bool:
    """True while the guard's class patches are in place (for uninstall checks)."""
    targets: list[tuple[type, str]] = [(QueuePool, "connect"), (Engine, "__init__")]
    targets += [(_ConnectionFairy, "_checkout"), (_ConnectionRecord, "checkin")]
    targets += [(cls, "__init__") for cls in _registry_classes()]
    targets += [(Connection, name) for name in _CORE_METHODS]
    return any(getattr(cls.__dict__.get(name), "__sessionguard__", False) for cls, name in targets)


def _session_connection_codes() -> tuple[CodeType, ...]:
    """Code objects of the ORM's "session acquires a connection" method.

    A checkout or Core `begin` made inside it belongs to a Session, whose
    transaction stack (captured at `after_transaction_create`) is reported
    instead; recognising it stops the stack walk early, which keeps the ORM
    cheap. If SQLAlchemy renames it, stacks are simply captured in full.
    """
    codes: list[CodeType] = []
    fn: Any = SessionTransaction.__dict__.get("_connection_for_bind")
    for _ in range(5):
        code = getattr(fn, "__code__", None)
        if isinstance(code, CodeType) and not any(code is seen for seen in codes):
            codes.append(code)
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            break
    return tuple(codes)


class Tracker:
    """Tracks checkouts, transactions, sessions and registries; reports SES901-SES907."""

    def __init__(self, settings: GuardSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or GuardSettings()
        self._clock = clock
        # Re-entrant: the garbage collector can run a pool finalizer (and so
        # our checkin listener) on this thread while we hold the lock. Shared
        # dicts are iterated over `.copy()`, which does not allocate GC-tracked
        # objects midway and so cannot be interrupted by such a finalizer.
        self._lock = threading.RLock()
        self._tls = _ThreadState()
        # Idents of threads whose events are ignored (the guard's own queries);
        # empty almost always, so listeners test it before anything else.
        self._suspended: set[int] = set()
        self._n_checkouts = itertools.count()
        self._n_checkins = itertools.count()
        self._n_transactions = itertools.count()
        self._n_session_transactions = itertools.count()
        self._findings_count = 0
        self._seq = itertools.count()
        self._checkouts: dict[int, _Checkout] = {}
        self._detached: dict[int, _Checkout] = {}
        self._core: dict[int, _CoreTx] = {}
        self._sessions: dict[int, _SessionState] = {}
        self._record_session: dict[int, int] = {}
        self._registries: dict[int, tuple[weakref.ref[Any], RawStack]] = {}
        self._registry_owner: dict[tuple[int, int], Scope] = {}
        self._pools: dict[int, _PoolInfo] = {}
        # The pool of the last checkout: most checkouts come from the same one.
        self._last_pool = _PoolInfo(_dead_ref, None, "")
        # The record a Session is acquiring: checked out inside its connection
        # acquisition, not yet begun. A cache (any thread may overwrite it):
        # a miss only means the stack is looked at.
        self._acquiring: Any = None
        self._dead: collections.deque[tuple[str, int, weakref.ref[Any]]] = collections.deque()
        self.root = Scope("<run>", self.settings, kind="run")
        self._active: list[Scope] = [self.root]
        self.errors: list[str] = []
        self._stacks = StackCapture(self.settings.stack_limit)
        self._stacks.configure(owned=_session_connection_codes())
        # Stack shortcuts of the listeners not tied to a pool (see `_PoolInfo.site`).
        self._begin_site = Site()
        self._session_site = Site()
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = []

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return Stats(
            checkouts=_count_of(self._n_checkouts),
            checkins=_count_of(self._n_checkins),
            transactions=_count_of(self._n_transactions),
            session_transactions=_count_of(self._n_session_transactions),
            findings=self._findings_count,
        )

    def stop_stacks_at(self, *functions: Callable[..., Any]) -> None:
        """End captured stacks at these functions' frames (a framework's own machinery).

        The pytest plugin passes pluggy's hook caller: frames above it are
        pytest's, so the walk (and its cost) ends there.
        """
        codes = [getattr(fn, "__code__", None) for fn in functions]
        self._stacks.configure(stop=self._stacks.stop + tuple(c for c in codes if isinstance(c, CodeType)))

    # -- install / uninstall ------------------------------------------------

    @property
    def installed(self) -> bool:
        return bool(self._listeners)

    def _listener_table(self) -> list[tuple[Any, str, Callable[..., Any]]]:
        # (target class, event name, bound listener). Class-level targets cover
        # every instance, existing or future. Docs: PoolEvents, ConnectionEvents
        # (listening on the Engine class), SessionEvents (the Session class).
        return (
            []
            if _POOL_BY_PATCH
            else [(Pool, "checkout", self._on_checkout), (Pool, "checkin", self._on_checkin)]
        ) + [
            (Pool, "detach", self._on_detach),
            (Pool, "close_detached", self._on_close_detached),
            (Session, "after_transaction_create", self._on_tx_create),
            (Session, "after_begin", self._on_after_begin),
            (Session, "after_transaction_end", self._on_tx_end),
        ] + (
            []
            if _CORE_BY_PATCH
            else [
                (Engine, "begin", self._on_begin),
                (Engine, "commit", self._on_commit),
                (Engine, "rollback", self._on_rollback),
                (Engine, "before_cursor_execute", self._on_before_cursor_execute),
            ]
        )

    def install(self) -> Tracker:
        """Listen on every pool, engine and session in the process. Idempotent."""
        if self._listeners:
            return self
        _warn_fallback_once()
        table = self._listener_table()
        for target, name, fn in table:
            event.listen(target, name, fn)
        self._listeners = table
        global _ACTIVE
        with _ACTIVE_LOCK:
            if not _ACTIVE:
                _apply_patches()
            _ACTIVE = (*_ACTIVE, self)
        # Registries and engines created before install (e.g. by a module
        # imported from a conftest before the plugin configured) are found
        # once, here.
        for obj in gc.get_objects():
            if isinstance(obj, scoped_session):
                self._register_registry(obj, EMPTY)
            elif isinstance(obj, Engine):
                _ENGINES.add(obj)
            else:
                cls_name = type(obj).__name__
                if cls_name == "async_scoped_session":
                    self._register_registry(obj, EMPTY)
        return self

    def uninstall(self) -> None:
        """Remove every listener this tracker added, and the class patches if last."""
        for target, name, fn in self._listeners:
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._listeners = []
        global _ACTIVE
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE = tuple(t for t in _ACTIVE if t is not self)
                if not _ACTIVE:
                    _restore_patches()

    def listeners(self) -> list[tuple[Any, str, Callable[..., Any]]]:
        """(target, event, function) of every listener; for `event.contains` checks."""
        return list(self._listeners) or self._listener_table()

    def __enter__(self) -> Tracker:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # -- scopes -------------------------------------------------------------

    @property
    def current_scope(self) -> Scope:
        return self._active[-1]

    def begin_scope(
        self,
        name: str,
        *,
        max_transaction: float | None = None,
        allow: Iterable[str] | None = None,
        kind: str = "scope",
        activate: bool = True,
    ) -> Scope:
        """Start a scope; `max_transaction` and `allow` replace the tracker's settings for it."""
        settings = self.settings
        if max_transaction is not None:
            settings = replace(settings, max_transaction=max_transaction)
        if allow is not None:
            settings = replace(settings, allow=frozenset(allow))
        scope = Scope(name, settings, kind)
        scope._registry_start = self._registry_pairs()
        if activate:
            self._active.append(scope)
        return scope

    def activate(self, scope: Scope) -> None:
        """Make `scope` current again (e.g. while a long-lived fixture sets up)."""
        scope._registry_start = self._registry_pairs()
        self._active.append(scope)

    def deactivate(self, scope: Scope) -> None:
        """Stop attributing new items to `scope` without checking it yet."""
        if scope not in self._active or scope is self.root:
            return
        self._active.remove(scope)
        # Sessions that entered a registry while the scope was active are its.
        for pair in self._registry_pairs() - scope._registry_start:
            self._registry_owner.setdefault(pair, scope)

    @contextlib.contextmanager
    def scope(
        self, name: str, *, max_transaction: float | None = None, allow: Iterable[str] | None = None
    ) -> Iterator[Scope]:
        """`with tracker.scope("request") as s: ...` then `s.findings`."""
        scope = self.begin_scope(name, max_transaction=max_transaction, allow=allow)
        try:
            yield scope
        finally:
            self.end_scope(scope)

    def end_scope(self, scope: Scope | None = None, *, handover: Iterable[tuple[object, Scope]] = ()) -> list[Finding]:
        """Check `scope` (default: the current one) and return its findings.

        Items begun in the scope and still open are reported: registries
        (SES904) first, then sessions (SES903), then checkouts (SES901), each
        skipping what a higher finding already covers. Objects in `handover`
        are held on purpose by a longer-lived owner (a module- or
        session-scoped fixture value): what they hold moves to that owner's
        scope instead of being reported now.
        """
        if scope is None:
            scope = self._active[-1]
        if scope.closed:
            return list(scope.findings)
        # Collected sessions first, while `scope` is still current: one whose
        # own scope is closed is reported here (`_add`).
        self._drain_dead()
        self.deactivate(scope)
        held_records, held_sessions, held_pairs = self._resolve_held(handover)
        registry_now = self._registry_session_map()
        findings: list[Finding] = []
        covered_sessions: set[int] = set()
        covered_records: set[int] = set()
        with self._lock:
            # 1. scoped_session registries that gained a session in this scope.
            for pair, (registry_ref, session_obj, where) in registry_now.items():
                if pair in held_pairs:
                    self._registry_owner[pair] = held_pairs[pair]
                    continue
                owner = self._registry_owner.get(pair)
                if owner is None:
                    # Unclaimed: ours if it appeared after the scope began; one
                    # present before belongs to an enclosing scope (or the run).
                    mine = scope.kind == "run" or pair not in scope._registry_start
                else:
                    mine = owner is scope
                if not mine:
                    continue
                self._registry_owner[pair] = scope
                if scope.allows("SES904"):
                    continue
                sync_id = id(getattr(session_obj, "sync_session", session_obj))
                state = self._sessions.get(sync_id)
                covered_sessions.add(sync_id)
                if state is not None:
                    covered_records |= state.records
                    state.reported = True
                findings.append(self._registry_finding(scope, registry_ref, where, state))
            # 2. Sessions whose outermost transaction began here and is open.
            for key, state in self._sessions.copy().items():
                if state.scope is not scope or state.reported:
                    continue
                if state.session_ref() is None:
                    continue
                if key in held_sessions:
                    state.scope = held_sessions[key]
                    continue
                if key in covered_sessions:
                    continue
                if scope.allows("SES903"):
                    continue
                state.reported = True
                covered_records |= state.records
                findings.append(self._session_finding(scope, state, collected=False))
            # 3. Checkouts made here and still out (detached ones too).
            for table in (self._checkouts, self._detached):
                for key, co in table.copy().items():
                    if co.scope is not scope or co.reported:
                        continue
                    record = co.record_of()
                    if record is None:
                        # Checkin pops without the lock; drop only our entry.
                        if table.get(key) is co:
                            table.pop(key, None)
                        continue
                    if key in held_records:
                        co.scope = held_records[key]
                        continue
                    owner_session = self._record_session.get(key)
                    if owner_session is not None and owner_session in held_sessions:
                        co.scope = held_sessions[owner_session]
                        continue
                    if key in covered_records:
                        co.reported = True
                        continue
                    co.reported = True
                    findings.append(self._checkout_finding(scope, co, detached=table is self._detached))
            # 4. Exhausted pools, one finding per pool.
            for wait in scope._waits.values():
                findings.append(self._wait_finding(scope, wait))
            scope._waits.clear()
            # 5. Forget Core transactions of connections that were collected.
            for key, tx in self._core.copy().items():
                if tx.conn_ref() is None and self._core.get(key) is tx:
                    self._core.pop(key, None)
            for finding in findings:
                if not scope.allows(finding.code):
                    scope.findings.append(finding)
                    self._findings_count += 1
            scope.closed = True
        return list(scope.findings)

    def end_run(self, *, check_server: bool | None = None) -> list[Finding]:
        """End the run: ask the servers for open transactions, then check the root scope."""
        for scope in list(self._active[1:]):
            self.deactivate(scope)
        if self.settings.check_server if check_server is None else check_server:
            for finding in self.check_server():
                self._add(self.root, finding)
        return self.end_scope(self.root)

    # -- reporting helpers (called with the lock held or from listeners) -----

    def _add(self, scope: Scope, finding: Finding) -> None:
        """Record a finding raised by a listener, in its scope or the current one."""
        target = scope if not scope.closed else self._active[-1]
        if target.closed or target.allows(finding.code):
            return
        if target is not scope:
            finding = replace(finding, scope=target.name)
        target.findings.append(finding)
        self._findings_count += 1

    def _pool_label(self, pool_id: int | None) -> str:
        info = self._pools.get(pool_id) if pool_id is not None else None
        return info.url if info is not None and info.url else "a pool"

    def _engine_of(self, pool_id: int | None) -> str | None:
        info = self._pools.get(pool_id) if pool_id is not None else None
        return info.url if info is not None else None

    def _checkout_finding(self, scope: Scope, co: _Checkout, *, detached: bool = False, collected: bool = False) -> Finding:
        pool_id = id(co.pool) if co.pool is not None else None
        age = self._clock() - co.start
        where = innermost_user_frame(co.stack)
        place = f" at {where}" if where else ""
        label = self._pool_label(pool_id)
        if collected:
            message = (
                f"connection from {label} checked out{place} on thread {co.thread!r} was never returned: "
                "the garbage collector returned it; close it with `with engine.connect()` or in a `finally`"
            )
        elif detached:
            message = (
                f"detached connection from {label} checked out{place} on thread {co.thread!r} "
                f"is still open after {age:.2f} s; close the detached connection"
            )
        else:
            message = (
                f"connection from {label} checked out{place} on thread {co.thread!r} "
                f"was not returned to the pool ({age:.2f} s after checkout); use `with engine.connect() as conn:` "
                "or close it in a `finally`"
            )
        return Finding(
            "SES901", message, scope.name, co.stack, duration=age, thread=co.thread, engine=self._engine_of(pool_id)
        )

    def _session_finding(self, scope: Scope, state: _SessionState, *, collected: bool) -> Finding:
        age = self._clock() - state.start
        where = innermost_user_frame(state.stack)
        place = f" begun at {where}" if where else ""
        holding = (
            f"holding {len(state.records)} connection(s) of {self._pool_label(state.pool_id)}"
            if state.records
            else "holding a transaction (no connection yet)"
        )
        if collected:
            message = (
                f"Session with a transaction{place} on thread {state.thread!r} was garbage-collected without "
                f"close(), {holding}; use `with Session(...) as session:` or close it in a `finally`"
            )
        else:
            message = (
                f"Session still open when the scope ended: transaction{place} on thread {state.thread!r}, "
                f"open {age:.2f} s, {holding}; use `with Session(...) as session:` or close it in a `finally`"
            )
        return Finding(
            "SES903",
            message,
            scope.name,
            state.stack,
            duration=age,
            thread=state.thread,
            engine=self._engine_of(state.pool_id),
        )

    def _registry_finding(
        self, scope: Scope, registry_ref: weakref.ref[Any], where: str, state: _SessionState | None
    ) -> Finding:
        registry = registry_ref()
        created_stack = self._registries.get(id(registry), (None, EMPTY))[1] if registry is not None else EMPTY
        created = innermost_user_frame(created_stack)
        made = f" (created at {created})" if created else ""
        if state is not None:
            begun = innermost_user_frame(state.stack)
            txn = f" with a transaction open since {begun}" if begun else " with an open transaction"
            stack = state.stack
        else:
            txn = ""
            stack = created_stack
        kind = type(registry).__name__ if registry is not None else "scoped_session"
        message = (
            f"{kind} registry{made} still holds a session for {where}{txn}; call `.remove()` at the end of the "
            "request/task (teardown hook or `finally`)"
        )
        related = (("registry created", created_stack),) if created_stack and state is not None else ()
        return Finding(
            "SES904",
            message,
            scope.name,
            stack,
            thread=state.thread if state is not None else None,
            engine=self._engine_of(state.pool_id) if state is not None else None,
            related=related,
        )

    def _wait_finding(self, scope: Scope, wait: _Wait) -> Finding:
        what = []
        if wait.waits:
            what.append(f"{wait.waits} checkout(s) had to wait")
        if wait.timeouts:
            what.append(f"{wait.timeouts} timed out")
        holders = "; ".join(
            f"{label}" + (f" at {innermost_user_frame(raw)}" if innermost_user_frame(raw) else "")
            for label, raw in wait.holders[:5]
        )
        message = (
            f"pool {wait.pool_label} exhausted: all {wait.capacity} connections were checked out, "
            f"{' and '.join(what)} (longest {wait.longest:.2f} s)"
            + (f"; held by {holders}" if holders else "")
            + "; return connections promptly or size the pool for the real concurrency"
        )
        return Finding(
            "SES907",
            message,
            scope.name,
            wait.stack,
            duration=wait.longest,
            thread=wait.thread,
            engine=wait.pool_label if wait.pool_label != "a pool" else None,
            related=wait.holders,
        )

    # -- listener plumbing --------------------------------------------------

    def _off(self) -> bool:
        """True while this thread's events are ignored (see `suspended`)."""
        return bool(self._suspended) and get_ident() in self._suspended

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Ignore events raised by this thread (the guard's own queries)."""
        ident = get_ident()
        if ident in self._suspended:
            yield
            return
        self._suspended.add(ident)
        try:
            yield
        finally:
            self._suspended.discard(ident)

    def _internal_error(self, where: str, exc: BaseException) -> None:
        message = f"sessionguard: internal error in {where}: {exc!r} (the application was not affected)"
        if len(self.errors) < 100:
            self.errors.append(message)
        try:
            warnings.warn(message, GuardWarning, stacklevel=3)
        except Exception:  # noqa: BLE001 - e.g. `-W error`: a warning must not reach the app
            pass

    def _drain_dead(self) -> None:
        """Handle sessions and registries garbage-collected since the last call.

        Registries enqueue themselves from a weakref callback. Sessions are
        found by their dead weak reference instead: a callback (a closure per
        transaction) cost more than the rest of `after_transaction_create`,
        and only a session collected with its transaction open is left here.
        """
        with self._lock:
            dead_sessions = [(key, state) for key, state in self._sessions.copy().items() if state.session_ref() is None]
        for key, state in dead_sessions:
            self._session_collected(key, state)
        while self._dead:
            try:
                kind, key, ref = self._dead.popleft()
            except IndexError:
                return
            if kind == "registry":
                with self._lock:
                    entry = self._registries.get(key)
                    if entry is not None and entry[0] is ref:
                        del self._registries[key]

    def _session_collected(self, key: int, state: _SessionState) -> None:
        """SES903 for a session collected with its transaction open (reported once)."""
        with self._lock:
            if self._sessions.get(key) is not state:
                return
            del self._sessions[key]
            for record_id in state.records:
                if self._record_session.get(record_id) == key:
                    del self._record_session[record_id]
            if not state.reported:
                state.reported = True
                self._add(state.scope, self._session_finding(state.scope, state, collected=True))

    # -- pool events (PoolEvents) -------------------------------------------

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        # The hot path: runs on every checkout. No lock: one dict store is
        # atomic under the GIL, the counters are C calls, and readers iterate
        # copies (`dict.copy()` runs no Python code, so it is atomic too).
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            try:
                pool = proxy._pool
                # The record already holds a weak reference to the fairy; reuse it.
                fairy_ref = record.fairy_ref
            except AttributeError:
                pool = getattr(proxy, "_pool", None)
                fairy_ref = None
            info = self._last_pool
            if info.pool_ref() is not pool:
                info = self._pools.get(id(pool)) or self._learn_pool(pool, proxy)
                if info.pool_ref() is not pool:
                    info = self._learn_pool(pool, proxy)
                self._last_pool = info
            if fairy_ref is None or fairy_ref() is not proxy:
                fairy_ref = weakref.ref(proxy) if proxy is not None else _dead_ref
            co = _Checkout()
            co.record = record
            co.proxy_ref = fairy_ref
            co.pool = pool
            co.thread_obj = self._tls.thread
            co.start = self._clock()
            # Skipped: this listener and the wrapper (`_POOL_BY_PATCH`), or
            # this listener, SQLAlchemy's dispatcher and the pool method that
            # fired the event. All are SQLAlchemy's or the guard's.
            stack = self._stacks.capture_at(info.site, 2 if _POOL_BY_PATCH else _LISTENER_SKIP)
            if stack is None:
                # Inside a Session's connection acquisition: after_begin gives
                # this checkout the session's stack, and the Core `begin` that
                # the acquisition makes next need not look at the stack again.
                self._acquiring = record
                stack = EMPTY
            co.stack = stack
            co.scope = self._active[-1]
            co.reported = False
            self._checkouts[id(record)] = co
            next(self._n_checkouts)
        except Exception as exc:  # noqa: BLE001 - listeners never raise into the app
            self._internal_error("checkout", exc)

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        # `dbapi_connection` may be None when the connection was invalidated
        # (PoolEvents.checkin docs), so everything is keyed by the record.
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            next(self._n_checkins)
            if record is self._acquiring:
                self._acquiring = None
            co = self._checkouts.pop(id(record), None)
            if co is None or co.record is not record:
                return
            # The fairy (proxy) is alive during an explicit close; if it is
            # already gone, the garbage collector is returning the record.
            if co.proxy_ref() is None and not co.reported:
                owner = self._record_session.get(id(record))
                if owner is None or owner not in self._sessions:
                    with self._lock:
                        co.reported = True
                        self._add(co.scope, self._checkout_finding(co.scope, co, collected=True))
            if self._record_session:
                self._record_session.pop(id(record), None)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("checkin", exc)

    def _learn_pool(self, pool: Any, proxy: Any) -> _PoolInfo:
        """The first checkout this tracker sees from `pool`: name it, and check SES906 once.

        The pool's engine (for its URL and dialect) is the known engine whose
        `pool` it is; `dispose()` gives an engine a new pool, so this runs
        again for it. A pool made without an engine stays "a pool".
        """
        if pool is None:
            info = _PoolInfo(_dead_ref, None, "")
            self._pools[id(None)] = info
            return info
        engine = next((e for e in list(_ENGINES) if getattr(e, "pool", None) is pool), None)
        if engine is None:
            info = _PoolInfo(weakref.ref(pool), None, "")
        else:
            info = _PoolInfo(weakref.ref(pool), engine.url.render_as_string(hide_password=True), engine.dialect.name)
        self._pools[id(pool)] = info
        if info.dialect in _MYSQL_DIALECTS and proxy is not None:
            self._check_recycle(proxy, pool, info)
        return info

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        # A detached DBAPI connection leaves the pool; the user must close it
        # (PoolEvents.detach / close_detached).
        if self._off():
            return
        try:
            if record is self._acquiring:
                self._acquiring = None
            with self._lock:
                co = self._checkouts.pop(id(record), None)
                if co is not None and co.record is record and dbapi_connection is not None:
                    co.record = weakref.ref(record)
                    self._detached[id(dbapi_connection)] = co
        except Exception as exc:  # noqa: BLE001
            self._internal_error("detach", exc)

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        if self._off():
            return
        try:
            with self._lock:
                co = self._detached.pop(id(dbapi_connection), None)
                if co is not None and co.proxy_ref() is None and not co.reported:
                    co.reported = True
                    self._add(co.scope, self._checkout_finding(co.scope, co, collected=True))
        except Exception as exc:  # noqa: BLE001
            self._internal_error("close_detached", exc)

    # -- SES907: checkouts from a full QueuePool -------------------------------

    def _pool_full(self, pool: Any) -> bool:
        """True when every `pool_size + max_overflow` slot is checked out.

        `QueuePool._do_get` blocks on its queue exactly when overflow is
        exhausted and the queue is empty; `checkedout()` counts both.
        """
        if self._off():
            return False
        try:
            max_overflow = getattr(pool, "_max_overflow", -1)
            if max_overflow < 0:
                return False
            return bool(pool.checkedout() >= pool.size() + max_overflow)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("pool exhaustion check", exc)
            return False

    def _pool_waited(self, pool: Any, stack: RawStack, waited: float, *, timed_out: bool) -> None:
        try:
            scope = self._active[-1]
            with self._lock:
                wait = scope._waits.get(id(pool))
                if wait is None:
                    holders = tuple(
                        (f"thread {co.thread!r}", co.stack) for co in self._checkouts.copy().values() if co.pool is pool
                    )
                    max_overflow = getattr(pool, "_max_overflow", 0)
                    wait = _Wait(
                        pool_label=self._pool_label(id(pool)),
                        capacity=f"{pool.size() + max_overflow} (pool_size {pool.size()} + max_overflow {max_overflow})",
                        stack=stack,
                        thread=threading.current_thread().name,
                        holders=holders,
                    )
                    scope._waits[id(pool)] = wait
                if timed_out:
                    wait.timeouts += 1
                else:
                    wait.waits += 1
                wait.longest = max(wait.longest, waited)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("pool exhaustion record", exc)

    # -- engine events (ConnectionEvents) -------------------------------------

    def _check_recycle(self, proxied: Any, pool: Any, info: _PoolInfo) -> None:
        """SES906: compare `pool_recycle` with the server's `@@wait_timeout`, once per pool.

        The query runs on the raw DBAPI cursor of the connection being checked
        out, so SQLAlchemy sees no statement and no transaction (it is a
        session variable read; it touches no InnoDB table).
        """
        recycle = getattr(pool, "_recycle", -1)
        with self.suspended():
            wait_timeout = _server.mysql_wait_timeout(proxied)
        if wait_timeout is None:
            return
        if recycle is not None and 0 <= recycle < wait_timeout:
            return
        if recycle is None or recycle < 0:
            problem = "pool_recycle is unset"
        else:
            problem = f"pool_recycle={recycle} is not below it"
        suggestion = max(1, min(3600, wait_timeout - 60 if wait_timeout > 120 else wait_timeout // 2))
        message = (
            f"{info.url}: the server closes idle connections after wait_timeout={wait_timeout} s and {problem}; "
            f"pass pool_recycle={suggestion} (below wait_timeout) and pool_pre_ping=True to create_engine()"
        )
        finding = Finding(
            "SES906",
            message,
            self._active[-1].name,
            self._stacks.capture(1),
            thread=threading.current_thread().name,
            engine=info.url,
        )
        with self._lock:
            self._add(self._active[-1], finding)

    def _on_begin(self, conn: Any) -> None:
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            next(self._n_transactions)
            if self._acquiring is not None:
                try:
                    record = conn._dbapi_connection._connection_record
                except AttributeError:
                    record = None
                if record is self._acquiring:
                    self._acquiring = None
                    return  # a Session's acquisition (see `_on_checkout`)
            # Skipped: this listener and the wrapper or dispatcher calling it.
            stack = self._stacks.capture_at(self._begin_site, 2)
            if stack is None:
                # Inside a Session's connection acquisition: the session's
                # after_begin, which follows at once, records it as the
                # session's (`_own_core`).
                return
            tx = _CoreTx()
            tx.conn_ref = weakref.ref(conn)
            tx.thread_ident = get_ident()
            tx.thread_obj = self._tls.thread
            tx.start = self._clock()
            tx.seq = next(self._seq)
            tx.stack = stack
            tx.scope = self._active[-1]
            tx.pool_id = id(conn.engine.pool)
            tx.session_owned = False
            tx.cross = None
            self._core[id(conn)] = tx
        except Exception as exc:  # noqa: BLE001
            self._internal_error("begin", exc)

    def _own_core(self, state: _SessionState, connection: Any) -> _CoreTx:
        """The Core transaction a session began in its connection acquisition, as the session's."""
        tx = _CoreTx()
        tx.conn_ref = weakref.ref(connection)
        ident = get_ident()
        tx.thread_ident = ident
        # Almost always the thread that created the session's transaction.
        tx.thread_obj = state.thread_obj if ident == state.thread_ident else self._tls.thread
        tx.start = state.start
        tx.seq = state.seq
        tx.stack = state.stack
        tx.scope = state.scope
        tx.pool_id = state.pool_id if state.pool_id is not None else id(connection.engine.pool)
        tx.session_owned = True
        tx.cross = None
        self._core[id(connection)] = tx
        return tx

    def _on_commit(self, conn: Any) -> None:
        self._end_core(conn, "commit")

    def _on_rollback(self, conn: Any) -> None:
        self._end_core(conn, "rollback")

    def _end_core(self, conn: Any, how: str) -> None:
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            tx = self._core.pop(id(conn), None)
            if tx is None or tx.conn_ref() is not conn:
                # None, or a stale entry of a collected connection whose id was reused.
                return
            if tx.thread_ident != get_ident():
                self._check_thread(tx, how)
            if tx.session_owned:
                return  # the session reports its own transaction
            duration = self._clock() - tx.start
            if duration > tx.scope.settings.max_transaction:
                where = innermost_user_frame(tx.stack)
                place = f" begun at {where}" if where else ""
                message = (
                    f"Core transaction{place} on {self._pool_label(tx.pool_id)} was open {duration:.2f} s "
                    f"(threshold {tx.scope.settings.max_transaction:g} s) before {how}; keep slow work outside "
                    "the transaction"
                )
                finding = Finding(
                    "SES902",
                    message,
                    tx.scope.name,
                    tx.stack,
                    duration=duration,
                    thread=tx.thread,
                    engine=self._engine_of(tx.pool_id),
                )
                with self._lock:
                    self._add(tx.scope, finding)
        except Exception as exc:  # noqa: BLE001
            self._internal_error(how, exc)

    def _on_before_cursor_execute(
        self, conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
    ) -> None:
        self._on_statement(conn)

    def _on_statement(self, conn: Any) -> None:
        """A statement on `conn`: SES905 if its transaction began on another thread."""
        try:
            tx = self._core.get(id(conn))
            if tx is None or tx.thread_ident == get_ident():
                return
            if self._off() or tx.conn_ref() is not conn:
                return
            self._check_thread(tx, "a statement")
        except Exception as exc:  # noqa: BLE001
            self._internal_error("statement", exc)

    def _check_thread(self, tx: _CoreTx, what: str) -> None:
        """SES905: reported once per transaction and foreign thread."""
        ident = get_ident()
        if ident == tx.thread_ident:
            return
        thread = threading.current_thread().name
        # Idents of finished threads are reused, so the name goes into the key.
        key = (ident, thread)
        if tx.cross is None:
            tx.cross = set()
        if key in tx.cross:
            return
        tx.cross.add(key)
        owner = "Session" if tx.session_owned else "Connection"
        begun = innermost_user_frame(tx.stack)
        place = f" (begun at {begun})" if begun else ""
        message = (
            f"{owner} on {self._pool_label(tx.pool_id)} whose transaction began on thread {tx.thread!r}{place} "
            f"ran {what} on thread {thread!r}; sessions and connections are not thread-safe: give each thread its own"
        )
        finding = Finding(
            "SES905",
            message,
            self._active[-1].name,
            self._stacks.capture(2),
            thread=thread,
            engine=self._engine_of(tx.pool_id),
            related=(("transaction begun", tx.stack),),
        )
        with self._lock:
            self._add(self._active[-1], finding)

    # -- session events (SessionEvents) ---------------------------------------

    def _on_tx_create(self, session: Any, transaction: Any) -> None:
        # Only the outermost transaction is timed: the SessionEvents docs
        # identify it by `transaction.parent is None` (read as in `_parent_of`).
        try:
            if transaction._parent is not None:
                return
        except AttributeError:
            if _parent_of(transaction) is not None:
                return
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            key = id(session)
            old = self._sessions.get(key)
            if old is not None and old.session_ref() is not session:
                # A session collected with its transaction open, whose id this
                # one now has: report it before its state is replaced.
                self._session_collected(key, old)
            state = _SessionState()
            state.session_ref = weakref.ref(session)
            state.thread_ident = get_ident()
            state.thread_obj = self._tls.thread
            state.start = self._clock()
            state.seq = next(self._seq)
            state.stack = self._stacks.capture_at(self._session_site, _LISTENER_SKIP, owned=False) or EMPTY
            state.scope = self._active[-1]
            state.records = set()
            state.pool_id = None
            state.reported = False
            self._sessions[key] = state
            next(self._n_session_transactions)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("after_transaction_create", exc)

    def _on_after_begin(self, session: Any, transaction: Any, connection: Any) -> None:
        # No lock, as in `_on_checkout`: each step is one atomic operation on
        # a dict, a set or a slot, and readers copy before iterating.
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            key = id(session)
            state = self._sessions.get(key)
            if state is None or state.session_ref() is not session:
                return
            records = state.records
            if not records:
                # The database transaction starts when the first connection
                # is acquired (SessionEvents.after_begin); time spent before,
                # e.g. waiting on a full pool, is not a long transaction.
                state.start = self._clock()
            try:
                record = connection._dbapi_connection._connection_record
            except AttributeError:
                record = None
            if record is not None:
                record_id = id(record)
                records.add(record_id)
                self._record_session[record_id] = key
                co = self._checkouts.get(record_id)
                if co is not None and not co.stack:
                    co.stack = state.stack
            state.pool_id = id(connection.engine.pool)
            tx = self._core.get(id(connection))
            if tx is None or tx.conn_ref() is not connection:
                # No Core transaction of its own: if the connection is in one,
                # the session began it while acquiring the connection (see
                # `_on_begin`).
                if getattr(connection, "_transaction", None) is not None:
                    self._own_core(state, connection)
            elif tx.seq > state.seq:
                # A Core transaction begun after the session's transaction was
                # created is the session's; an external connection joined by
                # the session keeps its own.
                tx.session_owned = True
                if not tx.stack:
                    tx.stack = state.stack
        except Exception as exc:  # noqa: BLE001
            self._internal_error("after_begin", exc)

    def _on_tx_end(self, session: Any, transaction: Any) -> None:
        try:
            if transaction._parent is not None:
                return
        except AttributeError:
            if _parent_of(transaction) is not None:
                return
        if self._suspended and get_ident() in self._suspended:
            return
        try:
            key = id(session)
            state = self._sessions.get(key)
            if state is None or state.session_ref() is not session:
                return
            if self._sessions.pop(key, None) is not state:
                return  # removed meanwhile (collected, or ended on another thread)
            if self._record_session:
                record_session = self._record_session
                for record_id in state.records:
                    if record_session.get(record_id) == key:
                        record_session.pop(record_id, None)
            if not state.records:
                return  # never acquired a connection: no database transaction
            duration = self._clock() - state.start
            threshold = state.scope.settings.max_transaction
            if duration > threshold:
                where = innermost_user_frame(state.stack)
                place = f" begun at {where}" if where else ""
                message = (
                    f"Session transaction{place} on {self._pool_label(state.pool_id)} was open {duration:.2f} s "
                    f"(threshold {threshold:g} s); commit sooner and keep slow work outside the transaction"
                )
                finding = Finding(
                    "SES902",
                    message,
                    state.scope.name,
                    state.stack,
                    duration=duration,
                    thread=state.thread,
                    engine=self._engine_of(state.pool_id),
                )
                with self._lock:
                    self._add(state.scope, finding)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("after_transaction_end", exc)

    # -- scoped_session registries -------------------------------------------

    def _register_registry(self, registry: Any, stack: RawStack) -> None:
        try:
            key = id(registry)
            dead = self._dead

            def gone(ref: weakref.ref[Any], key: int = key) -> None:
                dead.append(("registry", key, ref))

            with self._lock:
                self._registries[key] = (weakref.ref(registry, gone), stack)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("scoped_session registration", exc)

    def _registry_session_map(self) -> dict[tuple[int, int], tuple[weakref.ref[Any], Any, str]]:
        """(registry id, session id) -> (registry ref, session, "where") for held sessions.

        Thread-local registries can only be read for the calling thread
        (`threading.local`); registries with a `scopefunc` are read for every
        scope key without calling the scopefunc (it may need an app context).
        """
        out: dict[tuple[int, int], tuple[weakref.ref[Any], Any, str]] = {}
        with self._lock:
            entries = self._registries.copy()
        for ref, _stack in entries.values():
            registry = ref()
            if registry is None:
                continue
            try:
                inner = registry.registry
                if isinstance(inner, ThreadLocalRegistry):
                    if inner.has():
                        session_obj = inner()
                        out[(id(registry), id(session_obj))] = (
                            ref,
                            session_obj,
                            f"thread {threading.current_thread().name!r}",
                        )
                elif isinstance(inner, ScopedRegistry):
                    for scope_key, session_obj in inner.registry.copy().items():
                        out[(id(registry), id(session_obj))] = (ref, session_obj, f"scope key {scope_key!r}")
            except Exception as exc:  # noqa: BLE001
                self._internal_error("scoped_session inspection", exc)
        return out

    def _registry_pairs(self) -> frozenset[tuple[int, int]]:
        if not self._registries:
            return frozenset()
        return frozenset(self._registry_session_map())

    # -- handover: what longer-lived owners hold ------------------------------

    def _resolve_held(
        self, handover: Iterable[tuple[object, Scope]]
    ) -> tuple[dict[int, Scope], dict[int, Scope], dict[tuple[int, int], Scope]]:
        records: dict[int, Scope] = {}
        sessions: dict[int, Scope] = {}
        pairs: dict[tuple[int, int], Scope] = {}
        seen: set[int] = set()

        def visit(obj: object, owner: Scope, depth: int) -> None:
            if obj is None or id(obj) in seen or depth > 3:
                return
            seen.add(id(obj))
            if isinstance(obj, Connection):
                fairy = getattr(obj, "_dbapi_connection", None)
                record = getattr(fairy, "_connection_record", None)
                if record is not None:
                    records[id(record)] = owner
                return
            if isinstance(obj, Session):
                sessions[id(obj)] = owner
                state = self._sessions.get(id(obj))
                if state is not None:
                    for record_id in state.records:
                        records[record_id] = owner
                return
            if isinstance(obj, (Engine, Pool, str, bytes, int, float)):
                return
            for attr in ("sync_session", "sync_connection"):  # AsyncSession, AsyncConnection
                inner = getattr(type(obj), attr, None)
                if inner is not None:
                    visit(getattr(obj, attr, None), owner, depth + 1)
                    return
            registry = getattr(obj, "registry", None)
            if isinstance(registry, ScopedRegistry):
                for (reg_id, session_id), (_ref, session_obj, _where) in self._registry_session_map().items():
                    if reg_id == id(obj):
                        pairs[(reg_id, session_id)] = owner
                        visit(session_obj, owner, depth + 1)
                return
            if hasattr(obj, "_dbapi_connection") or hasattr(obj, "_connection_record"):
                record = getattr(obj, "_connection_record", None)
                if record is not None:  # a raw pool connection (PoolProxiedConnection)
                    records[id(record)] = owner
                return
            if isinstance(obj, dict):
                for value in list(obj.values())[:100]:
                    visit(value, owner, depth + 1)
            elif isinstance(obj, (list, tuple, set, frozenset)):
                for value in list(obj)[:100]:
                    visit(value, owner, depth + 1)
            elif depth < 2 and hasattr(obj, "__dict__") and not isinstance(obj, type):
                for value in list(vars(obj).values())[:100]:
                    visit(value, owner, depth + 1)

        for obj, owner in handover:
            try:
                visit(obj, owner, 0)
            except Exception as exc:  # noqa: BLE001
                self._internal_error("fixture value inspection", exc)
        return records, sessions, pairs

    # -- the database's own view ----------------------------------------------

    def outstanding(self) -> int:
        """Checkouts currently out (tracked), for tests and the benchmark."""
        with self._lock:
            return sum(1 for co in self._checkouts.copy().values() if co.record_of() is not None)

    def check_server(self) -> list[Finding]:
        """SES902 from the server: transactions of this process still open.

        Every open transaction of this process lives on a connection that is
        still checked out (the pool's reset-on-return rolls back on checkin).
        For those on MariaDB/MySQL or PostgreSQL, read the server's backend id
        from the driver connection, and ask the server, on a fresh connection
        made by `pool.recreate()` (same creator and arguments), which of them
        are idle in a transaction and since when.
        """
        findings: list[Finding] = []
        with self._lock:
            checkouts = [co for co in self._checkouts.copy().values() if co.record_of() is not None]
        groups: dict[int, tuple[Any, dict[int, _Checkout]]] = {}
        for co in checkouts:
            pool = co.pool
            info = self._pools.get(id(pool)) if pool is not None else None
            if info is None or info.dialect not in _server.SERVER_DIALECTS:
                continue
            record = co.record_of()
            backend = _server.backend_id(getattr(record, "driver_connection", None))
            if backend is None:
                continue
            groups.setdefault(id(pool), (pool, {}))[1][backend] = co
        for pool_id, (pool, by_backend) in groups.items():
            info = self._pools[pool_id]
            try:
                with self.suspended():
                    rows = _run_maybe_async(
                        functools.partial(_server.open_transactions, pool, info.dialect, sorted(by_backend)),
                        bool(getattr(getattr(pool, "_dialect", None), "is_async", False)),
                    )
            except Exception as exc:  # noqa: BLE001
                self._internal_error(f"server check of {info.url}", exc)
                continue
            for row in rows:
                holder = by_backend.get(row.backend_id)
                if holder is None:
                    continue
                where = innermost_user_frame(holder.stack)
                place = f" checked out at {where}" if where else ""
                message = (
                    f"the server {info.url} still has a transaction open for {row.age:.1f} s on connection "
                    f"{row.backend_id} ({row.state}){place}; last statement: {row.query or '?'}"
                )
                findings.append(
                    Finding(
                        "SES902",
                        message,
                        self.root.name,
                        holder.stack,
                        duration=row.age,
                        thread=holder.thread,
                        engine=info.url,
                    )
                )
        return findings


def _run_maybe_async(fn: Callable[[], list[_server.ServerTx]], is_async: bool) -> list[_server.ServerTx]:
    """Run `fn` directly, or for asyncio pools in a greenlet on a fresh event loop.

    If this thread already runs an event loop (the run ends inside a
    coroutine), the fresh loop runs in a helper thread instead.
    """
    if not is_async:
        return fn()
    from sqlalchemy.util import greenlet_spawn

    async def main() -> list[_server.ServerTx]:
        result: list[_server.ServerTx] = await greenlet_spawn(fn)
        return result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["result"] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc

    helper = threading.Thread(target=runner, name="sessionguard-server-check")
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    rows: list[_server.ServerTx] = box["result"]
    return rows
