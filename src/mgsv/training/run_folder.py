"""A training run's folder: its identity (run.json), the epoch log (log.csv), and the trainer state for resuming.

    RUN/run.json                 the settings that define the run (resuming must see the same ones) + the command
    RUN/log.csv                  one row per epoch (losses, learning rates, val metrics, seconds)
    RUN/checkpoints/<name>/      best_r1, best_miou, best_mor1_iou05, best_mor1_iou07 and last (mgsv checkpoints)
    RUN/state/epoch-NNNN.pt      optimiser, scheduler, counters and RNG states of the last epoch (named by `last`)
    RUN/curves.png               `mgsv.training.plots`

A run folder is never replaced: a new run refuses an existing non-empty folder, and resuming refuses a folder made
with another preset, config, recipe or dataset.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from mgsv.atomic_io import atomic_path, atomic_writer, write_json_atomic
from mgsv.errors import InputError, MgsvError, OutputExistsError

RUN_FILE = "run.json"
LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"
STATE_DIR = "state"
CHECKPOINTS_DIR = "checkpoints"


def prepare(out: Path, description: dict[str, Any], resume: bool, main: bool) -> None:
    """Create the run folder with its run.json, or check that a resumed one was made with the same settings."""
    run_file = out / RUN_FILE
    if resume:
        if not run_file.is_file():
            raise InputError(out, "nothing to resume: no run.json (start a new run without `resume`)")
        previous = json.loads(run_file.read_text())
        changed = sorted(k for k in description if k != "mgsv_version" and previous.get(k) != description[k])
        if changed:
            raise MgsvError(f"{out}: cannot resume: the run was made with other {', '.join(changed)}; "
                            "start a new run in another folder instead")
        return
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: run folder already exists and is not empty; pass `resume` to continue it "
                                "or choose another `out` (nothing was changed)")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, {**description, "command": sys.argv})


def append_log(out: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row to log.csv (columns grow when a row brings new ones); the file is replaced atomically."""
    path = out / LOG_FILE
    names = list(row)
    rows: list[dict[str, Any]] = []
    if path.exists():
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        names = header + [n for n in names if n not in header]
    rows.append(row)
    with atomic_writer(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def checkpoint_dir(out: Path, name: str) -> Path:
    """Where a run keeps its checkpoint `name`."""
    return out / CHECKPOINTS_DIR / name


def save_trainer_state(out: Path, epoch: int, state: dict[str, Any]) -> str:
    """Write the trainer state of `epoch` (crash-safe); returns its name relative to the run folder."""
    import torch

    folder = out / STATE_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"epoch-{epoch:04d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return f"{STATE_DIR}/{path.name}"


def load_trainer_state(out: Path, name: str, device: str, where: Path) -> dict[str, Any]:
    """The trainer state a `last` checkpoint names (`where` is that checkpoint, for the message)."""
    import torch

    path = out / name
    if not name or not path.is_file():
        raise InputError(where, f"cannot resume: trainer state {path} is missing")
    return torch.load(path, map_location=device, weights_only=False)


def remove_old_states(out: Path, keep: str) -> None:
    """Delete trainer states other than `keep` (the one the `last` checkpoint names)."""
    for old in (out / STATE_DIR).glob("epoch-*.pt"):
        if f"{STATE_DIR}/{old.name}" != keep:
            old.unlink(missing_ok=True)
