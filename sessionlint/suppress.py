"""`# noqa` handling shared by every adapter, with flake8's semantics.

flake8 treats ``# noqa`` (any case, optional spaces) as "suppress everything on this
line" and ``# noqa: A1, B2`` as "suppress codes starting with these". A malformed list
(``# noqa:`` with nothing after it) suppresses everything, as flake8 does.
"""

from __future__ import annotations

import io
import re
import tokenize

from sessionlint.sources import PHYSICAL_LINES

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


def add_noqa(source: str, wanted: dict[int, set[str]]) -> tuple[str, int, list[int]]:
    """``source`` with ``# noqa: <codes>`` added on each line of ``wanted`` (line ->
    codes reported there), keeping the codes of an existing ``# noqa: ...`` and the
    rest of its comment; a bare ``# noqa`` already covers everything. Returns the new
    text, how many lines changed, and the lines left alone because a comment cannot
    go at their end (inside a multi-line string, before a backslash continuation)."""
    lines = PHYSICAL_LINES.findall(source)
    comments: dict[int, tuple[int, str]] = {}  # line -> (column, comment text)
    inside: set[int] = set()  # lines whose end is inside a token (a multi-line string)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = (tok.start[1], tok.string)
            elif tok.start[0] < tok.end[0] and tok.type not in (tokenize.NEWLINE, tokenize.NL):
                inside.update(range(tok.start[0], tok.end[0]))
    except (tokenize.TokenError, SyntaxError):
        return source, 0, sorted(wanted)  # not Python: leave it alone
    changed, skipped = 0, []
    for number in sorted(wanted):
        if not 0 < number <= len(lines):
            continue
        line = lines[number - 1]
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        codes = sorted(wanted[number])
        if number in comments:
            column, comment = comments[number]
            match = _NOQA.search(comment)
            if match is not None and match.group("codes") is None:
                continue  # a bare ``# noqa`` suppresses every code already
            if match is not None:
                present = [c.upper() for c in _CODE.findall(match.group("codes"))]
                missing = [c for c in codes if not any(c.startswith(p) for p in present)]
                if not missing:
                    continue
                merged = f"# noqa: {', '.join([*present, *missing])}"
                comment = comment[: match.start()] + merged + comment[match.end():]
            else:
                comment = f"{comment.rstrip()}  # noqa: {', '.join(codes)}"
            body = body[:column] + comment
        elif number in inside or body.endswith("\\"):
            skipped.append(number)
            continue
        else:
            body = f"{body.rstrip()}  # noqa: {', '.join(codes)}"
        lines[number - 1] = body + ending
        changed += 1
    return "".join(lines), changed, skipped
