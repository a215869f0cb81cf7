"""Cheap stack capture, formatted only when a finding is reported.

A listener runs on every checkout, so capturing must not build
`traceback.FrameSummary` objects or read source lines: we walk
`sys._getframe()` and keep only `(code object, instruction offset)` pairs,
flattened into one tuple. Code objects are shared and long-lived, so holding
them keeps no locals alive. Formatting and trimming happen only for reported
findings.

Walking costs about the same for every frame (Python 3.11 builds a frame
object for each one it steps to), so the cheapest frame is the one never
walked. `StackCapture` learns, per event site, two kinds of shortcut from the
walks it has made, and probes them with `sys._getframe(n)`, which jumps over
frames in C without building their frame objects:

* *owned*: the walk met an owned code (a Session acquiring its connection) at
  depth n. If a frame at depth n runs that code again, the event belongs to
  the session, whose own stack is used: no walk at all.
* *entry*: frames 0..n were all library frames (SQLAlchemy's, the guard's,
  installed packages', the standard library's), which trimming drops anyway,
  and frame n+1 was the user's. If the frames at depths n-1 and n run the same
  two codes again, the walk starts at frame n+1. The frames skipped are calls
  made by the library function at depth n (e.g. `Engine.connect`) on its way
  to the event, so the frames that a report shows are the ones a full walk
  would have kept.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

# A captured stack: code0, lasti0, code1, lasti1, ... innermost first.
RawStack = tuple[object, ...]

EMPTY: RawStack = ()

_SEP = os.sep
# Path fragments of frames that are never the user's: the libraries the guard
# sits between, and the guard itself.
_INTERNAL_PARTS: tuple[str, ...] = tuple(
    f"{_SEP}{name}{_SEP}"
    for name in (
        "sqlalchemy",
        "_pytest",
        "pytest",
        "pluggy",
        "xdist",
        "execnet",
        "greenlet",
        "asyncio",
        "concurrent",
        "aiosqlite",
        "aiomysql",
        "pymysql",
        "psycopg",
    )
)
_GUARD_DIR = os.path.dirname(os.path.abspath(__file__)) + _SEP
# Installed third-party packages and the standard library are not "your
# frames" either: a finding should point at the application and its tests.
_LIBRARY_PARTS = (f"{_SEP}site-packages{_SEP}", f"{_SEP}dist-packages{_SEP}")
_STDLIB_DIRS: tuple[str, ...] = tuple(
    {os.path.abspath(sysconfig.get_paths()[key]) + _SEP for key in ("stdlib", "platstdlib")}
)
_INTERNAL_FILES = frozenset({"threading.py", "runpy.py", "contextlib.py", "pytest", "py.test"})

# `_walk` compares each frame's code with four special codes by identity (`is`
# is the cheapest test there is: no call, no hash); unused slots hold this,
# which no frame's code ever is.
_NO_CODE = object()
_Specials = tuple[object, object, object, object]
# What `_walk` returns when it did not meet a special code.
_TOP = object()  # the frame chain ended
_LIMIT = object()  # `limit` frames were captured
# Names of the outermost code of a thread (`Thread._bootstrap`) or of the main
# script: a walk ending there is not in a child greenlet (see `_finish`).
_OUTERMOST = frozenset({"<module>", "_bootstrap", "_bootstrap_inner"})
# Shortcuts kept per site and kind; the newest first, the oldest dropped.
_MAX_SHORTCUTS = 4


def _walk(frame: FrameType | None, out: list[object], limit: int, specials: _Specials) -> object:
    """Append (code, lasti) of `frame` and its callers to `out`.

    Returns the special code met (not appended), `_LIMIT` once `out` holds
    `limit` frames, or `_TOP` at the end of the chain. `f_lasti` is stored
    rather than `f_lineno`, which Python computes from the line table on every
    access; lines are resolved when a finding is formatted.
    """
    s0, s1, s2, s3 = specials
    append = out.append
    n = len(out) >> 1
    while frame is not None:
        if n >= limit:
            return _LIMIT
        code = frame.f_code
        if code is s0 or code is s1 or code is s2 or code is s3:
            return code
        append(code)
        append(frame.f_lasti)
        frame = frame.f_back
        n += 1
    return _TOP


def _walk1(frame: FrameType | None, out: list[object], limit: int, special: object) -> object:
    """`_walk` with one special code (or none: `_NO_CODE`), the common case without owned codes."""
    append = out.append
    n = len(out) >> 1
    while frame is not None:
        if n >= limit:
            return _LIMIT
        code = frame.f_code
        if code is special:
            return code
        append(code)
        append(frame.f_lasti)
        frame = frame.f_back
        n += 1
    return _TOP


def _walk_ids(frame: FrameType | None, out: list[object], limit: int, ids: dict[int, CodeType]) -> object:
    """`_walk` for more than four special codes: compared by `id()` (never hashed, see `_walk`)."""
    append = out.append
    n = len(out) >> 1
    while frame is not None:
        if n >= limit:
            return _LIMIT
        code = frame.f_code
        if id(code) in ids:
            return code
        append(code)
        append(frame.f_lasti)
        frame = frame.f_back
        n += 1
    return _TOP


_Walker = Callable[[FrameType | None, list[object], int, Any], object]


def _walker(codes: tuple[CodeType, ...]) -> tuple[_Walker, Any]:
    """The cheapest walk for these special codes, and its last argument."""
    if len(codes) <= 1:
        return _walk1, codes[0] if codes else _NO_CODE
    if len(codes) <= 4:
        padded = codes + (_NO_CODE,) * (4 - len(codes))
        return _walk, (padded[0], padded[1], padded[2], padded[3])
    return _walk_ids, {id(code): code for code in codes}


def _parent_greenlet_frame() -> FrameType | None:
    """Under asyncio, the frame that resumes when this greenlet finishes.

    SQLAlchemy runs the sync pool and ORM code in a child greenlet whose frame
    chain stops at the greenlet's entry; the user's coroutine frames live in
    the parent greenlet, so a walk that reaches the top continues there.
    """
    greenlet_mod = sys.modules.get("greenlet")
    if greenlet_mod is None:
        return None
    parent = getattr(greenlet_mod.getcurrent(), "parent", None)
    frame = getattr(parent, "gr_frame", None) if parent is not None else None
    return frame if isinstance(frame, FrameType) else None


def capture(skip: int = 1, limit: int = 48) -> RawStack:
    """The calling stack as (code, instruction offset) pairs, innermost first.

    `skip` frames are dropped (1 = the caller of `capture`). For rare events
    with no tracker at hand (a pool that had to wait, a new registry); the
    listeners use a tracker's `StackCapture`.
    """
    try:
        frame = sys._getframe(skip + 1)
    except ValueError:
        return EMPTY
    out: list[object] = []
    if _walk1(frame, out, limit, _NO_CODE) is _TOP:
        _walk1(_parent_greenlet_frame(), out, limit, _NO_CODE)
    return tuple(out)


def _unique(codes: Iterable[CodeType]) -> tuple[CodeType, ...]:
    """`codes` without repeats, compared by identity (hashing a code object is dear, see `_walk`)."""
    out: list[CodeType] = []
    for code in codes:
        if not any(code is seen for seen in out):
            out.append(code)
    return tuple(out)


class Site:
    """What one event site (one listener, or one pool's checkouts) learned from its walks.

    `owned` holds (depth, code) and `entries` (depth, code at depth-1, code at
    depth) shortcuts, see the module docstring. Each is a tuple, replaced
    whole, so that a thread probing it never sees it change.
    """

    __slots__ = ("owned", "entries")

    def __init__(self) -> None:
        self.owned: tuple[tuple[int, CodeType], ...] = ()
        self.entries: tuple[tuple[int, CodeType | None, CodeType], ...] = ()


class StackCapture:
    """A tracker's stack capture: its stop codes, its owned codes and its sites.

    `stop` codes end a walk (the pytest plugin gives pluggy's hook caller:
    everything above it is pytest's). If the walk for a site meets an `owned`
    code, `capture_at` returns None: the caller already holds a better stack
    for this event (a Session acquiring its connection).
    """

    def __init__(self, limit: int = 48) -> None:
        self.limit = limit
        self.stop: tuple[CodeType, ...] = ()
        self.owned: tuple[CodeType, ...] = ()
        self._configure()

    def configure(self, *, stop: Iterable[CodeType] | None = None, owned: Iterable[CodeType] | None = None) -> None:
        """Replace the stop or owned codes; shortcuts learned so far are kept (they stay true)."""
        if stop is not None:
            self.stop = _unique(stop)
        if owned is not None:
            self.owned = _unique(owned)
        self._configure()

    def _configure(self) -> None:
        self._plain_walk = _walker(self.stop)
        self._owned_walk = _walker(self.stop + self.owned)

    def _finish(self, out: list[object]) -> RawStack:
        """`out`, whose walk reached the top of its chain, as a stack: in a child greenlet, go on in its parent."""
        if out:
            top = out[-2]
            # A thread's or the main script's outermost frame is no greenlet's.
            if isinstance(top, CodeType) and top.co_name not in _OUTERMOST:
                walk, arg = self._plain_walk
                walk(_parent_greenlet_frame(), out, self.limit, arg)
        return tuple(out)

    def capture(self, skip: int = 1) -> RawStack:
        """The calling stack, innermost first; `skip` frames dropped (1 = the caller)."""
        try:
            frame = sys._getframe(skip + 1)
        except ValueError:
            return EMPTY
        out: list[object] = []
        walk, arg = self._plain_walk
        if walk(frame, out, self.limit, arg) is _TOP:
            return self._finish(out)
        return tuple(out)

    def capture_at(self, site: Site, skip: int = 1, *, owned: bool = True) -> RawStack | None:
        """`capture(skip)` for an event site, using and teaching its shortcuts.

        With `owned`, returns None if an owned code runs below any stop code.
        Depths count from the first frame kept (depth 0 = `sys._getframe(skip + 1)`
        here), which is the same frame for every call from one listener. This
        runs on every checkout, so it calls no other Python function on its
        common paths but `_walk`.
        """
        getframe = sys._getframe
        base = skip + 1
        start: FrameType | None = None
        skipped = 0
        # Entries first: the walk from the entry's caller meets an owned code
        # at its first frame anyway, so a hit there makes the owned probes
        # below unneeded.
        for depth, inner, outer in site.entries:
            try:
                frame = getframe(base + depth - 1) if inner is not None else getframe(base + depth)
            except ValueError:
                continue
            if inner is not None:
                if frame.f_code is not inner:
                    continue
                parent = frame.f_back
                if parent is None:
                    continue
                frame = parent
            if frame.f_code is outer:
                start = frame.f_back
                skipped = depth + 1
                break
        if start is None:
            if owned:
                for depth, code in site.owned:
                    try:
                        if getframe(base + depth).f_code is code:
                            return None
                    except ValueError:
                        pass
            try:
                start = getframe(base)
            except ValueError:
                return EMPTY
        out: list[object] = []
        walk, arg = self._owned_walk if owned else self._plain_walk
        hit = walk(start, out, self.limit, arg)
        if skipped:
            if hit is _TOP:
                return self._finish(out)
            if hit is _LIMIT or not owned or not isinstance(hit, CodeType) or not any(hit is c for c in self.owned):
                return tuple(out)
        elif hit is _LIMIT or not isinstance(hit, CodeType) or not any(hit is c for c in self.owned):
            self._learn_entry(site, out)
            return self._finish(out) if hit is _TOP else tuple(out)
        depth = skipped + (len(out) >> 1)
        if not any(known == depth and code is hit for known, code in site.owned):
            site.owned = ((depth, hit),) + site.owned[: _MAX_SHORTCUTS - 1]
        return None

    @staticmethod
    def _learn_entry(site: Site, out: list[object]) -> None:
        """Remember where the library frames below the first user frame of `out` end."""
        n = len(out) >> 1
        depth = 0
        while depth < n:
            code = out[2 * depth]
            if not isinstance(code, CodeType) or not _is_internal_cached(code.co_filename):
                break
            depth += 1
        # depth = index of the first user frame; shortcuts need one library frame below it.
        if depth == 0 or depth >= n:
            return
        outer = out[2 * (depth - 1)]
        inner = out[2 * (depth - 2)] if depth >= 2 else None
        if not isinstance(outer, CodeType) or (inner is not None and not isinstance(inner, CodeType)):
            return
        entry = (depth - 1, inner, outer)
        if entry not in site.entries:
            site.entries = (entry,) + site.entries[: _MAX_SHORTCUTS - 1]


def _line_of(code: CodeType, lasti: int) -> int:
    """The source line of instruction offset `lasti` in `code` (PEP 626 line table)."""
    line = code.co_firstlineno
    for start, end, lineno in code.co_lines():
        if start <= lasti < end:
            return lineno if lineno is not None else line
        if lineno is not None:
            line = lineno
    return line


def is_internal(filename: str) -> bool:
    """True for frames of SQLAlchemy, pytest, pluggy, other installed packages, the stdlib or the guard."""
    if filename.startswith("<"):
        # SQLAlchemy compiles decorators and generated methods as "<string>".
        return True
    if filename.startswith(_GUARD_DIR):
        return True
    if os.path.basename(filename) in _INTERNAL_FILES:
        return True
    if filename.startswith(_STDLIB_DIRS) or any(part in filename for part in _LIBRARY_PARTS):
        return True
    return any(part in filename for part in _INTERNAL_PARTS)


_is_internal_cached = functools.lru_cache(maxsize=4096)(is_internal)


def _display_path(filename: str, cwd: str) -> str:
    if filename.startswith(cwd + _SEP):
        return filename[len(cwd) + 1 :]
    return filename


def format_stack(raw: RawStack, *, trim: bool = True, cwd: str | None = None) -> list[str]:
    """`path:line in function` strings, innermost last.

    With `trim`, frames of the libraries and of the guard are dropped; if that
    leaves nothing (a checkout made entirely inside library code), the five
    innermost frames are kept so that the finding still points somewhere.
    """
    base = cwd if cwd is not None else os.getcwd()
    entries: list[tuple[str, str]] = []
    for i in range(0, len(raw) - 1, 2):
        code = raw[i]
        lasti = raw[i + 1]
        if not isinstance(code, CodeType) or not isinstance(lasti, int):
            continue
        lineno = _line_of(code, lasti)
        entries.append((code.co_filename, f"{_display_path(code.co_filename, base)}:{lineno} in {code.co_name}"))
    if trim:
        kept = [text for filename, text in entries if not is_internal(filename)]
        if not kept:
            kept = [text for _, text in entries[:5]]
    else:
        kept = [text for _, text in entries]
    kept.reverse()
    return kept


def innermost_user_frame(raw: RawStack, cwd: str | None = None) -> str | None:
    """The innermost non-internal frame as `path:line in function`, if any."""
    frames = format_stack(raw, trim=True, cwd=cwd)
    return frames[-1] if frames else None
