"""Open media files safely and describe them: streams, duration and tags.

Every way a file can be unusable (missing, a directory, unreadable, empty, not media) becomes an `InputError` that
names the file, raised here at the boundary so that callers never see a PyAV traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from mgsv.errors import InputError
from mgsv.file_access import check_readable, os_error_reason, resolve_existing

if TYPE_CHECKING:
    import av.container
    import av.stream

# Tag names a user cares about, as FFmpeg / Vorbis comments / mutagen's "easy" keys spell them (lower-cased).
KNOWN_TAGS = (
    "title",
    "artist",
    "album",
    "album_artist",
    "composer",
    "date",
    "genre",
    "license",
    "copyright",
    "comment",
)


@dataclass(frozen=True)
class VideoStreamInfo:
    """The first video stream: codec, coded size (before any rotation), frame rate, duration in seconds."""

    codec: str
    width: int
    height: int
    fps: float | None
    duration: float | None


@dataclass(frozen=True)
class AudioStreamInfo:
    """The first audio stream: codec, native sample rate, channel count, duration in seconds."""

    codec: str
    sample_rate: int
    channels: int
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds. `duration` is the longest stream's (the container's), in seconds."""

    path: Path
    format: str
    duration: float | None
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None
    tags: dict[str, str] = field(default_factory=dict)
    reader: str = "pyav"  # "pyav" or "soundfile" (files FFmpeg refuses, see mgsv.media.decode)

    @property
    def has_video(self) -> bool:
        """True if the file has a video stream."""
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        """True if the file has an audio stream."""
        return self.audio is not None


def check_readable_file(path: str | os.PathLike[str]) -> Path:
    """Return `path` as a Path if it is a non-empty regular file we may read; otherwise raise InputError."""
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            resolve_existing(path)  # a link loop or a link to nothing: raises, saying which
        if not path.exists():
            raise InputError(path, "file not found")
        if path.is_dir():
            raise InputError(path, "is a directory, not a media file")
        if not path.is_file():
            raise InputError(path, "is not a regular file")
        check_readable(path, "media file")
        if path.stat().st_size == 0:
            raise InputError(path, "empty file (0 bytes)")
    except OSError as exc:  # e.g. a folder on the way that may not be entered
        raise InputError(path, os_error_reason(exc)) from exc
    return path


@contextmanager
def open_media(path: str | os.PathLike[str]) -> Iterator[av.container.InputContainer]:
    """Open a media file with PyAV for reading; any failure to open becomes an InputError naming the file."""
    import av

    path = check_readable_file(path)
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise InputError(path, f"not a readable media file ({_ffmpeg_reason(exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot open: {exc}") from exc
    try:
        yield container
    finally:
        container.close()


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream, or None; cover art in a music file (an "attached picture") does not count."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe a media file (streams, duration, tags); falls back to soundfile for audio FFmpeg refuses."""
    import av

    path = check_readable_file(path)
    try:
        with open_media(path) as container:
            return _with_declared_length(_describe(path, container))
    except InputError as error:
        if not isinstance(error.__cause__, av.error.FFmpegError):
            raise
        fallback = _probe_with_soundfile(path)
        if fallback is None:
            raise
        return _with_declared_length(fallback)


def stream_seconds(stream: av.stream.Stream, value: int | None) -> float | None:
    """A timestamp or duration in `stream`'s time base as seconds (None stays None)."""
    if value is None or stream.time_base is None:
        return None
    return float(value * stream.time_base)


