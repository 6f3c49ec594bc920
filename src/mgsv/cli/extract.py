"""`mgsv extract`: video and music files -> CLIP / AST features in a feature store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mgsv.cli import app
from mgsv.cli.numbers import number_option
from mgsv.cli.text import visible

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # = mgsv.encoders.clip.DEFAULT_CLIP (not imported: keeps --help light)
DEFAULT_AST = "MIT/ast-finetuned-audioset-10-10-0.4593"  # = mgsv.encoders.ast.DEFAULT_AST


class DtypeChoice(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class IdChoice(str, Enum):
    stem = "stem"
    hash = "hash"


class EngineChoice(str, Enum):
    serial = "serial"
    ray = "ray"


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
        console.print(f"  {visible(problem.path)}: {visible(problem.reason)}", highlight=False, soft_wrap=True)


@app.command("extract")
def extract_command(
    store: Annotated[Path, typer.Option("--store", "-s", help="Feature store folder to create or add to.")],
    videos: Annotated[
        list[Path] | None, typer.Option("--videos", help="Video files or folders (searched recursively); repeat.")
    ] = None,
    music: Annotated[
        list[Path] | None, typer.Option("--music", help="Music files or folders (searched recursively); repeat.")
    ] = None,
    clip: Annotated[str, typer.Option("--clip", help="CLIP model: hub id or local folder.")] = DEFAULT_CLIP,
    ast: Annotated[str, typer.Option("--ast", help="AST model: hub id or local folder.")] = DEFAULT_AST,
    clip_encoder_id: Annotated[
        str | None,
        typer.Option("--clip-encoder-id", help="Encoder id the video features record (a local copy of a hub model)."),
    ] = None,
    ast_encoder_id: Annotated[
        str | None,
        typer.Option("--ast-encoder-id", help="Encoder id the music features record (a local copy of a hub model)."),
    ] = None,
    dtype: Annotated[DtypeChoice, typer.Option("--dtype", help="Encoder precision (auto: bf16 where native).")] = (
        DtypeChoice.auto
    ),
    batch_size: Annotated[
        int | None,
        number_option("--batch-size", kind=int, min=1, help="Frames / windows per forward (default 32 / 4)."),
    ] = None,
    ids: Annotated[IdChoice, typer.Option("--ids", help="Item ids: the file stem, or its content hash.")] = (
        IdChoice.stem
    ),
    window: Annotated[
        float,
        number_option("--window", unit="s", min=0, help="Videos longer than 50 s: second the 50 s of frames start at."),
    ] = 0.0,
    device: Annotated[str, typer.Option("--device", help="Torch device for the encoders.")] = "cpu",
    engine: Annotated[
        EngineChoice, typer.Option("--engine", help="serial (this process) or ray (a Ray cluster; needs mgsv[ray]).")
    ] = EngineChoice.serial,
    address: Annotated[
        str | None,
        typer.Option("--address", help="With --engine ray: the cluster to join (auto: the running one); default: "
                     "start a local Ray."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Encode videos (CLIP, 1 fps, at most 50 frames) and music (AST, 96 windows over 240 s) into a feature store.

    Item ids are file stems by default, so a video named <video_id>.mp4 matches the annotations.

    A re-run skips what is stored (files are recognised by content, also under another name); a killed run resumes.

    Bad files are reported at the end; the exit code is 1 if any file failed.

    With --engine ray, files are decoded by CPU tasks and encoded by actors (one GPU each with --device cuda) on a
    Ray cluster; the store and the inputs must be on a filesystem every node sees (docs/scale.md).
    """
    from mgsv.extract.pipeline import EncoderOptions, extract_features

    if not videos and not music:
        raise typer.BadParameter("give --videos and/or --music", param_hint="--videos / --music")
    if address is not None and engine is not EngineChoice.ray:
        raise typer.BadParameter("--address needs --engine ray", param_hint="--address")
    options = EncoderOptions(
        clip=clip,
        ast=ast,
        clip_encoder_id=clip_encoder_id,
        ast_encoder_id=ast_encoder_id,
        dtype=dtype.value,
        batch_size=batch_size,
        device=device,
    )
    with progress_bars(not json_output) as progress:
        report = extract_features(
            store, videos or [], music or [], options, ids=ids.value, window_start=window, progress=progress,
            engine=engine.value, ray_address=address,
        )
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    else:
        console = Console()
        for name, part in report.modalities.items():
            console.print(
                f"{name:5}: {part.found} file(s): {part.encoded} encoded, {part.already_stored} already stored, "
                f"{part.copied} copied from identical content, {part.duplicates} duplicate(s), "
                f"{len(part.failures)} failed",
                highlight=False,
            )
            print_problems(console, f"{name} warnings", part.warnings, "yellow")
        print_problems(console, "failed", report.failures, "bold red")
        console.print(f"feature store: {escape(str(report.store))} ({report.seconds:.1f} s)", highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)
