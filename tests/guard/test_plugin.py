"""The pytest plugin, run in real pytest subprocesses: one test per option, ini key and marker argument."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

ENGINE = """
import time
import pytest
import sqlalchemy as sa

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('db')}/app.db")
    yield eng
    eng.dispose()

KEEP = []

def leak(engine):
    conn = engine.connect()
    conn.exec_driver_sql("SELECT 1")
    KEEP.append(conn)

def slow_transaction(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT 1")
        time.sleep(0.05)
"""

LEAKY = ENGINE + """
def test_leak(engine):
    leak(engine)

def test_clean(engine):
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
"""

SLOW = ENGINE + """
def test_slow(engine):
    slow_transaction(engine)
"""

RUN = ("-p", "no:cacheprovider", "-p", "no:randomly")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*RUN, *args)


def test_off_by_default_imports_no_sqlalchemy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys
        def test_nothing_loaded():
            assert "sqlalchemy" not in sys.modules
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*sessionguard*")


def test_enable_on_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*= sessionguard: 1 finding(s) in 1 test(s) or scope(s) (mode warn) =*",
            "test_app.py::test_leak",
            "  SES901 leaked-checkout: connection from sqlite:///*app.db checked out at test_app.py:*in leak*",
            "      test_app.py:*in test_leak",
            "      test_app.py:*in leak",
        ]
    )
    result.stdout.no_fnmatch_line("test_app.py::test_clean")


def test_enable_in_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsessionguard = true\n")
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester)
    result.stdout.fnmatch_lines(["*SES901 leaked-checkout*"])


def test_report_header_shows_mode_and_thresholds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard", "--sessionguard-max-transaction=0.5", "--sessionguard-allow=SES906")
    result.stdout.fnmatch_lines(["sessionguard: mode=warn, max-transaction=0.5s, allow=SES906, report=none"])


def test_mode_fail_errors_at_teardown_and_keeps_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app=ENGINE
        + """
def test_leak(engine):
    leak(engine)

def test_leak_and_fail(engine):
    leak(engine)
    assert False, "the test's own failure"

def test_clean(engine):
    pass
"""
    )
    result = run(pytester, "--sessionguard", "--sessionguard-mode=fail")
    result.assert_outcomes(passed=2, failed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leak*",
            "sessionguard found 1 problem(s) for test_app.py::test_leak:",
            "  SES901 leaked-checkout*",
            "    fix: Close what you open*",
            "*the test's own failure*",
            "FAILED test_app.py::test_leak_and_fail*",
            "ERROR test_app.py::test_leak_and_fail*",
        ]
    )
    assert result.ret == 1


def test_mode_fail_in_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsessionguard = true\nsessionguard_mode = fail\n")
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)


def test_mode_off_disables(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard", "--sessionguard-mode=off")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*SES901*")


def test_cli_mode_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsessionguard = true\nsessionguard_mode = fail\n")
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard-mode=warn")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*(mode warn)*"])


def test_max_transaction_on_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=SLOW)
    result = run(pytester, "--sessionguard", "--sessionguard-max-transaction=0.01")
    result.stdout.fnmatch_lines(["  SES902 long-transaction: Core transaction begun at test_app.py:*(threshold 0.01 s)*"])


def test_max_transaction_in_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsessionguard = true\nsessionguard_max_transaction = 10ms\n")
    pytester.makepyfile(test_app=SLOW)
    result = run(pytester)
    result.stdout.fnmatch_lines(["*SES902 long-transaction*(threshold 0.01 s)*"])


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("cli", "*sessionguard: bad max-transaction '5x' from command line*"),
        ("ini", "*sessionguard: bad max-transaction '5x' from ini*"),
    ],
)
def test_bad_max_transaction_names_its_source(pytester: pytest.Pytester, where: str, expected: str) -> None:
    pytester.makepyfile(test_app=LEAKY)
    if where == "ini":
        pytester.makeini("[pytest]\nsessionguard = true\nsessionguard_max_transaction = 5x\n")
        result = run(pytester)
    else:
        result = run(pytester, "--sessionguard", "--sessionguard-max-transaction=5x")
    result.stderr.fnmatch_lines([expected])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_mode_names_its_source(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard", "--sessionguard-mode=loud")
    result.stderr.fnmatch_lines(["*bad mode 'loud' from command line: expected one of off, warn, fail*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_allow_on_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard", "--sessionguard-allow=SES901")
    result.stdout.fnmatch_lines(["*sessionguard: no findings*"])


def test_allow_in_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsessionguard = true\nsessionguard_allow = SES901, SES907\n")
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester)
    result.stdout.fnmatch_lines(["*sessionguard: no findings*"])


def test_bad_allow_code(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "--sessionguard", "--sessionguard-allow=SES999")
    result.stderr.fnmatch_lines(["*bad allow code 'SES999' from command line*"])


def test_report_file_on_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    run(pytester, "--sessionguard", "--sessionguard-report=out/guard.json")
    data = json.loads((pytester.path / "out" / "guard.json").read_text())
    assert len(data) == 1
    finding = data[0]
    assert {"code", "name", "nodeid", "message", "stack"} <= set(finding)
    assert (finding["code"], finding["name"], finding["nodeid"]) == ("SES901", "leaked-checkout", "test_app.py::test_leak")
    assert finding["stack"][-1].startswith("test_app.py:") and finding["stack"][-1].endswith(" in leak")
    assert finding["stack"][-2].endswith(" in test_leak")  # innermost last


def test_report_file_in_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsessionguard = true\nsessionguard_report = guard.json\n")
    pytester.makepyfile(test_app=LEAKY)
    run(pytester)
    data = json.loads((pytester.path / "guard.json").read_text())
    assert [d["code"] for d in data] == ["SES901"]


def test_report_file_written_empty_when_clean(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=ENGINE + "\ndef test_ok(engine):\n    pass\n")
    run(pytester, "--sessionguard", "--sessionguard-report=guard.json")
    assert json.loads((pytester.path / "guard.json").read_text()) == []


def test_marker_max_transaction(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app=ENGINE
        + """
@pytest.mark.sessionguard(max_transaction=0.01)
def test_strict(engine):
    slow_transaction(engine)

@pytest.mark.sessionguard(max_transaction=1000)
def test_patient(engine):
    slow_transaction(engine)
"""
    )
    result = run(pytester, "--sessionguard", "--sessionguard-max-transaction=0.01")
    result.stdout.fnmatch_lines(["test_app.py::test_strict", "  SES902 long-transaction*"])
    result.stdout.no_fnmatch_line("test_app.py::test_patient")


def test_marker_allow(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app=ENGINE
        + """
@pytest.mark.sessionguard(allow=["SES901"])
def test_leak_on_purpose(engine):
    leak(engine)

def test_leak(engine):
    leak(engine)
"""
    )
    result = run(pytester, "--sessionguard")
    result.stdout.fnmatch_lines(["*1 finding(s) in 1 test(s)*", "test_app.py::test_leak"])
    result.stdout.no_fnmatch_line("test_app.py::test_leak_on_purpose")


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("max_transaction='soon'", "*bad max-transaction 'soon' from marker on test_app.py::test_marked*"),
        ("alow=['SES901']", "*bad sessionguard marker from marker on test_app.py::test_marked*unexpected keyword*alow*"),
        ("allow=['SES123']", "*bad allow code 'SES123' from marker on test_app.py::test_marked*"),
    ],
)
def test_bad_marker_is_an_error_naming_the_test(pytester: pytest.Pytester, marker: str, expected: str) -> None:
    pytester.makepyfile(test_app=ENGINE + f"\n@pytest.mark.sessionguard({marker})\ndef test_marked(engine):\n    pass\n")
    result = run(pytester, "--sessionguard")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([expected])


def test_marker_is_registered_when_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app="import pytest\n@pytest.mark.sessionguard(allow=['SES901'])\ndef test_x():\n    pass\n")
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(passed=1)


def test_module_fixture_leak_is_blamed_on_the_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app=ENGINE
        + """
@pytest.fixture(scope="module")
def shared_conn(engine):
    conn = engine.connect()
    conn.exec_driver_sql("SELECT 1")
    yield conn
    # never closed

@pytest.fixture(scope="module")
def shared_session(engine):
    from sqlalchemy.orm import Session
    with Session(engine) as session:
        yield session   # closed at module end: fine

def test_first(shared_conn, shared_session):
    shared_session.execute(__import__("sqlalchemy").text("SELECT 1"))  # lazy checkout during a test

def test_second(shared_conn, shared_session):
    pass
"""
    )
    result = run(pytester, "--sessionguard", "--sessionguard-report=guard.json")
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "guard.json").read_text())
    assert [(d["code"], d["nodeid"], d["scope"], d["fixture"]) for d in data] == [
        ("SES901", "test_app.py", "module", "shared_conn")
    ]
    result.stdout.fnmatch_lines(["test_app.py", "  SES901 leaked-checkout [[]module fixture 'shared_conn'[]]*"])


def test_xdist_summary_appears_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one=LEAKY,
        test_two=ENGINE + "\ndef test_leak_two(engine):\n    leak(engine)\n\ndef test_ok(engine):\n    pass\n",
    )
    result = run(pytester, "-n", "2", "--sessionguard", "--sessionguard-report=guard.json")
    result.assert_outcomes(passed=4)
    summaries = [line for line in result.outlines if "sessionguard: 2 finding(s)" in line]
    assert len(summaries) == 1
    result.stdout.fnmatch_lines_random(["test_one.py::test_leak", "test_two.py::test_leak_two"])
    data = json.loads((pytester.path / "guard.json").read_text())
    assert sorted(d["nodeid"] for d in data) == ["test_one.py::test_leak", "test_two.py::test_leak_two"]


def test_xdist_fail_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=LEAKY)
    result = run(pytester, "-n", "2", "--sessionguard", "--sessionguard-mode=fail")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*sessionguard found 1 problem(s) for test_app.py::test_leak*"])
