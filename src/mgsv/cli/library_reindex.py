"""`mgsv library reindex`: encode every track of a library again (after a change of the music feature spec)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mgsv.cli.common import DtypeChoice, ResamplerChoice, parse_channel, print_problems, progress_bars
from mgsv.cli.library import LibraryOption, library_app
from mgsv.cli.numbers import number_option
from mgsv.defaults import DEFAULT_AST_ID as DEFAULT_AST
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name


@library_app.command("reindex")
def reindex_command(
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
    music_channel: Annotated[
        str, typer.Option("--music-channel", help="Audio channel AST hears: 0 (official), 1, ... or 'mean'.")
    ] = "0",
    resampler: Annotated[
        ResamplerChoice, typer.Option("--resampler", help="Music resampler: sinc (torchaudio's, official) or soxr.")
    ] = ResamplerChoice.sinc,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Encode every track again from its file, with today's (or the given) preprocessing, and replace the tokens.

    Needed when the library's feature spec differs from the checkpoint's or the encoder's, e.g. for libraries built
    before feature spec version 2. All or nothing: if a track's file is gone or changed, the library is left as it
    was and the track is reported. The tracks' model indexes are rebuilt on the next search.
    """
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.search.reindex import reindex_library

    def load_encoder() -> AstMusicEncoder:
        return AstMusicEncoder.from_pretrained(
            ast, device=device, dtype=dtype.value, batch_size=batch_size, encoder_id=encoder_id,
            channel=parse_channel(music_channel), resampler=resampler.value,
        )

    with progress_bars(not json_output) as progress:
        report = reindex_library(library, load_encoder, progress=progress)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    else:
        console = Console()
        if report.replaced:
            console.print(f"re-indexed {report.encoded} track(s) of {escape(str(library))} (spec {report.spec})",
                          highlight=False)
        else:
            console.print(f"{escape(str(library))} left unchanged: {len(report.failures)} track(s) could not be "
                          "encoded again", highlight=False)
        print_problems(console, "failed", report.failures, "bold red")
    if not report.ok:
        raise typer.Exit(code=1)
