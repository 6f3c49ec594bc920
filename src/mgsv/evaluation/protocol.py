"""The evaluation protocol of the paper on one split: SmG, V2MR and MsG from a grounding model and features.

- Music set = the distinct tracks of the split (REF §5). Every track is encoded once (projection, enhancement,
  X-Pool keys and values); every query video once.
- V2MR: p_s of every query against every track of the set (the model chunks the [N, M] work).
- SmG: detection on each query's own ground-truth track.
- MsG: detection on each query's top-k tracks by p_s, one moment per track (the realistic protocol). The official
  evaluation takes a shortcut (detection on the ground-truth pair only, since a moment on another track can never
  match); both are computed here and reported side by side, and they agree whenever the ground-truth pair's
  detection is deterministic.

Scores follow `mgsv.evaluation.metrics` exactly (official clipping, strict thresholds, de-duplicated ranks).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgsv.data.dataset import PairDataset
from mgsv.data.predictions import Prediction, RankedTrack
from mgsv.evaluation import metrics
from mgsv.models.made import MusicEncoding, VideoEncoding

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EvalOptions:
    """How to run an evaluation."""

    batch_size: int = 256  # videos or tracks encoded per forward
    detect_batch_size: int = 512  # (video, track) pairs per detection forward
    top_k: int = 100  # MsG: tracks per query that get a moment; 0 = GT-pair shortcut only
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    device: str = "cpu"


@dataclass
class EvalResult:
    """Metrics and per-query outputs of one evaluation."""

    metrics: dict[str, float]
    video_ids: list[str]
    music_ids: list[str]  # the music set: column j of `scores`
    gt_column: np.ndarray  # [N] column of each query's ground-truth track
    gt_rank0: np.ndarray  # [N] 0-based de-duplicated rank of the ground-truth track
    smg_moments: np.ndarray  # [N, 2] seconds, predicted on the ground-truth track (unclipped)
    smg_iou: np.ndarray  # [N] float32
    scores: np.ndarray  # [N, M] p_s
    top_columns: np.ndarray | None = None  # [N, K] columns of each query's top-k tracks (ties against the GT)
    top_moments: np.ndarray | None = None  # [N, K, 2] seconds, one moment per top-k track
    notes: dict[str, str] = field(default_factory=dict)

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
                    RankedTrack(self.music_ids[c], float(self.scores[i, c]), *map(float, self.top_moments[i, j]))
                    for j, c in enumerate(self.top_columns[i, :k])
                )
            smg = (float(self.smg_moments[i, 0]), float(self.smg_moments[i, 1]))
            result.append(Prediction(video_id, smg, ranking, int(self.gt_rank0[i]) + 1))
        return result


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for `precision == "bf16"`, otherwise a no-op."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _chunks(n: int, size: int) -> Iterator[slice]:
    for begin in range(0, n, size):
        yield slice(begin, min(begin + size, n))


def select_videos(videos: VideoEncoding, index: torch.Tensor) -> VideoEncoding:
    """Rows of a VideoEncoding, in the given order (repeats allowed)."""
    return VideoEncoding(
        videos.tokens.index_select(0, index), videos.mask.index_select(0, index),
        videos.embedding.index_select(0, index), videos.detection_tokens.index_select(0, index),
    )


def concat_videos(parts: list[VideoEncoding]) -> VideoEncoding:
    """Concatenate VideoEncodings of several batches, padded to the longest sequence."""
    length = max(p.mask.shape[1] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = length - t.shape[1]
        return F.pad(t, (0, 0, 0, extra)) if t.dim() == 3 else F.pad(t, (0, extra))

    return VideoEncoding(
        torch.cat([pad(p.tokens) for p in parts]), torch.cat([pad(p.mask) for p in parts]),
        torch.cat([p.embedding for p in parts]), torch.cat([pad(p.detection_tokens) for p in parts]),
    )


@torch.inference_mode()
def encode_split(
    model: nn.Module,
    dataset: PairDataset,
    options: EvalOptions,
    progress: Progress | None = None,
    rows: np.ndarray | None = None,
) -> tuple[VideoEncoding, MusicEncoding, list[str], np.ndarray]:
    """Encode the query videos of `rows` (default: all) and every distinct track of the split, once each.

    Returns (videos in `rows` order, tracks of the music set, the music ids, every row's ground-truth column).
    """
    music_ids = list(dict.fromkeys(dataset.music_ids))
    column_of = {m: j for j, m in enumerate(music_ids)}
    gt_column = np.array([column_of[m] for m in dataset.music_ids], dtype=np.int64)
    device = options.device
    video_ids = dataset.video_ids if rows is None else [dataset.video_ids[i] for i in rows]
    video_parts, music_parts = [], []
    with autocast(options.precision, device):
        for part in _chunks(len(video_ids), options.batch_size):
            feats, mask = dataset.videos.batch(video_ids[part])
            video_parts.append(model.encode_video(feats.to(device), mask.to(device).bool()))
            if progress:
                progress("encode videos", part.stop, len(video_ids))
        for part in _chunks(len(music_ids), options.batch_size):
            feats, mask = dataset.music.batch(music_ids[part])
            music_parts.append(model.encode_music(feats.to(device), mask.to(device).bool()))
            if progress:
                progress("encode tracks", part.stop, len(music_ids))
    return concat_videos(video_parts), MusicEncoding.concat(music_parts), music_ids, gt_column


@torch.inference_mode()
def detect_pairs(
    model: nn.Module,
    videos: VideoEncoding,
    music: MusicEncoding,
    video_index: np.ndarray,
    music_index: np.ndarray,
    options: EvalOptions,
    progress: Progress | None = None,
    stage: str = "detect",
) -> np.ndarray:
    """Normalised (centre, width) of the last decoder layer for each (video_index[i], music_index[i]) pair."""
    out = np.empty((len(video_index), 2), dtype=np.float32)
    device = videos.tokens.device
    with autocast(options.precision, options.device):
        for part in _chunks(len(video_index), options.detect_batch_size):
            v = select_videos(videos, torch.as_tensor(video_index[part], device=device))
            m = music.select(torch.as_tensor(music_index[part], device=device))
            out[part] = model.detect(v, m).final_spans.float().cpu().numpy()
            if progress:
                progress(stage, part.stop, len(video_index))
    return out


@torch.inference_mode()
def relevance_matrix(
    model: nn.Module, videos: VideoEncoding, music: MusicEncoding, options: EvalOptions,
    progress: Progress | None = None,
) -> np.ndarray:
    """p_s [N videos, M tracks] as float32, computed in row chunks."""
    rows = []
    with autocast(options.precision, options.device):
        for part in _chunks(len(videos), options.batch_size):
            index = torch.arange(part.start, part.stop, device=videos.tokens.device)
            rows.append(model.relevance(select_videos(videos, index), music).float().cpu().numpy())
            if progress:
                progress("relevance", part.stop, len(videos))
    return np.concatenate(rows) if rows else np.zeros((0, len(music)), dtype=np.float32)


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
    scores: np.ndarray  # [n, M] p_s
    smg_moments: np.ndarray  # [n, 2] seconds on the ground-truth track
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
    """Relevance against the whole music set, the moment on the GT track, and (top_k > 0) moments on the top-k."""
    options = options or EvalOptions()
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        videos, music, music_ids, gt_column = encode_split(model, dataset, options, progress, rows)
        scores = relevance_matrix(model, videos, music, options, progress)
        local = np.arange(len(rows))
        smg_cw = detect_pairs(model, videos, music, local, gt_column[rows], options, progress, "detect (GT track)")
        top = moments = None
        if options.top_k > 0:
            top = top_columns(scores, gt_column[rows], options.top_k)
            k = top.shape[1]
            top_cw = detect_pairs(
                model, videos, music, np.repeat(local, k), top.reshape(-1), options, progress, f"detect (top-{k})"
            )
            moments = metrics.cw_to_seconds(top_cw).reshape(len(rows), k, 2)
    finally:
        model.train(was_training)
    return ModelOutputs(rows, music_ids, scores, metrics.cw_to_seconds(smg_cw), top, moments)


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
    iou = metrics.moment_iou(smg_moments[:, 0], smg_moments[:, 1], gt[:, 0], gt[:, 1], dataset.track_duration_s)
    rank0 = metrics.gt_ranks(outputs.scores, outputs.music_ids, dataset.music_ids)
    result = {**metrics.smg_metrics(iou), **metrics.retrieval_metrics(rank0)}
    result.update(metrics.msg_metrics(rank0, iou, include_official_quirk=False))
    notes = {"MsG": "official shortcut: detection on the ground-truth pair only"}
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
        top_moments=outputs.top_moments, notes=notes,
    )


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
