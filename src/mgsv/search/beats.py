"""Snap a music moment to a beat, so that the cut into the track lands on the music's pulse.

Beats come from librosa's beat tracker (`librosa.beat.beat_track`, dynamic programming over an onset envelope),
run on the part of the track around the moment's start only (`CONTEXT_S` either side): a 16 s excerpt is enough
for a tempo estimate and keeps snapping cheap. librosa is an optional dependency (the `beats` extra) and is
imported only when snapping is asked for. Its first call in a process compiles numba code: a few seconds with a
warm numba cache, tens of seconds the very first time after installation.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from mgsv.errors import MissingExtraError, require_extra  # noqa: F401  (MissingExtraError: what callers catch)

BEAT_SAMPLE_RATE = 22050  # librosa's default analysis rate
CONTEXT_S = 8.0  # seconds of music analysed on each side of the moment's start


def require_librosa() -> ModuleType:
    """Import librosa, or explain which extra installs it."""
    return require_extra("librosa", "beats", "snapping to beats")  # type: ignore[return-value]


def beat_times(path: str | os.PathLike[str], around_s: float, context_s: float = CONTEXT_S) -> np.ndarray:
    """Beat times (seconds from the track's start) within `context_s` of `around_s`; empty if none are found."""
    from mgsv.media.decode import is_silent, read_audio

    librosa = require_librosa()
    offset = max(0.0, float(around_s) - context_s)
    samples = read_audio(path, sample_rate=BEAT_SAMPLE_RATE, offset=offset, max_seconds=2 * context_s)
    if len(samples) < BEAT_SAMPLE_RATE or is_silent(samples):  # under a second, or nothing to hear: no pulse
        return np.zeros(0)
    _, beats = librosa.beat.beat_track(y=samples, sr=BEAT_SAMPLE_RATE, units="time")
    return np.asarray(beats, dtype=np.float64) + offset


def snap_to_beat(start: float, end: float, beats: np.ndarray, track_seconds: float) -> tuple[float, float] | None:
    """The moment moved (same length) so it starts on the beat nearest `start` and stays in [0, track_seconds].

    Beats that would push the moment past the track's end are not considered; None if no beat qualifies.
    """
    length = float(end) - float(start)
    beats = np.asarray(beats, dtype=np.float64)
    usable = beats[(beats >= 0) & (beats + length <= track_seconds + 1e-6)]
    if len(usable) == 0:
        return None
    beat = float(usable[np.argmin(np.abs(usable - start))])
    return beat, min(beat + length, track_seconds)
