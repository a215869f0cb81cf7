"""The persistent result cache, ``.sessionlint_cache/`` at the project root.

One JSON file holds, for the last run: the hash of every project file, each checked
file's diagnostics with what they depend on (the module files its resolutions read,
whether it used a project-wide scan), and stage 1's project-wide names with each
file's contribution to them. A result is reused when its file, its dependencies and
the project-wide names are unchanged; the whole cache is dropped when the sessionlint
version or its own modules, the effective configuration or the set of project files
changes. The
directory carries its own ``.gitignore``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionlint.diagnostics import Diagnostic, Edit, FileResult, Fix
from sessionlint.sources import write_atomically

CACHE_DIR = ".sessionlint_cache"
_FORMAT = 4


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _pack(d: Diagnostic) -> list[Any]:
    fix = None
    if d.fix is not None:
        fix = [d.fix.applicability, d.fix.message, [[e.line, e.column, e.end_line, e.end_column, e.content] for e in d.fix.edits]]
    return [d.line, d.column, d.code, d.name, d.message, d.end_line, d.end_column, d.hint, fix]


def _unpack(path: str, item: list[Any]) -> Diagnostic:
    line, column, code, name, message, end_line, end_column, hint, packed = item
    fix = None
    if packed is not None:
        applicability, fix_message, edits = packed
        fix = Fix(applicability, fix_message, tuple(Edit(*e) for e in edits))
    return Diagnostic(path, line, column, code, name, message, end_line, end_column, hint, fix)


@dataclass
class CacheState:
    key: str = ""
    hashes: dict[str, str] = field(default_factory=dict)  # every project file -> hash
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # checked file -> result
    names: list[str] | None = None  # stage 1's project-wide names
    modules: list[str] = field(default_factory=list)  # ... and the modules defining them
    exports: dict[str, list[str]] = field(default_factory=dict)  # file -> its contribution


class ResultCache:
    def __init__(self, root: Path, key: str) -> None:
        self.directory = root / CACHE_DIR
        self.file = self.directory / "results.json"
        self.key = key
        self.state = CacheState(key=key)

    def load(self) -> ResultCache:
        try:
            raw = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT or raw.get("key") != self.key:
            return self  # another version or configuration: start afresh
        self.state = CacheState(
            key=self.key,
            hashes=raw.get("hashes", {}),
            entries=raw.get("entries", {}),
            names=raw.get("names"),
            modules=raw.get("modules", []),
            exports=raw.get("exports", {}),
        )
        return self

    def result(self, path: str, display: str, digest: str, changed: dict[str, bytes]) -> FileResult | None:
        """The cached result for ``path`` if nothing it depends on changed (``changed``:
        path -> new contents of every project file that changed since the last run)."""
        entry = self.state.entries.get(path)
        if entry is None or entry["hash"] != digest:
            return None
        if changed:
            if not changed.keys().isdisjoint(entry["deps"]):
                return None
            for scan in entry["scans"]:
                tokens = [t.encode() for t in scan["tokens"]]
                hit = not changed.keys().isdisjoint(scan["inputs"]) or any(
                    t in data for data in changed.values() for t in tokens
                )
                # A scan answered by one file stays answered while that file is
                # unchanged (the answer is an "any"); otherwise it must run again.
                if hit and changed.keys() >= set(scan["kept_by"]):
                    return None
        return FileResult(display, [_unpack(display, item) for item in entry["diagnostics"]])

    def store(self, path: str, digest: str, result: FileResult) -> None:
        if result.errors:
            self.state.entries.pop(path, None)  # never cache an internal error
            return
        self.state.entries[path] = {
            "hash": digest,
            "deps": sorted(result.deps),
            "scans": result.scans,
            "diagnostics": [_pack(d) for d in result.diagnostics],
        }

    def save(self) -> None:
        """Write atomically; a project directory we cannot write to just goes uncached."""
        payload = {
            "format": _FORMAT,
            "key": self.key,
            "hashes": self.state.hashes,
            "entries": self.state.entries,
            "names": self.state.names,
            "modules": self.state.modules,
            "exports": self.state.exports,
        }
        try:
            self.directory.mkdir(exist_ok=True)
            ignore = self.directory / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# Created by sessionlint: the whole directory is a cache.\n*\n", encoding="utf-8")
            write_atomically(str(self.file), json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        except OSError:
            pass
