"""The evaluation protocol of the paper on one split: SmG, V2MR and MsG from a grounding model and features.

- Music set = the distinct tracks of the split (docs/official-code.md, "Evaluation"). Every track is encoded once (projection, enhancement,
  X-Pool keys and values); every query video once.
- V2MR: p_s of every query against every track of the set (the model chunks the [N, M] work).
- SmG: detection on each query's own ground-truth track.
- MsG: detection on each query's top-k tracks by p_s, one moment per track (the realistic protocol). The official
  evaluation takes a shortcut (detection on the ground-truth pair only, since a moment on another track can never
  match); both are computed here and reported side by side, and they agree whenever the ground-truth pair's
  detection is deterministic.

Scores follow `mgsv.evaluation.metrics` exactly (official clipping, strict thresholds, de-duplicated ranks).

Capabilities (`mgsv.models.contract`): a model that does not rank (a grounding-only baseline) gets SmG only; one
that does not ground (a retrieval-only baseline) gets V2MR only. The metrics it cannot produce are listed in
`EvalResult.not_computed` with the reason, never estimated, and asking such a model for MsG (top_k > 0) raises
`CapabilityError`. The batched work itself is `mgsv.inference.batched`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from mgsv.data.dataset import PairDataset
from mgsv.data.predictions import Prediction, RankedTrack, clip_moment
from mgsv.evaluation import metrics
from mgsv.inference.batched import Progress, detect_pairs, encode_items, relevance_matrix
from mgsv.inference.spans import cw_to_seconds
from mgsv.models.contract import CapabilityError, capabilities_of, model_name


@dataclass
class EvalOptions:
    """How to run an evaluation."""

    batch_size: int = 256  # videos or tracks encoded per forward
    detect_batch_size: int = 512  # (video, track) pairs per detection forward
    top_k: int | None = 100  # MsG: tracks per query that get a moment; 0 = GT-pair shortcut only; None = 100 for a
    # model that ranks and detects, else 0 (what a grounding- or retrieval-only model can do)
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    device: str = "cpu"


@dataclass
class EvalResult:
    """Metrics and per-query outputs of one evaluation."""

    metrics: dict[str, float]
    video_ids: list[str]
    music_ids: list[str]  # the music set: column j of `scores`
    gt_column: np.ndarray  # [N] column of each query's ground-truth track
    gt_rank0: np.ndarray | None  # [N] 0-based de-duplicated rank of the ground-truth track (None: cannot rank)
    smg_moments: np.ndarray | None  # [N, 2] seconds, predicted on the ground-truth track, unclipped (None: no detect)
    smg_iou: np.ndarray | None  # [N] float32 (None: no detect)
    scores: np.ndarray | None  # [N, M] p_s (None: cannot rank)
    top_columns: np.ndarray | None = None  # [N, K] columns of each query's top-k tracks (ties against the GT)
    top_moments: np.ndarray | None = None  # [N, K, 2] seconds, one moment per top-k track
    notes: dict[str, str] = field(default_factory=dict)
    not_computed: dict[str, str] = field(default_factory=dict)  # metric -> why the model cannot produce it

    def predictions(self, ranking_size: int | None = None) -> list[Prediction]:
        """Predictions in the JSONL format: the SmG moment, the top-k ranking with moments, and the GT rank."""
        result = []
        k = 0 if self.top_columns is None else self.top_columns.shape[1]
        if ranking_size is not None:
            k = min(k, ranking_size)
        for i, video_id in enumerate(self.video_ids):
            ranking = None
            if k:
                ranking = tuple(
                    RankedTrack(self.music_ids[c], float(self.scores[i, c]), *clip_moment(*self.top_moments[i, j]))
                    for j, c in enumerate(self.top_columns[i, :k])
                )
            smg = None if self.smg_moments is None else clip_moment(*self.smg_moments[i])
            gt_rank = None if self.gt_rank0 is None else int(self.gt_rank0[i]) + 1
            result.append(Prediction(video_id, smg, ranking, gt_rank))
        return result


def encode_split(
    model: nn.Module,
    dataset: PairDataset,
    options: EvalOptions,
    progress: Progress | None = None,
    rows: np.ndarray | None = None,
) -> tuple[Any, Any, list[str], np.ndarray]:
    """Encode the query videos of `rows` (default: all) and every distinct track of the split, once each.

    Returns (videos in `rows` order, tracks of the music set, the music ids, every row's ground-truth column).
    """
    music_ids = list(dict.fromkeys(dataset.music_ids))
    column_of = {m: j for j, m in enumerate(music_ids)}
    gt_column = np.array([column_of[m] for m in dataset.music_ids], dtype=np.int64)
    video_ids = dataset.video_ids if rows is None else [dataset.video_ids[i] for i in rows]
    run = {"batch_size": options.batch_size, "precision": options.precision, "device": options.device,
           "progress": progress}
    videos = encode_items(model.encode_video, lambda part: dataset.videos.batch(video_ids[part]), len(video_ids),
                          stage="encode videos", **run)
    music = encode_items(model.encode_music, lambda part: dataset.music.batch(music_ids[part]), len(music_ids),
                         stage="encode tracks", **run)
    return videos, music, music_ids, gt_column


def top_columns(scores: np.ndarray, gt_column: np.ndarray, k: int) -> np.ndarray:
    """Each row's k best columns by descending score; exact ties place the ground truth last (as ranks count)."""
    k = min(k, scores.shape[1])
    is_gt = np.zeros_like(scores, dtype=bool)
    is_gt[np.arange(len(scores)), gt_column] = True
    # Candidates: anything scoring at least the k-th best value; then an exact sort of those only.
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    result = np.empty((len(scores), k), dtype=np.int64)
    for i in range(len(scores)):
        candidates = np.flatnonzero(scores[i] >= kth[i, 0])
        order = np.lexsort((is_gt[i, candidates], -scores[i, candidates]))
        result[i] = candidates[order[:k]]
    return result


@dataclass
class ModelOutputs:
    """What the model produced for some rows (queries) of a split; merged across DDP ranks before scoring."""

    rows: np.ndarray  # [n] row indices into the split
    music_ids: list[str]  # the music set: column j of `scores`
    scores: np.ndarray | None  # [n, M] p_s (None: the model cannot rank)
    smg_moments: np.ndarray | None  # [n, 2] seconds on the ground-truth track (None: the model cannot detect)
    top: np.ndarray | None = None  # [n, K] columns of the top-k tracks
    top_moments: np.ndarray | None = None  # [n, K, 2] seconds

    def merge(self, others: list[ModelOutputs]) -> ModelOutputs:
        """These rows and the others', sorted by row."""
        parts = [self, *others]
        rows = np.concatenate([p.rows for p in parts])
        order = np.argsort(rows, kind="stable")

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values)[order]


        return ModelOutputs(rows[order], self.music_ids, cat("scores"), cat("smg_moments"), cat("top"),
                            cat("top_moments"))


