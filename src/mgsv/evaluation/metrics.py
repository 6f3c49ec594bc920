"""MGSV-EC benchmark metrics (SmG mIoU, V2MR R@k, MsG MoR@k), computed exactly as the official evaluation does.

The official code (`utils/util_test.py`, `music_detr/span_utils.py`) works on float32 torch tensors one query at
a time. These functions are vectorised numpy versions that keep its float32 arithmetic, operation order and
strict `>` thresholds, so that they reproduce its numbers bit for bit (see tests/test_metrics_parity.py):

- IoU: predicted moment clipped to [0, 240] and then to the track's duration, GT end clamped to 240, IoU 0 when
  the GT is empty or the union is not positive; all in float32.
- mIoU: float32 IoUs summed one after the other, divided by N (float32).
- V2MR: the GT track's 0-based rank among the *distinct* music ids sorted by descending score; R@k, MedianR and
  MeanR (1-based), MRR in float64 as numpy computes them.
- MsG: MoR@k = percent of queries whose GT track ranks within the top k AND whose moment has IoU > threshold,
  in float32 like the official counters.

Ties: the official code orders tied scores by whatever `np.argsort` returns. Here a tie is broken against the
ground truth (every other track scoring at least as high ranks above it), so a model that gives every track the
same score gets the worst rank rather than a lucky one. The official fixtures have no ties at the GT score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgsv.defaults import MUSIC_HORIZON_S
from mgsv.errors import InputError
from mgsv.inference.spans import cw_to_seconds  # noqa: F401  (re-exported: scoring turns spans into seconds)

RECALL_KS = (1, 3, 5, 10, 20, 25, 50, 100)
MOR_KS = (1, 10, 50, 100)
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
MOR_THRESHOLDS = (0.7, 0.5)

_F32 = np.float32


def recall_name(k: int) -> str:
    """Metric name of R@k (percent)."""
    return f"R@{k}"


def mor_name(k: int, threshold: float) -> str:
    """Metric name of MoR@k at IoU > threshold (percent), as the fixture's paper_names spell it."""
    return f"MoR@{k} (IoU>{threshold})"


def iou_name(threshold: float) -> str:
    """Metric name of IoU@threshold (percent of queries with IoU > threshold)."""
    return f"IoU@{threshold}"


def official_miou_quirk_name(k: int) -> str:
    """Name of the official code's `R{k}_miou` value (mean IoU of rank <= k queries, divided once more by N)."""
    return f"official_R{k}_miou"


def moment_iou(
    pred_start: np.ndarray,
    pred_end: np.ndarray,
    gt_start: np.ndarray,
    gt_end: np.ndarray,
    track_duration: np.ndarray,
    horizon: float = MUSIC_HORIZON_S,
) -> np.ndarray:
    """Per-query IoU (float32) of predicted and GT moments in seconds, with the official clipping rules."""
    ps = np.maximum(np.asarray(pred_start, dtype=_F32), _F32(0.0))
    pe = np.minimum(np.asarray(pred_end, dtype=_F32), _F32(horizon))
    pe = np.minimum(pe, np.asarray(track_duration, dtype=_F32))
    gs = np.asarray(gt_start, dtype=_F32)
    # The official loader clamps the GT end to the horizon in place, so the evaluation GT is clamped too.
    ge = np.minimum(np.asarray(gt_end, dtype=_F32), _F32(horizon))
    inter = np.maximum(np.minimum(ge, pe) - np.maximum(gs, ps), _F32(0.0))
    union = (pe - ps) + (ge - gs) - inter
    valid = (gs < ge) & (union > 0)
    safe_union = np.where(valid, union, _F32(1.0))
    return np.where(valid, inter / safe_union, _F32(0.0)).astype(_F32)


def float32_mean(values: np.ndarray) -> float:
    """Mean as the official code computes it: a sequential float32 sum divided by N in float32."""
    arr = np.asarray(values, dtype=_F32)
    if arr.size == 0:
        raise InputError("IoU values", "cannot average an empty list of queries")
    # np.add.accumulate adds strictly left to right (np.sum would use pairwise summation and differ in the last bits).
    total = np.add.accumulate(arr, dtype=_F32)[-1]
    return float(total / _F32(arr.size))


def smg_metrics(iou: np.ndarray) -> dict[str, float]:
    """SmG: mIoU (fraction) and IoU@0.3/0.5/0.7 (percent of queries with IoU strictly above)."""
    arr = np.asarray(iou, dtype=_F32)
    metrics = {"mIoU": float32_mean(arr)}
    for t in IOU_THRESHOLDS:
        metrics[iou_name(t)] = float(np.count_nonzero(arr > t)) * 100 / arr.size
    return metrics


