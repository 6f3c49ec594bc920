"""Waveform peaks: the lowest and highest sample of each short slice of a track, to draw it as a waveform.

An editor's timeline draws a track as one vertical bar per pixel column, from the lowest to the highest sample
in the stretch of time that column covers. `track_peaks` measures those extremes once, at a fixed resolution
(`PEAKS_PER_SECOND` slices a second, on the mono mix at `PEAKS_SAMPLE_RATE`); `resample_peaks` turns them into
any number of columns without decoding the track again. The mono mix is the channels' mean, as elsewhere in
`mgsv.media.decode`. A coarse rate is enough here: the bars show the envelope, and the whole track is held in
memory while it is measured (`MAX_PEAK_SECONDS` of it: 58 MB at most).
"""

from __future__ import annotations

import os

import numpy as np

PEAKS_SAMPLE_RATE = 8000
PEAKS_PER_SECOND = 100  # 10 ms slices: finer than any timeline shows a whole track
PEAK_HOP = PEAKS_SAMPLE_RATE // PEAKS_PER_SECOND
MAX_PEAK_SECONDS = 1800.0  # tracks are measured over their first 30 min


def track_peaks(path: str | os.PathLike[str], max_seconds: float = MAX_PEAK_SECONDS) -> np.ndarray:
    """float16 [n, 2]: (lowest, highest) sample of each 1/PEAKS_PER_SECOND s slice of the track's first `max_seconds`.

    The last slice may be partial. Raises `mgsv.errors.InputError` if the file cannot be decoded.
    """
    from mgsv.media.decode import read_audio

    samples = read_audio(path, sample_rate=PEAKS_SAMPLE_RATE, max_seconds=max_seconds)
    slices = -(-len(samples) // PEAK_HOP)
    padded = np.zeros(slices * PEAK_HOP, dtype=np.float32)
    padded[: len(samples)] = samples
    if len(samples) % PEAK_HOP:  # the padding of a partial last slice must not count as a sample of 0
        last = samples[(slices - 1) * PEAK_HOP :]
        padded[len(samples) :] = last[-1]
    blocks = padded.reshape(slices, PEAK_HOP)
    peaks = np.stack([blocks.min(axis=1), blocks.max(axis=1)], axis=1)
    return np.clip(peaks, -1.0, 1.0).astype(np.float16)


def resample_peaks(peaks: np.ndarray, width: int) -> np.ndarray:
    """float32 [width, 2]: `peaks` ([n, 2]) spread over `width` equal columns, each the extremes of the slices it covers.

    Fewer columns than slices merge slices (the lowest low and the highest high); more columns repeat them.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    peaks = np.asarray(peaks, dtype=np.float32)
    n = len(peaks)
    if n == 0:
        return np.zeros((width, 2), dtype=np.float32)
    # Column i covers slices [edges[i], edges[i + 1]); reduceat takes a single slice where two edges coincide.
    edges = np.floor(np.linspace(0, n, width + 1)).astype(np.int64)
    starts = np.minimum(edges[:-1], n - 1)
    low = np.minimum.reduceat(peaks[:, 0], starts)
    high = np.maximum.reduceat(peaks[:, 1], starts)
    return np.stack([low, high], axis=1)
