"""The demo's query videos: a music visualiser, so that what a video shows is a function of its music moment.

Each second of a track becomes a 224 x 224 picture of its spectrum (16 coloured bars, one per mel band, over a
background whose brightness follows the loudness). A query video made from a moment of a track shows that moment's
pictures, with its own colour cast and noise; the planted answer is the track and the moment it was cut from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mgsv.encoders.ast import kaldi_fbank

SIZE = 224
BANDS = 16
PALETTE = (np.stack([
    0.5 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, BANDS, endpoint=False) + shift) for shift in (0.0, 2.1, 4.2)
], axis=1) * 255).astype(np.float32)


# Log-mel energies (Kaldi fbank of 16 kHz audio in [-1, 1]) mapped to bar heights 0..1. The range is fixed, not
# per track, so a bright track looks brighter than a dark one and the pictures carry the track's identity.
LOG_MEL_RANGE = (-15.0, 0.0)


def band_profile(waveform_16k: np.ndarray) -> np.ndarray:
    """Per second of audio, the energy of 16 mel bands scaled to [0, 1]: [seconds, 16]."""
    fbank = kaldi_fbank(torch.from_numpy(np.ascontiguousarray(waveform_16k, dtype=np.float32))).numpy()
    seconds = max(1, len(fbank) // 100)
    per_second = fbank[: seconds * 100].reshape(seconds, 100, -1).mean(1)
    bands = per_second.reshape(seconds, BANDS, -1).mean(2)
    low, high = LOG_MEL_RANGE
    return np.clip((bands - low) / (high - low), 0, 1).astype(np.float32)


def render_frames(profile: np.ndarray, seconds: np.ndarray, cast: np.ndarray | None = None,
                  noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pictures [n, 224, 224, 3] uint8 of the given whole seconds of a track (clamped to its length)."""
    rows = profile[np.clip(seconds.astype(int), 0, len(profile) - 1)]
    n = len(rows)
    image = np.zeros((n, SIZE, SIZE, 3), dtype=np.float32)
    image += 40 + 60 * rows.mean(1)[:, None, None, None]  # background follows loudness
    height = (rows * (SIZE - 16)).astype(int)
    width = SIZE // BANDS
    y = np.arange(SIZE)[None, :, None]
    for band in range(BANDS):
        lit = y >= (SIZE - height[:, band])[:, None, None]  # [n, SIZE, 1]
        columns = slice(band * width + 1, (band + 1) * width - 1)
        image[:, :, columns, :] = np.where(lit[..., None], PALETTE[band], image[:, :, columns, :])
    if cast is not None:
        image = image * cast[None, None, None, :]
    if noise and rng is not None:
        image = image + rng.normal(0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int = 4) -> Path:
    """An H.264 MP4 showing each picture for one second (so frame t is on screen at second t)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"crf": "18"}
        for picture in frames:
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            for _ in range(fps):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
