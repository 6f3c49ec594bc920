"""`mgsv render`: write a video with a music moment as its soundtrack."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mgsv.cli import app
from mgsv.cli.numbers import number_option


@app.command()
def render(
    video: Annotated[Path, typer.Argument(help="The video to put music under.")],
    track: Annotated[
        Path, typer.Option("--track", "-t", help="The music file (any format FFmpeg or libsndfile reads).")
    ],
    start: Annotated[
        float, number_option("--start", "-s", unit="s", min=0, help="Start of the music moment in the track (seconds).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video (.mp4, .m4v, .mov or .mkv).")],
    end: Annotated[
        float | None,
        number_option("--end", "-e", unit="s", above=0, help="End of the moment (seconds); default: start + video "
                      "duration."),
    ] = None,
    keep_audio: Annotated[
        float,
        number_option(
            "--keep-audio", min=0, max=1,
            help="Gain of the original audio mixed under the music (0 drops it, 1 keeps it).",
        ),
    ] = 0.0,
    fade: Annotated[
        float, number_option("--fade", unit="s", min=0, max=10, help="Fade-in and fade-out of the music (seconds).")
    ] = 0.5,
    loudness: Annotated[
        float,
        number_option(
            "--loudness", unit="LUFS", min=-70, max=0, help="Integrated loudness target of the music (LUFS, EBU R128)."
        ),
    ] = -14.0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Write VIDEO with the music from --start to --end of a track as its soundtrack (faded, loudness-normalised)."""
    from mgsv.media.render import render_with_music

    result = render_with_music(
        video, track, start, end=end, out=out, keep_audio=keep_audio, fade=fade, loudness=loudness, force=force
    )
    if json_output:
        typer.echo(json.dumps(result.to_json()))
        return
    console = Console()
    video_mode = "copied" if result.copied_video_stream else "re-encoded (H.264)"
    console.print(
        f"[bold]wrote[/] {escape(str(result.path))} ({result.duration:.2f} s, video {video_mode})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"music: {escape(str(track))} {result.music_start:.2f}-{result.music_end:.2f} s",
        highlight=False,
        soft_wrap=True,
    )
    if result.silent:
        console.print("[yellow]the music moment is silent[/]: not loudness-normalised", highlight=False, soft_wrap=True)
    elif result.loudness_before is not None and result.loudness_after is not None:
        change = f"{result.loudness_before:.1f} -> {_lufs(result.loudness_after)} LUFS"
        console.print(
            f"loudness: {change} (gain {result.gain_db:+.1f} dB)",
            highlight=False,
            soft_wrap=True,
        )
    if result.padded_seconds > 0:
        console.print(
            f"[yellow]the moment is {result.padded_seconds:.2f} s shorter than the video[/]: silence follows it",
            highlight=False,
            soft_wrap=True,
        )
    if result.keep_audio:
        console.print(f"original audio kept at gain {result.keep_audio:g}", highlight=False, soft_wrap=True)


def _lufs(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "-inf"
