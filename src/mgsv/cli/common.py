"""What the command modules share: progress bars, problem lists, choices, and option names in messages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from functools import cache
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mgsv.cli.text import visible
from mgsv.errors import name_options

# `mgsv ground` and `mgsv serve` without a model: what to do next, in two lines (a builder's first run).
NO_CHECKPOINT = (
    "no model given: pass --checkpoint with a trained checkpoint folder, a run folder's checkpoints/<name>, or "
    "hf:OWNER/NAME[@REVISION] from the Hugging Face Hub.\n"
    "To get one: `mgsv reproduce --out runs/paper` trains MaDe on MGSV-EC (docs/reproduce.md), or `mgsv train "
    "--preset made --data DIR --out RUN` on your own features."
)


def require_checkpoint(checkpoint: object) -> None:
    """Stop with NO_CHECKPOINT when no checkpoint was given."""
    if checkpoint is None:
        from mgsv.errors import MgsvError

        raise MgsvError(NO_CHECKPOINT)


class DtypeChoice(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class PrecisionChoice(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class IndexChoice(str, Enum):
    exact = "exact"
    faiss = "faiss"
    lance = "lance"


class MemoryChoice(str, Enum):
    disk = "disk"
    ram = "ram"


class ResamplerChoice(str, Enum):
    sinc = "sinc"
    soxr = "soxr"


class FrameTimesChoice(str, Enum):
    cv2 = "cv2"
    shown = "shown"


def parse_channel(text: str) -> int | str:
    """--music-channel: a channel index (0 = the first, the official choice) or 'mean'."""
    if text == "mean":
        return "mean"
    if text.isdigit():
        return int(text)
    raise typer.BadParameter(f"must be a channel index (0, 1, ...) or 'mean', got {text!r}", param_hint="--music-channel")


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """Rich progress bars on stderr, one per stage, fed by a (stage, done, total) callback."""
    if not enabled:
        yield None
        return
    bars = Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


def print_problems(console: Console, title: str, problems: list[Any], style: str) -> None:
    """A heading and one line per (path, reason) problem."""
    if not problems:
        return
    console.print(f"[{style}]{title} ({len(problems)}):[/]", highlight=False)
    for problem in problems:
        console.print(f"  {visible(problem.path)}: {visible(for_cli(problem.reason))}", highlight=False, soft_wrap=True)



@cache
def option_flags() -> dict[str, str]:
    """Option key -> the flag that sets it, for every command (a key names one flag everywhere: tested)."""
    import typer.main

    from mgsv.cli import app

    flags: dict[str, str] = {}

    def walk(command: Any) -> None:
        for param in getattr(command, "params", []):
            opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            if opts and param.name:
                flags.setdefault(param.name, opts[0])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return flags


def for_cli(message: str) -> str:
    """A library message with its option keys (`top`) named as the command line's flags (--top)."""
    return name_options(message, option_flags())


def problems_json(problems: list[Any]) -> list[dict[str, str]]:
    """Problems as JSON objects, their reasons naming options as flags."""
    return [{"path": p.path, "reason": for_cli(p.reason)} for p in problems]
