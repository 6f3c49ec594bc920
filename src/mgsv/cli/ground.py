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
from mgsv.cli.extract import DEFAULT_CLIP, DtypeChoice, print_problems, progress_bars
from mgsv.cli.numbers import number_option
from mgsv.cli.text import visible


class SnapChoice(str, Enum):
    beats = "beats"


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
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="A trained model's checkpoint folder.")],
    clip: Annotated[str, typer.Option("--clip", help="CLIP model: hub id or local folder.")] = DEFAULT_CLIP,
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
    window: Annotated[
        float,
        number_option("--window", unit="s", min=0, help="Videos longer than 50 s: second the 50 s of frames start at."),
    ] = 0.0,
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
    licence: Annotated[
        list[str] | None, typer.Option("--licence", help="Only tracks with this licence tag; repeat for any of several.")
    ] = None,
    tag: Annotated[
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
    device: Annotated[str, typer.Option("--device", help="Torch device.")] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Find the tracks that fit each video best and the best moment of each.

    Candidates: the --candidates tracks closest to the video by h0 (after the filters); their relevance p_s is then
    computed exactly. Libraries of up to --candidates tracks are searched exhaustively.

    Moments are in seconds of the track; scores are p_s (higher is better, in [-2, 2]).

    Videos that fail are reported at the end (exit code 1); the others are still grounded.
    """
    from mgsv.errors import MgsvError
    from mgsv.extract.discover import find_media
    from mgsv.extract.problems import Problem, problem_for
    from mgsv.media.decode import read_video_frames
    from mgsv.search.candidates import SearchOptions
    from mgsv.search.catalog import TrackFilter
    from mgsv.search.grounder import Grounder, render_moment
    from mgsv.search.library import MusicLibrary

    if snap is not None:
        from mgsv.search.beats import require_librosa

        require_librosa()  # a missing extra fails the command at once, not every video one by one
    filters = TrackFilter.parse(min_duration, licence or [], tag or [])
    search = SearchOptions(candidates, index.value, faiss_factory, index_memory.value)
    found = find_media(videos, "video")
    failures = [Problem(str(p), r) for p, r in found.problems]
    music_library = MusicLibrary(library)
    grounder = Grounder.from_checkpoint(
        checkpoint, clip, encoder_id=encoder_id, dtype=dtype.value, device=device, precision=precision.value,
        search=search,
    )
    grounder.check_library(music_library)
    targets = _render_targets(render, found.files) if render is not None and found.files else {}
    results: list[dict[str, Any]] = []
    with progress_bars(not json_output) as progress:
        # The library's track index for this model, built or updated (with a progress bar) before the first video.
        grounder.encoded(music_library, progress)
        for number, video in enumerate(found.files):
            try:
                frames = read_video_frames(video, window_start=window)
                moments = grounder.ground_frames(
                    frames, music_library, top, fit_duration=fit_duration, snap=snap.value if snap else None,
                    filters=filters,
                )
                result: dict[str, Any] = {
                    "video": str(video),
                    "duration": round(frames.duration, 3),
                    "window_start": window,
                    "frames": len(frames),
                    "moments": [m.to_dict() for m in moments],
                    "rendered": None,
                }
                if video in targets and moments:
                    rendered = render_moment(video, moments[0], targets[video], frames.duration, keep_audio, force)
                    result["rendered"] = rendered.to_json()
                results.append(result)
            except MgsvError as exc:
                failures.append(problem_for(video, exc))
            if progress:
                progress("ground", number + 1, len(found.files))
    if json_output:
        typer.echo(json.dumps({"results": results, "failures": [p.to_dict() for p in failures]}))
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
            notes = list(m["notes"]) + (["on a beat"] if m["snapped"] else [])
            table.add_row(
                str(m["rank"]),
                visible(m["track_id"]),
                visible(m["title"]),
                f"{m['start_s']:.2f}",
                f"{m['end_s']:.2f}",
                f"{m['score']:.3f}",
                visible("; ".join(notes)),
            )
        console.print(table)
        if result["rendered"]:
            console.print(f"rendered: {visible(result['rendered']['path'])}", highlight=False, soft_wrap=True)
