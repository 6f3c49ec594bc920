"""The limits on an input video, the same for every door (`mgsv ground`, `mgsv extract`, `mgsv render`, the server).

- Frames larger than `MAX_PIXELS` are refused before anything is decoded: beyond 8192 x 8192 (8K UHD is
  7680 x 4320) a header is more likely hostile or broken than a real video, and a decoder would allocate gigabytes
  per frame.
- A still image (a PNG, a JPEG: FFmpeg opens those too, as a one-frame "video") is not a video, and neither is
  anything shorter than `MIN_VIDEO_SECONDS`: MaDe reads one frame per second, and a single frame shown for 0.04 s
  has no timeline to put music under.
- `MAX_VIDEO_SECONDS` bounds what `mgsv render` and the server accept: a render holds the whole soundtrack in memory
  (48 kHz stereo float32, 1.4 GB per hour). Grounding reads at most 50 s of a video (a window), whatever its length.
  The server's own `--max-video-seconds` (default 60 s) may only be lower.

docs/grounding.md and docs/serve.md list these limits; change them here only. This module imports nothing heavy
(no numpy, torch or PyAV), so that command-line options can name the limits without slowing `mgsv --help`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mgsv.defaults import MAX_VIDEO_PIXELS
from mgsv.errors import InputError

if TYPE_CHECKING:
    import av.container
    import av.video.stream

MAX_PIXELS = MAX_VIDEO_PIXELS
MIN_VIDEO_SECONDS = 0.5
MAX_VIDEO_SECONDS = 3 * 3600.0


class NotAVideoError(InputError):
    """The file holds a still image, or frames of a size no door accepts."""


class VideoLengthError(InputError):
    """The video is shorter than `MIN_VIDEO_SECONDS` or longer than the door accepts."""


def is_still_image(container: av.container.InputContainer) -> bool:
    """True if FFmpeg opened the file with one of its image demuxers (`png_pipe`, `jpeg_pipe`, ..., `image2`)."""
    names = [name.strip() for name in container.format.name.split(",")]
    return any(name == "image2" or name.endswith("_pipe") for name in names)


def check_video_stream(
    path: str | os.PathLike[str], container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> None:
    """Refuse a still image and a frame size over `MAX_PIXELS` (NotAVideoError naming the file), before decoding."""
    if is_still_image(container):
        kind = container.format.name.split(",")[0].strip().removesuffix("_pipe")
        raise NotAVideoError(path, f"is a still image ({kind}), not a video")
    ctx = stream.codec_context
    if ctx.width <= 0 or ctx.height <= 0:
        raise NotAVideoError(path, f"video stream has no frame size ({ctx.width}x{ctx.height})")
    if ctx.width * ctx.height > MAX_PIXELS:
        raise NotAVideoError(
            path, f"frames of {ctx.width}x{ctx.height} are too large to decode (limit {MAX_PIXELS:,} pixels)"
        )


def check_video_duration(
    path: str | os.PathLike[str], seconds: float, max_seconds: float | None = MAX_VIDEO_SECONDS
) -> None:
    """Refuse a video shorter than `MIN_VIDEO_SECONDS` or longer than `max_seconds` (VideoLengthError)."""
    if seconds < MIN_VIDEO_SECONDS:
        raise VideoLengthError(
            path,
            f"the video is {seconds:.2f} s long; a video must last at least {MIN_VIDEO_SECONDS:g} s "
            "(a single frame or a still image has no timeline to put music under)",
        )
    if max_seconds is not None and seconds > max_seconds:
        raise VideoLengthError(path, f"the video is {seconds:.1f} s long; at most {max_seconds:g} s are accepted")
