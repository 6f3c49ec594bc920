"""Media decoded as an encoder's feature spec records it, and encoded: what extraction and the library share.

A spec records the preprocessing choices that change features (`mgsv.features.spec.decode_options`: the audio
channel and resampler; frame times, JPEG round trip and frame size). `encode_track` / `encode_video` decode the
file again when the track or frames at hand were decoded another way than the encoder's spec says, so features
always match their spec.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from mgsv.features.spec import decode_options
from mgsv.media.decode import DEFAULT_MAX_SHORT_SIDE, VideoFrames, read_video_frames
from mgsv.media.tracks import SAMPLE_RATE, DecodedTrack, decode_track

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder


def decode_video(
    path: str | os.PathLike[str],
    window_start: float = 0.0,
    frame_times: str = "cv2",
    jpeg_quality: int | None = None,
    max_short_side: int | None = DEFAULT_MAX_SHORT_SIDE,
) -> VideoFrames:
    """1 fps frames of a video (at most 50, from `window_start`), with the given decoding choices."""
    return read_video_frames(path, window_start=window_start, frame_times=frame_times,  # type: ignore[arg-type]
                             jpeg_quality=jpeg_quality, max_short_side=max_short_side)


def encode_track(track: DecodedTrack, encoder: AstMusicEncoder) -> tuple[np.ndarray, np.ndarray]:
    """AST tokens [96, D] float32 and mask [96] bool of a decoded track (decoded again if the encoder's spec
    records another channel or resampler than the track was decoded with)."""
    wanted = decode_options(encoder.spec)
    if track.decode_options != wanted:
        track = decode_track(track.path, **wanted)
    return encoder.encode(track.samples, sample_rate=SAMPLE_RATE, source=str(track.path))


def encode_video(frames: VideoFrames, encoder: ClipFrameEncoder) -> tuple[np.ndarray, np.ndarray]:
    """CLIP tokens [N, D] float32 and an all-valid mask [N] of decoded frames (decoded again if the encoder's spec
    records other frame times, JPEG round trip or frame size than the frames were decoded with)."""
    wanted = decode_options(encoder.spec)
    if frames.decode_options != wanted:
        frames = decode_video(frames.path, frames.window_start, **wanted)
    tokens = encoder.encode(frames.frames, source=str(frames.path))
    return tokens, np.ones(len(tokens), dtype=bool)
