"""`mgsv library add/list/remove`: a persistent music library that grounding searches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mgsv.cli import app
from mgsv.cli.common import DtypeChoice, print_problems, progress_bars
from mgsv.cli.numbers import number_option
from mgsv.cli.text import visible
from mgsv.defaults import DEFAULT_AST_ID as DEFAULT_AST
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name

library_app = typer.Typer(
    help="A persistent music library: add music files once (decoded, AST-encoded, stored), list, remove.",
    no_args_is_help=True,
)
app.add_typer(library_app, name="library")

LibraryOption = Annotated[Path, typer.Option("--library", "-l", help="The library folder.")]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


@library_app.command("add")
def add_command(
    inputs: Annotated[list[Path], typer.Argument(help="Music files or folders (searched recursively).")],
    library: LibraryOption,
    ast: Annotated[str, typer.Option("--ast", help="AST model: hub id or local folder.")] = DEFAULT_AST,
    encoder_id: Annotated[
        str | None, typer.Option("--encoder-id", help="Encoder id the tokens record (for a local copy of a hub model).")
    ] = None,
    dtype: Annotated[DtypeChoice, typer.Option("--dtype", help="Encoder precision (auto: bf16 where native).")] = (
        DtypeChoice.auto
    ),
    batch_size: Annotated[int, number_option("--batch-size", kind=int, min=1, help="AST windows per forward.")] = 4,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Add music files: decoded, encoded with AST and stored; a file already in the library is skipped.

    The library is created on first use. Interrupting it loses no track already added.

    Tracks longer than 240 s keep their full length, but only their first 240 s can be found (the model's horizon).

    Bad files are reported at the end; the exit code is 1 if any failed.
    """
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    from mgsv.search.library import MusicLibrary

    def load_encoder():  # only if some file needs encoding
        from mgsv.encoders.ast import AstMusicEncoder

        return AstMusicEncoder.from_pretrained(
            ast, device=device, dtype=dtype.value, batch_size=batch_size, encoder_id=encoder_id
        )

    if (library / "library.json").exists():
        music_library = MusicLibrary(library)
        encoder = load_encoder
    else:
        encoder = load_encoder()
        music_library = MusicLibrary.open_or_create(library, encoder.spec)
    with progress_bars(not json_output) as progress:
        report = music_library.add_files(inputs, encoder, progress=progress)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    else:
        console = Console()
        console.print(
            f"added {len(report.added)} track(s) ({report.encoded} encoded), {len(report.already)} already in the "
            f"library, {len(report.failures)} failed; the library has {len(music_library)} track(s)",
            highlight=False,
        )
        for path, track_id in report.already:
            console.print(f"  already there: {visible(path)} as {visible(track_id)}", highlight=False, soft_wrap=True)
        print_problems(console, "warnings", report.warnings, "yellow")
        print_problems(console, "failed", report.failures, "bold red")
    if not report.ok:
        raise typer.Exit(code=1)


@library_app.command("list")
def list_command(
    library: LibraryOption,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array of tracks on stdout.")] = False,
) -> None:
    """List the tracks: id, title, artist, duration, licence."""
    from mgsv.search.library import MusicLibrary

    tracks = MusicLibrary(library).tracks()
    if json_output:
        typer.echo(json.dumps([t.to_dict() for t in tracks]))
        return
    table = Table(title=f"{visible(str(library))}: {len(tracks)} track(s)")
    for column in ("id", "title", "artist", "duration", "licence"):
        table.add_column(column, justify="right" if column == "duration" else "left", overflow="fold")
    for track in tracks:
        duration = _minutes(track.duration) + (" *" if track.beyond_horizon else "")
        table.add_row(*(visible(v) for v in (track.id, track.title, track.artist, duration, track.licence)))
    console = Console()
    console.print(table)
    if any(t.beyond_horizon for t in tracks):
        console.print("* longer than 240 s: only the first 240 s can be found by grounding", highlight=False)


@library_app.command("remove")
def remove_command(
    track_ids: Annotated[list[str], typer.Argument(help="Ids of the tracks to remove (see mgsv library list).")],
    library: LibraryOption,
    json_output: Annotated[bool, typer.Option("--json", help="Print the removed tracks as JSON on stdout.")] = False,
) -> None:
    """Remove tracks (all or none: an unknown id removes nothing). Their files are not touched."""
    from mgsv.search.library import MusicLibrary

    removed = MusicLibrary(library).remove(track_ids)
    if json_output:
        typer.echo(json.dumps([t.to_dict() for t in removed]))
        return
    for track in removed:
        Console().print(f"removed {visible(track.id)} ({visible(track.path)})", highlight=False, soft_wrap=True)
