"""`mgsv ground`: find the music for a video (or a folder of them) in a music library, optionally rendered."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mgsv.cli import app
from mgsv.cli.common import (
    DtypeChoice,
    IndexChoice,
    MemoryChoice,
    PrecisionChoice,
    for_cli,
    print_problems,
    problems_json,
    progress_bars,
    require_checkpoint,
)
from mgsv.cli.numbers import number_option
from mgsv.cli.text import visible
from mgsv.defaults import DEFAULT_CLIP_ID
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name


class SnapChoice(str, Enum):
    beats = "beats"


def _render_targets(render: Path, videos: list[Path]) -> dict[Path, Path]:
    """Output file per video: `render` itself for one video, else `render`/<stem>.mp4 (a folder)."""
    if len(videos) == 1 and not render.is_dir():
        return {videos[0]: render}
    render.mkdir(parents=True, exist_ok=True)
    targets: dict[Path, Path] = {}
    used: set[str] = set()
    for video in videos:
        name, number = video.stem, 2
        while name in used:
            name, number = f"{video.stem}-{number}", number + 1
        used.add(name)
        targets[video] = render / f"{name}.mp4"
    return targets


@app.command("ground")
def ground_command(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders of videos (searched recursively).")],
    library: Annotated[Path, typer.Option("--library", "-l", help="The music library folder (mgsv library add).")],
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="A trained model's checkpoint folder, or hf:OWNER/NAME[@REVISION].")] = None,
    clip: Annotated[str, typer.Option("--clip", help="CLIP model: hub id or local folder.")] = DEFAULT_CLIP_ID,
    encoder_id: Annotated[
        str | None, typer.Option("--encoder-id", help="Encoder id of a local CLIP folder (for a copy of a hub model).")
    ] = None,
    dtype: Annotated[DtypeChoice, typer.Option("--dtype", help="CLIP precision (auto: bf16 where native).")] = (
        DtypeChoice.auto
    ),
    top: Annotated[int, number_option("--top", "-k", kind=int, min=1, help="Tracks (one moment each) per video.")] = 5,
    fit_duration: Annotated[
        bool, typer.Option("--fit-duration", help="Moments exactly as long as the video; shorter tracks are skipped.")
    ] = False,
    snap: Annotated[
        SnapChoice | None, typer.Option("--snap", help="Move each moment's start onto a beat (needs librosa).")
    ] = None,
    window_start: Annotated[
        float,
        number_option("--window", unit="s", min=0, help="Videos longer than 50 s: second the 50 s of frames start at."),
    ] = 0.0,
    alternatives: Annotated[
        int,
        number_option("--alternatives", kind=int, min=0, max=3, help="Up to N other moments of each listed track (0-3)."),
    ] = 0,
    diverse: Annotated[
        bool,
        typer.Option("--diverse", help="Near-duplicate tracks (same artist/album, close embeddings) give way to others."),
    ] = False,
    diverse_cosine: Annotated[
        float,
        number_option("--diverse-cosine", min=0, max=1, help="With --diverse: track embeddings at least this close (cosine, 0 to "
                     "below 1) start to count as the same music."),
    ] = 0.9,  # = mgsv.search.diversity.DEFAULT_COSINE (tests/test_ground.py checks)
    render: Annotated[
        Path | None,
        typer.Option("--render", help="Write the video with its top moment as soundtrack (a folder for several)."),
    ] = None,
    keep_audio: Annotated[
        float,
        number_option("--keep-audio", min=0, max=1, help="With --render: gain of the video's own audio in the mix."),
    ] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="With --render: overwrite existing outputs.")] = False,
    precision: Annotated[
        PrecisionChoice, typer.Option("--precision", help="MaDe arithmetic: fp32, or bf16 autocast (faster on AMX).")
    ] = PrecisionChoice.fp32,
    min_duration: Annotated[
        float | None,
        number_option("--min-duration", unit="s", min=0, help="Only tracks at least this many seconds long."),
    ] = None,
    licences: Annotated[
        list[str] | None, typer.Option("--licence", help="Only tracks with this licence tag; repeat for any of several.")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", help="Only tracks with this tag, KEY=VALUE (e.g. genre=ambient); repeat.")
    ] = None,
    candidates: Annotated[
        int, number_option("--candidates", kind=int, min=1, help="Tracks scored exactly (the top K by h0 similarity).")
    ] = 2000,
    index: Annotated[IndexChoice, typer.Option("--index", help="Candidate stage: exact scan, faiss or lance.")] = (
        IndexChoice.exact
    ),
    faiss_factory: Annotated[
        str | None, typer.Option("--faiss-factory", help="With --index faiss: FAISS factory string (IVF..,Flat).")
    ] = None,
    index_memory: Annotated[
        MemoryChoice, typer.Option("--index-memory", help="Track index tokens: read per query (disk) or held (ram).")
    ] = MemoryChoice.disk,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Find the tracks that fit each video best and the best moment of each.

    Candidates: the --candidates tracks closest to the video by h0 (after the filters); their relevance p_s is then
    computed exactly. Libraries of up to --candidates tracks are searched exhaustively.

    Moments are in seconds of the track; scores are p_s (higher is better, in [-2, 2]). --alternatives N adds up to
    N other moments of each track, none overlapping the first or each other; --diverse keeps near-duplicate tracks
    from filling the list.

    Videos that fail are reported at the end (exit code 1); the others are still grounded.
    """
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    from mgsv.errors import InputError, MgsvError
    from mgsv.files.discover import find_media
    from mgsv.files.problems import Problem, problem_for
    from mgsv.search import Grounder, GroundOptions, MusicLibrary, SearchOptions, TrackFilter, render_moment

    require_checkpoint(checkpoint)
    # Every option is checked (and a missing extra reported) before any file is read.
    options = GroundOptions(
        top=top, fit_duration=fit_duration, snap=snap.value if snap else None, window_start=window_start,
        filters=TrackFilter.parse(min_duration, licences or [], tags or []), alternatives=alternatives,
        diverse=diverse, diverse_cosine=diverse_cosine,
    )
    search = SearchOptions(candidates, index.value, faiss_factory, index_memory.value)
    found = find_media(videos, "video")
    failures = [Problem(str(p), r) for p, r in found.problems]
    if not found.files and not failures:
        raise InputError(", ".join(map(str, videos)), "no video files found")
    grounder = Grounder.from_checkpoint(
        checkpoint, MusicLibrary(library), clip, encoder_id=encoder_id, dtype=dtype.value, device=device,
        precision=precision.value, search=search,
    )
    targets = _render_targets(render, found.files) if render is not None and found.files else {}
    results: list[dict[str, Any]] = []
    with progress_bars(not json_output) as progress:
        # The library's track index for this model, built or updated (with a progress bar) before the first video.
        grounder.prepare(progress)
        for number, video in enumerate(found.files):
            try:
                grounded = grounder.ground(video, options)
                result = {**grounded.to_dict(), "rendered": None}
                if video in targets and grounded.moments:
                    rendered = render_moment(video, grounded.moments[0], targets[video], grounded.duration,
                                             keep_audio, force)
                    result["rendered"] = rendered.to_json()
                results.append(result)
            except MgsvError as exc:
                failures.append(problem_for(video, exc))
            if progress:
                progress("ground", number + 1, len(found.files))
    if json_output:
        typer.echo(json.dumps({"results": results, "failures": problems_json(failures)}))
    else:
        _print_results(Console(), results)
        print_problems(Console(), "failed", failures, "bold red")
    if failures or not found.files:
        raise typer.Exit(code=1)


def _print_results(console: Console, results: list[dict[str, Any]]) -> None:
    for result in results:
        table = Table(title=f"{visible(result['video'])} ({result['duration']:.1f} s)", title_justify="left")
        for column in ("#", "track", "title", "start", "end", "score", "notes"):
            table.add_column(
                column, justify="right" if column in ("#", "start", "end", "score") else "left", overflow="fold"
            )
        for m in result["moments"]:
            for shown in (m, *m["alternatives"]):
                notes = list(shown["notes"]) + (["on a beat"] if shown["snapped"] else [])
                first = shown is m
                table.add_row(
                    str(m["rank"]) if first else "",
                    visible(m["track_id"]) if first else f"  other moment {shown['alternative']}",
                    visible(m["title"]) if first else "",
                    f"{shown['start_s']:.2f}",
                    f"{shown['end_s']:.2f}",
                    f"{m['score']:.3f}" if first else "",
                    visible("; ".join(notes)),
                )
        console.print(table)
        for note in result["notes"]:
            console.print(f"note: {visible(for_cli(note))}", highlight=False, soft_wrap=True)
        if result["rendered"]:
            console.print(f"rendered: {visible(result['rendered']['path'])}", highlight=False, soft_wrap=True)
