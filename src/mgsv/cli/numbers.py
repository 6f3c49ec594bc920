"""Numeric command-line options: finite, in their range, and refused in the words and unit the user typed.

Typer reads `--fade nan` and `--max-upload-mb inf` as floats; its own range check (`min=`) lets nan through, says
nothing of the value, and an unchecked value fails later as a ValueError or OverflowError traceback, or in another
unit (`--max-upload-mb -1` became "got -1048576" bytes). Every int and float option of every command is therefore
declared with `number_option`, whose parser checks the text as typed:

    fade: Annotated[float, number_option("--fade", unit="s", min=0, max=10, help="Fade (seconds).")] = 0.5
    tracks: int = number_option(400, kind=int, min=1, help="Number of music tracks.")

    $ mgsv render ... --fade -1
    Invalid value for '--fade': -1 s: must be between 0 and 10 s

tests/test_hostile_inputs.py walks the whole app and fails for a numeric option declared any other way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import typer

__all__ = ["MAX_SEED", "Number", "number_option"]

MAX_SEED = 2**63 - 1  # the largest seed torch.manual_seed and numpy both take as given


@dataclass(frozen=True)
class Number:
    """A parser for one numeric option: `kind` (int or float), its unit, and its range (None: unbounded).

    `min` / `max` are inclusive bounds, `above` an exclusive lower bound (for "more than 0"). Non-finite values
    (nan, inf, 1e999) are never accepted.
    """

    kind: type = float
    unit: str = ""
    min: float | None = None
    max: float | None = None
    above: float | None = None

    def __call__(self, value: Any) -> int | float:
        text = value.strip() if isinstance(value, str) else str(value)
        shown = self.with_unit(text)
        try:
            number = self.kind(text)
        except (TypeError, ValueError, OverflowError):
            wanted = "a whole number" if self.kind is int else "a number"
            raise typer.BadParameter(f"{shown}: not {wanted}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise typer.BadParameter(f"{shown}: not a finite number (nan and inf are never accepted)")
        if not self.accepts(number):
            raise typer.BadParameter(f"{shown}: must be {self.describe()}")
        return number

    def accepts(self, number: float) -> bool:
        """True if a finite `number` is in the range."""
        return (
            (self.min is None or number >= self.min)
            and (self.max is None or number <= self.max)
            and (self.above is None or number > self.above)
        )

    def with_unit(self, text: str) -> str:
        """`text` followed by the unit, as a person writes it ("-1 MB", "0.5 s")."""
        return f"{text} {self.unit}" if self.unit else text

    def describe(self) -> str:
        """The range in words: "at least 0 s", "more than 0 MB", "between -70 and 0 LUFS"."""
        high = None if self.max is None else self.with_unit(_number(self.max))
        if self.min is not None and high is not None:
            return f"between {_number(self.min)} and {high}"
        if self.above is not None and high is not None:
            return f"more than {_number(self.above)} and at most {high}"
        if self.above is not None:
            return f"more than {self.with_unit(_number(self.above))}"
        if self.min is not None:
            return f"at least {self.with_unit(_number(self.min))}"
        if high is not None:
            return f"at most {high}"
        return "a finite number"


def _number(value: float) -> str:
    """A bound as a person reads it: whole numbers in full with thousands separators (1,048,576), others as %g."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def number_option(
    *args: Any,
    help: str,
    kind: type = float,
    unit: str = "",
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    **options: Any,
) -> Any:
    """`typer.Option(*args, ...)` parsed by a `Number`; the help ends with the range ("Allowed: at least 0 s.").

    (Not in square brackets: the help is rich markup, where "[at least 0 s]" would be taken for a style tag.)
    """
    number = Number(kind, unit, min, max, above)
    return typer.Option(*args, parser=number, help=f"{help} Allowed: {number.describe()}.", **options)