def stream_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The stream's duration in seconds from the headers, else the container's; None if neither is known."""
    seconds = stream_seconds(stream, stream.duration)
    if seconds is None and container.duration is not None:
        seconds = container.duration / 1_000_000
    return seconds


def _describe(path: Path, container: av.container.InputContainer) -> MediaInfo:
    video = audio = None
    vs = video_stream(container)
    if vs is not None:
        rate = vs.average_rate or vs.guessed_rate
        video = VideoStreamInfo(
            codec=vs.codec_context.name,
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            fps=float(rate) if rate else None,
            duration=stream_duration(container, vs),
        )
    if container.streams.audio:
        aus = container.streams.audio[0]
        audio = AudioStreamInfo(
            codec=aus.codec_context.name,
            sample_rate=aus.codec_context.sample_rate,
            channels=aus.codec_context.channels,
            duration=stream_duration(container, aus),
        )
    tags = dict(container.metadata)
    for stream in container.streams:  # Ogg keeps Vorbis comments on the stream, MP4/Matroska on the container
        tags = {**stream.metadata, **tags}
    duration = container.duration / 1_000_000 if container.duration is not None else None
    if duration is None:
        known = [s.duration for s in (video, audio) if s is not None and s.duration is not None]
        duration = max(known) if known else None
    return MediaInfo(path, container.format.name, duration, video, audio, _known_tags(tags))


def _probe_with_soundfile(path: Path) -> MediaInfo | None:
    """Describe an audio file through libsndfile + mutagen, or None if libsndfile cannot read it either."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return None
    audio = AudioStreamInfo(
        codec=info.subtype.lower(), sample_rate=info.samplerate, channels=info.channels, duration=info.duration
    )
    return MediaInfo(path, info.format.lower(), info.duration, None, audio, _mutagen_tags(path), reader="soundfile")


# WAVE format tags whose data chunk is whole frames of block_align bytes, so that its size gives the exact length.
_PCM_WAVE_FORMATS = {0x0001, 0x0003, 0xFFFE}  # PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE
# From this size up, a RIFF size field is the placeholder a streaming writer (FFmpeg, sox) leaves when it cannot
# seek back to fill it in: the length is unknown, not declared.
_UNKNOWN_RIFF_SIZE = 0x7FFFF000


def _with_declared_length(info: MediaInfo) -> MediaInfo:
    """`info` with the audio duration a WAV header declares, where FFmpeg and libsndfile report a shorter one.

    Both clamp a WAV's data size to the bytes present, so a truncated WAV (a cut download) looks like a complete
    shorter file. Its header still declares the whole length, as a FLAC or AIFF header does (and FFmpeg reports
    those as declared), so a decoder that stops far before it shows the file is damaged (docs/grounding.md).
    """
    if info.audio is None or "wav" not in [name.strip() for name in info.format.split(",")]:
        return info
    declared = _declared_wav_seconds(info.path)
    if declared is None or (info.audio.duration is not None and declared <= info.audio.duration):
        return info
    audio = replace(info.audio, duration=declared)
    return replace(info, audio=audio, duration=max(declared, info.duration or 0.0))


def _declared_wav_seconds(path: Path) -> float | None:
    """The length a PCM WAV's header declares (its data chunk size), read by mutagen; None if it declares none."""
    import mutagen
    import mutagen.wave

    try:
        stream = mutagen.wave.WAVE(str(path)).info
    except (mutagen.MutagenError, OSError, ValueError):
        return None
    if getattr(stream, "audio_format", None) not in _PCM_WAVE_FORMATS or not stream.sample_rate:
        return None
    data_bytes = stream.length * stream.bitrate / 8
    if not stream.length or data_bytes >= _UNKNOWN_RIFF_SIZE:
        return None
    return float(stream.length)


def _mutagen_tags(path: Path) -> dict[str, str]:
    import mutagen

    try:
        tagged = mutagen.File(str(path), easy=True)
    except (mutagen.MutagenError, OSError, ValueError):
        return {}
    if tagged is None or tagged.tags is None:
        return {}
    return _known_tags({key: "; ".join(str(v) for v in values) for key, values in tagged.tags.items()})


def _known_tags(raw: dict[str, str]) -> dict[str, str]:
    lowered = {key.lower(): value for key, value in raw.items()}
    if "albumartist" in lowered:
        lowered.setdefault("album_artist", lowered["albumartist"])
    return {key: lowered[key].strip() for key in KNOWN_TAGS if lowered.get(key, "").strip()}


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's own words for an error, without the file name PyAV appends."""
    strerror = getattr(exc, "strerror", None)
    return strerror or str(exc)


def as_fraction(value: float) -> Fraction:
    """A user-given number of seconds as an exact fraction (milliseconds are the finest step that matters)."""
    return Fraction(value).limit_denominator(1_000_000)
