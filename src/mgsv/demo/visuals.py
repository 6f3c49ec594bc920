"""The demo's query videos: a music visualiser, so that what a video shows is a function of its music moment.

Each second of a track becomes a 224 x 224 picture of its spectrum over the 10 s around it (16 coloured bars, one
per mel band, over a background whose brightness follows the loudness). A query video made from a moment of a track
shows that moment's pictures, with noise of its own; the planted answer is the track and the moment it was cut from.
(Colour casts made a harder demo: with one cast per track and look, the model told tracks apart by their casts,
and with a cast per picture it learned in two minutes to find only 3 videos in 5 among 12 tracks.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mgsv.encoders.ast import kaldi_fbank

SIZE = 224
BANDS = 16
BAR_WIDTH = SIZE // BANDS
NOISE_FIELDS = 8
PALETTE = (np.stack([
    0.5 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, BANDS, endpoint=False) + shift) for shift in (0.0, 2.1, 4.2)
], axis=1) * 255).astype(np.float32)


# Log-mel energies (Kaldi fbank of 16 kHz audio in [-1, 1]) mapped to bar heights 0..1. The range is fixed, not
# per track, so a bright track looks brighter than a dark one and the pictures carry the track's identity.
LOG_MEL_RANGE = (-15.0, 0.0)


def band_profile(waveform_16k: np.ndarray, window_s: int = 10) -> np.ndarray:
    """Per second of audio, the energy of 16 mel bands over the `window_s` seconds around it, in [0, 1]: [seconds, 16].

    The default 10 s is what one AST window hears (10 s windows every 2.5 s: docs/official-code.md), so that a picture and the music
    token of the same moment describe the same sound; a model trained on 1 s pictures learned the moments about half
    as well in the same time.
    """
    fbank = kaldi_fbank(torch.from_numpy(np.ascontiguousarray(waveform_16k, dtype=np.float32))).numpy()
    seconds = max(1, len(fbank) // 100)
    per_second = fbank[: seconds * 100].reshape(seconds, 100, -1).mean(1)
    bands = per_second.reshape(seconds, BANDS, -1).mean(2)
    # Running mean over seconds t - (window - 1) // 2 .. t + window // 2 (fewer at the ends).
    sums = np.cumsum(np.pad(bands, ((1, 0), (0, 0))), axis=0)
    first = np.clip(np.arange(seconds) - (window_s - 1) // 2, 0, seconds)
    last = np.clip(np.arange(seconds) + window_s // 2 + 1, 0, seconds)
    bands = (sums[last] - sums[first]) / (last - first)[:, None]
    low, high = LOG_MEL_RANGE
    return np.clip((bands - low) / (high - low), 0, 1).astype(np.float32)


def render_frames(profile: np.ndarray, seconds: np.ndarray, noise: float = 0.0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Pictures [n, 224, 224, 3] uint8 of the given whole seconds of a track (clamped to its length).

    `noise` adds Gaussian pixel noise of that standard deviation, each picture taking one of a few noise fields
    drawn from `rng` (drawing fresh noise for every pixel cost more than the rest of the demo's video stage).
    """
    rows = profile[np.clip(seconds.astype(int), 0, len(profile) - 1)]
    x = np.arange(SIZE)
    band = np.minimum(x // BAR_WIDTH, BANDS - 1)  # the band each column of pixels shows
    in_bar = (x % BAR_WIDTH >= 1) & (x % BAR_WIDTH <= BAR_WIDTH - 2)  # one dark column either side of a bar
    height = (rows * (SIZE - 16)).astype(int)
    # [n, SIZE]: the first lit row of each column (C order: the column gather would leave it transposed, and every
    # array computed from it after that would be slow to write)
    top = np.ascontiguousarray(np.where(in_bar[None, :], SIZE - height[:, band], SIZE + 1))
    lit = np.arange(SIZE)[None, :, None] >= top[:, None, :]  # [n, rows, columns]
    colour = PALETTE[band].astype(np.uint8)  # [columns, 3]
    background = (40 + 60 * rows.mean(1)).astype(np.uint8)  # [n]: follows loudness
    image = np.where(lit[..., None], colour[None, None], background[:, None, None, None])
    if noise and rng is not None:
        fields = rng.standard_normal((NOISE_FIELDS, SIZE, SIZE, 3), dtype=np.float32) * np.float32(noise)
        noisy = image.astype(np.int16) + np.rint(fields).astype(np.int16)[rng.integers(0, NOISE_FIELDS, len(rows))]
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    return image


def as_decoded(frames: np.ndarray) -> np.ndarray:
    """The pictures as a decoder returns them from `write_video`'s MP4 (yuv420p: colour at half resolution).

    The demo's model learns from these, since grounding decodes the query video: trained on the rendered RGB
    pictures, it found the track of a decoded video in 1 case of 2 (their CLIP features differed by half the
    spread between seconds; the colour round trip accounts for all but 7 % of that, the codec for the rest).
    """
    import av

    return np.stack([av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
                     .to_ndarray(format="rgb24") for picture in frames])


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
