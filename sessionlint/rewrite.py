"""Rewriting checked files in place (``--add-noqa``), safely.

A file is read once, transformed as text, encoded back with the encoding it was read
with (a PEP 263 cookie, a BOM), and written through a temporary file renamed over it,
so it is never left truncated. A file whose bytes changed between that read and the
write (an editor saved it meanwhile) is left alone and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sessionlint.sources import SourceError, decode_with_encoding, write_atomically


@dataclass(frozen=True)
class Rewritten:
    path: str
    changed: bool
    problem: str = ""  # why the file was left alone, if it was


def rewrite_file(path: str, transform: Callable[[str], str]) -> Rewritten:
    """Apply ``transform`` to the text of ``path`` and write the result if it differs."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text, encoding = decode_with_encoding(data)
    except OSError as exc:
        return Rewritten(path, False, f"cannot read: {exc.strerror or exc}")
    except SourceError as exc:
        return Rewritten(path, False, f"cannot read: {exc}")
    new = transform(text)
    if new == text:
        return Rewritten(path, False)
    try:
        encoded = new.encode(encoding)
    except UnicodeEncodeError as exc:
        return Rewritten(path, False, f"cannot encode the change as {encoding}: {exc.reason}")
    try:
        with open(path, "rb") as fh:
            if fh.read() != data:
                return Rewritten(path, False, "changed while sessionlint was rewriting it; left alone")
        write_atomically(path, encoded)
    except OSError as exc:
        return Rewritten(path, False, f"cannot write: {exc.strerror or exc}")
    return Rewritten(path, True)
