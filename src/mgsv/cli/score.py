"""`mgsv score`: benchmark metrics of a predictions file (or a baseline) against MGSV-EC annotations."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mgsv.cli import app


class SplitChoice(str, Enum):
    val = "val"
    test = "test"


class BaselineChoice(str, Enum):
    start_zero = "start-zero"


def _format(name: str, value: float) -> str:
    if name == "mIoU":
        return f"{value:.3f}"
    if name == "MRR":
        return f"{value:.4f}"
    if name == "MedianR":
        return f"{value:g}"
    if name == "MeanR":
        return f"{value:.1f}"
    return f"{value:.2f}"


def _table(title: str, names: list[str], rows: list[tuple[str, list[str]]], metrics: dict[str, float]) -> Table:
    """One rich table: a header of column labels, then one line per (label, metric names)."""
    table = Table(title=title, title_justify="left", show_edge=False)
    labelled = any(label for label, _ in rows)
    if labelled:
        table.add_column("")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    for label, keys in rows:
        cells = [_format(key, metrics[key]) if key in metrics else "n/a" for key in keys]
        table.add_row(*([label] if labelled else []), *cells)
    return table


def print_tables(console: Console, scores_dict: dict, header: str) -> None:
    from mgsv.evaluation import metrics as m

    metrics = scores_dict["metrics"]
    not_computed = scores_dict["not_computed"]
    smg = ["mIoU", *(m.iou_name(t) for t in m.IOU_THRESHOLDS)]
    v2mr = [m.recall_name(k) for k in (1, 5, 10, 25, 50, 100)] + ["MedianR", "MeanR", "MRR"]
    mor_rows = [(f"IoU>{t}", [m.mor_name(k, t) for k in m.MOR_KS]) for t in m.MOR_THRESHOLDS]
    groups = [
        ("SmG (single-music grounding)", smg, [("", smg)]),
        ("V2MR (video-to-music retrieval)", v2mr, [("", v2mr)]),
        ("MsG (music-set grounding)", [f"MoR@{k}" for k in m.MOR_KS], mor_rows),
    ]
    console.print(header)
    notes: dict[str, list[str]] = {}
    for title, columns, rows in groups:
        names = [name for _, keys in rows for name in keys]
        short_title = title.split(" ")[0]
        if not any(name in metrics for name in names):
            # Nothing of this group could be computed: one line instead of a table of n/a.
            notes.setdefault(not_computed.get(names[0], "not computed"), []).append(f"all of {short_title}")
            continue
        console.print(_table(title, columns, rows, metrics))
        for name in names:
            if name not in metrics:
                notes.setdefault(not_computed.get(name, "not computed"), []).append(name)
    for reason, names in notes.items():
        console.print(f"[yellow]n/a[/] {escape(', '.join(names))}: {escape(reason)}", highlight=False)


@app.command()
def score(
    predictions: Annotated[
        Path | None, typer.Option("--predictions", "-p", help="Predictions JSONL (format: docs/architecture.md).")
    ] = None,
    baseline: Annotated[
        BaselineChoice | None,
        typer.Option("--baseline", help="Score a baseline computed from the annotations alone instead."),
    ] = None,
    annotations: Annotated[
        Path | None, typer.Option("--annotations", "-a", help="Annotation CSV (MGSV-EC schema).")
    ] = None,
    split: Annotated[
        SplitChoice | None,
        typer.Option("--split", help="Bundled MGSV-EC split to score against (default: test)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """SmG, V2MR and MsG metrics (the paper's Table 4) of a predictions file or a baseline."""
    from mgsv.data.annotations import bundled_annotations, load_annotations
    from mgsv.data.predictions import read_predictions
    from mgsv.evaluation.scoring import baseline_scores, score_predictions

    if (predictions is None) == (baseline is None):
        raise typer.BadParameter("give exactly one of them", param_hint="--predictions / --baseline")
    if annotations is not None and split is not None:
        raise typer.BadParameter("give one of them, not both", param_hint="--annotations / --split")
    annotation_path = annotations if annotations is not None else bundled_annotations((split or SplitChoice.test).value)
    table = load_annotations(annotation_path)
    if predictions is not None:
        scores = score_predictions(table, read_predictions(predictions), where=str(predictions))
        source = str(predictions)
    else:
        assert baseline is not None
        scores = baseline_scores(table, baseline.value)
        source = f"baseline {baseline.value}"

    result = {"annotations": str(annotation_path), "predictions": source, **scores.to_dict()}
    if json_output:
        typer.echo(json.dumps(result))
        return
    label = f"split {split.value if split else 'test'} (bundled)" if annotations is None else str(annotation_path)
    print_tables(Console(), result, f"[bold]{escape(source)}[/] on {escape(label)}: {scores.n_videos} videos")
