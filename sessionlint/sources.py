"""Reading Python source as Python does (PEP 263 cookies, BOM): no LibCST here."""

from __future__ import annotations

import io
import os
import re
import tempfile
import tokenize

# Lines as Python counts them: str.splitlines() also breaks at form feeds and other
# separators that are not line ends in source code.
PHYSICAL_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class SourceError(Exception):
    """A file that cannot be read or decoded (SES002)."""


def read_source(path: str) -> str:
    """The file's text, decoded as Python does it (PEP 263 cookie, BOM)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SourceError(exc.strerror or str(exc)) from exc
    return decode_source(data)


def decode_source(data: bytes) -> str:
    return decode_with_encoding(data)[0]


def decode_with_encoding(data: bytes) -> tuple[str, str]:
    """The text and the encoding it was decoded with (``utf-8-sig`` when a BOM starts
    it), so that a rewrite can encode it back the same way."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        # detect_encoding also fails on plain invalid UTF-8 in the first two lines;
        # say which byte, as for invalid bytes further down.
        encoding = "utf-8"
        if "encoding problem" in str(exc) or "unknown encoding" in str(exc):
            raise SourceError(f"bad encoding declaration: {exc}") from exc
    try:
        return data.decode(encoding), encoding
    except LookupError as exc:
        raise SourceError(f"unknown encoding: {encoding}") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"not valid {exc.encoding} (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc




def write_atomically(path: str, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` without ever leaving it truncated:
    write a temporary file beside it, then rename it over (keeping its permissions)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".sessionlint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
