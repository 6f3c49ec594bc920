"""Test metrics of one checkpoint on the released features and on re-extracted ones, over the same rows.

Both runs are the evaluation protocol of `mgsv eval` (`mgsv.evaluation.protocol.evaluate`: SmG, V2MR, MsG), on the
rows whose video and track were compared on both sides, with the checkpoint's feature-spec check: features whose
spec the checkpoint does not accept are not evaluated, and the reason is reported instead. The music set is the
tracks of these rows, not the 2,000 of the full test split, so the numbers are not the paper's; the difference
between the two runs is what the check measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mgsv.data.dataset import PairDataset
from mgsv.devices import device_name
from mgsv.errors import SpecMismatchError
from mgsv.evaluation.protocol import EvalOptions, Progress, evaluate, resolve_top_k
from mgsv.evaluation.runner import DEFAULT_TOP_K, check_feature_specs, resolve_target
from mgsv.features.store import FeatureStore
from mgsv.models.checkpoint import load_checkpoint

SIDES = ("released", "re_extracted")


@dataclass
class MetricsComparison:
    """The metrics of each side (None where it was not evaluated, with the reason) and their difference."""

    checkpoint: str
    rows: int
    tracks: int
    metrics: dict[str, dict[str, float] | None]  # side -> metric -> value
    not_evaluated: dict[str, str] = field(default_factory=dict)  # side -> why
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def difference(self) -> dict[str, float]:
        """re-extracted minus released, for every metric both sides have."""
        released, ours = self.metrics.get("released"), self.metrics.get("re_extracted")
        if released is None or ours is None:
            return {}
        return {name: ours[name] - released[name] for name in released if name in ours}

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "rows": self.rows, "tracks": self.tracks, "metrics": self.metrics,
                "difference": self.difference, "not_evaluated": self.not_evaluated, "notes": self.notes}


def compare_metrics(checkpoint: str | Path, rows: pd.DataFrame, stores: dict[str, FeatureStore],
                    options: EvalOptions | None = None, progress: Progress | None = None) -> MetricsComparison:
    """Evaluate `checkpoint` (a checkpoint or run folder, or an `hf:` reference) on `rows` with each store of
    `stores` (side -> store: "released", "re_extracted")."""
    # A run folder picks the checkpoint `mgsv eval` would; the data folder it names is not used (the rows and
    # stores are given), hence ".".
    target = resolve_target(Path(checkpoint), Path("."), None)
    options = options or EvalOptions()
    options = replace(options, device=device_name(options.device))
    model, info = load_checkpoint(target.checkpoint, map_location=options.device)
    options = replace(options, top_k=resolve_top_k(model, options.top_k, DEFAULT_TOP_K))
    rows = rows.reset_index(drop=True)
    comparison = MetricsComparison(str(target.checkpoint), len(rows), rows["music_id"].nunique(), {})
    for side in SIDES:
        store = stores[side]
        try:
            check_feature_specs(info.feature_specs, store, info.path)
        except SpecMismatchError as exc:
            comparison.metrics[side] = None
            comparison.not_evaluated[side] = str(exc)
            continue
        result = evaluate(model, PairDataset(rows, store, where=f"{store.root} ({side})"), options, progress)
        comparison.metrics[side] = dict(result.metrics)
        comparison.notes.update(result.notes)
    comparison.notes["music set"] = (f"the {comparison.tracks} tracks of the compared rows, not the test split's "
                                     "2,000: absolute numbers are not the paper's; compare the two sides")
    return comparison
