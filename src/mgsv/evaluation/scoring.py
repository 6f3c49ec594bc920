"""Score a predictions file against annotations (SmG, V2MR, MsG), and the annotation-only baselines.

A predictions file may support only some metrics: a grounding-only system has no ranking, and a ranking truncated
to its top L tracks fixes R@k only for k <= L unless `gt_rank` says where the ground-truth track fell. Metrics
the file cannot determine are listed in `Scores.not_computed` with the reason, never estimated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mgsv.data.annotations import music_set
from mgsv.data.predictions import Prediction, check_unique_videos
from mgsv.errors import InputError, ProblemsError
from mgsv.evaluation import metrics as m

BASELINES = ("start-zero",)

SMG_METRICS = ("mIoU", *(m.iou_name(t) for t in m.IOU_THRESHOLDS))
V2MR_METRICS = (*(m.recall_name(k) for k in m.RECALL_KS), "MedianR", "MeanR", "MRR")
MSG_METRICS = (
    *(m.mor_name(k, t) for t in m.MOR_THRESHOLDS for k in m.MOR_KS),
    *(m.official_miou_quirk_name(k) for k in m.MOR_KS),
)
ALL_METRICS = (*SMG_METRICS, *V2MR_METRICS, *MSG_METRICS)


@dataclass(frozen=True)
class Scores:
    """Metric values by name, the metrics that could not be determined (with why), and the number of videos."""

    metrics: dict[str, float]
    not_computed: dict[str, str] = field(default_factory=dict)
    n_videos: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, metrics in the canonical order."""
        ordered = {name: self.metrics[name] for name in ALL_METRICS if name in self.metrics}
        return {"n_videos": self.n_videos, "metrics": ordered, "not_computed": dict(self.not_computed)}


