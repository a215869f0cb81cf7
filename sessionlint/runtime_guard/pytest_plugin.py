"""pytest adapter of the runtime guard (entry point `pytest11: sessionguard`).

Off unless enabled with `--sessionguard` or the ini key `sessionguard = true`.
While off, this module registers options and the marker only, and imports no
SQLAlchemy: the tracker is imported in `pytest_configure` when enabled.

Lifecycle, in hook order (the numbers are referred to below):

1. `pytest_addoption`: options and ini keys, one help constant each.
2. `pytest_configure`: register the marker, resolve settings (marker > CLI >
   ini > default; errors name the source), install a `Tracker` and register
   `GuardPlugin`, which carries every other hook, so an off guard costs nothing.
3. `pytest_runtest_setup` (wrapper): begin the test's scope *before* fixtures
   are set up, with the marker's thresholds.
4. `pytest_fixture_setup` (wrapper): while a module/class/package/session
   fixture sets up, its own scope is active, so what it checks out is its own.
5. `pytest_fixture_post_finalizer`: a long-lived fixture's scope is checked
   once that fixture is torn down.
6. `pytest_runtest_teardown` (wrapper): after `yield` the test's fixtures are
   torn down; check the test's scope, handing over what live long-lived
   fixtures hold; in fail mode raise, which makes the teardown an error and
   keeps any earlier failure of the test.
7. `pytest_runtest_makereport` (wrapper): attach findings to the teardown
   report (`report.sessionguard`), which pytest-xdist serializes to the
   controller.
8. `pytest_runtest_logreport`: the process that prints (controller or the only
   process) collects findings from reports.
9. `pytest_sessionfinish` (trylast, after session fixtures are torn down): ask
   the servers for open transactions, check the run's root scope; workers send
   those findings through `workeroutput`; the printing process writes the
   JSON report.
10. `pytest_terminal_summary`: one section, findings grouped by test.
11. `pytest_unconfigure`: uninstall the tracker.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sessionlint.runtime_guard.codes import CODES_BY_ID
from sessionlint.runtime_guard.settings import (
    DEFAULT_MAX_TRANSACTION,
    DEFAULT_MODE,
    GuardConfigError,
    parse_codes,
    parse_mode,
    parse_seconds,
)

if TYPE_CHECKING:
    from sessionlint.runtime_guard.tracker import Finding, Scope, Tracker

HELP_ENABLE = "enable the SQLAlchemy runtime guard (sessionlint): report leaked checkouts, long transactions, ..."
HELP_MODE = "warn: report findings in a summary (default); fail: a test with findings errors at teardown; off"
HELP_MAX_TRANSACTION = f"seconds a transaction may stay open before SES902 (default {DEFAULT_MAX_TRANSACTION:g})"
HELP_ALLOW = "comma-separated runtime codes not to report, e.g. SES906,SES907"
HELP_REPORT = "write the guard's findings as a JSON array to PATH"
HELP_INI_ENABLE = "enable the SQLAlchemy runtime guard (same as --sessionguard)"
HELP_INI_MODE = "sessionguard mode: warn, fail or off"
HELP_INI_MAX_TRANSACTION = "sessionguard SES902 threshold in seconds"
HELP_INI_ALLOW = "runtime codes the sessionguard does not report"
HELP_INI_REPORT = "path of the sessionguard JSON report"
MARKER_LINE = (
    "sessionguard(max_transaction=None, allow=()): per-test thresholds of the runtime guard; "
    "allow lists codes not reported for this test"
)

SESSION_NODEID = "<session>"
_PLUGIN_NAME = "sessionguard-active"
_SUMMARY_FRAMES = 8


class SessionGuardFailure(Exception):
    """Raised at teardown in fail mode; its text lists every finding and its fix."""


@dataclass(frozen=True)
class Options:
    enabled: bool
    mode: str
    max_transaction: float
    allow: frozenset[str]
    report: str | None
    sources: dict[str, str] = field(default_factory=dict)


def _ini(config: pytest.Config, name: str) -> Any:
    value = config.getini(name)
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, list) and not value:
        return None
    return value


def resolve_options(config: pytest.Config) -> Options:
    """CLI over ini over default; every error names where the value came from."""
    sources: dict[str, str] = {}

    def pick(option: str, ini_name: str) -> tuple[Any, str]:
        value = config.getoption(option)
        if value is not None:
            return value, "command line"
        value = _ini(config, ini_name)
        if value is not None:
            return value, "ini"
        return None, "default"

    enabled_cli = config.getoption("sessionguard")
    enabled = bool(enabled_cli) or bool(config.getini("sessionguard"))
    sources["enabled"] = "command line" if enabled_cli else ("ini" if enabled else "default")

    raw, source = pick("sessionguard_mode", "sessionguard_mode")
    mode = DEFAULT_MODE if raw is None else parse_mode(raw, source=source)
    sources["mode"] = source
    if mode == "off":
        enabled = False

    raw, source = pick("sessionguard_max_transaction", "sessionguard_max_transaction")
    max_tx = (
        DEFAULT_MAX_TRANSACTION if raw is None else parse_seconds(raw, setting="max-transaction", source=source)
    )
    sources["max_transaction"] = source

    raw, source = pick("sessionguard_allow", "sessionguard_allow")
    allow = frozenset() if raw is None else parse_codes(raw, setting="allow", source=source)
    sources["allow"] = source

    raw, source = pick("sessionguard_report", "sessionguard_report")
    report = None if raw is None else str(raw)
    sources["report"] = source
    return Options(enabled, mode, max_tx, allow, report, sources)


def _marker_signature(max_transaction: float | int | str | None = None, allow: Sequence[str] | str = ()) -> None:
    """The marker's signature; calling it validates the marker's arguments."""


def marker_settings(item: pytest.Item, options: Options) -> tuple[float, frozenset[str]]:
    """(max_transaction, allow) for a test: marker over CLI/ini/default."""
    mark = item.get_closest_marker("sessionguard")
    if mark is None:
        return options.max_transaction, options.allow
    source = f"marker on {item.nodeid}"
    try:
        _marker_signature(*mark.args, **mark.kwargs)
    except TypeError as exc:
        raise GuardConfigError(f"bad sessionguard marker from {source}: {exc}") from None
    bound: dict[str, Any] = dict(zip(("max_transaction", "allow"), mark.args))
    bound.update(mark.kwargs)
    max_tx = options.max_transaction
    if bound.get("max_transaction") is not None:
        max_tx = parse_seconds(bound["max_transaction"], setting="max-transaction", source=source)
    allow = options.allow
    if "allow" in bound:
        allow = parse_codes(bound["allow"], setting="allow", source=source)
    return max_tx, allow


# -- 1. options -----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sessionguard", "SQLAlchemy runtime guard (sessionlint)")
    group.addoption("--sessionguard", action="store_true", default=None, help=HELP_ENABLE)
    group.addoption("--sessionguard-mode", default=None, metavar="MODE", help=HELP_MODE)
    group.addoption("--sessionguard-max-transaction", default=None, metavar="SECONDS", help=HELP_MAX_TRANSACTION)
    group.addoption("--sessionguard-allow", default=None, metavar="CODES", help=HELP_ALLOW)
    group.addoption("--sessionguard-report", default=None, metavar="PATH", help=HELP_REPORT)
    parser.addini("sessionguard", HELP_INI_ENABLE, type="bool", default=False)
    parser.addini("sessionguard_mode", HELP_INI_MODE, default="")
    parser.addini("sessionguard_max_transaction", HELP_INI_MAX_TRANSACTION, default="")
    parser.addini("sessionguard_allow", HELP_INI_ALLOW, default="")
    parser.addini("sessionguard_report", HELP_INI_REPORT, default="")


# -- 2. configure ------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)
    try:
        options = resolve_options(config)
    except GuardConfigError as exc:
        raise pytest.UsageError(f"sessionguard: {exc}") from None
    if not options.enabled:
        return
    is_worker = hasattr(config, "workerinput")
    is_controller = not is_worker and getattr(config.option, "dist", "no") != "no"
    tracker: Tracker | None = None
    if not is_controller:
        # Imported only now: an off guard must not import SQLAlchemy.
        from sessionlint.runtime_guard.settings import GuardSettings
        from sessionlint.runtime_guard.tracker import Tracker

        tracker = Tracker(GuardSettings(max_transaction=options.max_transaction, allow=options.allow))
        try:
            from pluggy import _callers
        except ImportError:  # pragma: no cover - pluggy moved its internals
            pass
        else:
            multicall = getattr(_callers, "_multicall", None)
            if multicall is not None:
                # Frames above pluggy's hook caller are pytest's own.
                tracker.stop_stacks_at(multicall)
        tracker.install()
    config.pluginmanager.register(GuardPlugin(config, options, tracker, is_worker=is_worker), _PLUGIN_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if isinstance(plugin, GuardPlugin):
        plugin.close()
        config.pluginmanager.unregister(plugin, _PLUGIN_NAME)


@dataclass
class _FixtureScope:
    scope: Scope
    nodeid: str
    kind: str
    name: str
    value: Any = None


_TEST_SCOPE = pytest.StashKey["Scope"]()
_TEST_FINDINGS = pytest.StashKey[list[dict[str, Any]]]()


class GuardPlugin:
    """Every hook of an enabled guard; registered only when enabled."""

    def __init__(self, config: pytest.Config, options: Options, tracker: Tracker | None, *, is_worker: bool) -> None:
        self.config = config
        self.options = options
        self.tracker = tracker
        self.is_worker = is_worker
        self.collected: list[dict[str, Any]] = []
        self.internal_errors: list[str] = []
        self._fixtures: dict[int, _FixtureScope] = {}
        self._pending: list[dict[str, Any]] = []
        self._root = str(config.rootpath)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.uninstall()

    def _dicts(self, findings: Sequence[Finding], nodeid: str, kind: str, fixture: str | None) -> list[dict[str, Any]]:
        out = []
        for finding in findings:
            data = finding.to_dict(cwd=self._root)
            data.update(nodeid=nodeid, scope=kind, fixture=fixture)
            out.append(data)
        return out

    # -- 4. report header ------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        opts = self.options
        allow = ",".join(sorted(opts.allow)) or "none"
        return [
            f"sessionguard: mode={opts.mode}, max-transaction={opts.max_transaction:g}s, allow={allow}, "
            f"report={opts.report or 'none'}"
        ]

    # -- 3. test scope ---------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        error: str | None = None
        if self.tracker is not None:
            try:
                max_tx, allow = marker_settings(item, self.options)
            except GuardConfigError as exc:
                error = f"sessionguard: {exc}"
                max_tx, allow = self.options.max_transaction, self.options.allow
            item.stash[_TEST_SCOPE] = self.tracker.begin_scope(
                item.nodeid, max_transaction=max_tx, allow=allow, kind="function"
            )
        result = yield
        if error is not None:
            # Failing after `yield`: other plugins' setup wrappers have run, so
            # their teardown finds what they expect.
            pytest.fail(error, pytrace=False)
        return result

    # -- 4. long-lived fixtures -----------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Generator[
        None, object, object
    ]:
        kind = fixturedef.scope
        if self.tracker is None or kind == "function":
            return (yield)
        nodeid = request.node.nodeid or SESSION_NODEID
        scope = self.tracker.begin_scope(f"{kind} fixture {fixturedef.argname!r} ({nodeid})", kind=kind)
        entry = _FixtureScope(scope, nodeid, kind, fixturedef.argname)
        self._fixtures[id(fixturedef)] = entry
        try:
            value = yield
        finally:
            self.tracker.deactivate(scope)
        entry.value = value
        return value

    # -- 5. -------------------------------------------------------------------------

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
        entry = self._fixtures.pop(id(fixturedef), None)
        if entry is None or self.tracker is None:
            return
        findings = self.tracker.end_scope(entry.scope, handover=self._handover())
        self._pending.extend(self._dicts(findings, entry.nodeid, entry.kind, entry.name))

    def _handover(self) -> list[tuple[object, Scope]]:
        return [(entry.value, entry.scope) for entry in self._fixtures.values() if entry.value is not None]

    # -- 6. check after the test's fixtures are torn down ---------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
        try:
            result = yield
        except BaseException:
            self._check(item)
            raise
        found = self._check(item)
        if found and self.options.mode == "fail":
            raise SessionGuardFailure(_failure_text(item.nodeid, found))
        return result

    def _check(self, item: pytest.Item) -> list[dict[str, Any]]:
        scope = item.stash.get(_TEST_SCOPE, None)
        if self.tracker is None or scope is None:
            return []
        findings = self.tracker.end_scope(scope, handover=self._handover())
        found = self._dicts(findings, item.nodeid, "function", None) + self._pending
        self._pending = []
        item.stash[_TEST_FINDINGS] = found
        return found

    # -- 7. --------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, pytest.TestReport, pytest.TestReport
    ]:
        report = yield
        if call.when == "teardown":
            found = item.stash.get(_TEST_FINDINGS, None)
            if found:
                report.sessionguard = found  # type: ignore[attr-defined]
            if call.excinfo is not None and isinstance(call.excinfo.value, SessionGuardFailure):
                report.longrepr = str(call.excinfo.value)
        return report

    # -- 8. ----------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        found = getattr(report, "sessionguard", None)
        if isinstance(found, list):
            self.collected.extend(d for d in found if isinstance(d, dict))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist controller: a worker finished; take its run-level findings."""
        output = getattr(node, "workeroutput", None) or {}
        data = output.get("sessionguard")
        if data:
            payload = json.loads(data)
            self.collected.extend(payload.get("findings", []))
            self.internal_errors.extend(payload.get("errors", []))

    # -- 9. -------------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run_level: list[dict[str, Any]] = []
        if self.tracker is not None:
            findings = self.tracker.end_run()
            run_level = self._dicts(findings, SESSION_NODEID, "run", None)
            errors = list(self.tracker.errors)
            if self.is_worker:
                workeroutput = getattr(session.config, "workeroutput", None)
                if workeroutput is not None:
                    workeroutput["sessionguard"] = json.dumps({"findings": run_level, "errors": errors})
                return
            self.collected.extend(run_level)
            self.internal_errors.extend(errors)
        if self.is_worker:
            return
        if self.options.report:
            path = Path(self.options.report)
            if not path.is_absolute():
                path = Path(session.config.invocation_params.dir) / path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.collected, indent=2) + "\n", encoding="utf-8")
        if self.options.mode == "fail" and self.collected and session.exitstatus == 0:
            # Findings outside any test (run level) fail the run too.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # -- 10. -------------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if self.is_worker:
            return
        write_summary(terminalreporter, self.collected, self.internal_errors, self.options.mode)


