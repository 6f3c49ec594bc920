"""Run a reproduction plan, resumably: prepare the data, estimate, train, evaluate, rebuild the tables.

    OUT/runs/NAME/              a training run folder (`mgsv train`'s layout) + finished.json once it is done
    OUT/evals/NAME/             test predictions, metrics.json, report (`mgsv eval`'s layout)
    OUT/results.{json,md}, OUT/report.html

Re-running the same command skips finished runs and evaluations, resumes a killed run from its last saved epoch
(a run killed before its first epoch ended starts again), and rebuilds the tables from everything finished. One
failing run (diverged, bad data) is reported and the others go on.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgsv.atomic_io import write_json_atomic
from mgsv.errors import InputError, MgsvError
from mgsv.evaluation.protocol import EvalOptions
from mgsv.evaluation.runner import resolve_composite_target, resolve_target, run_evaluation
from mgsv.reproduce import estimate as est
from mgsv.reproduce.data import FetchOptions, is_dataset, official_dataset, random_split
from mgsv.reproduce.plan import OFFICIAL, Plan, TrainRun
from mgsv.reproduce.tables import write_results
from mgsv.training import run_folder
from mgsv.training.trainer import Trainer, TrainSettings

FINISHED_FILE = "finished.json"
Say = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    """How to run the plan."""

    out: Path
    data: Path | None = None  # an existing dataset folder (official split); else OUT/data is fetched
    fetch: FetchOptions | None = None
    precision: str = "bf16"
    device: str = "cpu"
    warmup_steps: int = 3  # 0: no warm-up, no time estimate
    plan_only: bool = False
    progress: bool = True


@dataclass
class Outcome:
    """What a call did."""

    estimates: dict[str, est.RunEstimate] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    evaluated: list[str] = field(default_factory=list)
    results: dict[str, Path] = field(default_factory=dict)


def prepare_datasets(plan: Plan, options: RunOptions, say: Say) -> dict[str, Path]:
    """Every dataset the plan uses: the official one, then the random splits."""
    if options.fetch is None and options.data is None:
        raise MgsvError("no data: give a dataset folder or fetch options")
    official = official_dataset(options.out, options.data, options.fetch, say)  # type: ignore[arg-type]
    folders = {OFFICIAL: official}
    for seed in plan.splits:
        folders[f"split-{seed}"] = random_split(options.out, official, seed)
        say(f"random split {seed}: {folders[f'split-{seed}']}")
    return folders


def estimate_plan(plan: Plan, datasets: dict[str, Path], options: RunOptions, say: Say) -> dict[str, est.RunEstimate]:
    """Warm up each distinct model once on the official data and estimate every run."""
    measured: dict[tuple[str, str], est.Measured] = {}
    val_size, test_size = est.split_sizes(datasets[OFFICIAL])
    estimates = {}
    for run in plan.runs.values():
        key = est.model_key(run)
        if key not in measured:
            steps = f"{options.warmup_steps} training step{'s' * (options.warmup_steps > 1)}"
            say(f"warm-up: {' '.join(p for p in key if p)}: {steps} and one "
                f"validation pass on {options.device} ({options.precision}) ...")
            measured[key] = est.measure(run, datasets[OFFICIAL], options.out / ".warmup", options.precision,
                                        options.device, options.warmup_steps)
            m = measured[key]
            say(f"  {m.step_seconds:.2f} s per step ({m.steps_per_epoch} steps per epoch), validation "
                f"{m.val_seconds:.1f} s")
        estimates[run.name] = est.estimate_run(run, measured[key], val_size, test_size)
    return estimates


def print_plan(plan: Plan, estimates: dict[str, est.RunEstimate], options: RunOptions, say: Say) -> None:
    """The plan, with time and disk when estimated."""
    say(f"plan: {len(plan.runs)} training run(s), {len(plan.evals)} test evaluation(s), tables "
        f"{', '.join(plan.tables)}; MaDe preset {plan.made}")
    for index, run in enumerate(plan.runs.values(), 1):
        line = f"  [{index}/{len(plan.runs)}] {run.describe()}"
        if run.name in estimates:
            e = estimates[run.name]
            line += f": {_range(e.steps, lambda n: f'{n:,}')} steps, {_range(e.seconds, est.format_duration)}"
        say(line)
    if estimates:
        total = est.summary(plan, estimates)
        free = shutil.disk_usage(options.out).free
        say(f"estimate on {options.device} ({options.precision}): {_range(total['seconds'], est.format_duration)} "
            f"in all (early stopping decides where in a range), "
            f"disk {est.format_bytes(total['disk_bytes'])} for runs and evaluations ({est.format_bytes(free)} free)")
        if free < total["disk_bytes"]:
            say(f"warning: {options.out} has {est.format_bytes(free)} free, less than the "
                f"{est.format_bytes(total['disk_bytes'])} the runs need")


def _range(pair: Any, show: Callable[[Any], str]) -> str:
    """"a - b", or "a" when both ends show the same."""
    low, high = show(pair[0]), show(pair[1])
    return low if low == high else f"{low} - {high}"


def train_run(run: TrainRun, data_dir: Path, options: RunOptions, index: int, count: int, say: Say) -> None:
    """Train one run to its end (resuming its folder when it holds a saved epoch), then mark it finished."""
    folder = options.out / "runs" / run.name
    resume = (run_folder.checkpoint_dir(folder, "last") / "model.safetensors").is_file()
    if not resume and folder.exists():
        say(f"  {run.name}: killed before its first epoch was saved; starting it again")
        shutil.rmtree(folder)
    settings = TrainSettings(preset=run.preset, data_dir=data_dir, out_dir=folder, model_overrides=run.model_overrides,
                             recipe_overrides=run.recipe_overrides, precision=options.precision,
                             device=options.device, resume=resume, train_fraction=run.fraction,
                             progress=options.progress)
    trainer = Trainer(settings)
    epochs = trainer.recipe.epochs
    started = time.perf_counter()
    if resume:
        say(f"[{index}/{count}] resuming {run.describe()} after epoch {trainer.state.epoch}/{epochs}")
    else:
        say(f"[{index}/{count}] training {run.describe()}: {epochs} epochs of {trainer.steps_per_epoch} steps at most")

    def on_epoch(row: dict[str, Any]) -> None:
        val = ", ".join(f"{k[4:]} {v:.3f}" for k, v in row.items()
                        if k in ("val_mIoU", "val_R@1", "val_MoR@1 (IoU>0.7)") and isinstance(v, float))
        say(f"[{index}/{count}] {run.name}: epoch {row['epoch']}/{epochs} ({row['seconds']:.0f} s)"
            + (f": val {val}" if val else ""))

    state = trainer.fit(on_epoch=on_epoch)
    write_json_atomic(folder / FINISHED_FILE, {"epochs": state.epoch, "steps": state.step,
                                               "stopped_early": state.stopped_early,
                                               "seconds_this_call": round(time.perf_counter() - started, 1)})


def evaluate_run(plan: Plan, name: str, options: RunOptions, datasets: dict[str, Path], say: Say) -> None:
    """The test evaluation of one finished run (or composite) into OUT/evals/NAME."""
    job = plan.evals[name]
    runs = [options.out / "runs" / r for r in job.runs]
    data = datasets[job.data]
    target = resolve_target(runs[0], data, None) if len(runs) == 1 else \
        resolve_composite_target(runs[0], runs[1], data, None)
    say(f"evaluating {name} on test ...")
    result = run_evaluation(target, "test", EvalOptions(precision=options.precision, device=options.device),
                            options.out / "evals" / name, force=True)
    metrics = result.metrics
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("mIoU", "R@1", "MoR@1 (IoU>0.7)") if k in metrics)
    say(f"  {name}: {shown}")


def run_plan(plan: Plan, options: RunOptions, say: Say) -> Outcome:
    """Prepare, estimate, then train and evaluate everything not yet finished; the tables follow each evaluation."""
    try:
        options.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(options.out, f"cannot create the output folder: {exc.strerror or exc}") from exc
    outcome = Outcome()
    if options.data is None and not is_dataset(options.out / "data"):
        print_plan(plan, {}, options, say)
        say(f"data: MGSV-EC is not in {options.out / 'data'} yet; fetching and importing it needs about "
            f"{est.format_bytes(est.fetch_disk_bytes())} ({est.format_bytes(shutil.disk_usage(options.out).free)} "
            "free); the time estimate follows once it is there")
        if options.plan_only:
            return outcome
    datasets = prepare_datasets(plan, options, say)
    write_json_atomic(options.out / "plan.json", plan.to_dict())
    pending = [r for r in plan.runs.values() if not (options.out / "runs" / r.name / FINISHED_FILE).is_file()]
    if options.warmup_steps > 0 and pending:
        outcome.estimates = estimate_plan(plan, datasets, options, say)
    print_plan(plan, outcome.estimates, options, say)
    if options.plan_only:
        return outcome

    def status() -> dict[str, Any]:
        done = [n for n in plan.runs if (options.out / "runs" / n / FINISHED_FILE).is_file()]
        evaluated = [n for n in plan.evals if (options.out / "evals" / n / "metrics.json").is_file()]
        return {"runs_finished": len(done), "runs_planned": len(plan.runs), "evaluations_finished": len(evaluated),
                "evaluations_planned": len(plan.evals), "failed": outcome.failed,
                "summary": f"{len(done)}/{len(plan.runs)} training runs and {len(evaluated)}/{len(plan.evals)} "
                           f"test evaluations finished" + (f"; {len(outcome.failed)} failed" if outcome.failed
                                                           else "")}

    outcome.results = write_results(plan, options.out, status())
    runs = list(plan.runs.values())
    for index, run in enumerate(runs, 1):
        if (options.out / "runs" / run.name / FINISHED_FILE).is_file():
            outcome.skipped.append(run.name)
            say(f"[{index}/{len(runs)}] {run.describe()}: finished earlier, skipped")
        else:
            try:
                train_run(run, datasets[run.data], options, index, len(runs), say)
                outcome.trained.append(run.name)
            except MgsvError as exc:
                outcome.failed[run.name] = str(exc)
                say(f"[{index}/{len(runs)}] {run.name} failed: {exc}")
                continue
        for name, job in plan.evals.items():
            ready = all((options.out / "runs" / r / FINISHED_FILE).is_file() for r in job.runs)
            if ready and run.name in job.runs and not (options.out / "evals" / name / "metrics.json").is_file():
                try:
                    evaluate_run(plan, name, options, datasets, say)
                    outcome.evaluated.append(name)
                except MgsvError as exc:
                    outcome.failed[name] = str(exc)
                    say(f"evaluation {name} failed: {exc}")
                outcome.results = write_results(plan, options.out, status())
    outcome.results = write_results(plan, options.out, status())
    return outcome

