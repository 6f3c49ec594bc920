"""`mgsv demo`: library, query videos, training, grounding and rendering, offline, in about a minute and a half."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mgsv.cli import app
from mgsv.cli.numbers import number_option
from mgsv.demo import EPOCHS


@app.command()
def demo(
    out: Path = typer.Option(Path("mgsv-demo"), "--out", "-o", help="Folder for everything the demo makes."),
    epochs: int = number_option(
        EPOCHS, kind=int, min=1, help="Training epochs of the demo model (about 2.5 s each on 2 cores)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out even if it is not an earlier demo's folder."),
) -> None:
    """Build a small library and query videos, train a tiny model, ground a video and render it (offline).

    Music: one-minute excerpts of Debian's game-music packages when installed (under ./.media or /), generated
    tracks otherwise; MGSV_DEMO_MUSIC_ROOT=DIR looks for them only under DIR (an empty folder: generated music).
    An earlier demo's --out folder is replaced; any other non-empty folder is refused unless --force.
    """
    from mgsv.demo.run import NEXT_STEPS, run_demo

    console = Console()
    result = run_demo(out, epochs=epochs, force=force, say=lambda text: console.print(text, highlight=False))
    truth_id, truth_start, truth_end = result.truth
    table = Table(title=f"Top moments for {result.query_video.name} (cut from {truth_id} "
                        f"{truth_start:.1f}-{truth_end:.1f} s)", title_justify="left")
    for column in ("rank", "track", "start (s)", "end (s)", "score", ""):
        table.add_column(column, justify="right" if column in ("rank", "start (s)", "end (s)", "score") else "left")
    for moment in result.moments:
        mark = "<- the true track" if moment.track_id == truth_id else ""
        table.add_row(str(moment.rank), moment.track_id, f"{moment.start_s:.1f}", f"{moment.end_s:.1f}",
                      f"{moment.score:.3f}", mark)
    console.print(table)
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
    console.print(f"Time: {timings} (CPU {sum(result.cpu_seconds.values()):.0f} s in all)")
    console.print(f"""Files:
  music library     {result.library}  ({result.music_source})
  training data     {result.data}
  training run      {result.run}  (log.csv, curves.png, checkpoints/)
  query video       {result.query_video}
  rendered result   {result.rendered}
Try: mgsv ground {result.query_video} --library {result.library} --checkpoint {result.checkpoint} \\
       --clip {result.out / 'encoders' / 'tiny-clip'}""", highlight=False)
    console.print(f"\n[bold yellow]{NEXT_STEPS}[/]", highlight=False)
