"""Moments as the models predict them, a normalised (centre, width) over the 240 s horizon, turned into seconds."""

from __future__ import annotations

import numpy as np

from mgsv.defaults import MUSIC_HORIZON_S

_F32 = np.float32


def cw_to_seconds(spans_cw: np.ndarray, horizon: float = MUSIC_HORIZON_S) -> np.ndarray:
    """Normalised (centre, width) spans [N, 2] -> (start, end) seconds [N, 2], float32 as the official code does."""
    cw = np.asarray(spans_cw, dtype=_F32)
    half = _F32(0.5) * cw[:, 1]
    start = (cw[:, 0] - half) * _F32(horizon)
    end = (cw[:, 0] + half) * _F32(horizon)
    return np.stack([start, end], axis=-1)


def centres_in_seconds(spans_cw: np.ndarray, horizon: float = MUSIC_HORIZON_S) -> np.ndarray:
    """The centres [N] of normalised (centre, width) spans in seconds, float32."""
    return np.asarray(spans_cw, dtype=_F32)[:, 0] * _F32(horizon)
