"""Running a check over many files: project setup, the result cache, parallel workers.

Adapters call :func:`check_files`; it imports the engine (and LibCST) only when some
file has to be checked, so a warm run over an unchanged tree costs little more than
reading and hashing the files.
"""

from __future__ import annotations

import functools
import gc
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sessionlint import __version__
from sessionlint.analysis.project import ModuleFacts, ProjectIndex, syntax_problem
from sessionlint.analysis.relevance import Relevance
from sessionlint.analysis.sqla import names_sqla
from sessionlint.rules.engines.facts import mysql_evidence
from sessionlint.cache import CACHE_DIR, ResultCache, content_hash
from sessionlint.config import Settings
from sessionlint.diagnostics import FileResult, input_error
from sessionlint.sources import SourceError, decode_source

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess

    from sessionlint.engine import Checker

# Fewer files than this per worker are not worth a process.
_MIN_FILES_PER_JOB = 8
_CHUNK = 4


@dataclass
class RunStats:
    """What a run did, for tests and benchmarks: files checked vs reused from the cache."""

    checked: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunOptions:
    jobs: int = 0  # 0: all cores
    use_cache: bool = True
    debug: bool = False
    stage1: bool = True


def build_index(settings: Settings, files: Iterable[str], project: Iterable[str] | None = None) -> ProjectIndex:
    """The project index over the project root (``project``: its files, if already
    walked) plus the files being checked."""
    from sessionlint.discovery import Walker

    index = ProjectIndex(settings.root, session_factories=settings.session_factories)
    if project is None:
        project = Walker(settings.root, (*settings.exclude, *settings.extend_exclude)).walk(str(settings.root))
    seen = set()
    for path in project:
        seen.add(os.path.abspath(path))
        index.add_file(path)
    for path in files:
        if os.path.abspath(path) not in seen:
            index.add_file(path)
    return index


def project_settings(paths: Sequence[str], config: str | None = None) -> Settings:
    """Settings from ``--config`` or the nearest pyproject.toml above the first path."""
    from sessionlint.config import find_pyproject, find_root, load_settings

    start = Path(paths[0] if paths else ".").resolve()
    if config is not None:
        config_path: Path | None = Path(config)
    else:
        config_path = find_pyproject(start)
    root = config_path.parent.resolve() if config_path is not None else find_root(start)
    return load_settings(config_path, root)


def check_files(
    settings: Settings, files: Sequence[str], options: RunOptions = RunOptions(), stats: RunStats | None = None
) -> list[FileResult]:
    """Check ``files`` (paths as given for display), in order, reusing cached results."""
    gc.set_threshold(100_000, 50, 100)  # LibCST trees are large; the default collects constantly
    root = settings.root
    prewarmed = _Prewarmed.start(options) if options.use_cache and (root / CACHE_DIR / "results.json").exists() else None
    try:
        return _check_files(settings, files, options, stats, prewarmed)
    finally:
        if prewarmed is not None:
            prewarmed.stop()


@functools.cache
def _code_stamp() -> str:
    """The size and modification time of sessionlint's own modules: a checkout or an
    editable install changes its rules without changing ``__version__``, and the cache
    must not serve the old rules' results."""
    package = os.path.dirname(os.path.abspath(__file__))
    stamps = []
    for folder, _dirs, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                stamps.append((os.path.relpath(path, package), stat.st_size, stat.st_mtime_ns))
    return content_hash(repr(sorted(stamps)).encode())


