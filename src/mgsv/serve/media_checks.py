"""Check what an upload really is by reading it with FFmpeg (PyAV), never by its name or declared type.

`inspect_video` opens the file, requires a video stream, decodes its first frame and measures the duration from
the packets' timestamps (headers can lie or be missing); `peek_video_duration` reads only the container header of
a partial upload so that a video declared too long is refused while it is still arriving. `inspect_music` requires
decodable audio (through `mgsv.media.probe`, which also knows the libsndfile fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mgsv.errors import InputError
from mgsv.limits import VideoLengthError, check_video_duration, check_video_stream
from mgsv.serve.http_errors import ApiError

DURATION_TOLERANCE_S = 0.5  # container rounding: a 60.2 s file passes a 60 s limit


@dataclass(frozen=True)
class VideoInfo:
    """What the server learnt about an uploaded video."""

    duration: float
    width: int
    height: int
    codec: str
    has_audio: bool

    def to_dict(self) -> dict:
        return {
            "duration": round(self.duration, 3),
            "width": self.width,
            "height": self.height,
            "codec": self.codec,
            "has_audio": self.has_audio,
        }


def _too_long(seconds: float, limit: float, at_least: bool = False) -> ApiError:
    length = f"at least {seconds:.1f} s" if at_least else f"{seconds:.1f} s"
    return ApiError(
        422, "video_too_long", f"the uploaded video is {length} long; this server accepts videos of at most {limit:g} s"
    )


def _not_media(problem: str) -> ApiError:
    return ApiError(415, "not_a_video", f"the uploaded file is not a video this server can read: {problem}")


def peek_video_duration(path: Path, max_seconds: float) -> None:
    """Refuse a partial upload whose container header already declares more than `max_seconds`; else do nothing.

    Anything unreadable is ignored here: a partial file often is (an MP4 whose index comes last), and the full
    check runs once the upload is complete.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            declared = container.duration / 1_000_000 if container.duration else None
    except (av.error.FFmpegError, OSError, ValueError):
        return
    if declared is not None and declared > max_seconds + DURATION_TOLERANCE_S:
        raise _too_long(declared, max_seconds)


def inspect_video(path: Path, max_seconds: float) -> VideoInfo:
    """Decode the first frame and measure the duration; ApiError 415 (not a video) or 422 (too long) otherwise."""
    import av

    from mgsv.media.probe import open_media, stream_duration, video_stream

    try:
        with open_media(path) as container:
            stream = video_stream(container)
            if stream is None:
                raise _not_media("it has no video stream")
            check_video_stream(path, container, stream)  # the limits of every door (mgsv.limits)
            ctx = stream.codec_context
            codec = ctx.name
            declared = stream_duration(container, stream)
            if declared is not None and declared > max_seconds + DURATION_TOLERANCE_S:
                raise _too_long(declared, max_seconds)
            has_audio = bool(container.streams.audio)
            time_base = stream.time_base
            first = last_end = None
            decoded = False
            try:
                for packet in container.demux(stream):
                    if not decoded:  # a frame may need a few packets (B-frames), or the final flush packet
                        decoded = bool(packet.decode())
                    if packet.pts is None:
                        continue
                    first = packet.pts if first is None else min(first, packet.pts)
                    end = packet.pts + (packet.duration or 0)
                    last_end = end if last_end is None else max(last_end, end)
                    seconds = float((last_end - first) * time_base)
                    if seconds > max_seconds + DURATION_TOLERANCE_S:
                        raise _too_long(seconds, max_seconds, at_least=True)  # the rest cannot change the answer
            except av.error.FFmpegError as exc:
                raise _not_media(f"decoding failed ({getattr(exc, 'strerror', None) or exc})") from exc
    except InputError as exc:
        raise _not_media(exc.problem) from exc
    if not decoded:
        raise _not_media("no video frame could be decoded")
    if first is None or last_end is None or last_end <= first:
        raise _not_media("its video stream has no timed frames")
    seconds = float((last_end - first) * time_base)
    try:
        check_video_duration(path, seconds, max_seconds=None)  # the longest is this server's own limit, above
    except VideoLengthError as exc:
        raise ApiError(422, "video_too_short", f"the uploaded video is too short: {exc.problem}") from exc
    return VideoInfo(seconds, ctx.width, ctx.height, codec, has_audio)


def inspect_music(path: Path) -> tuple[float, str]:
    """(duration in seconds, container format) of an uploaded music file; ApiError 415 if it has no audio."""
    from mgsv.media.probe import probe

    try:
        info = probe(path)
    except InputError as exc:
        raise ApiError(415, "not_audio", f"the uploaded file is not audio this server can read: {exc.problem}") from exc
    if not info.has_audio:
        raise ApiError(415, "not_audio", "the uploaded file has no audio stream")
    duration = (info.audio.duration if info.audio and info.audio.duration else None) or info.duration
    if not duration or duration <= 0:
        raise ApiError(415, "not_audio", "the uploaded file's audio has no duration")
    return float(duration), info.format