def annotation_iou(annotations: pd.DataFrame, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Official float32 IoU of predicted moments (seconds, one per annotation row) against each row's GT moment."""
    return m.moment_iou(
        starts,
        ends,
        annotations["music_start"].to_numpy(),
        annotations["music_end"].to_numpy(),
        annotations["music_total_duration"].to_numpy(),
    )


def start_zero_moments(annotations: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The start-zero baseline: the moment [0, video duration] on the GT track, for every annotation row."""
    durations = (annotations["video_end"] - annotations["video_start"]).to_numpy()
    return np.zeros_like(durations), durations


def baseline_scores(annotations: pd.DataFrame, name: str) -> Scores:
    """Metrics of an annotation-only baseline (SmG only; a baseline ranks no tracks)."""
    if name not in BASELINES:
        raise InputError("baseline", f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    starts, ends = start_zero_moments(annotations)
    reason = f"the {name} baseline predicts moments only, it ranks no tracks"
    return Scores(
        metrics=m.smg_metrics(annotation_iou(annotations, starts, ends)),
        not_computed={metric: reason for metric in (*V2MR_METRICS, *MSG_METRICS)},
        n_videos=len(annotations),
    )


def _where(prediction: Prediction) -> str:
    return f"line {prediction.line}: " if prediction.line is not None else f"video {prediction.video_id!r}: "


def align_predictions(
    annotations: pd.DataFrame, predictions: Sequence[Prediction], where: str = "predictions"
) -> list[Prediction]:
    """Predictions in annotation row order; raise listing unknown videos, missing videos and unknown music ids."""
    check_unique_videos(predictions, where)
    row_of = {video_id: row for row, video_id in enumerate(annotations["video_id"].tolist())}
    if predictions and not any(p.video_id in row_of for p in predictions):
        source = annotations.attrs.get("source", "the annotations")
        raise InputError(
            where,
            f"none of its {len(predictions)} video ids is in {source}: are these predictions for another split?",
        )
    tracks = set(music_set(annotations))
    problems: list[str] = []
    by_row: dict[int, Prediction] = {}
    for prediction in predictions:
        row = row_of.get(prediction.video_id)
        if row is None:
            problems.append(f"{_where(prediction)}video_id {prediction.video_id!r} is not in the annotations")
            continue
        by_row[row] = prediction
        unknown = [t.music_id for t in prediction.ranking or () if t.music_id not in tracks]
        if unknown:
            shown = ", ".join(repr(music_id) for music_id in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            problems.append(
                f"{_where(prediction)}ranking has music id(s) not in the annotations' music set: {shown}{more}"
            )
    missing = [video_id for video_id, row in row_of.items() if row not in by_row]
    if missing:
        shown = ", ".join(repr(video_id) for video_id in missing[:5])
        problems.append(f"{len(missing)} of {len(row_of)} annotated video(s) have no prediction, e.g. {shown}")
    if problems:
        raise ProblemsError(where, problems)
    return [by_row[row] for row in range(len(annotations))]


@dataclass(frozen=True)
class _Retrieval:
    """Per-query retrieval facts read from rankings: what is known of each GT rank and the GT entry's moment."""

    rank0: np.ndarray  # 0-based GT rank where known, else -1
    known: np.ndarray  # bool: the rank is exact
    listed: np.ndarray  # bool: the GT track is in the ranking (so its moment is known)
    lower_bound: np.ndarray  # for unknown ranks: the rank is at least this (the ranking's length)
    moments: np.ndarray  # [N, 2] the GT entry's moment (seconds) where listed, else 0
    has_retrieval: np.ndarray  # bool: a ranking or a gt_rank was given


def _rank_in_ranking(prediction: Prediction, gt_music_id: str) -> tuple[int, tuple[float, float]] | None:
    """0-based rank of the GT track in a ranking (dedup, ties against the GT) and its moment; None if absent."""
    best: dict[str, float] = {}
    gt_entry = None
    for entry in prediction.ranking or ():
        if entry.music_id not in best or entry.score > best[entry.music_id]:
            best[entry.music_id] = entry.score
            if entry.music_id == gt_music_id:
                gt_entry = entry
    if gt_entry is None:
        return None
    gt_score = best[gt_music_id]
    rank0 = sum(1 for music_id, score in best.items() if music_id != gt_music_id and score >= gt_score)
    return rank0, (gt_entry.start, gt_entry.end)


def _retrieval(annotations: pd.DataFrame, predictions: Sequence[Prediction], where: str) -> _Retrieval:
    n = len(predictions)
    n_tracks = len(music_set(annotations))
    rank0 = np.full(n, -1, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    listed = np.zeros(n, dtype=bool)
    lower_bound = np.zeros(n, dtype=np.int64)
    moments = np.zeros((n, 2), dtype=np.float64)
    has_retrieval = np.zeros(n, dtype=bool)
    problems: list[str] = []
    for row, (prediction, gt_music_id) in enumerate(zip(predictions, annotations["music_id"].tolist(), strict=True)):
        length = len(prediction.ranking or ())
        has_retrieval[row] = prediction.ranking is not None or prediction.gt_rank is not None
        if prediction.gt_rank is not None and prediction.gt_rank > n_tracks:
            problems.append(f"{_where(prediction)}gt_rank {prediction.gt_rank} but the music set has {n_tracks} tracks")
            continue
        found = _rank_in_ranking(prediction, gt_music_id)
        if found is not None:
            rank0[row], moments[row] = found[0], found[1]
            known[row] = listed[row] = True
            if prediction.gt_rank is not None and prediction.gt_rank != found[0] + 1:
                problems.append(
                    f"{_where(prediction)}gt_rank {prediction.gt_rank} disagrees with the ranking, "
                    f"which puts the ground-truth track {gt_music_id!r} at rank {found[0] + 1}"
                )
        elif prediction.gt_rank is not None:
            if prediction.gt_rank <= length:
                problems.append(
                    f"{_where(prediction)}gt_rank {prediction.gt_rank} but the ground-truth track {gt_music_id!r} "
                    f"is not among the {length} ranked tracks"
                )
            rank0[row], known[row] = prediction.gt_rank - 1, True
        else:
            lower_bound[row] = length
    if problems:
        raise ProblemsError(where, problems)
    return _Retrieval(rank0, known, listed, lower_bound, moments, has_retrieval)


def _median_is_exact(r: _Retrieval) -> bool:
    """Whether unknown ranks cannot move the median: both middle ranks are known and below every unknown's bound."""
    ranks = np.sort(r.rank0[r.known])
    upper_middle = len(r.rank0) // 2
    if len(ranks) <= upper_middle:
        return False
    return bool(r.known.all() or ranks[upper_middle] < r.lower_bound[~r.known].min())


def _retrieval_scores(annotations: pd.DataFrame, r: _Retrieval) -> tuple[dict[str, float], dict[str, str]]:
    n = len(r.rank0)
    without = int(np.count_nonzero(~r.has_retrieval))
    if without:
        reason = f"{without} of {n} video(s) have neither a ranking nor a gt_rank"
        return {}, {name: reason for name in (*V2MR_METRICS, *MSG_METRICS)}

    # An unknown rank is at least its ranking's length, so with that bound in its place every metric that only
    # asks "is the rank below k" for k <= the bound is exact; the others are dropped below.
    filled = np.where(r.known, r.rank0, r.lower_bound)
    iou = np.zeros(n, dtype=np.float32)
    if r.listed.any():
        iou[r.listed] = annotation_iou(annotations[r.listed], r.moments[r.listed, 0], r.moments[r.listed, 1])
    values = {**m.retrieval_metrics(filled), **m.msg_metrics(filled, iou)}

    missing: dict[str, str] = {}
    censored = ~r.known
    if censored.any():
        shortest = int(r.lower_bound[censored].min())
        truncated = (
            f"{int(np.count_nonzero(censored))} video(s) have no gt_rank and their ground-truth track is not in "
            f"their ranking (the shortest such ranking lists {shortest} tracks)"
        )
        missing.update({m.recall_name(k): truncated for k in m.RECALL_KS if k > shortest})
        missing.update({name: truncated for name in ("MeanR", "MRR")})
        if not _median_is_exact(r):
            missing["MedianR"] = truncated
        for k in m.MOR_KS:
            if k > shortest:
                missing.update({name: truncated for name in _msg_names(k)})
    for k in m.MOR_KS:
        # A GT track ranked within k whose moment the ranking does not give (its rank came from gt_rank).
        unlisted = int(np.count_nonzero(r.known & (r.rank0 < k) & ~r.listed))
        if unlisted and _msg_names(k)[0] not in missing:
            reason = f"{unlisted} video(s) rank the ground-truth track within {k} only through gt_rank, with no moment"
            missing.update({name: reason for name in _msg_names(k)})
    return {name: value for name, value in values.items() if name not in missing}, missing


def _msg_names(k: int) -> list[str]:
    return [m.mor_name(k, t) for t in m.MOR_THRESHOLDS] + [m.official_miou_quirk_name(k)]


def score_predictions(
    annotations: pd.DataFrame, predictions: Sequence[Prediction], where: str = "predictions"
) -> Scores:
    """SmG, V2MR and MsG metrics of predictions for every annotated video; `where` names the source in errors."""
    ordered = align_predictions(annotations, predictions, where)
    n = len(ordered)
    values: dict[str, float] = {}
    missing: dict[str, str] = {}

    without_smg = sum(1 for p in ordered if p.smg is None)
    if without_smg:
        missing.update({name: f"{without_smg} of {n} video(s) have no smg moment" for name in SMG_METRICS})
    else:
        moments = np.array([p.smg for p in ordered], dtype=np.float64)
        values.update(m.smg_metrics(annotation_iou(annotations, moments[:, 0], moments[:, 1])))

    retrieval_values, retrieval_missing = _retrieval_scores(annotations, _retrieval(annotations, ordered, where))
    values.update(retrieval_values)
    missing.update(retrieval_missing)
    return Scores(metrics=values, not_computed=missing, n_videos=n)