def _check_files(
    settings: Settings,
    files: Sequence[str],
    options: RunOptions,
    stats: RunStats | None,
    prewarmed: _Prewarmed | None,
) -> list[FileResult]:
    root = settings.root
    excludes = (*settings.exclude, *settings.extend_exclude)
    from sessionlint.discovery import Walker

    project = [os.path.abspath(p) for p in Walker(root, excludes).walk(str(root))]
    where = {display: os.path.abspath(display) for display in files}
    data: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    for path in dict.fromkeys([*project, *where.values()]):
        try:
            with open(path, "rb") as fh:
                data[path] = fh.read()
        except OSError as exc:
            unreadable[path] = exc.strerror or str(exc)
    hashes = {path: content_hash(blob) for path, blob in data.items()}
    evidence = mysql_evidence(str(root))  # config and dependency files (SES502)
    key = content_hash(repr((__version__, _code_stamp(), settings.cache_key(), options.stage1, evidence, sorted(hashes))).encode())
    cache = ResultCache(root, key)
    if options.use_cache:
        cache.load()
    previous = cache.state
    changed = {path: data[path] for path, digest in hashes.items() if previous.hashes.get(path) != digest}

    index: ProjectIndex | None = None
    relevance: Relevance | None = None
    # Stage 1's project-wide names: reusable when no changed file exports a new one;
    # otherwise recomputed, and files spelling an added name are checked again.
    names_ok = False
    added = re.compile(rb"(?!x)x")  # matches nothing
    if options.use_cache and options.stage1 and previous.names is not None:
        names_ok = True
        old_names = frozenset(previous.names)
        if changed:  # an unchanged tree needs no index at all
            index = _index(settings, files, project, data)
            relevance = Relevance(index)
            relevance.seed(old_names, frozenset(previous.modules), _exports(previous.exports))
        if index is not None and relevance is not None and relevance.added_names(old_names, changed):
            relevance = Relevance(index)
            new_names = (relevance.project_names() - old_names) | {
                module.rsplit(".", 1)[-1] for module in relevance.modules - set(previous.modules)
            }
            if new_names:
                added = re.compile(rb"\b(?:" + b"|".join(re.escape(n.encode()) for n in sorted(new_names)) + rb")\b")

    results: dict[str, FileResult] = {}
    todo: list[str] = []
    for display, path in where.items():
        if path in unreadable:
            results[display] = FileResult(display, [input_error("SES002", display, 1, 1, unreadable[path])])
            continue
        cached = None
        if options.use_cache and names_ok and not added.search(data[path]):
            cached = cache.result(path, display, hashes[path], changed)
        if cached is not None:
            results[display] = cached
        else:
            todo.append(display)

    if todo:
        if index is None:
            index = _index(settings, files, project, data)
        if relevance is None:
            relevance = Relevance(index)
            if names_ok and previous.names is not None:
                relevance.seed(frozenset(previous.names), frozenset(previous.modules), _exports(previous.exports))
        checked_there = None
        if prewarmed is not None and relevance.computed and _jobs(options, len(todo)) <= 1:
            checked_there = prewarmed.check(todo, settings, index, relevance, options)
        if checked_there is not None:
            results.update(checked_there)
        else:
            results.update(_check_here(todo, settings, index, relevance, options))

    if stats is not None:
        stats.checked = list(todo)
        checked = set(todo)
        stats.reused = [d for d in files if d not in checked]
    if options.use_cache:
        state = cache.state
        state.hashes = hashes
        if relevance is not None and relevance.computed:
            state.names = sorted(relevance.project_names())
            state.modules = sorted(relevance.modules)
            state.exports = {p: sorted(n) for p, n in relevance.exports.items()}
        for display in todo:
            cache.store(where[display], hashes[where[display]], results[display])
        cache.save()
    return [results[display] for display in files]


def _check_here(
    todo: list[str], settings: Settings, index: ProjectIndex, relevance: Relevance, options: RunOptions
) -> dict[str, FileResult]:
    syntax: dict[str, tuple[int, int, str] | None] = {}
    if options.stage1:
        if not relevance.computed:
            # The names' fixpoint runs here while the workers do syntax checks.
            syntax = _prepass(todo, index, options, then=relevance.project_names)
        # Once, before workers fork (a no-op when computed or seeded); the fixpoint's
        # later rounds read new files, whose facts are built in parallel too.
        relevance.project_names(prefetch=lambda paths: _prefetch(paths, index, options))
    return _run(todo, settings, index, relevance, options, syntax)


