"""Input errors: reported like findings, they make the exit status 2."""

from __future__ import annotations

from sessionlint.diagnostics import INPUT_ERRORS
from sessionlint.rules.base import Rule


class CannotParse(Rule):
    """
    ## What it does
    Reports a file that is not valid Python, at the position of the syntax error.

    ## Why is this bad?
    A file that does not parse cannot be checked, so its sessions go unexamined.
    The other files are still checked, and the run exits with status 2.
    """

    code = "SES001"
    name = "cannot-parse"
    message = INPUT_ERRORS["SES001"][1]
    kind = "input"


class CannotRead(Rule):
    """
    ## What it does
    Reports a path that cannot be read (missing, permission denied, a symlink loop)
    or decoded (bytes that are not valid in the file's declared encoding).

    ## Why is this bad?
    An unreadable file is an unchecked file. The other files are still checked, and
    the run exits with status 2.
    """

    code = "SES002"
    name = "cannot-read"
    message = INPUT_ERRORS["SES002"][1]
    kind = "input"
