"""User-facing errors.

Every problem caused by the user's input (a bad file, an unknown id, a mismatched feature spec) is raised as a
`MgsvError` subclass with a message that names the file and the problem. The CLI prints these without a
traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class MgsvError(Exception):
    """An error the user can fix; reported as one clear message."""

    exit_code: int = 1


class InputError(MgsvError):
    """A bad input file, row or value. `where` is a path (optionally with a line number)."""

    def __init__(self, where: str | PathLike[str], problem: str, line: int | None = None) -> None:
        self.where = str(where)
        self.problem = problem
        self.line = line
        location = f"{self.where}:{line}" if line is not None else self.where
        super().__init__(f"{location}: {problem}")


class ProblemsError(MgsvError):
    """Several problems found in one input (e.g. every bad row of a CSV), reported together."""

    def __init__(self, where: str | PathLike[str], problems: list[str], limit: int = 50) -> None:
        self.where = str(where)
        self.problems = list(problems)
        shown = self.problems[:limit]
        more = len(self.problems) - len(shown)
        lines = [f"{self.where}: {len(self.problems)} problem(s):"] + [f"  {p}" for p in shown]
        if more > 0:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class BusyError(MgsvError):
    """Another process holds what this one needs (a library's writer lock): the same request can succeed later."""


class SpecMismatchError(MgsvError):
    """Features were made with another feature spec than the model or store expects."""


class OutputExistsError(MgsvError):
    """Refusing to overwrite an existing output (file or run folder)."""