def gt_ranks(scores: np.ndarray, column_music_ids: Sequence[str], gt_music_ids: Sequence[str]) -> np.ndarray:
    """0-based rank of each row's GT track among the distinct music ids of the columns, by descending score.

    `scores` is [N, M]; column j holds the scores of track `column_music_ids[j]`. A track occupying several
    columns counts once, at its best score (the official dedup). Ties rank against the GT.
    """
    sim = np.asarray(scores)
    if sim.ndim != 2 or sim.shape[1] != len(column_music_ids) or sim.shape[0] != len(gt_music_ids):
        raise InputError(
            "scores",
            f"expected a [{len(gt_music_ids)}, {len(column_music_ids)}] score matrix, got shape {list(sim.shape)}",
        )
    if not np.isfinite(sim).all():
        raise InputError("scores", "the score matrix contains NaN or infinite values")
    unique_ids, column_codes = np.unique(np.asarray(column_music_ids, dtype=object).astype(str), return_inverse=True)
    code_of = {music_id: code for code, music_id in enumerate(unique_ids.tolist())}
    missing = [(i, m) for i, m in enumerate(gt_music_ids) if str(m) not in code_of]
    if missing:
        row, music_id = missing[0]
        raise InputError("scores", f"row {row}: ground-truth track {music_id!r} is not among the scored tracks")
    gt_codes = np.fromiter((code_of[str(m)] for m in gt_music_ids), dtype=np.int64, count=len(gt_music_ids))
    if len(unique_ids) == sim.shape[1]:
        per_track = sim[:, np.argsort(column_codes, kind="stable")]
    else:
        # Best score per distinct track: group columns by track, then a segmented max (one pass, no per-row loop).
        order = np.argsort(column_codes, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(column_codes[order]) != 0])
        per_track = np.maximum.reduceat(sim[:, order], starts, axis=1)
    gt_score = per_track[np.arange(len(gt_codes)), gt_codes]
    # Every track scoring >= the GT (the GT itself included) ranks at or above it; subtract the GT itself.
    return np.count_nonzero(per_track >= gt_score[:, None], axis=1).astype(np.int64) - 1


def retrieval_metrics(rank0: np.ndarray) -> dict[str, float]:
    """V2MR from 0-based GT ranks: R@k (percent), MedianR and MeanR (1-based), MRR."""
    ind = np.asarray(rank0, dtype=np.int64)
    if ind.size == 0:
        raise InputError("ranks", "no queries to score")
    metrics = {recall_name(k): float(np.count_nonzero(ind < k)) * 100 / ind.size for k in RECALL_KS}
    metrics["MedianR"] = float(np.median(ind) + 1)
    metrics["MeanR"] = float(np.mean(ind) + 1)
    metrics["MRR"] = float(np.mean(1.0 / (ind + 1)))
    return metrics


def mor_value(hits: int, n_queries: int) -> float:
    """A MoR@k percentage from its hit count, in float32 like the official counters (count / N * 100)."""
    return float(_F32(hits) / _F32(n_queries) * _F32(100))


def msg_metrics(rank0: np.ndarray, iou: np.ndarray, include_official_quirk: bool = True) -> dict[str, float]:
    """MsG: MoR@k at IoU > 0.7 and > 0.5 (percent) from GT ranks and the IoU of the moment on the GT track.

    With `include_official_quirk`, also the official code's `R{k}_miou` values: the summed IoU of queries with
    rank <= k divided by N and then by their count (an official-code quirk, kept for bug-for-bug logs only).
    """
    ind = np.asarray(rank0, dtype=np.int64)
    arr = np.asarray(iou, dtype=_F32)
    if ind.shape != arr.shape or ind.size == 0:
        raise InputError("ranks/IoUs", f"need one rank and one IoU per query, got {ind.size} and {arr.size}")
    n = ind.size
    metrics: dict[str, float] = {}
    for t in MOR_THRESHOLDS:
        above = arr > t
        for k in MOR_KS:
            metrics[mor_name(k, t)] = mor_value(int(np.count_nonzero((ind < k) & above)), n)
    if include_official_quirk:
        for k in MOR_KS:
            within = ind < k
            count = int(np.count_nonzero(within))
            if count == 0:
                metrics[official_miou_quirk_name(k)] = 0.0
                continue
            total = np.add.accumulate(arr[within], dtype=_F32)[-1]
            metrics[official_miou_quirk_name(k)] = float(total / _F32(n) / _F32(count))
    return metrics
