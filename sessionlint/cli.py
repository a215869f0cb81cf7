"""``sessionlint check | rules | explain``: the command-line adapter.

Exit status: 0 clean, 1 findings, 2 usage error, unreadable input or internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sessionlint import __version__

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
