"""`# noqa` handling shared by every adapter, with flake8's semantics.

flake8 treats ``# noqa`` (any case, optional spaces) as "suppress everything on this
line" and ``# noqa: A1, B2`` as "suppress codes starting with these". A malformed list
(``# noqa:`` with nothing after it) suppresses everything, as flake8 does.
"""

from __future__ import annotations

import io
import re
import tokenize

_NOQA = re.compile(
    r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?",
    re.IGNORECASE,
)
_CODE = re.compile(r"[A-Z]+[0-9]+", re.IGNORECASE)

# line -> None (suppress all) or the codes listed there
NoqaMap = dict[int, frozenset[str] | None]


def noqa_lines(source: str) -> NoqaMap:
    """Map each line carrying a ``# noqa`` comment to what it suppresses."""
    result: NoqaMap = {}
    if "noqa" not in source.lower():
        return result
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                _record(result, tok.start[0], tok.string)
    except (tokenize.TokenError, SyntaxError):
        # Fall back to a plain line scan; the file may not even parse.
        for number, line in enumerate(source.splitlines(), start=1):
            if "#" in line:
                _record(result, number, line[line.index("#"):])
    return result


def _record(result: NoqaMap, line: int, comment: str) -> None:
    match = _NOQA.search(comment)
    if match is None:
        return
    codes = match.group("codes")
    result[line] = (
        None if codes is None else frozenset(c.upper() for c in _CODE.findall(codes))
    )


def is_suppressed(noqa: NoqaMap, line: int, code: str) -> bool:
    if line not in noqa:
        return False
    codes = noqa[line]
    return codes is None or any(code.startswith(c) for c in codes)
