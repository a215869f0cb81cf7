"""Cheap stack capture, formatted only when a finding is reported.

A listener runs on every checkout, so capturing must not build
`traceback.FrameSummary` objects or read source lines: we walk
`sys._getframe()` and keep only `(code object, line number)` pairs, flattened
into one tuple. Code objects are shared and long-lived, so holding them keeps
no locals alive. Formatting and trimming happen only for reported findings.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterable
from types import CodeType, FrameType

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


def code_ids(codes: Iterable[object]) -> frozenset[int]:
    """The `id()`s of code objects, for `capture`'s `stop` and `owned` sets.

    `capture` tests each frame by the identity of its code object, never by
    hashing it: a code object's hash covers its constants, nested code objects
    included (a module's code hashes every function in it), which made the
    walk cost tens of microseconds per frame on deep stacks. The caller keeps
    the code objects alive, so their ids stay valid.
    """
    return frozenset(id(code) for code in codes if isinstance(code, CodeType))


def capture(
    skip: int = 1, limit: int = 48, stop: frozenset[int] = frozenset(), owned: frozenset[int] = frozenset()
) -> RawStack | None:
    """Capture the calling stack as (code, instruction offset) pairs, innermost first.

    `skip` frames are dropped (1 = the caller of `capture`). The walk ends
    after `limit` frames or at the first frame whose code's id is in `stop`
    (the pytest plugin stops at pluggy's hook caller: everything above it is
    pytest machinery). If a frame's code's id is in `owned`, the walk ends and
    None is returned: the caller already holds a better stack for this event
    (a Session acquiring its connection). Build both sets with `code_ids`.
    `f_lasti` is stored rather than `f_lineno`, which Python computes from the
    line table on every access (and a frame that goes on running moves on);
    lines are resolved when a finding is formatted.

    Under asyncio, SQLAlchemy runs the sync pool code in a child greenlet whose
    frame chain stops at the greenlet's entry; the user's coroutine frames live
    in the parent greenlet, so the walk continues at
    `greenlet.getcurrent().parent.gr_frame`.
    """
    frame: FrameType | None
    try:
        frame = sys._getframe(skip + 1)
    except ValueError:
        return EMPTY
    out: list[object] = []
    append = out.append
    n = 0
    while frame is not None:
        code = frame.f_code
        key = id(code)
        if key in stop:
            return tuple(out)
        if key in owned:
            return None
        append(code)
        append(frame.f_lasti)
        n += 1
        if n >= limit:
            return tuple(out)
        frame = frame.f_back
    greenlet_mod = sys.modules.get("greenlet")
    if greenlet_mod is not None:
        parent = getattr(greenlet_mod.getcurrent(), "parent", None)
        frame = getattr(parent, "gr_frame", None) if parent is not None else None
        while frame is not None and n < limit:
            code = frame.f_code
            if id(code) in stop:
                break
            append(code)
            append(frame.f_lasti)
            frame = frame.f_back
            n += 1
    return tuple(out)


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
