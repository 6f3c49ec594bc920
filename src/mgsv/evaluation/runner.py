"""`mgsv eval`: evaluate a trained checkpoint (or a run's selected checkpoint) on a split and write its outputs.

Outputs (a folder, never overwritten silently): `predictions.jsonl` (the documented format, scorable with
`mgsv score`), `metrics.json`, `report.html` + `report.png`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgsv.data.dataset import PairDataset
from mgsv.data.predictions import write_predictions
from mgsv.errors import InputError, OutputExistsError, SpecMismatchError
from mgsv.evaluation.protocol import EvalOptions, EvalResult, Progress, evaluate
from mgsv.evaluation.report import write_report
from mgsv.features.spec import FeatureSpec
from mgsv.features.store import FeatureStore
from mgsv.models.checkpoint import load_checkpoint

# The checkpoint `mgsv eval RUN` uses by default; the paper's MsG numbers are most likely from this one (REF §4).
DEFAULT_RUN_CHECKPOINT = "best_mor1_iou07"


@dataclass
class EvalTarget:
    """Which checkpoint to evaluate, on which data."""

    checkpoint: Path
    data_dir: Path


def resolve_target(run_or_checkpoint: Path, data_dir: Path | None, checkpoint_name: str | None) -> EvalTarget:
    """A run folder (run.json) picks its `checkpoint_name` and its own data; a checkpoint folder needs `data_dir`."""
    path = Path(run_or_checkpoint)
    if (path / "run.json").is_file():
        run = json.loads((path / "run.json").read_text())
        name = checkpoint_name or DEFAULT_RUN_CHECKPOINT
        checkpoint = path / "checkpoints" / name
        if not checkpoint.is_dir():
            available = sorted(p.name for p in (path / "checkpoints").glob("*") if p.is_dir())
            raise InputError(path, f"no checkpoint {name!r} in this run; available: {', '.join(available) or 'none'}")
        return EvalTarget(checkpoint, Path(data_dir or run["data_dir"]))
    if (path / "config.json").is_file():
        if data_dir is None:
            raise InputError(path, "a checkpoint folder needs --data DIR (the dataset folder to evaluate on)")
        return EvalTarget(path, Path(data_dir))
    raise InputError(path, "neither a run folder (run.json) nor a checkpoint folder (config.json)")


def check_feature_specs(checkpoint_specs: dict[str, dict[str, Any]], store: FeatureStore, where: Path) -> None:
    """Refuse features made with another spec than the checkpoint was trained on."""
    for modality, spec_dict in checkpoint_specs.items():
        if modality not in store.specs:
            raise SpecMismatchError(f"{store.root}: no {modality} features, but the checkpoint {where} needs them")
        expected = FeatureSpec.from_dict(spec_dict, where=str(where / "config.json"))
        expected.check_compatible(store.specs[modality], what=f"{store.root} vs checkpoint {where}")


def run_evaluation(
    target: EvalTarget,
    split: str,
    options: EvalOptions,
    out: Path,
    force: bool = False,
    progress: Progress | None = None,
) -> EvalResult:
    """Evaluate, then publish predictions, metrics and the report into `out` in one rename."""
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out}: already exists; pass --force to replace it or choose another --out")
    model, info = load_checkpoint(target.checkpoint, map_location=options.device)
    store = FeatureStore(target.data_dir / "features")
    check_feature_specs(info.feature_specs, store, target.checkpoint)
    dataset = PairDataset.from_folder(target.data_dir, split, store)
    result = evaluate(model, dataset, options, progress)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write_predictions(staging / "predictions.jsonl", result.predictions())
        details = {"checkpoint": target.checkpoint, "preset": info.preset, "data": target.data_dir, "split": split,
                   "queries": len(dataset), "tracks": len(result.music_ids), "precision": options.precision,
                   "top_k": options.top_k}
        (staging / "metrics.json").write_text(json.dumps(
            {"metrics": result.metrics, "notes": result.notes, **{k: str(v) for k, v in details.items()}},
            indent=2) + "\n")
        write_report(dataset.annotations, result, staging, f"mgsv eval: {info.preset} on {split}", details)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
