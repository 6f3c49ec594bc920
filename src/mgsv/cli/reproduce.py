"""`mgsv reproduce`: the paper's tables from a fresh machine in one command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mgsv.cli import app
from mgsv.cli.numbers import number_option
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name

# Kept equal to mgsv.features.fetch.DEFAULT_REPO / DEFAULT_REVISION (not imported: `mgsv --help` stays light).
DEFAULT_REPO = "xxayt/MGSV-EC"
DEFAULT_REVISION = "main"


@app.command()
def reproduce(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for data, runs, evaluations and the results.")],
    data: Annotated[Path | None, typer.Option(
        "--data", "-d", help="An MGSV-EC dataset folder (CSVs + features/); default: fetch and import into OUT/data."
    )] = None,
    tables: Annotated[list[str], typer.Option(
        "--table", "-t", help="4 (official split), 5 (random splits), 6 / 7 (ablations), fig5 (data size). "
                              "Repeatable.")] = ["4"],  # noqa: B006 (typer reads the default, never mutates it)
    systems: Annotated[list[str], typer.Option(
        "--system", help="Table 4 systems besides MaDe: a preset name, mvpt+/uvcom+, or all. Repeatable.")] = [],  # noqa: B006
    made: Annotated[str, typer.Option(
        "--made", help="made (the official code's behaviour, behind the published numbers) or made-paper (the "
                       "paper's text).")] = "made",
    seeds: Annotated[int, number_option("--seeds", kind=int, min=1, help="Training seeds per cell (42, 43, ...).")] = 1,
    splits: Annotated[int, number_option("--splits", kind=int, min=2, help="Random splits for Table 5.")] = 3,
    fractions: Annotated[list[float], number_option(
        "--fraction", above=0, max=1, help="Fig. 5's training fractions (repeatable).")] = [0.25, 0.5, 0.75, 1.0],  # noqa: B006
    overrides: Annotated[list[str], typer.Option(
        "--set", help="Override for every run, e.g. train.epochs=5 or model.d_model=128. Repeatable.")] = [],  # noqa: B006
    precision: Annotated[str, typer.Option(help="fp32 (as the official code) or bf16 autocast (faster).")] = "fp32",
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    warmup_steps: Annotated[int, number_option(
        "--warmup-steps", kind=int, min=0, help="Training steps timed per model for the estimate (0: no estimate).")] = 3,
    plan_only: Annotated[bool, typer.Option("--plan-only", help="Print the plan and the estimate, then stop.")] = False,
    repo_id: Annotated[str, typer.Option("--repo-id", help="Dataset repository to fetch.")] = DEFAULT_REPO,
    revision: Annotated[str, typer.Option("--revision", help="Branch, tag or commit to fetch.")] = DEFAULT_REVISION,
    token: Annotated[str | None, typer.Option("--token", help="Hugging Face token (default: HF_TOKEN).")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Hugging Face cache folder.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show step progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary at the end (log on stderr).")] = False,
) -> None:
    """Fetch MGSV-EC, train, evaluate and set the numbers beside the paper's: results.md, results.json, report.html.

    Resumable: run the same command again after an interruption; finished runs are skipped and a killed run
    continues from its last saved epoch. docs/reproduce.md describes the plan, the tables and the time it takes.
    """
    from mgsv.reproduce.data import FetchOptions
    from mgsv.reproduce.plan import PlanOptions, build_plan
    from mgsv.reproduce.runner import RunOptions, run_plan

    device = device_name(device)  # "auto" resolved once: the plan, the estimate and every run name one device
    names = tuple(s.strip() for item in systems for s in item.split(",") if s.strip())
    plan = build_plan(PlanOptions(tuple(tables), names, made, seeds, splits, tuple(fractions), tuple(overrides)))
    console = Console(stderr=as_json, highlight=False)
    fetch = FetchOptions(repo_id, revision, os.environ.get("HF_ENDPOINT") or None, cache_dir, token)
    options = RunOptions(out, data, fetch, precision, device, warmup_steps, plan_only, progress and not as_json)
    outcome = run_plan(plan, options, lambda line: console.print(escape(line)))
    if as_json:
        print(json.dumps({"trained": outcome.trained, "skipped": outcome.skipped, "evaluated": outcome.evaluated,
                          "failed": outcome.failed, "results": {k: str(v) for k, v in outcome.results.items()},
                          "estimates": {n: {"steps": e.steps, "seconds": e.seconds, "disk_bytes": e.disk_bytes}
                                        for n, e in outcome.estimates.items()}}, indent=2))
    elif outcome.results:
        console.print(escape(f"results: {outcome.results['md']}, {outcome.results['json']}, {outcome.results['html']}"))
    if outcome.failed:
        raise typer.Exit(1)
