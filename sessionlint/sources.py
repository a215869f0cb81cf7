"""Reading Python source as Python does (PEP 263 cookies, BOM): no LibCST here."""

from __future__ import annotations

import io
import tokenize


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
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        # detect_encoding also fails on plain invalid UTF-8 in the first two lines;
        # say which byte, as for invalid bytes further down.
        encoding = "utf-8"
        if "encoding problem" in str(exc) or "unknown encoding" in str(exc):
            raise SourceError(f"bad encoding declaration: {exc}") from exc
    try:
        return data.decode(encoding)
    except LookupError as exc:
        raise SourceError(f"unknown encoding: {encoding}") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"not valid {exc.encoding} (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc


