"""User-facing errors.

Every problem caused by the user's input (a bad file, an unknown id, a mismatched feature spec) is raised as a
`MgsvError` subclass with a message that names the file and the problem. The CLI prints these without a
traceback and exits non-zero; anything else is a bug and keeps its traceback. A message that names an option
writes its key in backquotes (`top`): the command line shows it as --top, the HTTP API as the field top.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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


class OptionError(InputError):
    """An invalid option value, named by its key (`top`, `min_duration`, ...) rather than by a front door's name for
    it: the command line shows the flag (--top), the HTTP API the JSON field (top). See `name_options`."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"`{field}`", problem)


# Messages name options by key in backquotes (`fit_duration`); each front door renames them (`name_options`).
_OPTION_KEY = re.compile(r"`([a-z][a-z0-9_]*)`")


def name_options(text: str, names: Mapping[str, str] | None = None) -> str:
    """`text` with every option key written `like_this` replaced by its name in `names` (a front door's flag or field
    names); keys `names` does not know keep their backquotes. Without `names`, keys lose their backquotes."""
    if names is None:
        return _OPTION_KEY.sub(lambda match: match.group(1), text)
    return _OPTION_KEY.sub(lambda match: names.get(match.group(1), match.group(0)), text)


class MissingExtraError(MgsvError):
    """An optional dependency that a chosen option needs is not installed."""


def require_extra(module: str, extra: str, purpose: str) -> object:
    """Import an optional dependency, or explain which extra installs it (`purpose`: what needs it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs {module}, which is not installed: pip install 'mgsv[{extra}]' (or pip install {module})"
        ) from exc
