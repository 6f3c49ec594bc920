"""Decode a music track into what the AST encoder takes, with the checks that make a file unusable for grounding.

`decode_track`: 16 kHz mono samples of the first 240 s (the model's horizon: it never sees anything later), the
whole track's duration and its tags. By default the first channel, resampled with torchaudio's windowed sinc, as
the official pipeline fed AST; `channel` / `resampler` choose otherwise (a music feature spec records the choice:
decode with `mgsv.features.spec.decode_options(spec)`). Refused with an `InputError` naming the file: anything `mgsv.media` cannot
open or decode (missing, empty, not media, no audio stream, corrupt), digital silence (a silent track has no
content to match a video with: every moment of it would be an equally meaningless answer), and a file whose audio
stops far before the duration its header announces (a truncated download).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgsv.defaults import MUSIC_HORIZON_S, OFFICIAL_CHANNEL, OFFICIAL_RESAMPLER
from mgsv.errors import InputError

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
