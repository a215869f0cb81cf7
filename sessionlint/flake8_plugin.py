"""The flake8 adapter: ``flake8 --select SES`` reports what ``sessionlint check`` reports.

It translates, never analyses: the engine's :class:`~sessionlint.engine.Checker` checks
the text flake8 hands over (``lines``, so stdin and editors' unsaved buffers work), and
each diagnostic becomes flake8's ``(line, col, "SES101 message", type)`` tuple.

Project root and index
    The project of a file is found exactly as the CLI finds it
    (:func:`sessionlint.runner.project_settings`): the nearest ``pyproject.toml`` with a
    ``[tool.sessionlint]`` table, else the nearest directory holding a
    ``pyproject.toml`` or ``.git``. Its settings apply, and its project index (every
    Python file below the root, for factories defined in other modules and
    ``remove()`` calls in teardown hooks elsewhere) is built once per project per
    process and shared by every file flake8 checks in that process (``-j N`` runs N
    processes, each with its own copy).

Selection
    ``[tool.sessionlint]`` decides which rules run (opt-in rules are switched on there);
    flake8's ``--select``/``--extend-ignore``/``per-file-ignores``/``# noqa`` then filter
    what it shows, as for any plugin.

Errors
    A file that does not parse yields nothing: flake8 reports it as E999. A bad
    ``[tool.sessionlint]`` raises :class:`SessionlintConfigError` from the plugin's
    constructor, which flake8 turns into its own one-line "failed during execution"
    message and exit status 1 (flake8 has no other way for a plugin to fail a run; a
    traceback is never shown). A rule that crashes on a file is reported on standard
    error naming the file and the rule, and the other rules' findings are still
    reported, as in the CLI.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sessionlint import __version__

if TYPE_CHECKING:  # the engine (and LibCST) load on the first checked file, not at flake8 start-up
    from sessionlint.baseline import Baseline
    from sessionlint.config import Settings

# flake8 yields (line, column, "CODE message", type): line 1-based, column 0-based.
Flake8Result = tuple[int, int, str, type[Any]]

_INPUT_ERRORS = frozenset({"SES001", "SES002"})
_STDIN_NAMES = frozenset({"-", "stdin"})


class SessionlintConfigError(Exception):
    """Bad ``[tool.sessionlint]`` seen from flake8.

    flake8 prints a failing plugin's exception with ``repr``; this one's repr is the
    plain message, so the user reads "sessionlint configuration error: <file>: <key>: ..."
    rather than a Python expression.
    """

    def __repr__(self) -> str:
        return f"sessionlint configuration error: {self.args[0]}"

    def __str__(self) -> str:
        return repr(self)


class _Project:
    """Settings, index and checker of one project root, shared within a process."""

    def __init__(self, settings: Settings) -> None:
        from sessionlint.engine import Checker
        from sessionlint.runner import build_index

        self.settings = settings
        # Index every Python file below the root once; the file being checked is
        # refreshed with flake8's text by Checker.check_source. flake8 applies
        # `# noqa` itself (and honours its --disable-noqa), so the checker does not.
        self.checker = Checker(settings, build_index(settings, ()), noqa=False)
        self.baseline: Baseline | None = None
        if settings.baseline is not None:
            from sessionlint import baseline as baselines

            try:
                self.baseline = baselines.Baseline.load(settings.baseline)
            except baselines.BaselineError as exc:
                raise SessionlintConfigError(str(exc)) from None


# Per process: directory -> settings key, settings key -> project. Both are filled
# lazily by the first file of a project, so a run builds each index once.
_SETTINGS_BY_DIR: dict[str, Settings] = {}
_PROJECTS: dict[tuple[str, ...], _Project] = {}


def _settings_for(filename: str) -> Settings:
    from sessionlint import registry
    from sessionlint.config import ConfigError
    from sessionlint.runner import project_settings

    directory = os.path.dirname(os.path.abspath(filename))
    cached = _SETTINGS_BY_DIR.get(directory)
    if cached is not None:
        return cached
    try:
        settings = project_settings([filename])
        where = str(settings.config_path) if settings.config_path else "defaults"
        registry.validate_codes(settings.select, f"{where}: select")
        registry.validate_codes(settings.ignore, f"{where}: ignore")
        for _glob, codes in settings.per_file_ignores:
            registry.validate_codes(codes, f"{where}: per-file-ignores")
    except ConfigError as exc:
        raise SessionlintConfigError(str(exc)) from None
    _SETTINGS_BY_DIR[directory] = settings
    return settings


def _project_for(settings: Settings) -> _Project:
    key = (
        str(settings.root),
        str(settings.config_path),
        settings.cache_key(),
        repr((settings.exclude, settings.extend_exclude, settings.baseline)),
    )
    project = _PROJECTS.get(key)
    if project is None:
        project = _PROJECTS[key] = _Project(settings)
    return project


def _reset() -> None:
    """Forget every cached project (for tests that change files between runs)."""
    _SETTINGS_BY_DIR.clear()
    _PROJECTS.clear()


class Plugin:
    """flake8 tree plugin ``SES``.

    flake8 needs ``tree`` in the signature to treat this as a per-file plugin; the
    check itself runs on ``lines`` with LibCST (so it sees comments and exact positions).
    The work happens in ``__init__`` because flake8 turns an exception raised there
    (and only there) into a clean "failed during execution" message.
    """

    name = "sessionlint"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str, lines: Sequence[str]) -> None:
        del tree  # parsed again by LibCST below; flake8 already reported E999 if ast failed
        self.filename = filename
        self.results: list[Flake8Result] = list(self._check(filename, "".join(lines)))

    def run(self) -> Iterator[Flake8Result]:
        yield from self.results

    def _check(self, filename: str, source: str) -> Iterator[Flake8Result]:
        on_stdin = filename in _STDIN_NAMES and not os.path.isfile(filename)
        # stdin has no place of its own: its project is the working directory's.
        anchor = os.path.join(os.getcwd(), "stdin.py") if on_stdin else filename
        project = _project_for(_settings_for(anchor))
        result = project.checker.check_source(source, filename, index_path=None if on_stdin else os.path.abspath(filename))
        for error in result.errors:
            # flake8 has no --debug of ours: point at the CLI, which shows the traceback.
            error = error.replace("rerun with --debug", f"run `sessionlint check --debug {filename}`")
            print(f"sessionlint: {error}", file=sys.stderr)
        diagnostics = result.diagnostics
        if project.baseline is not None and project.settings.baseline is not None and diagnostics and not on_stdin:
            from sessionlint.baseline import fingerprinted, relative

            base = project.settings.baseline.resolve().parent
            mine = project.baseline.for_paths({relative(filename, base)})
            diagnostics, _ = mine.filter(fingerprinted(diagnostics, base, {filename: source}))
        for d in diagnostics:
            if d.code in _INPUT_ERRORS:
                continue  # flake8 reports unparsable files itself (E999/E902)
            yield d.line, d.column - 1, f"{d.code} {d.message}", type(self)
