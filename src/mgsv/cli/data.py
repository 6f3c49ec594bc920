"""`mgsv data import` and `mgsv data fetch`: get MGSV-EC's official features into a feature store."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mgsv.cli.data_app import data_app
from mgsv.cli.numbers import number_option

DEFAULT_REPO = "xxayt/MGSV-EC"  # kept equal to mgsv.features.fetch.DEFAULT_REPO (not imported: keeps --help light)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar per modality on stderr, fed by the importer's (modality, done, total) callback."""
    if not enabled:
        yield None
        return
    bars = Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    tasks: dict[str, int] = {}

    def update(modality: str, done: int, total: int) -> None:
        if modality not in tasks:
            tasks[modality] = bars.add_task(f"{modality}", total=total)
        bars.update(tasks[modality], completed=done)

    with bars:
        yield update


def _print_import(console: Console, result: object) -> None:
    from mgsv.features.official import ImportResult

    assert isinstance(result, ImportResult)
    if result.already_complete:
        console.print(f"{escape(str(result.out))} already holds every id; nothing to do")
    for name, count in result.counts.items():
        extra = f", {result.ignored[name]:,d} files not in the CSVs ignored" if result.ignored.get(name) else ""
        console.print(
            f"{name:5} {count:7,d} items ({result.converted[name]:,d} converted now{extra}), spec {result.specs[name]}"
        )
    console.print(f"feature store: {escape(str(result.out))}  ({result.seconds:.1f} s)")


@data_app.command("import")
def import_command(
    src: Annotated[Path, typer.Argument(help="Official feature folder (holds vit_feature1/ and ast_feature2p5/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature store to create, e.g. DATA/features.")],
    csv: Annotated[
        list[Path] | None,
        typer.Option(
            "--csv", help="Import exactly the ids of these annotation CSVs (repeat the option); default: all files."
        ),
    ] = None,
    stride: Annotated[
        float, number_option("--stride", unit="s", above=0, help="Music window stride in seconds: 2.5, 5, 7.5 or 10.")
    ] = 2.5,
    workers: Annotated[int, number_option("--workers", kind=int, min=1, help="Threads reading .pt files.")] = 4,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing store at --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Convert the official per-id .pt features into a feature store (resumable; appears only when complete)."""
    from mgsv.features.official import import_official

    with _progress_bars(not json_output) as progress:
        result = import_official(
            src, out, csvs=csv or (), stride=stride, force=force, workers=workers, progress=progress
        )
    if json_output:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print_import(Console(), result)


@data_app.command("fetch")
def fetch_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Dataset folder: CSVs, MGSV_feature/ and (with --import) features/.")
    ],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hugging Face dataset repository.")] = DEFAULT_REPO,
    revision: Annotated[str, typer.Option("--revision", help="Branch, tag or commit of the dataset.")] = "main",
    features: Annotated[
        bool, typer.Option("--features/--no-features", help="Also download and unpack MGSV_feature.zip (several GB).")
    ] = True,
    import_: Annotated[bool, typer.Option("--import", help="Import the unpacked features into OUT/features.")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Hugging Face cache folder (default: HF_HOME's hub cache).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace differing CSVs and an existing OUT/features.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Download MGSV-EC from the Hugging Face Hub (resumes dropped connections; checks sizes), unpack, import.

    HF_ENDPOINT selects a mirror; HF_HUB_OFFLINE=1 uses only files already in the cache.
    """
    from mgsv.features.fetch import fetch_dataset

    console = Console(stderr=json_output)
    if features and not json_output:
        console.print(
            "downloading (dropped connections are resumed; files already in the cache are not fetched again) ..."
        )
    with _progress_bars(not json_output) as progress:
        result = fetch_dataset(
            out,
            repo_id=repo_id,
            revision=revision,
            features=features,
            import_features=import_,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=cache_dir,
            force=force,
            progress=progress,
        )
    if json_output:
        typer.echo(json.dumps(result.to_dict()))
        return
    for note in result.notes:
        console.print(f"note: {escape(note)}")
    console.print(f"{escape(result.repo_id)} @ {escape(result.revision)}")
    for name, path in result.files.items():
        console.print(f"  {name:18} {path.stat().st_size:>15,d} bytes  {escape(str(path))}")
    if result.features_dir:
        console.print(f"features unpacked: {escape(str(result.features_dir))}")
    if result.imported:
        _print_import(console, result.imported)
