"""`mgsv train` and `mgsv eval`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mgsv.cli import app
from mgsv.cli.numbers import number_option
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name

console = Console()


@app.command()
def train(
    preset: str = typer.Option(..., "--preset", "-p", help="Model preset (see `mgsv models`)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder: {train,val,test}_data.csv + features/."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create (or continue with --resume)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a setting: model.KEY=VALUE (or KEY=VALUE) for the model config, "
                          "train.KEY=VALUE for the training recipe (e.g. train.epochs=5). Repeatable."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast (faster on CPUs with AMX and on GPUs)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last epoch."),
    train_fraction: float = number_option(
        1.0, above=0, max=1, help="Train on this random fraction of the train split (paper Fig. 5)."),
    eval_top_k: int = number_option(0, kind=int, min=0, help="Per-epoch validation: detect on each query's top-k "
                                    "tracks (0: the official ground-truth-pair shortcut, same MoR@k, much faster)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train a preset on a dataset folder with the official recipe (resumable; torchrun for several GPUs)."""
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    from mgsv.models.registry import get_preset
    from mgsv.training.overrides import parse_set_items
    from mgsv.training.trainer import Trainer, TrainSettings

    model_overrides, recipe_overrides = parse_set_items(get_preset(preset), overrides)
    settings = TrainSettings(
        preset=preset, data_dir=data, out_dir=out, model_overrides=model_overrides,
        recipe_overrides=recipe_overrides, precision=precision, device=device, resume=resume,
        train_fraction=train_fraction, eval_top_k=eval_top_k, progress=progress,
    )
    trainer = Trainer(settings)
    state = trainer.fit()
    if trainer.dist.main:
        ending = "stopped early" if state.stopped_early else "finished"
        console.print(f"[bold]{ending}[/] after {state.epoch} epochs ({state.step} steps). Run folder: {out}")
        table = Table("checkpoint", "selected by", "best val value")
        from mgsv.training.trainer import SELECTION

        for folder, metric, _ in SELECTION:
            value = state.best.get(f"ckpt:{metric}")
            table.add_row(str(out / "checkpoints" / folder), metric, "-" if value is None else f"{value:.4f}")
        console.print(table)
        console.print(f"Evaluate on test with: mgsv eval {out} --split test")


@app.command("eval")
def evaluate_command(
    run_or_checkpoint: Path | None = typer.Argument(
        None, help="A run folder (uses its selected checkpoint) or a checkpoint. Omit with --ranker/--grounder."),
    ranker: Path | None = typer.Option(
        None, "--ranker", help="Composite system: the run (or checkpoint) that ranks the tracks, e.g. an mvpt+ run."),
    grounder: Path | None = typer.Option(
        None, "--grounder", help="Composite system: the run (or checkpoint) that detects the moment on each "
                                 "top-k track, e.g. a uvcom+ run."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Dataset folder (default: the run's)."),
    split: str = typer.Option("test", help="train, val or test."),
    checkpoint: str | None = typer.Option(
        None, help="Which checkpoint of a run (default: best_mor1_iou07; best_miou or best_r1 for runs of "
                   "grounding-only or retrieval-only models)."),
    top_k: int | None = number_option(
        None, kind=int, min=0,
        help="MsG: detect a moment on each query's top-k tracks (0: GT pair only). Default: 100 for models "
                   "that rank and detect, 0 for grounding-only (SmG) or retrieval-only (V2MR) models."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch_size: int = number_option(256, kind=int, min=1, help="Videos/tracks per encoding forward."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: next to the checkpoint)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """SmG, V2MR and MsG on a split: predictions JSONL, metrics JSON and an HTML/PNG report.

    A composite system (the paper's MVPt+/UVCOM+) ranks with one trained model and grounds with another:
    `mgsv eval --ranker MVPT_RUN --grounder UVCOM_RUN`.
    """
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    from mgsv.cli.score import print_tables
    from mgsv.errors import MgsvError
    from mgsv.evaluation.protocol import EvalOptions
    from mgsv.evaluation.runner import resolve_composite_target, resolve_target, run_evaluation

    if (ranker is None) != (grounder is None):
        raise MgsvError("a composite system needs both --ranker and --grounder")
    if ranker is not None:
        if run_or_checkpoint is not None:
            raise MgsvError("give either a run / checkpoint or --ranker and --grounder, not both")
        target = resolve_composite_target(ranker, grounder, data, checkpoint)
        name = f"{target.checkpoint} + {target.grounder}"
        default_out = target.grounder.parent.parent / f"eval-{split}-ranked-by-{target.checkpoint.parent.parent.name}"
    elif run_or_checkpoint is None:
        raise MgsvError("nothing to evaluate: give a run or checkpoint folder, or --ranker RUN --grounder RUN")
    else:
        target = resolve_target(run_or_checkpoint, data, checkpoint)
        name = str(target.checkpoint)
        default_out = target.checkpoint.parent.parent / f"eval-{split}-{target.checkpoint.name}"
    options = EvalOptions(batch_size=batch_size, top_k=top_k, precision=precision, device=device)
    out = out or default_out
    result = run_evaluation(target, split, options, out, force=force, progress=_progress_printer(as_json))
    if as_json:
        print(json.dumps({"metrics": result.metrics, "notes": result.notes, "not_computed": result.not_computed,
                          "out": str(out)}, indent=2))
        return
    print_tables(console, {"metrics": result.metrics, "not_computed": result.not_computed},
                  f"[bold]{name}[/] on {split}: {len(result.video_ids)} videos")
    for key, note in result.notes.items():
        console.print(f"{key}: {note}")
    console.print(f"Wrote {out}/predictions.jsonl, metrics.json, report.html")


def _progress_printer(quiet: bool):
    """A compact stage printer for evaluation (stderr; silent with --json)."""
    err = Console(stderr=True)
    last: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        step = max(total // 10, 1)
        if done == total or done - last.get(stage, 0) >= step:
            last[stage] = done
            err.print(f"  {stage}: {done}/{total}", highlight=False)

    return report
