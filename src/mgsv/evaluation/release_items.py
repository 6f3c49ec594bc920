"""One item of the check against the release: our tokens re-extracted from its raw file, compared with the released ones.

Videos are re-extracted as the official features were made for a test row (docs/official-code.md, "Video
features"): one frame per whole second from `floor(video_start)` up to `floor(video_end)` (at most second 49), so
the token count follows the row, not the whole file as `mgsv extract` does. Music is the whole track's 96 windows.
Both are decoded as the encoder's feature spec records (`mgsv.features.spec.decode_options`).

Tokens are compared on the positions both sides mark valid (`compare_tokens`: per-token cosine); the counts of
valid positions on each side are kept, so an item whose frames or windows differ in number shows it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.encoders.inputs import decode_video, encode_track, encode_video
from mgsv.encoders.verify import ItemAgreement, compare_tokens
from mgsv.errors import InputError
from mgsv.features.spec import decode_options
from mgsv.media.tracks import decode_track

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder

MAX_FRAMES = 50  # the official video features hold seconds 0..49
# Reported for every modality: the fraction of items whose every token reaches each cosine.
THRESHOLDS = (0.9999, 0.999, 0.99, 0.9)


@dataclass
class ReleaseItem(ItemAgreement):
    """The agreement of one item with the release, and how many valid tokens each side has."""

    ours_tokens: int
    released_tokens: int


@dataclass
class ModalitySummary:
    """All compared items of one modality."""

    modality: str
    items: int
    cosine_mean: float  # mean over items of their mean token cosine
    cosine_min: float  # the smallest token cosine of all items
    worst_item: str  # the item with the smallest mean cosine
    at_least: dict[str, float]  # threshold -> fraction of items whose every token reaches it
    counts_differ: int  # items whose number of valid tokens differs between the two sides

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def official_frame_count(video_start: float, video_end: float) -> int:
    """How many frames the official features hold for a row: seconds floor(video_start) .. floor(video_end),
    at most up to second 49 (docs/official-code.md, "Video features")."""
    first = math.floor(video_start)
    last = min(math.floor(video_end), MAX_FRAMES - 1)
    return max(0, last - first + 1)


def reextract_video(path: str | os.PathLike[str], encoder: ClipFrameEncoder, video_start: float,
                    video_end: float) -> tuple[np.ndarray, np.ndarray]:
    """CLIP tokens [n, D] and mask [n] of a row's video, frames cut as the official features were."""
    frames = decode_video(path, math.floor(video_start), **decode_options(encoder.spec))
    keep = min(len(frames), official_frame_count(video_start, video_end))
    if keep < 1:
        raise InputError(path, f"no frame between video_start {video_start:g} s and video_end {video_end:g} s")
    frames = dataclasses.replace(frames, frames=frames.frames[:keep], timestamps=frames.timestamps[:keep])
    return encode_video(frames, encoder)


def reextract_music(path: str | os.PathLike[str], encoder: AstMusicEncoder) -> tuple[np.ndarray, np.ndarray]:
    """AST tokens [96, D] and mask [96] of a track."""
    return encode_track(decode_track(path, **decode_options(encoder.spec)), encoder)


def as_stored(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tokens as a feature store keeps them (float16, zeros where the mask is 0), back in float32: new items and
    items read back from the store of an earlier run are compared in the same precision."""
    stored = np.asarray(tokens, np.float32).astype(np.float16).astype(np.float32)
    stored[~np.asarray(mask, bool)] = 0
    return stored


def compare_item(modality: str, item_id: str, ours: np.ndarray, ours_mask: np.ndarray, released: np.ndarray,
                 released_mask: np.ndarray) -> ReleaseItem:
    """Per-token agreement on the positions both sides mark valid (ours is padded to the released length)."""
    ours, ours_mask = np.asarray(ours, np.float32), np.asarray(ours_mask, bool)
    length = len(released)
    if len(ours) > length:
        raise InputError(item_id, f"{len(ours)} tokens re-extracted, the release holds at most {length}")
    padded = np.zeros((length, ours.shape[1]), np.float32)
    padded[: len(ours)] = ours
    mask = np.zeros(length, bool)
    mask[: len(ours_mask)] = ours_mask
    both = mask & np.asarray(released_mask, bool)
    if not both.any():
        raise InputError(item_id, f"no position is valid on both sides ({int(mask.sum())} re-extracted tokens, "
                                  f"{int(np.sum(released_mask))} released)")
    agreement = compare_tokens(modality, item_id, padded, released, both)
    return ReleaseItem(**dataclasses.asdict(agreement), ours_tokens=int(mask.sum()),
                       released_tokens=int(np.sum(released_mask)))


def summarize(items: list[ReleaseItem], modality: str) -> ModalitySummary | None:
    """Summary statistics of one modality's compared items (None when none was compared)."""
    rows = [r for r in items if r.modality == modality]
    if not rows:
        return None
    worst = min(rows, key=lambda r: r.cosine_mean)
    return ModalitySummary(
        modality=modality, items=len(rows), cosine_mean=float(np.mean([r.cosine_mean for r in rows])),
        cosine_min=min(r.cosine_min for r in rows), worst_item=worst.item,
        at_least={f"{t:g}": sum(r.cosine_min >= t for r in rows) / len(rows) for t in THRESHOLDS},
        counts_differ=sum(r.ours_tokens != r.released_tokens for r in rows),
    )
