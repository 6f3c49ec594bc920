"""`mgsv extract`: video and music files -> CLIP / AST features in a feature store."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mgsv.cli import app
from mgsv.cli.common import DtypeChoice, FrameTimesChoice, ResamplerChoice, parse_channel, print_problems, progress_bars
from mgsv.cli.numbers import number_option
from mgsv.defaults import DEFAULT_AST_ID, DEFAULT_CLIP_ID
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name


class IdChoice(str, Enum):
    stem = "stem"
    hash = "hash"


class EngineChoice(str, Enum):
    serial = "serial"
    ray = "ray"


@app.command("extract")
def extract_command(
    store: Annotated[Path, typer.Option("--store", "-s", help="Feature store folder to create or add to.")],
    videos: Annotated[
        list[Path] | None, typer.Option("--videos", help="Video files or folders (searched recursively); repeat.")
    ] = None,
    music: Annotated[
        list[Path] | None, typer.Option("--music", help="Music files or folders (searched recursively); repeat.")
    ] = None,
    clip: Annotated[str, typer.Option("--clip", help="CLIP model: hub id or local folder.")] = DEFAULT_CLIP_ID,
    ast: Annotated[str, typer.Option("--ast", help="AST model: hub id or local folder.")] = DEFAULT_AST_ID,
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
    window_start: Annotated[
        float,
        number_option("--window", unit="s", min=0, help="Videos longer than 50 s: second the 50 s of frames start at."),
    ] = 0.0,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    engine: Annotated[
        EngineChoice, typer.Option("--engine", help="serial (this process) or ray (a Ray cluster; needs mgsv[ray]).")
    ] = EngineChoice.serial,
    address: Annotated[
        str | None,
        typer.Option("--address", help="With --engine ray: the cluster to join (auto: the running one); default: "
                     "start a local Ray."),
    ] = None,
    music_channel: Annotated[
        str, typer.Option("--music-channel", help="Audio channel AST hears: 0 (official), 1, ... or 'mean'.")
    ] = "0",
    resampler: Annotated[
        ResamplerChoice, typer.Option("--resampler", help="Music resampler: sinc (torchaudio's, official) or soxr.")
    ] = ResamplerChoice.sinc,
    frame_times: Annotated[
        FrameTimesChoice,
        typer.Option("--frame-times", help="Frame of each second: cv2 (the official extractor's frame "
                     "s*int(fps)) or shown (the frame on screen at s)."),
    ] = FrameTimesChoice.cv2,
    jpeg_quality: Annotated[
        int | None,
        number_option("--jpeg-quality", kind=int, min=1, max=100, help="Pass frames through JPEG files of this quality, as "
                     "the official frames were (default: no JPEG round trip)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Encode videos (CLIP, 1 fps, at most 50 frames) and music (AST, 96 windows over 240 s) into a feature store.

    Preprocessing follows the official MGSV-EC extraction by default; --music-channel, --resampler, --frame-times and
    --jpeg-quality choose otherwise, and the store's feature spec records the choice (docs/encoders.md).

    Item ids are file stems by default, so a video named <video_id>.mp4 matches the annotations.

    A re-run skips what is stored (files are recognised by content, also under another name); a killed run resumes.

    Bad files are reported at the end; the exit code is 1 if any file failed.

    With --engine ray, files are decoded by CPU tasks and encoded by actors (one GPU each with --device cuda) on a
    Ray cluster; the store and the inputs must be on a filesystem every node sees (docs/scale.md).
    """
    if engine is not EngineChoice.ray:  # with Ray the encoders run on the cluster's nodes, checked there (ray_engine)
        device = device_name(device)  # first: a device this machine lacks is refused before any work
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
        channel=parse_channel(music_channel),
        resampler=resampler.value,
        frame_times=frame_times.value,
        jpeg_quality=jpeg_quality,
    )
    with progress_bars(not json_output) as progress:
        report = extract_features(
            store, videos or [], music or [], options, ids=ids.value, window_start=window_start, progress=progress,
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
