"""The one record every adapter prints: a finding at a place in a file."""

from __future__ import annotations

from dataclasses import dataclass


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
