"""Check files: read, parse once, one batched visit of every enabled rule, noqa.

Adapters (CLI, flake8, pre-commit) call :class:`Checker`; they translate, never analyse.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence

import libcst as cst
from libcst.metadata import CodePosition, CodeRange, MetadataWrapper, PositionProvider

from sessionlint import registry
from sessionlint.analysis import calls, walk
from sessionlint.analysis.context import FileContext
from sessionlint.analysis.project import ProjectIndex, null_byte_problem, syntax_problem
from sessionlint.analysis.relevance import Relevance
from sessionlint.analysis.walk import children
from sessionlint.config import Settings
from sessionlint.diagnostics import Diagnostic, FileResult, Fix, input_error
from sessionlint.fixes import compiles, line_edits
from sessionlint.sources import SourceError, decode_source
from sessionlint.rules.base import FixSpec, Report, Rule
from sessionlint.suppress import is_suppressed, noqa_lines


def syntax_error(source: str, error: cst.ParserSyntaxError) -> tuple[int, int, str]:
    """Line, column (1-based) and message for a file that does not parse."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        line = exc.lineno or 1
        col = exc.offset or 1
        return line, col, exc.msg
    except (ValueError, RecursionError) as exc:  # null bytes, absurd nesting
        return 1, 1, str(exc)
    return error.raw_line, error.raw_column + 1, error.message.splitlines()[0]


# Where a compound statement can be: statements and the suites and clauses holding them.
_STATEMENT_HOLDERS = (
    cst.BaseStatement, cst.BaseSuite, cst.ExceptHandler, cst.ExceptStarHandler, cst.Else, cst.Finally, cst.MatchCase,
)

_HOLDS: dict[type, bool] = {}


def _holds_statements(kind: type) -> bool:
    found = _HOLDS.get(kind)
    if found is None:
        found = _HOLDS[kind] = issubclass(kind, _STATEMENT_HOLDERS)
    return found


def _parse(source: str) -> cst.Module:
    """``cst.parse_module`` without LibCST's per-node validation. Every node built
    runs ``CSTNode.__post_init__`` -> ``_validate()``, which checks invariants that
    matter for trees built by hand (codemods); a tree the parser built from valid
    source satisfies them, and checking costs a fifth of the parse. Switched off
    only for the duration of the call (the engine is single-threaded)."""
    from libcst._nodes.base import CSTNode

    validate = CSTNode.__dict__.get("__post_init__")
    if validate is None:  # another LibCST layout: parse as is
        return cst.parse_module(source)
    CSTNode.__post_init__ = _no_validation  # type: ignore[method-assign]
    try:
        return cst.parse_module(source)
    finally:
        CSTNode.__post_init__ = validate  # type: ignore[method-assign]


def newer_syntax(source: str) -> bool:
    """Whether ``source``, which this Python's parser refused, is Python of a newer
    version: LibCST parses it and it uses grammar this interpreter may lack (PEP 695
    ``type`` aliases and type parameters, PEP 758 ``except A, B:``). Such a file is
    not SES001: stage 2, which parses with LibCST, accepts it too, so the verdict
    does not depend on whether stage 1 kept the file."""
    if "type" not in source and "[" not in source and "except" not in source:
        return False
    try:
        module = _parse(source)
    except (cst.ParserSyntaxError, RecursionError, MemoryError, ValueError):
        return False  # broken for LibCST too
    for node in walk.walk(module):
        if isinstance(node, cst.TypeAlias):
            return True
        if isinstance(node, (cst.FunctionDef, cst.ClassDef)) and node.type_parameters is not None:
            return True
        if isinstance(node, (cst.ExceptHandler, cst.ExceptStarHandler)) and isinstance(node.type, cst.Tuple) and not node.type.lpar:
            return True
    return False


def _no_validation(self: cst.CSTNode) -> None:
    return None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def node_positions(module: cst.Module, nodes: Sequence[cst.CSTNode]) -> Mapping[cst.CSTNode, CodeRange]:
    """Where ``nodes`` are in ``module``, as LibCST's PositionProvider says, at a
    fraction of its cost: only the top-level statements holding them get positions
    (each as a module of its own, shifted by the lines before it), the others are
    only rendered to count their lines."""
    parents = calls.call_index(module).parent
    wanted: dict[int, list[cst.CSTNode]] = {}
    for node in nodes:
        top: cst.CSTNode | None = node
        while top is not None and parents.get(id(top)) is not module:
            top = parents.get(id(top))
        if top is None:  # not under a statement of the module's body
            return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        wanted.setdefault(id(top), []).append(node)
    out: dict[cst.CSTNode, CodeRange] = {}
    line = len(module.header)  # lines before the statement at hand
    for statement in module.body:
        found = wanted.pop(id(statement), None)
        if found is not None:
            alone = module.with_changes(body=[statement], header=[], footer=[])
            positions = MetadataWrapper(alone, unsafe_skip_copy=True).resolve(PositionProvider)
            for node in found:
                where = positions[node]
                out[node] = CodeRange(
                    CodePosition(where.start.line + line, where.start.column),
                    CodePosition(where.end.line + line, where.end.column),
                )
            if not wanted:
                break
        line += len(_LINE_BREAK.findall(module.code_for_node(statement)))
    return out


