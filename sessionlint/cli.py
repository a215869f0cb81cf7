"""``sessionlint check | rules | explain``: the command-line adapter.

Exit status: 0 clean, 1 findings, 2 usage error, unreadable input or internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sessionlint import __version__

if TYPE_CHECKING:
    from sessionlint.diagnostics import Diagnostic

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"sessionlint: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def _parser() -> argparse.ArgumentParser:
    from sessionlint.output import FORMATS

    parser = _Parser(prog="sessionlint", description="Find SQLAlchemy session, connection and pool misuse.")
    parser.add_argument("--version", action="version", version=f"sessionlint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser("check", help="check Python files (default: the current directory)")
    check.add_argument("paths", nargs="*", metavar="PATH", help="files or directories; '-' reads standard input")
    check.add_argument("--select", metavar="CODES", help="comma-separated codes or prefixes to enable (e.g. SES1,SES201)")
    check.add_argument("--ignore", metavar="CODES", help="comma-separated codes or prefixes to disable")
    check.add_argument("--format", choices=sorted(FORMATS), default="text", help="output format (default: text)")
    check.add_argument("--output-file", metavar="PATH", help="write the report here instead of standard output")
    check.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    check.add_argument("--statistics", action="store_true", help="print the number of findings per code")
    check.add_argument("--stdin-filename", metavar="PATH", help="the path of the file read from standard input")
    check.add_argument("--config", metavar="PYPROJECT", help="read [tool.sessionlint] from this file")
    check.add_argument("--debug", action="store_true", help="show tracebacks of internal errors (one process)")
    check.add_argument(
        "-j", "--jobs", type=_jobs, default=0, metavar="N", help="worker processes (default: all cores)"
    )
    check.add_argument(
        "--no-cache", action="store_true", help="ignore and do not update .sessionlint_cache/"
    )
    fixing = check.add_argument_group("fixing")
    fixing.add_argument("--fix", action="store_true", help="apply safe fixes in place, then report what is left")
    fixing.add_argument("--unsafe-fixes", action="store_true", help="with --fix or --diff: also fixes that may change behaviour")
    fixing.add_argument("--diff", action="store_true", help="print the diff --fix would apply; change nothing (exit 1 if any)")
    adopt = check.add_argument_group("adopting on existing code")
    adopt.add_argument(
        "--baseline", metavar="FILE", help="report only findings not in this baseline (default: [tool.sessionlint] baseline)"
    )
    adopt.add_argument(
        "--write-baseline", metavar="FILE", help="write the current findings to this baseline file and report nothing"
    )
    adopt.add_argument(
        "--no-baseline", action="store_true", help="ignore the configured baseline: report every finding"
    )
    adopt.add_argument(
        "--add-noqa", action="store_true", help="append `# noqa: SESxxx` to every line with a finding"
    )

    rules = sub.add_parser("rules", help="list every rule")
    rules.add_argument(
        "--format",
        choices=("text", "table", "markdown"),
        default="text",
        help="text (default), a markdown table, or the full markdown rule reference",
    )
    explain = sub.add_parser("explain", help="show a rule's documentation")
    explain.add_argument("code", metavar="CODE", help="a code (SES101) or name (session-not-closed)")
    return parser


def _jobs(value: str) -> int:
    try:
        jobs = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {value!r}") from None
    if jobs < 0:
        raise argparse.ArgumentTypeError("expected 0 (all cores) or more")
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_ERROR
    if args.command == "rules":
        return _rules(args.format)
    if args.command == "explain":
        return _explain(args.code)
    try:
        return _check(args)
    except BrokenPipeError:
        return EXIT_CLEAN
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place an unexpected error becomes exit status 2
        if args.debug:
            raise
        print(f"sessionlint: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
        return EXIT_ERROR


def _rules(fmt: str = "text") -> int:
    from sessionlint import docs
    from sessionlint.registry import all_codes

    if fmt != "text":
        sys.stdout.write(docs.rules_table() if fmt == "table" else docs.rules_markdown())
        return EXIT_CLEAN
    for info in all_codes().values():
        print(f"{info.code}  {info.name:<32} {info.kind:<8} {info.summary}")
    return EXIT_CLEAN


def _explain(code: str) -> int:
    from sessionlint.registry import lookup

    info = lookup(code)
    if info is None:
        print(f"sessionlint: unknown rule '{code}' (see `sessionlint rules`)", file=sys.stderr)
        return EXIT_ERROR
    print(f"# {info.code} {info.name} ({info.kind})\n")
    print(info.doc)
    return EXIT_CLEAN


def _check(args: argparse.Namespace) -> int:
    from sessionlint import output, registry
    from sessionlint.config import ConfigError, parse_codes
    from sessionlint.discovery import discover
    from sessionlint.diagnostics import FileResult, input_error
    from sessionlint.runner import RunOptions, build_index, check_files, project_settings
    from sessionlint.sources import decode_source

    paths: list[str] = list(args.paths) or ["."]
    reading_stdin = paths == ["-"]
    if "-" in paths and not reading_stdin:
        print("sessionlint: error: '-' (standard input) cannot be combined with other paths", file=sys.stderr)
        return EXIT_ERROR
    anchor = [args.stdin_filename] if reading_stdin and args.stdin_filename else paths
    for flag, clash in (
        ("--fix", "--diff"),
        ("--fix", "--add-noqa"),
        ("--diff", "--add-noqa"),
        ("--fix", "--write-baseline"),
        ("--diff", "--write-baseline"),
        ("--add-noqa", "--write-baseline"),
        ("--baseline", "--no-baseline"),
        ("--write-baseline", "--baseline"),
    ):
        if getattr(args, flag[2:].replace("-", "_")) and getattr(args, clash[2:].replace("-", "_")):
            print(f"sessionlint: error: {flag} cannot be combined with {clash}", file=sys.stderr)
            return EXIT_ERROR
    for flag in ("add_noqa", "fix"):
        if reading_stdin and getattr(args, flag):
            option = "--" + flag.replace("_", "-")
            print(f"sessionlint: error: {option} rewrites files; it cannot rewrite standard input (try --diff)", file=sys.stderr)
            return EXIT_ERROR
    try:
        settings = project_settings(anchor, args.config)
        overrides = {}
        if args.select is not None:
            overrides["select"] = parse_codes(args.select, "--select")
        if args.ignore is not None:
            overrides["ignore"] = parse_codes(args.ignore, "--ignore")
        settings = settings.with_overrides(**overrides)
        where = str(settings.config_path) if settings.config_path else "defaults"
        registry.validate_codes(settings.select, f"{where}: select" if "select" not in overrides else "--select")
        registry.validate_codes(settings.ignore, f"{where}: ignore" if "ignore" not in overrides else "--ignore")
        for _glob, codes in settings.per_file_ignores:
            registry.validate_codes(codes, f"{where}: per-file-ignores")
    except ConfigError as exc:
        print(f"sessionlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR

    status_error = False
    diagnostics = []
    errors: list[str] = []
    sources: dict[str, str] = {}  # text already read (stdin), for baseline fingerprints
    if reading_stdin:
        from sessionlint.engine import Checker

        display = args.stdin_filename or "-"
        index = build_index(settings, [display] if args.stdin_filename else [])
        checker = Checker(settings, index, debug=args.debug)
        try:
            source = decode_source(sys.stdin.buffer.read())
        except Exception as exc:
            result = FileResult(display, [input_error("SES002", display, 1, 1, str(exc))])
        else:
            result = checker.check_source(source, display, index_path=os.path.abspath(display))
            sources[display] = source
        results = [result]
    else:
        files, missing, empty = discover(paths, settings.root, (*settings.exclude, *settings.extend_exclude))
        options = RunOptions(jobs=args.jobs, use_cache=not args.no_cache, debug=args.debug)
        results = check_files(settings, files, options)
        for path, reason in missing:
            results.append(FileResult(path, [input_error("SES002", path, 1, 1, reason)]))
        for path in empty:
            errors.append(f"sessionlint: no Python files found under '{path}'")
            status_error = True
    for result in results:
        diagnostics.extend(result.diagnostics)
        errors.extend(result.errors)
        status_error = status_error or result.has_input_error or bool(result.errors)
    diagnostics.sort(key=lambda d: (d.path, d.line, d.column, d.code))

    checked = [r.path for r in results]
    if args.write_baseline:
        return _write_baseline(Path(args.write_baseline), diagnostics, sources, checked, status_error)
    baseline_path = None if args.no_baseline else (Path(args.baseline) if args.baseline else settings.baseline)
    baseline = None
    if baseline_path is not None:
        from sessionlint.baseline import Baseline, BaselineError, fingerprinted, relative

        try:
            baseline = Baseline.load(baseline_path)
        except BaselineError as exc:
            print(f"sessionlint: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        base = baseline_path.resolve().parent
        diagnostics, absorbed = baseline.filter(fingerprinted(diagnostics, base, sources))
        stale = baseline.unmatched({relative(path, base) for path in checked})
        if absorbed or stale:
            summary = f"sessionlint: {absorbed} finding{'s' * (absorbed != 1)} in the baseline not shown"
            if stale:
                summary += (
                    f"; {stale} baseline {'entries no longer match' if stale != 1 else 'entry no longer matches'} any finding"
                    f" (rewrite {baseline_path} with --write-baseline to prune)"
                )
            errors.insert(0, summary)
    if args.add_noqa:
        return _add_noqa(diagnostics, errors, status_error)
    if args.fix or args.diff:
        from sessionlint.fixer import FixRequest, run_fixes

        base_dir = baseline_path.resolve().parent if baseline_path is not None else None
        request = FixRequest(settings, baseline, base_dir, args.unsafe_fixes, write=args.fix, sources=sources)
        outcome = run_fixes(request, diagnostics, checked)
        errors[:0] = outcome.errors
        status_error = status_error or bool(outcome.errors)
        if args.diff:
            sys.stdout.write(outcome.diff)
            for error in errors:
                print(error, file=sys.stderr)
            print(outcome.summary, file=sys.stderr)
            return EXIT_ERROR if status_error else (EXIT_FINDINGS if outcome.diff else EXIT_CLEAN)
        diagnostics = outcome.diagnostics
        errors.append(outcome.summary)

    if args.format == "text":
        rendered = output.text(diagnostics, args.unsafe_fixes)
        notice = output.fix_summary(diagnostics, args.unsafe_fixes) if not args.fix else ""
        if notice:
            errors.append(notice)
    else:
        rendered = output.FORMATS[args.format](diagnostics)
    if args.statistics and args.format == "text":
        rendered += output.statistics(diagnostics)
    if args.output_file:
        try:
            with open(args.output_file, "w", encoding="utf-8") as fh:
                fh.write(rendered)
        except OSError as exc:
            print(f"sessionlint: error: cannot write {args.output_file}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    else:
        sys.stdout.write(rendered)
    for error in errors:
        print(error, file=sys.stderr)
    if status_error:
        return EXIT_ERROR
    findings = any(d.code not in ("SES001", "SES002") for d in diagnostics)
    return EXIT_FINDINGS if findings and not args.exit_zero else EXIT_CLEAN


def _write_baseline(path: Path, diagnostics: list[Diagnostic], sources: dict[str, str], checked: list[str], status_error: bool) -> int:
    """``--write-baseline FILE``: the current findings, plus the entries an existing
    FILE has for files this run did not check."""
    from sessionlint.baseline import Baseline, BaselineError, fingerprinted, relative, write

    previous = None
    if path.exists():
        try:
            previous = Baseline.load(path)
        except BaselineError as exc:
            print(f"sessionlint: {exc}; writing a new one", file=sys.stderr)
    findings = [d for d in diagnostics if d.code not in ("SES001", "SES002")]
    root = path.resolve().parent
    try:
        count = write(
            path,
            (entry for _, entry in fingerprinted(findings, root, sources)),
            keep_from=previous,
            replaced={relative(p, root) for p in checked},
        )
    except BaselineError as exc:
        print(f"sessionlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"sessionlint: wrote {count} finding{'s' * (count != 1)} to {path}", file=sys.stderr)
    for d in diagnostics:
        if d.code in ("SES001", "SES002"):
            print(f"{d.path}:{d.line}:{d.column}: {d.code} {d.message}", file=sys.stderr)
    return EXIT_ERROR if status_error else EXIT_CLEAN


def _add_noqa(diagnostics: list[Diagnostic], errors: list[str], status_error: bool) -> int:
    """``--add-noqa``: a ``# noqa: SESxxx`` on each reported line, in place."""
    from sessionlint.rewrite import rewrite_file
    from sessionlint.suppress import add_noqa

    wanted: dict[str, dict[int, set[str]]] = {}
    for d in diagnostics:
        if d.code in ("SES001", "SES002"):
            errors.append(f"{d.path}:{d.line}:{d.column}: {d.code} {d.message}")
        elif d.path != "-":
            wanted.setdefault(d.path, {}).setdefault(d.line, set()).add(d.code)
    added = 0
    for path, lines in sorted(wanted.items()):
        outcome: list[tuple[int, list[int]]] = []  # (lines changed, lines skipped)

        def transform(text: str, lines: dict[int, set[str]] = lines, outcome: list[tuple[int, list[int]]] = outcome) -> str:
            new, changed, skipped = add_noqa(text, lines)
            outcome.append((changed, skipped))
            return new

        done = rewrite_file(path, transform)
        if done.problem or not outcome:
            errors.append(f"sessionlint: {path}: {done.problem}")
            status_error = True
            continue
        changed, skipped = outcome[-1]
        if done.changed:
            added += changed
        for line in skipped:
            errors.append(
                f"sessionlint: {path}:{line}: no `# noqa` added: the line ends inside a string or "
                "before a backslash continuation (use a baseline for it)"
            )
    print(f"sessionlint: added {added} noqa directive{'s' * (added != 1)}", file=sys.stderr)
    for error in errors:
        print(error, file=sys.stderr)
    return EXIT_ERROR if status_error else EXIT_CLEAN


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