def _failure_text(nodeid: str, found: Sequence[dict[str, Any]]) -> str:
    lines = [f"sessionguard found {len(found)} problem(s) for {nodeid}:"]
    for data in found:
        where = "" if data["nodeid"] == nodeid else f" [{data['scope']} fixture {data['fixture']!r}, {data['nodeid']}]"
        lines.append(f"  {data['code']} {data['name']}{where}: {data['message']}")
        for frame in data["stack"][-_SUMMARY_FRAMES:]:
            lines.append(f"      {frame}")
        code = CODES_BY_ID.get(data["code"])
        if code is not None:
            lines.append(f"    fix: {_how_to_fix(code.doc)}")
    lines.append("(sessionguard mode 'fail'; use --sessionguard-mode=warn to only report)")
    return "\n".join(lines)


def _how_to_fix(doc: str) -> str:
    marker = "## How to fix"
    text = doc.split(marker, 1)[1] if marker in doc else doc
    first = text.strip().split("\n\n", 1)[0]
    return " ".join(first.split())


def write_summary(tr: Any, found: Sequence[dict[str, Any]], errors: Sequence[str], mode: str) -> None:
    """The terminal summary: findings grouped by test, each with its trimmed stack."""
    if not found and not errors:
        tr.write_sep("=", "sessionguard: no findings", green=True)
        return
    by_node: dict[str, list[dict[str, Any]]] = {}
    for data in found:
        by_node.setdefault(str(data.get("nodeid", "")), []).append(data)
    title = f"sessionguard: {len(found)} finding(s) in {len(by_node)} test(s) or scope(s) (mode {mode})"
    tr.write_sep("=", title, yellow=mode != "fail", red=mode == "fail")
    for nodeid, items in by_node.items():
        tr.write_line(nodeid)
        for data in items:
            where = f" [{data['scope']} fixture {data['fixture']!r}]" if data.get("fixture") else ""
            tr.write_line(f"  {data['code']} {data['name']}{where}: {data['message']}")
            for frame in data.get("stack", [])[-_SUMMARY_FRAMES:]:
                tr.write_line(f"      {frame}")
    for error in errors:
        tr.write_line(error)