class _Prewarmed:
    """A process forked when a cached run starts, importing the engine (LibCST takes a
    third of a second) while this process walks, reads and hashes the tree. When only
    a few files need checking, it checks them, so an edit-and-rerun does not wait for
    the import after the reading; otherwise it is stopped, unused."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, options: RunOptions) -> _Prewarmed | None:
        context = _fork_context()
        if context is None or options.debug or "sessionlint.engine" in sys.modules or (os.cpu_count() or 1) < 2:
            return None
        try:
            ours, theirs = context.Pipe()
            process = context.Process(target=_prewarmed_main, args=(theirs,), daemon=True)  # type: ignore[attr-defined]
            process.start()
        except OSError:
            return None
        theirs.close()
        return cls(process, ours)

    def check(
        self, todo: list[str], settings: Settings, index: ProjectIndex, relevance: Relevance, options: RunOptions
    ) -> dict[str, FileResult] | None:
        """The results of checking ``todo`` over there, or None if that failed."""
        try:
            self.conn.send((todo, settings, index, relevance, options))
            results = self.conn.recv()
        except Exception:  # the process died or a value did not pickle: check here
            return None
        return results if isinstance(results, dict) else None

    def stop(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(1)


def _prewarmed_main(conn: Connection) -> None:
    try:
        import sessionlint.engine  # noqa: F401  (the point: LibCST and the rules)

        job = conn.recv()
    except (EOFError, OSError):
        return
    todo, settings, index, relevance, options = job
    try:
        results: object = _run(todo, settings, index, relevance, options, {})
    except Exception:
        results = None
    conn.send(results)


def _exports(raw: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    return {path: frozenset(names) for path, names in raw.items()}


def _index(settings: Settings, files: Sequence[str], project: list[str], data: dict[str, bytes]) -> ProjectIndex:
    index = build_index(settings, files, project)
    index.seed_bytes(data)
    return index


# -- workers ------------------------------------------------------------------------

_WORKER: Checker | None = None  # set in the parent before forking; workers inherit it


def _check_chunk(paths: list[str]) -> list[FileResult]:
    assert _WORKER is not None
    return [_WORKER.check_path(path, _WORKER.index.file_bytes(os.path.abspath(path))) for path in paths]


def _jobs(options: RunOptions, files: int) -> int:
    jobs = options.jobs or os.cpu_count() or 1
    return min(jobs, max(1, files // _MIN_FILES_PER_JOB))


# -- the prepass: the parse every file needs, spread over the workers -----------------

_PREPASS: ProjectIndex | None = None  # set in the parent before forking


def _prepass_chunk(paths: list[str], facts_only: bool = False) -> tuple[list[ModuleFacts], dict[str, tuple[int, int, str] | None]]:
    """Facts of the files naming ``sqlalchemy`` (stage 1 reads them all), and the
    syntax check of the others (which stage 1 will mostly find irrelevant); with
    ``facts_only``, facts of every file."""
    assert _PREPASS is not None
    index = _PREPASS
    facts: list[ModuleFacts] = []
    syntax: dict[str, tuple[int, int, str] | None] = {}
    for path in paths:
        data = index.file_bytes(path)
        if facts_only or names_sqla(data):
            facts.append(index.facts_for_path(path))
            continue
        try:
            source = decode_source(data)
        except SourceError:
            continue  # the check reports it
        syntax[path] = syntax_problem(source)
    return facts, syntax


def _prefetch(paths: list[str], index: ProjectIndex, options: RunOptions) -> None:
    """Build, in parallel, the facts of those of ``paths`` that have none yet."""
    missing = [p for p in paths if not index.has_facts(p)]
    if len(missing) >= 2 * _MIN_FILES_PER_JOB:
        _prepass([], index, options, facts_of=missing)


def _prepass(
    todo: list[str],
    index: ProjectIndex,
    options: RunOptions,
    facts_of: list[str] | None = None,
    then: Callable[[], object] | None = None,
) -> dict[str, tuple[int, int, str] | None]:
    """Before stage 1's project-wide names (which parse the files naming ``sqlalchemy``
    one by one in this process), do that parsing and the syntax check of the checked
    files in parallel. Returns the syntax checks (absolute path -> problem or None).
    With ``facts_of``: only build the facts of those files. ``then`` runs here once
    every file's facts are in, while the workers go on with the syntax checks."""
    global _PREPASS
    checked = {os.path.abspath(p) for p in todo}
    if facts_of is not None:
        facts_paths, syntax_paths = facts_of, []
    else:
        facts_paths = [p for p in index.files() if names_sqla(index.file_bytes(p))]
        named = set(facts_paths)
        syntax_paths = [p for p in index.files() if p in checked and p not in named]
    jobs = _jobs(options, len(facts_paths) + len(syntax_paths))
    context = _fork_context()
    if jobs <= 1 or options.debug or context is None:
        if then is not None:
            then()
        return {}
    size = _CHUNK * 4
    facts_chunks = _chunked(sorted(facts_paths, key=lambda p: -len(index.file_bytes(p))), size)
    syntax_chunks = _chunked(sorted(syntax_paths, key=lambda p: -len(index.file_bytes(p))), size)
    syntax: dict[str, tuple[int, int, str] | None] = {}
    _PREPASS = index

    def collect(futures: list[Future[tuple[list[ModuleFacts], dict[str, tuple[int, int, str] | None]]]]) -> None:
        for future in as_completed(futures):
            try:
                facts, checks = future.result()
            except Exception:  # a worker died: the check does that work again
                continue
            index.install_facts(facts)
            syntax.update(checks)

    try:
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            first = [pool.submit(_prepass_chunk, chunk, True) for chunk in facts_chunks]
            rest = [pool.submit(_prepass_chunk, chunk, False) for chunk in syntax_chunks]
            collect(first)
            if then is not None:
                then()
            collect(rest)
    finally:
        _PREPASS = None
    return syntax


