"""`mgsv data split`: re-draw train/val/test from the full MGSV-EC annotation set with a seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mgsv.cli.data_app import data_app
from mgsv.cli.numbers import MAX_SEED, number_option


@data_app.command("split")
def split(
    annotations: Annotated[
        list[Path],
        typer.Option("--annotations", "-a", help="Annotation CSV(s) to pool: --annotations A.csv [B.csv ...]."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for train_data.csv, val_data.csv, test_data.csv.")],
    seed: Annotated[
        int,
        number_option(
            "--seed", kind=int, min=0, max=MAX_SEED, help="Seed of the draw (the same seed gives the same split)."
        ),
    ],
    val_size: Annotated[
        int, number_option("--val-size", kind=int, min=1, help="Videos in val, each of a distinct track.")
    ] = 2000,
    test_size: Annotated[
        int, number_option("--test-size", kind=int, min=1, help="Videos in test, each of a distinct track.")
    ] = 2000,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing split files in --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    more_annotations: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[MORE_CSV]...",
            help="More annotation CSVs, so that --annotations A.csv B.csv pools both.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw val and test (one video per distinct track) from the pooled annotations; the rest is train."""
    from mgsv.data.splits import check_outputs, draw_splits, load_annotation_set, write_splits

    check_outputs(out, force)  # before reading anything, so a wrong --out fails at once
    # Click options take one value each; trailing CSVs arrive as arguments and are pooled with the option's.
    annotations = [*annotations, *(more_annotations or [])]
    data = load_annotation_set(annotations)
    rows = draw_splits(
        data.video_ids, data.music_ids, seed, val_size, test_size, where=", ".join(str(p) for p in annotations)
    )
    paths = write_splits(out, data, rows, force=force)
    summary = {
        name: {
            "path": str(paths[name]),
            "videos": len(indices),
            "tracks": len({data.music_ids[i] for i in indices}),
        }
        for name, indices in (("train", rows.train), ("val", rows.val), ("test", rows.test))
    }
    if json_output:
        typer.echo(json.dumps({"seed": seed, "sources": [str(p) for p in annotations], "splits": summary}))
        return
    console = Console()
    for name, info in summary.items():
        console.print(f"{name:5} {info['videos']:7,d} videos {info['tracks']:6,d} tracks -> {escape(info['path'])}")
