"""``--format sarif`` and ``--format github``, plus SES001/SES002 in every format.

The SARIF log is validated against the OASIS SARIF 2.1.0 schema kept in
``tests/data`` (see ``tests/data/SARIF-SCHEMA-LICENSE.txt``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fixture_support import FIXTURES
from sessionlint import cli, output, registry
from sessionlint.diagnostics import Diagnostic

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a cross-module finding, an unparsable file and an undecodable one."""
    root = tmp_path / "proj"
    shutil.copytree(FIXTURES / "SES101" / "factory_reexported_from_package", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text("[tool.sessionlint]\n")
    (root / "broken.py").write_text("def f(:\n    pass\n")
    (root / "latin.py").write_bytes(b"x = '\xff'\n")
    return root


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionlint", "check", ".", *args], cwd=project, capture_output=True, text=True, check=False
    )


def json_report(project: Path) -> list[dict[str, Any]]:
    proc = run_cli(project, "--format", "json")
    assert proc.returncode == 2, proc.stderr  # input errors make the status 2
    report: list[dict[str, Any]] = json.loads(proc.stdout)
    return report


# -- SARIF ----------------------------------------------------------------------------


def test_sarif_is_valid_and_matches_the_json_report(project: Path) -> None:
    out = project.parent / "report.sarif"
    proc = run_cli(project, "--format", "sarif", "--output-file", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    log = json.loads(out.read_text(encoding="utf-8"))
    errors = sorted(_validator().iter_errors(log), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)

    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == project.resolve().as_uri() + "/"
    rules = run["tool"]["driver"]["rules"]
    found = set()
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        (location,) = result["locations"]
        artifact = location["physicalLocation"]["artifactLocation"]
        assert artifact["uriBaseId"] == "%SRCROOT%"
        assert not artifact["uri"].startswith(("/", ".", "file:")), artifact["uri"]
        region = location["physicalLocation"]["region"]
        found.add((artifact["uri"], region["startLine"], region["startColumn"], region["endLine"], region["endColumn"], result["ruleId"]))

    expected = {
        (d["path"].removeprefix("./"), d["line"], d["column"], d["end_line"], d["end_column"], d["code"])
        for d in json_report(project)
    }
    assert found == expected
    codes = {f[-1] for f in found}
    assert {"SES001", "SES002", "SES101"} <= codes
    assert ("app/views.py", 12, 15, 12, 29, "SES101") in found


def test_sarif_rule_metadata_comes_from_the_rule_docs(project: Path) -> None:
    log = json.loads(run_cli(project, "--format", "sarif").stdout)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    expected = [r for r in registry.rules().values() if r.status != "removed"]
    assert [r["id"] for r in rules] == [r.code for r in expected]
    for descriptor, rule in zip(rules, expected):
        assert descriptor["name"] == rule.name
        assert descriptor["shortDescription"]["text"] == rule.summary()
        what = " ".join(rule.doc_sections()["What it does"].split())
        assert descriptor["fullDescription"]["text"].startswith(what)
        assert descriptor["help"]["text"] == rule.doc()
        assert descriptor["help"]["markdown"] == rule.doc()
        assert descriptor["defaultConfiguration"]["level"] in {"error", "warning", "note"}
        assert descriptor["defaultConfiguration"]["enabled"] is rule.default_enabled


def test_the_schema_rejects_a_broken_log(project: Path) -> None:
    # The validation above means something only if the schema can fail a log.
    log = json.loads(run_cli(project, "--format", "sarif").stdout)
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    log["runs"][0]["results"][1]["level"] = "fatal"
    log["runs"][0]["tool"]["driver"]["rules"][0]["extra"] = True
    messages = {e.message for e in _validator().iter_errors(log)}
    assert any("0 is less than the minimum of 1" in m for m in messages), messages
    assert any("'fatal' is not one of" in m for m in messages), messages
    assert any("'extra' was unexpected" in m for m in messages), messages


def test_sarif_uris_outside_the_base_and_non_ascii(tmp_path: Path) -> None:
    inside = Diagnostic(str(tmp_path / "base" / "módulo dir" / "x.py"), 3, 1, "SES101", "session-not-closed", "m", 3, 9)
    outside = Diagnostic(str(tmp_path / "elsewhere" / "y.py"), 1, 1, "SES101", "session-not-closed", "m", 1, 5)
    log = json.loads(output.sarif([inside, outside], base_dir=str(tmp_path / "base")))
    assert not list(_validator().iter_errors(log))
    first, second = (r["locations"][0]["physicalLocation"]["artifactLocation"] for r in log["runs"][0]["results"])
    assert first == {"uri": "m%C3%B3dulo%20dir/x.py", "uriBaseId": "%SRCROOT%"}
    assert second == {"uri": (tmp_path / "elsewhere" / "y.py").as_uri()}


def test_sarif_with_no_findings_is_valid(tmp_path: Path) -> None:
    log = json.loads(output.sarif([], base_dir=str(tmp_path)))
    assert not list(_validator().iter_errors(log))
    assert log["runs"][0]["results"] == []


# -- GitHub annotations ---------------------------------------------------------------


def test_github_annotations(project: Path) -> None:
    proc = run_cli(project, "--format", "github")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(json_report(project))
    assert (
        "::error file=app/views.py,line=12,col=15,endLine=12,endColumn=29,"
        "title=SES101 session-not-closed::session `session` is not closed on every path%0A"
    ) in "\n".join(lines)
    assert any(line.startswith("::error file=broken.py,line=1,") and "title=SES001 cannot-parse::" in line for line in lines)
    assert any(line.startswith("::error file=latin.py,line=1,col=1,") and "title=SES002 cannot-read::" in line for line in lines)
    assert all(line.startswith("::error ") and "\r" not in line for line in lines)


def test_github_escaping() -> None:
    d = Diagnostic(
        path="we,ird:dir/100%.py",
        line=7,
        column=3,
        code="SES101",
        name="session-not-closed",
        message="50% of `s`\r\nleaks, see: here",
        end_line=8,
        end_column=1,
    )
    assert output.github([d], base_dir="/nonexistent-base") == (
        "::error file=we%2Cird%3Adir/100%25.py,line=7,col=3,endLine=8,endColumn=1,"
        "title=SES101 session-not-closed::50%25 of `s`%0D%0Aleaks, see: here\n"
    )


def test_github_hint_on_a_second_line() -> None:
    d = Diagnostic("a.py", 1, 1, "SES101", "session-not-closed", "never closed", 1, 4, hint="use with")
    assert output.github([d], base_dir=".").endswith("::never closed%0Ause with\n")


# -- every format ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(output.FORMATS))
def test_input_errors_appear_in_every_format(project: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    out = project.parent / f"report.{fmt}"
    status = cli.main(["check", ".", "--format", fmt, "--output-file", str(out)])
    assert status == 2
    text = out.read_text(encoding="utf-8")
    for code in ("SES001", "SES002", "SES101"):
        assert code in text, (fmt, code)
    assert "broken.py" in text and "latin.py" in text