def _chunked(paths: list[str], size: int) -> list[list[str]]:
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def _fork_context() -> BaseContext | None:
    import multiprocessing

    try:
        return multiprocessing.get_context("fork")
    except ValueError:  # no fork on this platform: stay in one process
        return None


def _run(
    todo: list[str],
    settings: Settings,
    index: ProjectIndex,
    relevance: Relevance,
    options: RunOptions,
    syntax: dict[str, tuple[int, int, str] | None] | None = None,
) -> dict[str, FileResult]:
    global _WORKER
    from sessionlint.engine import Checker

    checker = Checker(settings, index, debug=options.debug, stage1=options.stage1, relevance=relevance)
    checker.syntax = syntax or {}
    jobs = _jobs(options, len(todo))
    if jobs <= 1 or options.debug:
        return {path: checker.check_path(path, index.file_bytes(os.path.abspath(path))) for path in todo}
    context = _fork_context()
    if context is None:
        return {path: checker.check_path(path, index.file_bytes(os.path.abspath(path))) for path in todo}
    # Largest files first, in small chunks, so no worker is left with the tail.
    ordered = sorted(todo, key=lambda p: -len(index.file_bytes(os.path.abspath(p))))
    chunks = [ordered[i : i + _CHUNK] for i in range(0, len(ordered), _CHUNK)]
    _WORKER = checker
    gc.collect()
    gc.freeze()  # inherited objects stay shared with the parent (no refcount-driven copies)
    out: dict[str, FileResult] = {}
    failed: list[str] = []
    try:
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(_check_chunk, chunk): chunk for chunk in chunks}
            for future in as_completed(futures):
                try:
                    for result in future.result():
                        out[result.path] = result
                except Exception:  # a worker died (or could not return): retry these alone
                    failed.extend(futures[future])
        for path in failed:
            out[path] = _isolated(path, context)
    finally:
        gc.unfreeze()
        _WORKER = None
    return out


def _isolated(path: str, context: BaseContext) -> FileResult:
    """Check one file in a fresh worker, so a file that kills its process is reported
    as an internal error instead of taking the run down."""
    try:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            result: FileResult = pool.submit(_check_chunk, [path]).result()[0]
            return result
    except Exception as exc:
        return FileResult(path, errors=[f"{path}: internal error: the worker checking this file died ({type(exc).__name__})"])
