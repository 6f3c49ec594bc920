"""Cut a few seconds of a track into an MP3 the browser can play: the preview of a grounded moment.

MP3 because every browser plays it (Ogg/Opus is missing from older Safari, AAC from some Linux Firefox builds).
Decoding goes through `mgsv.media.decode.read_audio_channels`, so tracks FFmpeg refuses still preview through the
libsndfile fallback. Short fades keep the cut from clicking. The clip is made in memory: 10 s at 128 kbit/s is
160 KB. A whole track for the page's timeline (`fast=True`) is encoded with LAME's quicker, slightly coarser
psychoacoustics (`-q 7`): half the time (1.4 s instead of 2.8 s for a minute of music on the 2-core test machine,
`benchmarks/bench_timeline.py`), which matters for a 4-minute track.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

PREVIEW_RATE = 44100
PREVIEW_BITRATE = 128_000
FADE_S = 0.03
FAST_COMPRESSION_LEVEL = "7"  # libmp3lame's compression_level is LAME's -q: 0 best and slowest, 9 fastest
MEDIA_TYPE = "audio/mpeg"


def encode_preview(track: Path, start: float, seconds: float, *, fast: bool = False) -> bytes:
    """MP3 bytes of `seconds` of `track` from `start` (stereo, 44.1 kHz), faded in and out; `fast`: LAME -q 7."""
    import av

    from mgsv.media.decode import read_audio_channels

    samples = read_audio_channels(track, PREVIEW_RATE, max_seconds=seconds, offset=start)
    fade = min(int(FADE_S * PREVIEW_RATE), samples.shape[1] // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        samples[:, :fade] *= ramp
        samples[:, -fade:] *= ramp[::-1]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=PREVIEW_RATE, layout="stereo")
        stream.bit_rate = PREVIEW_BITRATE
        if fast:
            stream.codec_context.options = {"compression_level": FAST_COMPRESSION_LEVEL}
        chunk = 1152  # one MP3 frame
        for offset in range(0, samples.shape[1], chunk):
            block = np.ascontiguousarray(samples[:, offset : offset + chunk])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = PREVIEW_RATE
            frame.pts = offset
            frame.time_base = Fraction(1, PREVIEW_RATE)
            container.mux(stream.encode(frame))  # PyAV converts to the encoder's sample format
        container.mux(stream.encode(None))
    return buffer.getvalue()
