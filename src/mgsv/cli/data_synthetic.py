"""`mgsv data synthetic`: write a planted-signal dataset folder (see mgsv.data.synthetic)."""

from __future__ import annotations

from pathlib import Path

import typer

from mgsv.cli.data_app import data_app
from mgsv.cli.numbers import MAX_SEED, number_option


@data_app.command("synthetic")
def synthetic(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write (CSVs + features/)."),
    tracks: int = number_option(400, kind=int, min=1, help="Number of music tracks."),
    train_videos: int = number_option(5600, kind=int, min=1, help="Number of training query videos."),
    val_size: int = number_option(200, kind=int, min=1, help="Validation videos (distinct tracks)."),
    test_size: int = number_option(200, kind=int, min=1, help="Test videos (distinct tracks)."),
    seed: int = number_option(
        0, kind=int, min=0, max=MAX_SEED, help="Generator seed (another seed is another feature space)."
    ),
    frame_noise: float = number_option(0.5, min=0, help="Per-frame noise; larger is harder."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset in --out."),
) -> None:
    """Planted-signal benchmark data whose true track and moment are known (MGSV-EC shaped)."""
    from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset

    config = SyntheticConfig(num_tracks=tracks, num_train_videos=train_videos, val_size=val_size,
                             test_size=test_size, seed=seed, frame_noise=frame_noise)
    path = write_synthetic_dataset(out, config, force=force)
    typer.echo(f"wrote {path}: {config.num_videos} videos ({train_videos} train / {val_size} val / {test_size} "
               f"test) over {tracks} tracks")
