"""The one record every adapter prints: a finding at a place in a file."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace the text from (``line``, ``column``) up to (``end_line``, ``end_column``)
    (1-based, end exclusive) with ``content``. Fixes edit whole lines: ``column`` and
    ``end_column`` are 1, and ``end_line`` may be one past the last line."""

    line: int
    column: int
    end_line: int
    end_column: int
    content: str

    def as_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "content": self.content,
        }


@dataclass(frozen=True, slots=True)
class Fix:
    """A finding's fix: ``safe`` keeps the code's behaviour, ``unsafe`` may change it."""

    applicability: str  # "safe" | "unsafe"
    message: str
    edits: tuple[Edit, ...]

    def as_dict(self) -> dict[str, object]:
        return {"applicability": self.applicability, "message": self.message, "edits": [e.as_dict() for e in self.edits]}

    def applies(self, unsafe: bool) -> bool:
        return self.applicability == "safe" or unsafe


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
    fix: Fix | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, object]:
        fields: dict[str, object] = {
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
        if self.fix is not None:
            fields["fix"] = self.fix.as_dict()
        return fields


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
