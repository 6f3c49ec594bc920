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

# Kept equal to mgsv.features.fetch.DEFAULT_REPO / DEFAULT_REVISION and mgsv.data.raw_fetch.RAW_REPO (not imported:
# keeps --help light).
DEFAULT_REPO = "xxayt/MGSV-EC"
DEFAULT_REVISION = "main"
RAW_REPO = "xxayt/MGSV-EC-Raw"


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
    repo_id: Annotated[
        str | None,
        typer.Option("--repo-id", help=f"Hugging Face dataset repository (default: {DEFAULT_REPO}; with --raw "
                                       f"{RAW_REPO})."),
    ] = None,
    revision: Annotated[
        str, typer.Option("--revision", help="Branch, tag or commit of the dataset (source.json records the commit).")
    ] = DEFAULT_REVISION,
    features: Annotated[
        bool | None,
        typer.Option("--features/--no-features", help="Also download and unpack MGSV_feature.zip (several GB) "
                                                      "(default: features)."),
    ] = None,
    import_features: Annotated[bool, typer.Option("--import", help="Import the unpacked features into OUT/features.")] = False,
    raw: Annotated[
        bool,
        typer.Option("--raw", help=f"Fetch the gated raw videos and music ({RAW_REPO}; needs approved access) and "
                                   "lay them out for `mgsv extract` in OUT."),
    ] = False,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Hugging Face token (default: HF_TOKEN or the one `hf auth login` saved)."),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Hugging Face cache folder (default: HF_HOME's hub cache).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace differing CSVs and an existing OUT/features (OUT/media with --raw).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Download MGSV-EC from the Hugging Face Hub (resumes dropped connections; checks sizes), unpack, import.

    HF_ENDPOINT selects a mirror; HF_HUB_OFFLINE=1 uses only files already in the cache. With --raw: the raw media
    (request access on the dataset's page first), linked into OUT/media by id with the official rows that have
    both files in OUT/*_data.csv; then `mgsv extract --store OUT/features --videos OUT/media/videos --music
    OUT/media/music`.
    """
    endpoint = os.environ.get("HF_ENDPOINT") or None
    console = Console(stderr=json_output)
    if raw:
        if features or import_features:
            raise typer.BadParameter("--raw fetches media, not MGSV_feature.zip; drop --features / --import and run "
                                     "`mgsv extract` on OUT/media", param_hint="--raw")
        _fetch_raw(console, out, repo_id or RAW_REPO, revision, endpoint, cache_dir, token, force, json_output)
        return
    from mgsv.features.fetch import fetch_dataset

    features = True if features is None else features
    if features and not json_output:
        console.print(
            "downloading (dropped connections are resumed; files already in the cache are not fetched again) ..."
        )
    with _progress_bars(not json_output) as progress:
        result = fetch_dataset(
            out,
            repo_id=repo_id or DEFAULT_REPO,
            revision=revision,
            features=features,
            import_features=import_features,
            endpoint=endpoint,
            cache_dir=cache_dir,
            force=force,
            progress=progress,
            token=token,
        )
    if json_output:
        typer.echo(json.dumps(result.to_dict()))
        return
    for note in result.notes:
        console.print(f"note: {escape(note)}")
    console.print(f"{escape(result.repo_id)} @ {escape(result.revision)}")
    for name, path in result.files.items():
        console.print(f"  {name:34} {path.stat().st_size:>15,d} bytes  {escape(str(path))}")
    if result.features_dir:
        console.print(f"features unpacked: {escape(str(result.features_dir))}")
    if result.imported:
        _print_import(console, result.imported)


def _fetch_raw(console: Console, out: Path, repo_id: str, revision: str, endpoint: str | None,
               cache_dir: Path | None, token: str | None, force: bool, json_output: bool) -> None:
    """`mgsv data fetch --raw`: download, lay out, print what was matched and what to run next."""
    from mgsv.data.raw_fetch import fetch_raw

    if not json_output:
        console.print(f"downloading {escape(repo_id)} (gated: your account needs approved access) ...")
    result = fetch_raw(out, repo_id=repo_id, revision=revision, endpoint=endpoint, cache_dir=cache_dir, token=token,
                       force=force)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    layout = result.layout
    console.print(f"{escape(repo_id)} @ {escape(result.commit)}: {layout.videos:,d} videos and {layout.music:,d} "
                  f"tracks matched to CSV ids ({layout.matched_by_prefix:,d} tracks by id prefix)")
    for split, count in layout.splits.items():
        console.print(f"  {split:5} {count.kept:7,d} of {count.rows:7,d} rows have both files "
                      f"({count.videos_missing:,d} videos, {count.music_missing:,d} tracks missing)")
    console.print(f"  {len(layout.other_variants):,d} other variants of annotated tracks left out, "
                  f"{len(layout.unmatched):,d} files match no id, {len(layout.ambiguous):,d} ambiguous ids "
                  f"(listed in {escape(str(out / 'raw-layout.json'))})", soft_wrap=True)
    for split in layout.not_written:
        console.print(f"  [yellow]no {split} row has both files: {split}_data.csv not written[/]")
    console.print("next: mgsv extract --store " + escape(f"{out}/features --videos {out}/media/videos --music "
                                                         f"{out}/media/music"), soft_wrap=True)
