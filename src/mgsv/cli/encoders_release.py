"""`mgsv encoders verify --against-release`: the options into `verify_against_release`, its report into text / JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mgsv.cli.common import for_cli, progress_bars

if TYPE_CHECKING:
    from mgsv.evaluation.release_check import ReleaseCheckReport
    from mgsv.extract.pipeline import EncoderOptions

SHOWN_IDS = 10  # ids listed per reason in the text output (the JSON and OUT/report.json list all)


def run_release_check(encoders: EncoderOptions, out: Path, release: Path | None, raw_media: list[Path],
                      checkpoint: Path | None, token: str | None, cache_dir: Path | None, limit: int | None,
                      min_cosine: float | None, force: bool, json_output: bool) -> None:
    """Load the encoders, run the check, print the report; exit 1 unless it passed."""
    from mgsv.evaluation.protocol import EvalOptions
    from mgsv.evaluation.release_check import RELEASE_MIN_COSINE, HubAccess, verify_against_release

    clip, ast = encoders.load_clip(), encoders.load_ast()
    hub = HubAccess(os.environ.get("HF_ENDPOINT") or None, cache_dir, token)
    with progress_bars(not json_output) as progress:
        report = verify_against_release(out, clip, ast, release=release, raw_media=raw_media, hub=hub,
                                        checkpoint=checkpoint, limit=limit,
                                        min_cosine=RELEASE_MIN_COSINE if min_cosine is None else min_cosine,
                                        eval_options=EvalOptions(device=encoders.device), force=force,
                                        progress=progress)
    if json_output:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print_report(Console(), report, out)
    if not report.ok:
        raise typer.Exit(code=1)


def print_report(console: Console, report: ReleaseCheckReport, out: Path) -> None:
    """Per item and per modality agreement, the ids not compared by reason, the metrics of both sides."""
    table = Table(title=f"re-extracted vs released tokens (pass: every cosine >= {report.min_cosine:g})")
    for column in ("modality", "id", "tokens ours/released", "cosine min", "cosine mean", "max abs diff"):
        table.add_column(column, justify="left" if column in ("modality", "id") else "right", overflow="fold")
    for row in sorted(report.items, key=lambda r: (r.modality, r.cosine_mean)):
        table.add_row(row.modality, escape(row.item), f"{row.ours_tokens}/{row.released_tokens}",
                      f"{row.cosine_min:.5f}", f"{row.cosine_mean:.5f}", f"{row.max_abs_diff:.2e}")
    console.print(table)
    for modality, outcome in report.outcomes.items():
        summary = report.summary(modality)
        if summary is not None:
            shares = ", ".join(f">= {t}: {share:.1%}" for t, share in summary.at_least.items())
            console.print(f"{modality}: {summary.items} of {outcome.ids} ids compared; cosine mean "
                          f"{summary.cosine_mean:.5f}, min {summary.cosine_min:.5f} (worst {escape(summary.worst_item)}"
                          f"); items with every token {shares}; {summary.counts_differ} with another token count",
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"{modality}: none of {outcome.ids} ids compared", highlight=False)
        for reason, ids in (("no raw file", outcome.missing_raw), ("no released features", outcome.missing_release),
                            ("failed", outcome.failed)):
            if ids:
                shown = "; ".join(escape(for_cli(i)) for i in ids[:SHOWN_IDS])
                more = f" (and {len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else ""
                console.print(f"  [yellow]{reason} ({len(ids)}):[/] {shown}{more}", highlight=False, soft_wrap=True)
    _print_metrics(console, report)
    console.print(f"{report.rows_compared} of {report.rows_checked} test rows compared (the release lists "
                  f"{report.rows}); full report: {escape(str(out / 'report.json'))}", highlight=False,
                  soft_wrap=True)
    console.print("[bold green]agree[/]" if report.ok else "[bold red]DIFFER[/]: some tokens are below "
                  f"{report.min_cosine:g}, or nothing could be compared")


def _print_metrics(console: Console, report: ReleaseCheckReport) -> None:
    metrics = report.metrics
    if metrics is None:
        console.print(f"metrics: not computed ({escape(report.metrics_skipped or '')})", highlight=False)
        return
    for side, reason in metrics.not_evaluated.items():
        console.print(f"[yellow]metrics on the {side.replace('_', '-')} features not computed:[/] "
                      f"{escape(for_cli(reason))}", highlight=False, soft_wrap=True)
    released, ours = metrics.metrics.get("released"), metrics.metrics.get("re_extracted")
    names = list(released or ours or {})
    if not names:
        return
    table = Table(title=f"{escape(metrics.checkpoint)} on {metrics.rows} rows ({metrics.tracks} tracks)")
    for column in ("metric", "released", "re-extracted", "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    difference = metrics.difference
    for name in names:
        cells = [f"{side[name]:.4f}" if side and name in side else "-" for side in (released, ours)]
        table.add_row(escape(name), *cells, f"{difference[name]:+.4f}" if name in difference else "-")
    console.print(table)
    for note in metrics.notes.values():
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
