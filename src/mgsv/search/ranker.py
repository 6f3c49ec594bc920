"""Music-set grounding for one video: candidates, exact p_s on them, then detection on the top k.

This is the paper's MsG protocol run for real (one moment per top-k track, docs/official-code.md "Evaluation"),
made to scale:

1. candidates: the K tracks of highest S0 = cos(h(v), h0(M)) among the eligible ones (`mgsv.search.candidates`);
   with K >= the eligible tracks (a library of up to K tracks) every track is a candidate and search is exhaustive.
2. `exact_scores`: p_s of the candidates, computed exactly by the model from the track index's stored form
   (`index_scorer`), block by block (`TrackIndex.blocks`: bounded buffers, the next block read while one is scored).
3. `detect_moments`: a moment only for the top k tracks, where it will be shown.

Moments come out of the model as a normalised (centre, width) over the 240 s horizon and are turned into seconds,
then placed inside the track:

- `clip_to_track`: the official clipping to [0, min(240, track duration)] (docs/official-code.md, "Evaluation"). A moment that falls entirely
  past the end of a short track would clip to nothing; it is moved back to end at the track's end instead.
- `fit_to_length`: a moment of an exact length (the video's), centred on the prediction and shifted to stay inside
  the track; a track shorter than that length cannot host it (`None`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mgsv.inference.batched import detect_pairs
from mgsv.inference.spans import centres_in_seconds, cw_to_seconds
from mgsv.search.track_index import READ_CHUNK, TrackIndex

MIN_MOMENT_S = 0.5  # a clipped moment shorter than this is treated as having fallen off the track


@torch.inference_mode()
def exact_scores(model: torch.nn.Module, video: Any, index: TrackIndex, rows: np.ndarray,
                 device: str = "cpu") -> np.ndarray:
    """p_s of one encoded video against track index rows (in the given order): float32 [len(rows)].

    Float32 whatever the grounding precision: scoring is a pass over the candidates' stored float16 tokens, which
    bf16 would make coarser without making faster here. The blocks are read on the host and scored on `device`
    (the model's and the video encoding's).
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.float32)
    if not len(rows):
        return out
    scorer = model.index_scorer(video)
    embeddings = torch.from_numpy(index.embedding_rows(rows)).to(device)
    pooled = None
    if scorer.needs_tokens:
        pooled = torch.empty(len(rows), 1, index.dim, device=device)
        # One float32 buffer for every block: converting into memory that stays in cache keeps this fast.
        buffer = index.buffer("float32", min(READ_CHUNK, len(rows)) * int(index.lengths[rows].max()) * index.dim,
                              torch.float32)
        for positions, tokens, mask in index.blocks(rows):
            block = buffer[: tokens.numel()].view(tokens.shape)
            block.copy_(tokens)
            pooled[torch.from_numpy(positions).to(device)] = scorer.pool(block.to(device), mask.to(device))
    # The d-wide rest once for every candidate.
    out[:] = scorer.scores(embeddings, pooled).cpu().numpy()
    return out


def top_rows(scores: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Rows of the k highest scores (among `eligible` rows when given), best first; ties keep row order."""
    candidates = np.arange(len(scores)) if eligible is None else np.flatnonzero(eligible)
    k = min(k, len(candidates))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    # A stable sort of the negated scores: equal scores keep their row order, so results are reproducible.
    order = np.argsort(-scores[candidates], kind="stable")[:k]
    return candidates[order]


def detect_moments(
    model: torch.nn.Module,
    video: Any,
    music: Any,
    rows: np.ndarray,
    precision: str = "fp32",
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Moments of one video in tracks `rows` of `music`: (start, end) seconds [k, 2] as predicted, and centres [k]."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.float32), np.zeros(0, dtype=np.float32)
    spans = detect_pairs(model, video, music, np.zeros(len(rows), dtype=np.int64), rows,
                         batch_size=max(1, len(rows)), precision=precision, device=device)
    return cw_to_seconds(spans), centres_in_seconds(spans)


def clip_to_track(start: float, end: float, track_seconds: float) -> tuple[float, float]:
    """A predicted moment clipped to [0, track_seconds]; moved back inside if it fell off the end (module doc)."""
    width = max(0.0, float(end) - float(start))
    clipped_start = min(max(float(start), 0.0), track_seconds)
    clipped_end = min(max(float(end), 0.0), track_seconds)
    if clipped_end - clipped_start >= min(MIN_MOMENT_S, width, track_seconds):
        return clipped_start, clipped_end
    width = min(max(width, MIN_MOMENT_S), track_seconds)
    return track_seconds - width, track_seconds


def fit_to_length(centre: float, length: float, track_seconds: float) -> tuple[float, float] | None:
    """A moment of exactly `length` s centred on `centre`, shifted to lie in [0, track_seconds]; None if too long."""
    if length > track_seconds:
        return None
    start = min(max(float(centre) - length / 2, 0.0), track_seconds - length)
    return start, start + length
