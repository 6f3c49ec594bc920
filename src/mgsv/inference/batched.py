"""Running a model over many videos, tracks or (video, track) pairs in bounded batches.

Evaluation (`mgsv.evaluation.protocol`) and library search (`mgsv.search`) both run models this way. Every model
here follows `mgsv.models.contract`: `encode_video` / `encode_music` once per item, `relevance` for every pair of a
batch of videos and a set of tracks, `detect` for aligned pairs; encodings are opaque (`len`, `select`, `concat`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return precision


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for `precision == "bf16"`, otherwise a no-op."""
    if check_precision(precision) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(n)."""
    for begin in range(0, n, size):
        yield slice(begin, min(begin + size, n))


def concat_encodings(parts: list[Any]) -> Any:
    """Concatenate a model's encodings of several batches (their class provides `concat`)."""
    return type(parts[0]).concat(parts)


@torch.inference_mode()
def encode_items(
    encode: Callable[[torch.Tensor, torch.Tensor], Any],
    batches: Callable[[slice], tuple[torch.Tensor, torch.Tensor]],
    count: int,
    *,
    batch_size: int,
    precision: str,
    device: str,
    progress: Progress | None = None,
    stage: str = "encode",
) -> Any:
    """`encode(feats, mask)` over `count` items in batches (`batches(part)` gives a part's padded features)."""
    parts = []
    with autocast(precision, device):
        for part in chunks(count, batch_size):
            feats, mask = batches(part)
            parts.append(encode(feats.to(device), mask.to(device).bool()))
            if progress:
                progress(stage, part.stop, count)
    return concat_encodings(parts)


# Tokens (valid + padding) per detection forward on a CPU, for bf16; half as many for float32. Measured on MaDe
# (docs/models.md, full test-size evaluation): glibc serves allocations above 32 MB with fresh mmap'd pages, and a page fault
# costs about as much as the matrix product that writes it; below that size freed memory is reused. 16,384 tokens
# keep the widest activation (the [tokens, 1024] feed-forward hidden layer) under that size, so memory is reused
# from batch to batch.
CPU_DETECT_TOKENS = 16384


def pair_order(videos: Any, music: Any, video_index: np.ndarray,
               music_index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The order in which to detect pairs and the pairs' token counts in that order: by total token count when
    both encodings tell it (`token_counts`, `mgsv.models.contract`), else as given (counts None).

    A detection batch is padded to its longest pair, and attention costs the square of that length: pairs of
    similar length in one batch waste little. Sorting is stable, so equal lengths keep their given order.
    """
    if not (hasattr(videos, "token_counts") and hasattr(music, "token_counts")):
        return np.arange(len(video_index)), None
    counts = (videos.token_counts().cpu().numpy()[video_index]
              + music.token_counts().cpu().numpy()[music_index])
    order = np.argsort(counts, kind="stable")
    return order, counts[order]


def pair_batches(counts: np.ndarray, batch_size: int, max_tokens: int | None) -> list[slice]:
    """Consecutive batches of pairs with ascending token `counts`: at most `batch_size` pairs and (unless None) at
    most `max_tokens` padded tokens, i.e. pairs x the last pair's count (always at least one pair)."""
    if max_tokens is None:
        return list(chunks(len(counts), batch_size))
    batches, begin = [], 0
    while begin < len(counts):
        window = counts[begin:begin + batch_size].astype(np.int64)
        padded = np.arange(1, len(window) + 1) * window  # tokens of the batch ending at each pair
        size = max(1, int(np.searchsorted(padded, max_tokens, side="right")))
        batches.append(slice(begin, begin + size))
        begin += size
    return batches


@torch.inference_mode()
def detect_pairs(
    model: nn.Module,
    videos: Any,
    music: Any,
    video_index: np.ndarray,
    music_index: np.ndarray,
    *,
    batch_size: int,
    precision: str,
    device: str,
    progress: Progress | None = None,
    stage: str = "detect",
) -> np.ndarray:
    """Normalised (centre, width) [n, 2] of the last decoder layer for each (video_index[i], music_index[i]) pair.

    Pairs run in batches of similar length (`pair_order`) of at most `batch_size` pairs and, on a CPU, at most
    `CPU_DETECT_TOKENS` tokens; tracks are selected without what only ranking needs (`for_detection`, when the
    encoding has it). Results come back in the given order.
    """
    video_index = np.asarray(video_index, dtype=np.int64)
    music_index = np.asarray(music_index, dtype=np.int64)
    out = np.empty((len(video_index), 2), dtype=np.float32)
    if hasattr(music, "for_detection"):
        music = music.for_detection()
    order, counts = pair_order(videos, music, video_index, music_index)
    where = torch.device(device)
    max_tokens = None
    if where.type == "cpu":
        max_tokens = CPU_DETECT_TOKENS if precision == "bf16" else CPU_DETECT_TOKENS // 2
    batches = pair_batches(counts, batch_size, max_tokens) if counts is not None else \
        list(chunks(len(video_index), batch_size))
    with autocast(precision, device):
        for part in batches:
            rows = order[part]
            v = videos.select(torch.as_tensor(video_index[rows], device=where))
            m = music.select(torch.as_tensor(music_index[rows], device=where))
            out[rows] = model.detect(v, m).final_spans.float().cpu().numpy()
            if progress:
                progress(stage, part.stop, len(video_index))
    return out


@torch.inference_mode()
def relevance_matrix(
    model: nn.Module,
    videos: Any,
    music: Any,
    *,
    batch_size: int,
    precision: str,
    device: str,
    progress: Progress | None = None,
) -> np.ndarray:
    """p_s [N videos, M tracks] as float32, computed in row chunks (the model chunks the tracks itself)."""
    rows = []
    with autocast(precision, device):
        for part in chunks(len(videos), batch_size):
            index = torch.arange(part.start, part.stop, device=torch.device(device))
            rows.append(model.relevance(videos.select(index), music).float().cpu().numpy())
            if progress:
                progress("relevance", part.stop, len(videos))
    return np.concatenate(rows) if rows else np.zeros((0, len(music)), dtype=np.float32)
