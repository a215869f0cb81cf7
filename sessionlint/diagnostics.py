"""The one record every adapter prints: a finding at a place in a file."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """A finding. Lines and columns are 1-based; ``end_*`` bound the reported node."""

    path: str
    line: int
    column: int
    code: str
    name: str
    message: str
    end_line: int = 0
    end_column: int = 0
    hint: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line or self.line,
            "end_column": self.end_column or self.column,
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class FileResult:
    """Everything checking one file produced, plus what the result depends on."""

    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # internal errors: exit status 2
    deps: list[str] = field(default_factory=list)  # module files resolutions were read from
    # Project-wide scans used, each as {"inputs": files read, "tokens": words that
    # chose them, "kept_by": files that alone settle the answer} (see cache.py).
    scans: list[dict[str, list[str]]] = field(default_factory=list)

    @property
    def has_input_error(self) -> bool:
        return any(d.code in ("SES001", "SES002") for d in self.diagnostics)


# Input errors are reported like findings; their messages live here so that adapters
# and the runner can build them without importing any rule (or LibCST).
INPUT_ERRORS = {
    "SES001": ("cannot-parse", "cannot parse: {error}"),
    "SES002": ("cannot-read", "cannot read: {error}"),
}


def input_error(code: str, path: str, line: int, column: int, error: str) -> Diagnostic:
    name, template = INPUT_ERRORS[code]
    return Diagnostic(path, line, column, code, name, template.format(error=error), line, column)
