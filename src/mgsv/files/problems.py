"""Per-file problems collected by batch commands (extract, library add, ground) and reported at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mgsv.errors import InputError, MgsvError


@dataclass
class Problem:
    """A file and what is wrong with it (a failure) or worth knowing about it (a warning)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """The problem as JSON types."""
        return {"path": self.path, "reason": self.reason}


def problem_for(path: str | os.PathLike[str], exc: MgsvError) -> Problem:
    """A Problem for `path` from an error; the message loses its path prefix when it names the same file."""
    if isinstance(exc, InputError) and exc.where == str(path):
        reason = exc.problem if exc.line is None else f"line {exc.line}: {exc.problem}"
    else:
        reason = str(exc)
    return Problem(str(path), reason)
