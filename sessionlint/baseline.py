"""Baselines: let a codebase's existing findings in, and report only new ones.

A baseline file lists findings by code, path (relative to the baseline file's own
directory, so that it matches however the run found its project root) and a
fingerprint of two things that survive unrelated edits: the finding's source line,
normalised (indentation, runs of spaces and a trailing comment dropped), and the
qualified name of the function or class it is in. Line numbers are not part of the
key, so a finding that moves because code above it changed, or that is re-indented,
stays baselined. Each entry has a count: a second copy of the same mistake in the
same function is a new finding.

The file is JSON with sorted keys and entries, one finding per entry, so it is stable
under re-runs and reads well in review. No LibCST here: the enclosing function comes
from :mod:`ast`, for files that have findings only.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import tokenize
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sessionlint.diagnostics import Diagnostic
from sessionlint.sources import PHYSICAL_LINES

FORMAT_VERSION = 1
_INPUT_ERRORS = frozenset({"SES001", "SES002"})


class BaselineError(Exception):
    """A baseline file that cannot be read, parsed or written."""


@dataclass(frozen=True, order=True)
class Key:
    code: str
    path: str  # relative to the baseline's directory, with "/" separators
    fingerprint: str


@dataclass(frozen=True)
class Entry:
    key: Key
    function: str
    source: str


def normalised_line(line: str) -> str:
    """``line`` without indentation, comment and runs of whitespace."""
    code = line
    if "#" in line:
        try:
            for tok in tokenize.generate_tokens(io.StringIO(line).readline):
                if tok.type == tokenize.COMMENT:
                    code = line[: tok.start[1]]
                    break
        except (tokenize.TokenError, SyntaxError, IndentationError):
            pass  # a line that does not tokenize alone (inside a string): keep it whole
    return " ".join(code.split())


def enclosing_names(source: str, lines: Iterable[int]) -> dict[int, str]:
    """For each line, the qualified name of the innermost def or class around it
    (``Repository.save``), or ``<module>``."""
    wanted = sorted(set(lines))
    found = {line: "<module>" for line in wanted}
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return found
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                last = child.end_lineno or child.lineno
                inside = [line for line in wanted if first <= line <= last]
                if inside:
                    for line in inside:
                        found[line] = name  # deeper defs are visited later and win
                    stack.append((child, name + "."))
            elif not isinstance(child, (ast.expr, ast.Lambda)):
                stack.append((child, prefix))
    return found


def entries_for(diagnostics: list[Diagnostic], source: str, relpath: str) -> list[Entry]:
    """The baseline entries of one file's findings (``source`` is its text)."""
    lines = [line.rstrip("\r\n") for line in PHYSICAL_LINES.findall(source)]  # as Python counts lines
    names = enclosing_names(source, (d.line for d in diagnostics))
    result = []
    for d in diagnostics:
        text = normalised_line(lines[d.line - 1]) if 0 < d.line <= len(lines) else ""
        function = names.get(d.line, "<module>")
        digest = hashlib.sha256(f"{function}\0{text}".encode()).hexdigest()[:16]
        result.append(Entry(Key(d.code, relpath, digest), function, text))
    return result


def relative(path: str, root: Path) -> str:
    """``path`` relative to ``root`` (the baseline's directory), "/"-separated."""
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute, root)
    except ValueError:  # another drive on Windows
        rel = absolute
    return rel.replace(os.sep, "/")


class Baseline:
    """A loaded baseline: how many findings each key may still absorb."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries: list[Entry] = list(entries)
        self.counts: Counter[Key] = Counter(e.key for e in self.entries)

    @classmethod
    def load(cls, path: Path) -> Baseline:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BaselineError(f"{path}: baseline not found (create it with --write-baseline {path})") from None
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read baseline: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BaselineError(f"{path}: not a sessionlint baseline (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("sessionlint_baseline") != FORMAT_VERSION:
            raise BaselineError(f"{path}: not a sessionlint baseline (no \"sessionlint_baseline\": {FORMAT_VERSION})")
        entries = []
        for item in data.get("findings", []):
            try:
                key = Key(str(item["code"]), str(item["path"]), str(item["fingerprint"]))
                entry = Entry(key, str(item.get("function", "")), str(item.get("source", "")))
                count = int(item.get("count", 1))
            except (KeyError, TypeError, ValueError) as exc:
                raise BaselineError(f"{path}: malformed baseline entry {item!r}: {exc}") from None
            entries.extend([entry] * max(count, 0))
        return cls(entries)

    def for_paths(self, paths: set[str]) -> Baseline:
        """A fresh copy holding only the entries of ``paths`` (for one file's check)."""
        return Baseline(e for e in self.entries if e.key.path in paths)

    def filter(self, findings: list[tuple[Diagnostic, Entry]]) -> tuple[list[Diagnostic], int]:
        """The findings the baseline does not absorb (in order), and how many it did.
        Consumes the counts, so call it once per file."""
        kept, absorbed = [], 0
        for diagnostic, entry in findings:
            if diagnostic.code not in _INPUT_ERRORS and self.counts[entry.key] > 0:
                self.counts[entry.key] -= 1
                absorbed += 1
            else:
                kept.append(diagnostic)
        return kept, absorbed

    def unmatched(self, paths: set[str]) -> int:
        """Entries of the files in ``paths`` that no finding matched (after :meth:`filter`)."""
        return sum(n for key, n in self.counts.items() if n > 0 and key.path in paths)


def write(path: Path, entries: Iterable[Entry], keep_from: Baseline | None = None, replaced: Iterable[str] = ()) -> int:
    """Write ``entries`` to ``path``, plus the entries of ``keep_from`` for files not in
    ``replaced`` (the files this run checked), so that writing a baseline for part
    of a tree keeps the rest. Returns how many findings the file holds."""
    counts: Counter[tuple[Key, str, str]] = Counter((e.key, e.function, e.source) for e in entries)
    replaced = set(replaced)
    if keep_from is not None:
        for e in keep_from.entries:
            if e.key.path not in replaced:
                counts[(e.key, e.function, e.source)] += 1
    findings = [
        {"code": key.code, "path": key.path, "fingerprint": key.fingerprint, "function": function, "source": source, "count": n}
        for (key, function, source), n in sorted(
            counts.items(), key=lambda item: (item[0][0].path, item[0][0].code, item[0][1], item[0][2], item[0][0].fingerprint)
        )
    ]
    text = json.dumps({"sessionlint_baseline": FORMAT_VERSION, "findings": findings}, indent=2, sort_keys=True) + "\n"
    from sessionlint.sources import write_atomically

    try:
        write_atomically(str(path), text.encode("utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot write baseline: {exc.strerror or exc}") from None
    return sum(counts.values())


def fingerprinted(diagnostics: list[Diagnostic], root: Path, sources: dict[str, str]) -> list[tuple[Diagnostic, Entry]]:
    """Each finding with its baseline entry, in the order given. ``sources`` holds text
    already read (standard input); other files are read from disk."""
    from sessionlint.sources import SourceError, read_source

    by_path: dict[str, list[Diagnostic]] = {}
    for d in diagnostics:
        by_path.setdefault(d.path, []).append(d)
    entries: dict[int, Entry] = {}
    for path, group in by_path.items():
        source = sources.get(path)
        if source is None:
            try:
                source = read_source(path)
            except SourceError:
                source = ""  # SES002: it has no lines to fingerprint
        for d, entry in zip(group, entries_for(group, source, relative(path, root))):
            entries[id(d)] = entry
    return [(d, entries[id(d)]) for d in diagnostics]