def collect_outputs(
    model: nn.Module,
    dataset: PairDataset,
    options: EvalOptions | None = None,
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> ModelOutputs:
    """Relevance against the whole music set, the moment on the GT track, and (top_k > 0) moments on the top-k.

    A model without `relevance` gets no scores, one without `detect` no moments (see the module docstring).
    """
    options = options or EvalOptions()
    options = replace(options, top_k=resolve_top_k(model, options.top_k))
    check_capabilities(model, options.top_k)
    able = capabilities_of(model)
    detect = {"batch_size": options.detect_batch_size, "precision": options.precision, "device": options.device,
              "progress": progress}
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        videos, music, music_ids, gt_column = encode_split(model, dataset, options, progress, rows)
        scores = None
        if able.ranks:
            scores = relevance_matrix(model, videos, music, batch_size=options.batch_size,
                                      precision=options.precision, device=options.device, progress=progress)
        local = np.arange(len(rows))
        smg_cw = None
        if able.grounds:
            smg_cw = detect_pairs(model, videos, music, local, gt_column[rows], stage="detect (GT track)", **detect)
        top = moments = None
        if options.top_k > 0:
            top = top_columns(scores, gt_column[rows], options.top_k)
            k = top.shape[1]
            top_cw = detect_pairs(model, videos, music, np.repeat(local, k), top.reshape(-1),
                                  stage=f"detect (top-{k})", **detect)
            moments = cw_to_seconds(top_cw).reshape(len(rows), k, 2)
    finally:
        model.train(was_training)
    smg = None if smg_cw is None else cw_to_seconds(smg_cw)
    return ModelOutputs(rows, music_ids, scores, smg, top, moments)


def resolve_top_k(model: nn.Module, top_k: int | None, default: int = 100) -> int:
    """An explicit top_k as given; None -> `default` for a model that ranks and detects, else 0."""
    if top_k is not None:
        return top_k
    able = capabilities_of(model)
    return default if able.ranks and able.grounds else 0


def check_capabilities(model: nn.Module, top_k: int) -> None:
    """MsG with top_k > 0 needs a model that both ranks and detects; say plainly which half is missing."""
    if top_k <= 0:
        return
    name, able = model_name(model), capabilities_of(model)
    if not able.ranks:
        raise CapabilityError(
            f"{name} is a grounding-only model (single-music grounding): it cannot rank tracks, so V2MR and MsG "
            "(top-k detection) cannot be computed. Evaluate it with `top_k` 0 for SmG, or pair it with a ranker "
            "(`ranker` RANKER_RUN `grounder` GROUNDER_RUN)")
    if not able.grounds:
        raise CapabilityError(
            f"{name} is a retrieval-only model (video-to-music retrieval): it cannot detect moments, so SmG and MsG "
            "cannot be computed. Evaluate it with `top_k` 0 for V2MR, or pair it with a grounder "
            "(`ranker` RANKER_RUN `grounder` GROUNDER_RUN)")


def evaluate(
    model: nn.Module, dataset: PairDataset, options: EvalOptions | None = None, progress: Progress | None = None
) -> EvalResult:
    """Run SmG, V2MR and MsG on a whole split and score them (see the module docstring)."""
    return score_outputs(dataset, collect_outputs(model, dataset, options, progress=progress))


def score_outputs(dataset: PairDataset, outputs: ModelOutputs) -> EvalResult:
    """Metrics from model outputs covering every row: SmG, V2MR, and MsG both ways when top-k moments exist."""
    if not np.array_equal(outputs.rows, np.arange(len(dataset))):
        raise ValueError("score_outputs needs the outputs of every row of the split, in order")
    column_of = {m: j for j, m in enumerate(outputs.music_ids)}
    gt_column = np.array([column_of[m] for m in dataset.music_ids], dtype=np.int64)
    gt, smg_moments, top = dataset.moments_s, outputs.smg_moments, outputs.top
    result: dict[str, float] = {}
    not_computed: dict[str, str] = {}
    iou = rank0 = None
    if smg_moments is not None:
        iou = metrics.moment_iou(smg_moments[:, 0], smg_moments[:, 1], gt[:, 0], gt[:, 1], dataset.track_duration_s)
        result.update(metrics.smg_metrics(iou))
    else:
        not_computed.update(dict.fromkeys(SMG_METRICS, "the model does not detect moments (retrieval only)"))
    if outputs.scores is not None:
        rank0 = metrics.gt_ranks(outputs.scores, outputs.music_ids, dataset.music_ids)
        result.update(metrics.retrieval_metrics(rank0))
    else:
        not_computed.update(dict.fromkeys(V2MR_METRICS, "the model does not rank tracks (grounding only)"))
    notes = {}
    if iou is None or rank0 is None:
        reason = ("the model does not rank tracks (grounding only)" if rank0 is None
                  else "the model does not detect moments (retrieval only)")
        not_computed.update(dict.fromkeys(MSG_METRICS, reason))
    else:
        result.update(metrics.msg_metrics(rank0, iou, include_official_quirk=False))
        notes["MsG"] = "official shortcut: detection on the ground-truth pair only"
    if top is not None:
        realistic = _realistic_msg(gt_column, top, outputs.top_moments, dataset)
        for name, value in realistic.items():
            result[f"{name} [top-{top.shape[1]} detection]"] = value
        agree = all(realistic[name] == result[name] for name in realistic)
        notes["MsG"] = (
            f"detection on each query's top-{top.shape[1]} tracks; "
            + ("equal to" if agree else "DIFFERS from")
            + " the official ground-truth-pair shortcut"
        )
    return EvalResult(
        metrics=result, video_ids=list(dataset.video_ids), music_ids=outputs.music_ids, gt_column=gt_column,
        gt_rank0=rank0, smg_moments=smg_moments, smg_iou=iou, scores=outputs.scores, top_columns=top,
        top_moments=outputs.top_moments, notes=notes, not_computed=not_computed,
    )


# Metric names by task (what a model without one of the capabilities cannot produce).
SMG_METRICS = ("mIoU", *(metrics.iou_name(t) for t in metrics.IOU_THRESHOLDS))
V2MR_METRICS = (*(metrics.recall_name(k) for k in metrics.RECALL_KS), "MedianR", "MeanR", "MRR")
MSG_METRICS = tuple(metrics.mor_name(k, t) for t in metrics.MOR_THRESHOLDS for k in metrics.MOR_KS)


def _realistic_msg(
    gt_column: np.ndarray, top: np.ndarray, top_moments: np.ndarray, dataset: PairDataset
) -> dict[str, float]:
    """MoR@k from the top-k lists: the GT track within the first k entries and ITS detected moment's IoU."""
    n, k = top.shape
    hit = top == gt_column[:, None]
    found = hit.any(axis=1)
    position = np.where(found, hit.argmax(axis=1), k)  # 0-based position in the list (k = not listed)
    moment = top_moments[np.arange(n), np.minimum(position, k - 1)]
    gt = dataset.moments_s
    iou = metrics.moment_iou(moment[:, 0], moment[:, 1], gt[:, 0], gt[:, 1], dataset.track_duration_s)
    iou = np.where(found, iou, np.float32(0))
    out = {}
    for threshold in metrics.MOR_THRESHOLDS:
        for cutoff in metrics.MOR_KS:
            if cutoff > k:
                continue
            hits = int(np.count_nonzero((position < cutoff) & (iou > threshold)))
            out[metrics.mor_name(cutoff, threshold)] = metrics.mor_value(hits, n)
    return out
