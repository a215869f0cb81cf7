"""Find the Python files to check: recursive, honouring .gitignore and excludes.

Directory symlinks are not followed (a symlink loop cannot hang the walk); a symlinked
``.py`` file is read like any other, and an unreadable one is reported as SES002.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".tox", ".nox", ".eggs",
        "build", "dist", "node_modules", "__pycache__", ".mypy_cache",
        ".pytest_cache", ".ruff_cache", ".sessionlint_cache", "site-packages",
    }
)


def _translate(pattern: str) -> str:
    """A gitignore glob (without its anchor and trailing slash) as a regex body."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        elif c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


@dataclass
class IgnoreFile:
    """The rules of one .gitignore, matched against paths relative to its directory."""

    rules: list[_Rule] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> IgnoreFile:
        rules = []
        for raw in text.splitlines():
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            line = line.removeprefix("\\")
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            body = _translate(line)
            regex = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$")
            rules.append(_Rule(regex, negate, dir_only))
        return cls(rules)

    def match(self, rel: str, is_dir: bool) -> bool | None:
        """True ignored, False re-included, None not mentioned (last match wins)."""
        verdict: bool | None = None
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(rel):
                verdict = not rule.negate
        return verdict


def _glob_matches(patterns: Sequence[str], rel: str) -> bool:
    """Exclude globs, ruff/flake8 style: against the relative path or the base name."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        pat = pattern.rstrip("/")
        if fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(name, pat):
            return True
        if fnmatch.fnmatchcase(rel, pat + "/*"):
            return True
    return False


def _is_virtualenv(path: str) -> bool:
    return os.path.exists(os.path.join(path, "pyvenv.cfg"))


@dataclass
class Walker:
    """Walks directories under ``root`` applying .gitignore files and exclude globs."""

    root: Path
    excludes: Sequence[str] = ()
    _ignores: dict[str, IgnoreFile | None] = field(default_factory=dict)
    # Directories that could not be listed, with the reason (reported as SES002).
    errors: list[tuple[str, str]] = field(default_factory=list)

    def _ignore_file(self, directory: str) -> IgnoreFile | None:
        if directory not in self._ignores:
            try:
                with open(os.path.join(directory, ".gitignore"), encoding="utf-8") as fh:
                    self._ignores[directory] = IgnoreFile.parse(fh.read())
            except (OSError, UnicodeDecodeError):
                self._ignores[directory] = None
        return self._ignores[directory]

    def _ignored(self, path: str, is_dir: bool, chain: list[str]) -> bool:
        verdict: bool | None = None
        for directory in chain:
            rules = self._ignore_file(directory)
            if rules is None:
                continue
            rel = os.path.relpath(path, directory).replace(os.sep, "/")
            found = rules.match(rel, is_dir)
            if found is not None:
                verdict = found
        return bool(verdict)

    def _excluded(self, path: str) -> bool:
        if not self.excludes:
            return False
        try:
            rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        except ValueError:
            rel = path
        return _glob_matches(self.excludes, rel)

    def _gitignore_chain(self, directory: str) -> list[str]:
        """The directories whose .gitignore applies to entries of ``directory``."""
        chain = []
        current = os.path.abspath(directory)
        while True:
            chain.append(current)
            if os.path.exists(os.path.join(current, ".git")):
                break
            parent = os.path.dirname(current)
            if parent == current:
                # Not in a git work tree: only the walked directories' own files apply.
                return [os.path.abspath(directory)]
            current = parent
        return list(reversed(chain))

    def walk(self, top: str) -> Iterator[str]:
        """Python files below ``top`` (a directory), sorted, as paths joined onto ``top``."""
        base_chain = self._gitignore_chain(top)[:-1]
        stack: list[tuple[str, list[str]]] = [(top, base_chain)]
        while stack:
            directory, chain = stack.pop()
            chain = chain + [os.path.abspath(directory)]
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
            except OSError as exc:
                self.errors.append((directory, exc.strerror or str(exc)))
                continue
            subdirs = []
            for entry in reversed(entries):
                name = entry.name
                path = os.path.join(directory, name)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if name in SKIP_DIRS or name.endswith(".egg-info") or _is_virtualenv(path):
                        continue
                    if self._excluded(path) or self._ignored(os.path.abspath(path), True, chain):
                        continue
                    subdirs.append(path)
                elif name.endswith(".py"):
                    if self._excluded(path) or self._ignored(os.path.abspath(path), False, chain):
                        continue
                    yield path
            for sub in reversed(subdirs):
                stack.append((sub, chain))


def discover(
    paths: Sequence[str], root: Path, excludes: Sequence[str]
) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Expand command-line paths into files.

    Returns ``(files, unreadable, empty_dirs)``: files to check (explicit files always
    included), ``(path, reason)`` for paths that do not exist or cannot be listed, and
    directories that held no Python file.
    """
    walker = Walker(root, excludes)
    files: list[str] = []
    missing: list[tuple[str, str]] = []
    empty: list[str] = []
    seen: set[str] = set()
    for given in paths:
        if os.path.isdir(given):
            before = len(walker.errors)
            found = [f for f in walker.walk(given) if f not in seen]
            if given in (".", "./"):
                # The default path: show paths as ruff does, without a "./" prefix.
                found = [f[2:] if f.startswith("./") else f for f in found]
            if not found and len(walker.errors) == before:
                empty.append(given)
            for f in found:
                seen.add(f)
                files.append(f)
        elif os.path.lexists(given):
            # An explicit file, even one without .py, or a broken/looping symlink:
            # read it and let the reader report SES002 if it cannot be read.
            if given not in seen:
                seen.add(given)
                files.append(given)
        else:
            missing.append((given, "No such file or directory"))
    missing.extend(walker.errors)
    return files, missing, empty
