"""How long a reproduction takes and how much disk it needs, from a short measured warm-up on the chosen device.

For each distinct model of the plan (preset + ablation), a throw-away trainer on the real training data times a few
optimiser steps and one validation pass. A run's time is then

    steps per epoch x epochs x step time  +  epochs x validation time  +  test evaluation

between the recipe's `min_epochs` (the earliest early stopping can end it) and `epochs`. The test evaluation of a
model that ranks and grounds detects on each query's top-100 tracks, 101 detections per query against the one per
query of validation; it is estimated as the validation time x 101 x (test queries / val queries), an upper bound
(ranking is done once in both). Disk: each run keeps five checkpoints and one trainer state (Adam's two moments),
each the size of the weights in float32, and its predictions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgsv.data.annotations import load_annotations
from mgsv.models.contract import capabilities_of
from mgsv.reproduce.plan import Plan, TrainRun
from mgsv.training.trainer import Trainer, TrainSettings

CHECKPOINT_COPIES = 5 + 3  # best_r1, best_miou, best_mor1_iou05, best_mor1_iou07, last + trainer state (x3)
PREDICTION_BYTES = 60  # about one ranked track with its moment in predictions.jsonl
TOP_K = 100
# MGSV-EC as published (dataset card): 53,194 videos of at most 50 CLIP frames, 4,050 tracks of at most 96 AST
# windows, stored by the official layout as float32 [50, 512] / [96, 768] tensors plus masks, and imported into a
# float16 store of the valid tokens only (on average about 24 frames per video and 56 windows per track, the mean
# valid lengths measured on the val split's features: 23.8 and 56.0).
FETCH_ZIP_BYTES = 3.35e9
UNPACKED_BYTES = 53_194 * (50 * 512 + 50) * 4 + 4_050 * (96 * 768 + 96) * 4
STORE_BYTES = 53_194 * 24 * 512 * 2 + 4_050 * 56 * 768 * 2


@dataclass
class Measured:
    """One model's warm-up on the chosen device."""

    step_seconds: float
    val_seconds: float
    steps_per_epoch: int  # on the whole train split
    epochs: int
    min_epochs: int
    parameters: int
    ranks_and_grounds: bool


@dataclass
class RunEstimate:
    """A run's expected length (a range) and disk use."""

    name: str
    steps: tuple[int, int]  # (min_epochs, epochs) x steps per epoch
    seconds: tuple[float, float]
    disk_bytes: float


def measure(run: TrainRun, data_dir: Path, scratch: Path, precision: str, device: str, steps: int) -> Measured:
    """Time `steps` training steps and one validation pass of `run`'s model on `data_dir` (in `scratch`)."""
    settings = TrainSettings(preset=run.preset, data_dir=data_dir, out_dir=scratch, model_overrides=run.model_overrides,
                             recipe_overrides=run.recipe_overrides, precision=precision, device=device,
                             progress=False)
    try:
        trainer = Trainer(settings)
        step = trainer.time_steps(steps)
        val = trainer.time_validation()
        caps = capabilities_of(trainer.model)
        return Measured(step, val, trainer.steps_per_epoch, trainer.recipe.epochs,
                        min(trainer.recipe.min_epochs, trainer.recipe.epochs),
                        sum(p.numel() for p in trainer.model.parameters()), caps.ranks and caps.grounds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def estimate_run(run: TrainRun, measured: Measured, val_size: int, test_size: int) -> RunEstimate:
    """The time range and disk of `run` from its model's warm-up (see the module docstring)."""
    per_epoch = max(int(measured.steps_per_epoch * run.fraction), 1)
    detections = (1 + TOP_K) if measured.ranks_and_grounds else 1
    test = measured.val_seconds * detections * test_size / max(val_size, 1)

    def seconds(epochs: int) -> float:
        return per_epoch * epochs * measured.step_seconds + epochs * measured.val_seconds + test

    disk = measured.parameters * 4 * CHECKPOINT_COPIES + test_size * (TOP_K if measured.ranks_and_grounds else 1) \
        * PREDICTION_BYTES
    return RunEstimate(run.name, (per_epoch * measured.min_epochs, per_epoch * measured.epochs),
                       (seconds(measured.min_epochs), seconds(measured.epochs)), disk)


def model_key(run: TrainRun) -> tuple[str, str]:
    """Runs of the same model (preset + ablation) share one warm-up; the data fraction does not change a step."""
    return run.preset, run.ablation


def split_sizes(data_dir: Path) -> tuple[int, int]:
    """(val queries, test queries) of a dataset folder."""
    return tuple(len(load_annotations(data_dir / f"{name}_data.csv")) for name in ("val", "test"))  # type: ignore[return-value]


def fetch_disk_bytes() -> float:
    """Disk a first fetch needs: the zip in the Hugging Face cache, its unpacked copy and the imported store."""
    return FETCH_ZIP_BYTES + UNPACKED_BYTES + STORE_BYTES


def format_duration(seconds: float) -> str:
    """"3 h 05 min", "12 min", "40 s"."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def format_bytes(count: float) -> str:
    """"1.2 GB", "35 MB"."""
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.0f} MB"


def summary(plan: Plan, estimates: dict[str, RunEstimate]) -> dict[str, Any]:
    """Totals of the plan: runs, steps and seconds (low, high) and disk."""
    return {
        "runs": len(plan.runs),
        "evaluations": len(plan.evals),
        "steps": [sum(e.steps[0] for e in estimates.values()), sum(e.steps[1] for e in estimates.values())],
        "seconds": [sum(e.seconds[0] for e in estimates.values()), sum(e.seconds[1] for e in estimates.values())],
        "disk_bytes": sum(e.disk_bytes for e in estimates.values()),
    }
