"""Read the git mirrors that the search tool's ``fetch`` brings to ``/work/.mirror``
(``SESSIONLINT_MIRRORS`` overrides the place): find one, export a commit's files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

MIRRORS = Path(os.environ.get("SESSIONLINT_MIRRORS", "/work/.mirror"))

# Files that carry project evidence besides the Python source (SES502 reads MySQL
# URLs and drivers from them).
CONFIG_SUFFIXES = (".ini", ".cfg", ".toml", ".yaml", ".yml", ".txt", ".env")


def git_dir(repo: str) -> Path | None:
    base = MIRRORS / repo.replace("/", "+")
    for candidate in (base / "repo" / ".git", base / "repo"):
        if (candidate / "HEAD").is_file():
            return candidate
    return None


def python_only(path: str) -> bool:
    return path.endswith(".py")


def python_and_config(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.endswith((".py", *CONFIG_SUFFIXES)) or name.startswith((".env", "docker-compose"))


def export_tree(git: Path, commit: str, into: Path, wanted_path: Callable[[str], bool] = python_only) -> int:
    """The files of ``commit`` that ``wanted_path`` accepts, below ``into``, plus a
    ``pyproject.toml`` with an empty ``[tool.sessionlint]`` where the tree has none
    (so that the root is the project root). Returns how many files were written."""
    listing = subprocess.run(
        ["git", f"--git-dir={git}", "ls-tree", "-r", "-z", commit], capture_output=True, check=True
    ).stdout.split(b"\0")
    wanted = []
    for row in listing:
        if not row:
            continue
        meta, raw = row.split(b"\t", 1)
        mode, kind, sha = meta.split()
        path = raw.decode("utf-8", "surrogateescape")
        if kind == b"blob" and mode != b"120000" and wanted_path(path):
            wanted.append((sha.decode(), path))
    batch = subprocess.run(
        ["git", f"--git-dir={git}", "cat-file", "--batch"],
        input="".join(f"{sha}\n" for sha, _ in wanted).encode(), capture_output=True, check=True,
    ).stdout
    at = written = 0
    for _sha, path in wanted:
        header_end = batch.index(b"\n", at)
        header = batch[at:header_end].split()
        if len(header) < 3:  # "<sha> missing": a shallow or partial mirror
            at = header_end + 1
            continue
        size = int(header[2])
        data = batch[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    pyproject = into / "pyproject.toml"
    if not pyproject.is_file():
        pyproject.write_text("[tool.sessionlint]\n")
    elif "[tool.sessionlint]" not in pyproject.read_text(errors="replace"):
        with pyproject.open("a") as out:
            out.write("\n[tool.sessionlint]\n")
    return written