class Checker:
    """Checks files against a project index with a fixed set of rules."""

    def __init__(
        self,
        settings: Settings,
        index: ProjectIndex,
        rules: Sequence[type[Rule]] | None = None,
        debug: bool = False,
        stage1: bool = True,
        relevance: Relevance | None = None,
        noqa: bool = True,
    ) -> None:
        self.settings = settings
        # False when the caller applies `# noqa` itself (flake8, whose --disable-noqa
        # must be able to bring findings back).
        self.noqa = noqa
        self.index = index
        self.stage1 = stage1
        self.relevance = relevance or Relevance(index)
        self.rules = list(rules) if rules is not None else registry.enabled_rules(settings.select, settings.ignore)
        self.debug = debug
        # Syntax checks already done (absolute path -> problem), e.g. by the runner's
        # prepass; only used for files stage 1 finds irrelevant.
        self.syntax: dict[str, tuple[int, int, str] | None] = {}

    # -- public -----------------------------------------------------------------

    def check_path(self, path: str, data: bytes | None = None) -> FileResult:
        """Check the file at ``path`` (``data``: its contents, if already read)."""
        try:
            if data is None:
                with open(path, "rb") as fh:
                    data = fh.read()
            source = decode_source(data)
        except OSError as exc:
            return FileResult(path, [self.input_error("SES002", path, 1, 1, exc.strerror or str(exc))])
        except SourceError as exc:
            return FileResult(path, [self.input_error("SES002", path, 1, 1, str(exc))])
        return self.check_source(source, path, data=data)

    def check_source(
        self, source: str, path: str, index_path: str | None = None, data: bytes | None = None
    ) -> FileResult:
        """Check ``source`` as the contents of ``path`` (the display path).

        ``index_path`` is where the file lives for cross-module resolution; when given,
        this in-memory source replaces what is on disk (stdin, editors). ``data`` is
        the file's raw bytes when they were read from disk.
        """
        result = FileResult(path)
        real = index_path or path
        index = self.index
        index.touched, index.scans = set(), {}
        try:
            self._check(source, path, real, index_path, data, result)
        finally:
            own = os.path.abspath(real)
            result.deps = sorted(p for p in index.touched if p != own)
            result.scans = [
                {"inputs": sorted(scan.inputs), "tokens": sorted(scan.tokens), "kept_by": sorted(scan.kept_by)}
                for _origin, scan in sorted(index.scans.items())
            ]
        return result

    def _check(
        self, source: str, path: str, real: str, index_path: str | None, data: bytes | None, result: FileResult
    ) -> None:
        if index_path is not None or data is None:
            self.index.add_file(real, source)
        else:
            self.index.add_file(real)
        stage2 = source
        apis: frozenset[str] = frozenset()
        if self.stage1:
            # Stage 1: only files, and top-level blocks, holding a candidate site go on.
            where = os.path.abspath(real)
            plan = self.relevance.plan(where, data if data is not None else source.encode("utf-8", "surrogatepass"))
            if not plan.relevant:
                # The syntax check may be done already: by the runner's prepass, or by
                # the parse that built the file's facts (which stage 1 may have read).
                facts = self.index.built_facts(where)
                if facts is not None:
                    problem = facts.syntax_error
                elif index_path is None and where in self.syntax:
                    problem = self.syntax[where]
                else:
                    problem = syntax_problem(source)
                if problem is not None and not newer_syntax(source):
                    result.diagnostics.append(self.input_error("SES001", path, *problem))
                return
            stage2 = plan.reduce(source)
            apis = plan.apis
        problem = null_byte_problem(source)
        if problem is not None:
            result.diagnostics.append(self.input_error("SES001", path, *problem))
            return
        try:
            module = _parse(stage2)
        except cst.ParserSyntaxError as exc:
            line, col, message = syntax_error(source, exc)
            result.diagnostics.append(self.input_error("SES001", path, line, col, message))
            return
        except (RecursionError, MemoryError) as exc:
            result.diagnostics.append(self.input_error("SES001", path, 1, 1, type(exc).__name__))
            return
        try:
            reports = self._run_rules(module, real, result, (data, apis) if self.stage1 and data is not None else None)
            if reports:
                result.diagnostics.extend(self._diagnostics(module, source, path, reports))
        finally:
            walk.forget()
            calls.forget()
        result.diagnostics.sort()

    # -- internals --------------------------------------------------------------

    def _rules_for(self, path: str) -> list[type[Rule]]:
        ignored = self._per_file_ignores(path)
        if not ignored:
            return self.rules
        return [r for r in self.rules if not any(r.code.startswith(i) for i in ignored)]

    def _per_file_ignores(self, path: str) -> tuple[str, ...]:
        if not self.settings.per_file_ignores:
            return ()
        try:
            rel = os.path.relpath(os.path.abspath(path), self.settings.root).replace(os.sep, "/")
        except ValueError:
            rel = path
        name = os.path.basename(path)
        out: list[str] = []
        for pattern, codes in self.settings.per_file_ignores:
            if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(path, pattern):
                out.extend(codes)
        return tuple(out)

    def _run_rules(
        self, module: cst.Module, path: str, result: FileResult, stage1: tuple[bytes, frozenset[str]] | None = None
    ) -> list[Report]:
        rule_classes = self._rules_for(path)
        if stage1 is not None:
            rule_classes = [r for r in rule_classes if r.may_apply(*stage1)]
        if not rule_classes:
            return []
        ctx = FileContext(path, module, self.index)
        reports: list[Report] = []
        visitors: dict[str, list[tuple[Rule, Callable[[cst.CSTNode], None]]]] = {}
        leavers: dict[str, list[tuple[Rule, Callable[[cst.CSTNode], None]]]] = {}
        for rule_class in rule_classes:
            rule = rule_class(ctx, reports)
            for attr in dir(rule_class):
                if attr.startswith("visit_"):
                    visitors.setdefault(attr[6:], []).append((rule, getattr(rule, attr)))
                elif attr.startswith("leave_"):
                    leavers.setdefault(attr[6:], []).append((rule, getattr(rule, attr)))
        crashed: set[str] = set()

        def call(entries: list[tuple[Rule, Callable[[cst.CSTNode], None]]], node: cst.CSTNode) -> None:
            for rule, method in entries:
                if rule.code in crashed:
                    continue
                try:
                    method(node)
                except Exception as exc:  # a rule crash must not stop the other rules
                    if self.debug:
                        raise
                    crashed.add(rule.code)
                    where = traceback.extract_tb(exc.__traceback__)[-1]
                    result.errors.append(
                        f"{result.path}: internal error in {rule.code} ({rule.name}): "
                        f"{type(exc).__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno}); "
                        "rerun with --debug for the traceback"
                    )

        # One walk, pre-order visits and post-order leaves. When every visited type is
        # a statement (or the module), expressions cannot hold one: walk statements only.
        statements_only = all(
            issubclass(getattr(cst, name, object), (cst.BaseCompoundStatement, cst.Module)) for name in (*visitors, *leavers)
        )
        stack: list[tuple[cst.CSTNode, bool]] = [(module, False)]
        while stack:
            node, leaving = stack.pop()
            name = type(node).__name__
            if leaving:
                entries = leavers.get(name)
                if entries:
                    call(entries, node)
                continue
            entries = visitors.get(name)
            if entries:
                call(entries, node)
            if leavers:
                stack.append((node, True))
            kids = children(node)
            if statements_only:
                kids = tuple(k for k in kids if _holds_statements(type(k)))
            stack.extend((child, False) for child in reversed(kids))
        return reports

    def _diagnostics(self, module: cst.Module, source: str, path: str, reports: list[Report]) -> Iterable[Diagnostic]:
        # Positions are computed only for files with something to report.
        positions = node_positions(module, [report.node for report in reports])
        noqa = noqa_lines(source) if self.noqa else {}
        seen: set[tuple[int, int, str]] = set()
        original: str | None = None  # the module's code, once a fix needs it
        for report in reports:
            where = positions.get(report.node)
            if where is None:
                continue
            line, col = where.start.line, where.start.column + 1
            key = (line, col, report.rule.code)
            if key in seen or is_suppressed(noqa, line, report.rule.code):
                continue
            seen.add(key)
            fix = None
            if report.fix is not None:
                if original is None:
                    original = module.code
                fix = self._fix(module, original, report.fix)
            yield Diagnostic(
                path=path,
                line=line,
                column=col,
                code=report.rule.code,
                name=report.rule.name,
                message=report.message,
                end_line=where.end.line,
                end_column=where.end.column + 1,
                hint=report.rule.hint,
                fix=fix,
            )

    def _fix(self, module: cst.Module, original: str, spec: FixSpec) -> Fix | None:
        """``spec`` as line edits of the file: the lines where the module's code and
        the code with ``spec.old`` replaced differ. The module may be stage 1's reduced
        text, whose lines are the file's lines wherever a rule can report, so the edits
        apply to the file itself. None when the fixed code would not compile."""
        try:
            fixed = module.deep_replace(spec.old, spec.new)
            assert isinstance(fixed, cst.Module)
            new_code = fixed.code
            compiles(new_code)
        except (SyntaxError, ValueError, cst.CSTValidationError):
            return None
        edits = line_edits(original, new_code)
        return Fix(spec.applicability, spec.message, edits) if edits else None

    def input_error(self, code: str, path: str, line: int, col: int, error: str) -> Diagnostic:
        return input_error(code, path, line, col, error)
