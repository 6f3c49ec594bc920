"""`mgsv eval`: evaluate a trained checkpoint (or a run's selected checkpoint) on a split and write its outputs.

Outputs (a folder, never overwritten silently): `predictions.jsonl` (the documented format, scorable with
`mgsv score`), `metrics.json`, `report.html` + `report.png`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mgsv.atomic_io import make_temp_dir
from mgsv.data.dataset import PairDataset
from mgsv.data.predictions import write_predictions
from mgsv.devices import device_name
from mgsv.errors import InputError, OutputExistsError, SpecMismatchError
from mgsv.evaluation.protocol import EvalOptions, EvalResult, Progress, evaluate, resolve_top_k
from mgsv.evaluation.report import write_report
from mgsv.features.spec import FeatureSpec
from mgsv.features.store import FeatureStore
from mgsv.hub.resolve import resolve_checkpoint
from mgsv.models.checkpoint import load_checkpoint

# The checkpoint `mgsv eval RUN` uses by default; the paper's MsG numbers are most likely from this one (docs/official-code.md, "Training").
DEFAULT_RUN_CHECKPOINT = "best_mor1_iou07"
# Runs of models that only ground (or only rank) have no MsG checkpoint: the best one they do have comes next.
FALLBACK_RUN_CHECKPOINTS = ("best_miou", "best_r1")
DEFAULT_TOP_K = 100  # MsG detection depth when the model can both rank and detect


@dataclass
class EvalTarget:
    """Which checkpoint to evaluate, on which data; with `grounder`, `checkpoint` is the ranker of a composite."""

    checkpoint: Path
    data_dir: Path
    grounder: Path | None = None


def resolve_target(run_or_checkpoint: Path, data_dir: Path | None, checkpoint_name: str | None) -> EvalTarget:
    """A run folder (run.json) picks its `checkpoint_name` and its own data; a checkpoint folder (or an
    `hf:OWNER/NAME[@REVISION]` reference, downloaded once) needs `data_dir`."""
    path = resolve_checkpoint(run_or_checkpoint)
    if (path / "run.json").is_file():
        run = json.loads((path / "run.json").read_text())
        name = checkpoint_name or DEFAULT_RUN_CHECKPOINT
        if checkpoint_name is None and not (path / "checkpoints" / name).is_dir():
            name = next((n for n in FALLBACK_RUN_CHECKPOINTS if (path / "checkpoints" / n).is_dir()), name)
        checkpoint = path / "checkpoints" / name
        if not checkpoint.is_dir():
            available = sorted(p.name for p in (path / "checkpoints").glob("*") if p.is_dir())
            raise InputError(path, f"no checkpoint {name!r} in this run; available: {', '.join(available) or 'none'}")
        return EvalTarget(checkpoint, Path(data_dir or run["data_dir"]))
    if (path / "config.json").is_file():
        if data_dir is None:
            raise InputError(path, "a checkpoint folder needs `data` DIR (the dataset folder to evaluate on)")
        return EvalTarget(path, Path(data_dir))
    raise InputError(path, "neither a run folder (run.json) nor a checkpoint folder (config.json)")


def resolve_composite_target(ranker: Path, grounder: Path, data_dir: Path | None,
                             checkpoint_name: str | None) -> EvalTarget:
    """A ranker and a grounder (runs or checkpoints) evaluated together; the data comes from --data or the runs."""
    rank = resolve_target(ranker, data_dir, checkpoint_name)
    ground = resolve_target(grounder, data_dir, checkpoint_name)
    if data_dir is None and rank.data_dir.resolve() != ground.data_dir.resolve():
        raise InputError(grounder, f"the ranker was trained on {rank.data_dir} and the grounder on {ground.data_dir}; "
                                   "choose the dataset to evaluate on with `data` DIR")
    return EvalTarget(rank.checkpoint, rank.data_dir, ground.checkpoint)


def load_target(target: EvalTarget, device: str) -> tuple[Any, list[Any]]:
    """The model to evaluate (a composite when the target has a grounder) and its checkpoints' infos."""
    if target.grounder is not None:
        from mgsv.models.baselines.composite import load_composite

        return load_composite(target.checkpoint, target.grounder, map_location=device)
    model, info = load_checkpoint(target.checkpoint, map_location=device)
    return model, [info]


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
    options = replace(options, device=device_name(options.device))
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out}: already exists; pass `force` to replace it or choose another `out`")
    model, infos = load_target(target, options.device)
    store = FeatureStore(target.data_dir / "features")
    for info in infos:
        check_feature_specs(info.feature_specs, store, info.path)
    # Not asked for: MsG (top-100 detection) when the model can do it, else what it can do.
    options = replace(options, top_k=resolve_top_k(model, options.top_k, DEFAULT_TOP_K))
    dataset = PairDataset.from_folder(target.data_dir, split, store)
    result = evaluate(model, dataset, options, progress)
    preset = "/".join(info.preset for info in infos)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out)  # not tempfile.mkdtemp: the umask decides who may read the results
    try:
        write_predictions(staging / "predictions.jsonl", result.predictions())
        details = {"checkpoint": target.checkpoint, "preset": preset, "data": target.data_dir, "split": split,
                   "queries": len(dataset), "tracks": len(result.music_ids), "precision": options.precision,
                   "top_k": options.top_k}
        if target.grounder is not None:
            details = {"ranker": target.checkpoint, "grounder": target.grounder, **details}
            del details["checkpoint"]
        (staging / "metrics.json").write_text(json.dumps(
            {"metrics": result.metrics, "notes": result.notes, "not_computed": result.not_computed,
             **{k: str(v) for k, v in details.items()}}, indent=2) + "\n")
        write_report(dataset.annotations, result, staging, f"mgsv eval: {preset} on {split}", details)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
