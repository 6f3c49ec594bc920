"""Decode one media file into what an encoder takes, with the checks that make a file unusable for grounding.

Music (`decode_track`): 16 kHz mono samples of the first 240 s (the paper's horizon, REF §1.4: the model never
sees anything later), the whole track's duration and its tags. By default the first channel, resampled with
torchaudio's windowed sinc, as the official pipeline fed AST; `channel` / `resampler` choose otherwise (the music
feature spec records the choice, and `encode_track` re-decodes a track decoded another way than its encoder needs). Refused with an `InputError` naming the file:
anything `mgsv.media` cannot open or decode (missing, empty, not media, no audio stream, corrupt), digital silence
(a silent track has no content to match a video with: every moment of it would be an equally meaningless answer),
and a file whose audio stops far before the duration its header announces (a truncated download).

Video (`decode_video`): the 1 fps frames MaDe reads, at most 50 from `window_start` (a longer video is cut with a
warning; `truncated` says so), decoded as `mgsv.media.decode.read_video_frames` documents (its options are the
CLIP encoder's `decode_options`; `encode_video` re-decodes frames decoded another way).

`prefetched` runs decoding one file ahead in a thread while the caller encodes the previous one: FFmpeg and
libsndfile release the GIL, so decoding overlaps the encoder's matrix products.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from mgsv.errors import InputError, MgsvError
from mgsv.features.spec import (
    MUSIC_HORIZON_S,
    OFFICIAL_CHANNEL,
    OFFICIAL_FRAME_TIMES,
    OFFICIAL_RESAMPLER,
    decode_options,
)
from mgsv.media.decode import DEFAULT_MAX_SHORT_SIDE

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.media.decode import VideoFrames

SAMPLE_RATE = 16000  # what AST's fbank expects
# Decoded audio this much shorter than the header's duration means the file was cut short (a truncated download);
# small differences are normal (encoder delay, rounded header fields).
_TRUNCATION_TOLERANCE_S = 2.0
_TRUNCATION_TOLERANCE_FRACTION = 0.05


@dataclass
class DecodedTrack:
    """A music file ready for the AST encoder."""

    path: Path
    samples: np.ndarray  # float32 [n] at 16 kHz, mono, at most 240 s
    duration: float  # seconds of the whole track
    tags: dict[str, str] = field(default_factory=dict)
    channel: int | str = OFFICIAL_CHANNEL  # how the samples were decoded (`read_audio`'s options)
    resampler: str = OFFICIAL_RESAMPLER

    @property
    def decode_options(self) -> dict[str, int | str]:
        """The `read_audio` options the samples were decoded with."""
        return {"channel": self.channel, "resampler": self.resampler}

    @property
    def used_seconds(self) -> float:
        """Seconds the features cover: the track, at most the 240 s horizon."""
        return min(self.duration, MUSIC_HORIZON_S)

    @property
    def beyond_horizon(self) -> bool:
        """True if the track is longer than 240 s, so only its first 240 s were encoded."""
        return self.duration > MUSIC_HORIZON_S


def decode_track(
    path: str | os.PathLike[str], channel: int | str = OFFICIAL_CHANNEL, resampler: str = OFFICIAL_RESAMPLER
) -> DecodedTrack:
    """Decode the first 240 s of a music file (see the module docstring for what is refused)."""
    from mgsv.media.decode import SILENCE_DBFS, is_silent, read_audio
    from mgsv.media.probe import probe

    path = Path(path)
    info = probe(path)
    if not info.has_audio:
        raise InputError(path, "has no audio stream" if not info.has_video else "video has no audio track")
    samples = read_audio(
        path, sample_rate=SAMPLE_RATE, max_seconds=MUSIC_HORIZON_S, channel=channel, resampler=resampler  # type: ignore[arg-type]
    )
    decoded = len(samples) / SAMPLE_RATE
    if decoded == 0:
        raise InputError(path, "no audio samples could be decoded")
    if is_silent(samples):
        raise InputError(
            path, f"digital silence (no sample above {SILENCE_DBFS:g} dBFS): there is no music to ground a video on"
        )
    header = info.audio.duration if info.audio and info.audio.duration else info.duration
    reached_horizon = decoded >= MUSIC_HORIZON_S - 1.0 / SAMPLE_RATE
    if header is not None and not reached_horizon:
        missing = min(header, MUSIC_HORIZON_S) - decoded
        if missing > max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * header):
            raise InputError(
                path, f"truncated or damaged: the header says {header:.1f} s but only {decoded:.1f} s of audio decode"
            )
    if reached_horizon:  # decoding stopped at 240 s: only the header knows the length
        duration = max(decoded, header or 0.0)
    else:
        # Decoders can emit a few hundred ms past the end the stream declares (Vorbis end trimming); the shorter
        # of the two is the length a renderer will honour (mgsv.media.render trusts the stream's duration).
        duration = min(decoded, header) if header else decoded
    return DecodedTrack(
        path=path, samples=samples, duration=float(duration), tags=dict(info.tags), channel=channel,
        resampler=resampler,
    )


def encode_track(track: DecodedTrack, encoder: AstMusicEncoder) -> tuple[np.ndarray, np.ndarray]:
    """AST tokens [96, D] float32 and mask [96] bool of a decoded track (decoded again if the encoder's spec
    records another channel or resampler than the track was decoded with)."""
    wanted = decode_options(encoder.spec)
    if track.decode_options != wanted:
        track = decode_track(track.path, **wanted)  # type: ignore[arg-type]
    tokens, mask = encoder.encode(track.samples, sample_rate=SAMPLE_RATE, source=str(track.path))
    return tokens, mask


def decode_video(
    path: str | os.PathLike[str],
    window_start: float = 0.0,
    frame_times: str = OFFICIAL_FRAME_TIMES,
    jpeg_quality: int | None = None,
    max_short_side: int | None = DEFAULT_MAX_SHORT_SIDE,
) -> VideoFrames:
    """1 fps frames of a video (at most 50, from `window_start`), read by `mgsv.media.decode.read_video_frames`."""
    from mgsv.media.decode import read_video_frames

    return read_video_frames(
        path, window_start=window_start, frame_times=frame_times, jpeg_quality=jpeg_quality,  # type: ignore[arg-type]
        max_short_side=max_short_side,
    )


def encode_video(frames: VideoFrames, encoder: ClipFrameEncoder) -> tuple[np.ndarray, np.ndarray]:
    """CLIP tokens [N, D] float32 and an all-valid mask [N] of decoded frames (decoded again if the encoder's spec
    records other frame times, JPEG round trip or frame size than the frames were decoded with)."""
    wanted = decode_options(encoder.spec)
    if frames.decode_options != wanted:
        frames = decode_video(frames.path, frames.window_start, **wanted)  # type: ignore[arg-type]
    tokens = encoder.encode(frames.frames, source=str(frames.path))
    return tokens, np.ones(len(tokens), dtype=bool)


T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Fetched(Generic[T, R]):
    """One input of `prefetched` with its result or the user-facing error it raised."""

    item: T
    result: R | None
    error: MgsvError | None


def prefetched(func: Callable[[T], R], items: Iterable[T], depth: int = 1) -> Iterator[Fetched[T, R]]:
    """Yield `func(item)` for each item in order, computing up to `depth` items ahead in a background thread.

    `MgsvError`s (bad input) and `OSError`s (a file that vanished or cannot be read) are handed back per item so
    the caller can go on; any other exception is a bug and is raised in the caller's thread.
    """
    items = list(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgsv-decode")
    pending: list[tuple[T, Future[R]]] = []
    try:
        position = 0
        while position < len(items) or pending:
            while position < len(items) and len(pending) <= depth:
                pending.append((items[position], pool.submit(func, items[position])))
                position += 1
            item, future = pending.pop(0)
            try:
                fetched = Fetched(item, future.result(), None)
            except MgsvError as exc:
                fetched = Fetched(item, None, exc)
            except OSError as exc:
                fetched = Fetched(item, None, InputError(str(item), f"cannot read: {exc.strerror or exc}"))
            yield fetched
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
