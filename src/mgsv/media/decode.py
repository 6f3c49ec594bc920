"""Decode query videos into 1 fps RGB frames and music into mono float32 samples.

Video (`read_video_frames`): the frame shown at each whole second t = 0, 1, 2, ... (the frame whose presentation
interval [pts, next pts) contains t), at most 50 of them, as MaDe's CLIP features expect (docs/official-code.md, "Video features"). For a
constant integer frame rate this is frame t * fps, what the official extractor took (it used int(sec * int(fps)));
we read real timestamps, so variable frame rates and 29.97 fps (on which cv2's integer fps drifted: frame
sec * 29 is shown at 0.968 * sec) are exact. `frame_times="cv2"` takes the official extractor's frames instead.
Frames keep their stored pixels (rotated upright, no pixel-aspect stretching), as cv2 and FFmpeg's JPEG export
gave them to the official pipeline. A frame whose short side is above `max_short_side` (224, CLIP's input size, by
default) is reduced with PIL's bicubic filter to the size CLIP's `Resize` gives: exactly what the official
transform computes from the full frame, so CLIP's own resize then leaves it as it is (and 50 frames of 4K video
take 13 MB instead of 1.2 GB).

Audio (`read_audio`): PyAV decodes, channels are mixed (or one is picked), then soxr or torchaudio's windowed-sinc
filter (`mgsv.media.resample`) resamples. Samples a decoder emits before the stream's start time (the priming
samples of some Ogg Vorbis files, whose first page says to discard them) are dropped, as libvorbisfile and
libsndfile do. Files FFmpeg refuses (some Ogg Vorbis files with odd headers) are read with libsndfile instead; both
paths give the same samples because the resampler is shared.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from mgsv.defaults import MAX_VIDEO_FRAMES
from mgsv.errors import InputError
from mgsv.limits import check_video_duration, check_video_stream
from mgsv.media.probe import as_fraction, check_readable_file, open_media, stream_duration, video_stream

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

MAX_FRAMES = MAX_VIDEO_FRAMES
# Frames are only fed to CLIP, whose transform first resizes the short side to 224 (bicubic): doing that resize
# here, from the full frame and with the same filter, gives CLIP the same pixels and keeps memory small.
DEFAULT_MAX_SHORT_SIDE = 224
FrameTimes = Literal["shown", "cv2"]
FRAME_TIMES: tuple[str, ...] = ("shown", "cv2")
SILENCE_DBFS = -60.0  # a peak below this is treated as silence (the "silent" Vorbis file in Wesnoth peaks at -78)
Resampler = Literal["soxr", "sinc"]
RESAMPLERS: tuple[str, ...] = ("soxr", "sinc")
# Decoded past `max_seconds` for the sinc resampler: its kernel reaches < 1 ms ahead for rates >= 8 kHz.
SINC_MARGIN_S = 0.05


@dataclass(frozen=True)
class VideoFrames:
    """RGB frames sampled at 1 fps from a video, with what a caller needs to know about the source."""

    path: Path
    frames: np.ndarray  # uint8 [N, H, W, 3], RGB, stored pixels rotated upright, short side <= max_short_side
    timestamps: np.ndarray  # float64 [N]: the second each frame is shown at (window_start, window_start + 1, ...)
    duration: float  # seconds of video in the file
    fps: float  # average frame rate of the source
    size: tuple[int, int]  # (width, height) of the source as displayed (after rotation), before downscaling
    has_audio: bool
    truncated: bool  # the video goes on past the last sampled second; decode later parts with window_start
    window_start: float
    # How the frames were made (`read_video_frames`' arguments): an encoder checks they are the ones it needs.
    frame_times: str = "cv2"
    jpeg_quality: int | None = None
    max_short_side: int | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def decode_options(self) -> dict[str, object]:
        """The `read_video_frames` options these frames were decoded with."""
        return {"frame_times": self.frame_times, "jpeg_quality": self.jpeg_quality, "max_short_side": self.max_short_side}


def read_video_frames(
    path: str | os.PathLike[str],
    max_frames: int = MAX_FRAMES,
    window_start: float = 0.0,
    max_short_side: int | None = DEFAULT_MAX_SHORT_SIDE,
    threads: int = 0,
    frame_times: FrameTimes = "cv2",
    jpeg_quality: int | None = None,
) -> VideoFrames:
    """Decode the frames shown at seconds window_start, window_start + 1, ... (at most `max_frames`) as RGB.

    A video longer than the window is cut with a warning and `truncated=True`; call again with a later
    `window_start` to slide over it. `threads=0` lets FFmpeg choose the decoder thread count.
    `frame_times="cv2"` (the default) picks, for second s, the frame shown at s * int(fps) / fps: the official
    extractor's frame number s * int(fps) (docs/official-code.md); "shown" picks the frame shown at s. They differ only where
    the frame rate is not a whole number. `jpeg_quality` passes each full frame through a JPEG file of that quality
    (libjpeg via PIL, 4:2:0, as cv2.imwrite wrote the official frames; measured bit-identical) before reduction.
    """
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if frame_times not in FRAME_TIMES:
        raise ValueError(f"frame_times must be one of {', '.join(FRAME_TIMES)}, got {frame_times!r}")
    if max_short_side is not None and max_short_side < 1:
        raise ValueError("max_short_side must be at least 1 (or None)")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 1..100 or None, got {jpeg_quality!r}")
    if window_start < 0 or not math.isfinite(window_start):
        raise InputError(path, f"window_start must be a finite number of seconds >= 0, got {window_start}")
    import av

    path = check_readable_file(path)
    with open_media(path) as container:
        stream = video_stream(container)
        if stream is None:
            raise InputError(path, "has no video stream")
        check_video_stream(path, container, stream)  # a still image, frames too large: refused before decoding
        ctx = stream.codec_context
        stream.thread_type = "AUTO"  # frame + slice threads: decoding every frame is the cost, conversion is not
        ctx.thread_count = threads
        rate = stream.average_rate or stream.guessed_rate
        converter = _RgbConverter(stream.sample_aspect_ratio, max_short_side, jpeg_quality)
        frame_length = Fraction(1) / rate if rate else Fraction(1, 25)
        # cv2 numbers frames at int(fps) per second: its frame s * int(fps) is shown at s * int(fps) / fps.
        step = Fraction(math.floor(rate), 1) / rate if frame_times == "cv2" and rate and rate >= 1 else Fraction(1)
        sampler = _SecondSampler(as_fraction(window_start), max_frames, frame_length, converter, step)
        try:
            for frame, time in _decode_video(path, container, stream, sampler.targets[0]):
                if sampler.add(frame, time):
                    break
            else:
                sampler.finish()
        except (av.error.FFmpegError, ValueError) as exc:  # e.g. a pixel format FFmpeg's scaler cannot convert
            raise InputError(path, f"cannot decode the video ({getattr(exc, 'strerror', None) or exc})") from exc
        duration = sampler.end if sampler.end is not None else stream_duration(container, stream)
        if not sampler.picked:
            if sampler.frame_count and duration is not None and window_start >= duration:
                raise InputError(
                    path, f"window_start {window_start:g} s is past the end of the video ({float(duration):.2f} s)"
                )
            raise InputError(path, "no video frames could be decoded")
        if sampler.end is not None:  # the whole stream was read, so its length is measured, not declared
            check_video_duration(path, float(sampler.end), max_seconds=None)  # grounding reads a window of any video
        fps = float(rate) if rate else sampler.frame_count / max(float(sampler.last_time), 1e-9)
        frames = np.stack([rgb for _, rgb in sampler.picked])
        has_audio = bool(container.streams.audio)
    result = VideoFrames(
        path=path,
        frames=frames,
        timestamps=np.array([float(t) for t, _ in sampler.picked], dtype=np.float64),
        duration=float(duration if duration is not None else sampler.last_time),
        fps=fps,
        size=converter.shown_size or (0, 0),
        has_audio=has_audio,
        truncated=sampler.truncated,
        window_start=float(window_start),
        frame_times=frame_times,
        jpeg_quality=jpeg_quality,
        max_short_side=max_short_side,
    )
    if result.truncated:
        log.warning(
            "%s: video is %.1f s long; using the %d frames of seconds %g-%g (pass window_start to read later parts)",
            path,
            result.duration,
            len(result),
            result.timestamps[0],
            result.timestamps[-1],
        )
    return result


class _SecondSampler:
    """Picks, for each target second t, the last frame whose timestamp is <= t (the frame on screen at t).

    A picked frame is converted to RGB at once, so at most one decoded frame is held besides the decoder's own.
    """

    def __init__(
        self,
        window_start: Fraction,
        max_frames: int,
        default_frame_length: Fraction,
        convert: Callable[[av.VideoFrame], np.ndarray],
        step: Fraction = Fraction(1),
    ) -> None:
        self.seconds = [window_start + k for k in range(max_frames)]  # the second each picked frame stands for
        self.targets = [second * step for second in self.seconds]  # the time whose frame is picked for it
        self.limit = (window_start + max_frames) * step  # a frame shown at this time would be the first one left out
        self.convert = convert
        self.picked: list[tuple[Fraction, np.ndarray]] = []
        self.previous: av.VideoFrame | None = None
        self.previous_time: Fraction | None = None
        self.last_time = Fraction(0)
        self.frame_count = 0
        self.truncated = False
        self.end: Fraction | None = None  # end of the last frame, known once the whole stream was read
        self.default_frame_length = default_frame_length
        self._converted: tuple[av.VideoFrame, np.ndarray] | None = None

    def add(self, frame: av.VideoFrame, time: Fraction) -> bool:
        """Take the next decoded frame; True once every target is decided and the caller may stop decoding."""
        self.frame_count += 1
        while len(self.picked) < len(self.targets) and time > self.targets[len(self.picked)]:
            # `frame` starts after the target, so the previous frame was on screen then; a video whose first
            # frame starts late (an edit list or a leading gap) shows its first frame until then.
            self._pick(self.previous or frame)
        if len(self.picked) == len(self.targets) and time >= self.limit:
            self.truncated = True
            return True
        self.previous, self.previous_time, self.last_time = frame, time, time
        return False

    def finish(self) -> None:
        """The stream ended: the last frame stays on screen until its own end."""
        if self.previous is None or self.previous_time is None:
            return
        self.end = self.previous_time + _frame_length(self.previous, self.default_frame_length)
        while len(self.picked) < len(self.targets) and self.targets[len(self.picked)] < self.end:
            self._pick(self.previous)
        self.truncated = self.end > self.limit

    def _pick(self, frame: av.VideoFrame) -> None:
        if self._converted is None or self._converted[0] is not frame:  # slow footage: one frame, many seconds
            self._converted = (frame, self.convert(frame))
        self.picked.append((self.seconds[len(self.picked)], self._converted[1]))


def _decode_video(
    path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream, window_start: Fraction
) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """Yield (frame, seconds since the stream start), seeking near `window_start` first when it is > 0."""
    import av

    origin = stream.start_time or 0
    seeked = False
    if window_start > 0:
        try:
            container.seek(origin + int(window_start / stream.time_base), stream=stream, backward=True)
            seeked = True
        except av.error.FFmpegError:
            log.debug("%s: cannot seek, decoding from the start", path)
    frames = decode_stream(path, container, stream)
    if seeked:
        # A backward seek lands on a key frame at or before the window start; if the demuxer landed later, the
        # frame on screen at window_start would be missed, so decode from the start instead.
        first = next(frames, None)
        if first is None:
            return
        first_time = Fraction(first.pts - origin) * stream.time_base if first.pts is not None else Fraction(0)
        if first_time > window_start:
            frames.close()
            container.seek(origin, stream=stream, backward=True)
            frames = decode_stream(path, container, stream)
        else:
            frames = _chain(first, frames)
    previous_time: Fraction | None = None
    for frame in frames:
        if frame.pts is not None:
            time = Fraction(frame.pts - origin) * stream.time_base
        else:  # a frame without a timestamp follows its predecessor
            time = Fraction(0) if previous_time is None else previous_time + _frame_length(frame, Fraction(1, 25))
        previous_time = time
        yield frame, time


def decode_stream(path: Path, container: av.container.InputContainer, stream: av.stream.Stream) -> Iterator:
    """Decode every frame of `stream`, skipping (and counting) packets FFmpeg cannot decode, as ffmpeg's CLI does."""
    import av

    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                bad += 1
    except av.error.FFmpegError as exc:  # a broken container (truncated or corrupt) ends the stream here
        log.warning("%s: stopped reading at a damaged part of the file (%s)", path, getattr(exc, "strerror", exc))
    if bad:
        log.warning("%s: skipped %d damaged packet(s)", path, bad)


def _chain(first: object, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _frame_length(frame: av.VideoFrame, default: Fraction) -> Fraction:
    """How long a frame stays on screen: its own duration field, else one frame at the stream's rate."""
    if frame.duration and frame.time_base:
        return Fraction(frame.duration) * frame.time_base
    return default


def reduced_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(short_side)`: the short side becomes `short_side`, the long
    side `int(short_side * long / short)` (truncated), as CLIP's transform computes it."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def _displayed_size(frame: av.VideoFrame, aspect: Fraction | None) -> tuple[int, int]:
    """(width, height) of the source as a player shows it: pixel aspect applied, rotated upright."""
    width, height = frame.width, frame.height
    if aspect and aspect != 1:
        width = max(1, round(width * aspect))
    return (height, width) if _quarter_turns(frame) % 2 else (width, height)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show the frame upright (from the stream's display matrix)."""
    rotation = frame.rotation or 0
    return round(rotation / 90) % 4


class _RgbConverter:
    """Converts picked frames to upright RGB arrays of their stored pixels, reduced (PIL bicubic, as CLIP's
    `Resize`) so the short side is at most `max_short_side`.

    FFmpeg converts to RGB at the stored size (the conversion cv2 made for the official frames: same pixels); the
    output size is fixed by the first frame, so a stream that changes resolution midway still stacks.
    """

    def __init__(self, aspect: Fraction | None, max_short_side: int | None, jpeg_quality: int | None = None) -> None:
        self.aspect = aspect
        self.max_short_side = max_short_side
        self.jpeg_quality = jpeg_quality
        self.shown_size: tuple[int, int] | None = None  # (width, height) of the source as displayed
        self.stored_size: tuple[int, int] | None = None  # (width, height) of the first frame as stored
        self.out_size: tuple[int, int] | None = None  # (width, height) of the reduced frames; None: not reduced

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        from PIL import Image

        if self.stored_size is None:
            self.shown_size = _displayed_size(frame, self.aspect)
            self.stored_size = (frame.width, frame.height)
            turned = (frame.height, frame.width) if _quarter_turns(frame) % 2 else self.stored_size
            limit = self.max_short_side
            self.out_size = reduced_size(*turned, limit) if limit and min(turned) > limit else None
        if (frame.width, frame.height) == self.stored_size:
            rgb = frame.to_ndarray(format="rgb24")  # FFmpeg's unscaled YUV -> RGB conversion, as cv2's
        else:  # a stream that changes size midway is scaled back to the first frame's size
            width, height = self.stored_size
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        rgb = np.ascontiguousarray(np.rot90(rgb, k=_quarter_turns(frame)))
        if self.jpeg_quality is not None:
            rgb = jpeg_round_trip(rgb, self.jpeg_quality)
        if self.out_size is None:
            return rgb
        return np.asarray(Image.fromarray(rgb).resize(self.out_size, Image.Resampling.BICUBIC))


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """An RGB frame written as a JPEG file of `quality` (baseline, 4:2:0) and read back, as PIL reads it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------------------------------- audio


def read_audio(
    path: str | os.PathLike[str],
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    offset: float = 0.0,
    channel: Literal["mean"] | int = "mean",
    resampler: Resampler = "soxr",
) -> np.ndarray:
    """Decode an audio file (or a video's audio track) to mono float32 samples at `sample_rate`.

    channel="mean" averages all channels (it keeps what is panned to one side); an integer picks that channel,
    e.g. 0 as the official pipeline's kaldi fbank did (docs/official-code.md, "Music features"). `resampler` is "soxr" (streaming, HQ) or "sinc"
    (torchaudio's `resample` as the official pipeline called it; it holds the decoded part in memory).
    `offset` and `max_seconds` select a part of the file in seconds; with "sinc" the samples just past
    `max_seconds` are decoded too, so that the part ends as it would in a resample of the whole file.
    """
    if channel != "mean" and not (isinstance(channel, int) and not isinstance(channel, bool) and channel >= 0):
        raise ValueError(f"channel must be 'mean' or a channel index >= 0, got {channel!r}")
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLERS)}, got {resampler!r}")

    def mix(block: np.ndarray) -> np.ndarray:  # [channels, n] -> [1, n]
        if channel == "mean":
            return block.mean(axis=0, keepdims=True)
        if channel >= block.shape[0]:
            raise InputError(path, f"has {block.shape[0]} audio channel(s); channel {channel} does not exist")
        return block[channel : channel + 1]

    return _read(path, sample_rate, max_seconds, offset, mix, layout=None, resampler=resampler)[0]


def read_audio_channels(
    path: str | os.PathLike[str],
    sample_rate: int = 48000,
    max_seconds: float | None = None,
    offset: float = 0.0,
) -> np.ndarray:
    """Decode audio to stereo float32 [2, n] at `sample_rate` (mono is duplicated, surround downmixed by FFmpeg)."""

    def to_stereo(block: np.ndarray) -> np.ndarray:
        if block.shape[0] == 2:
            return block
        if block.shape[0] == 1:
            return np.repeat(block, 2, axis=0)
        # Only libsndfile gets here with > 2 channels (PyAV already downmixed); an even mix is the safe choice.
        return np.repeat(block.mean(axis=0, keepdims=True), 2, axis=0)

    return _read(path, sample_rate, max_seconds, offset, to_stereo, layout="stereo")


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True if no sample is louder than `threshold_dbfs` (digital silence or near it; also an empty array)."""
    if samples.size == 0:
        return True
    return float(np.max(np.abs(samples))) < 10 ** (threshold_dbfs / 20)


def _read(
    path: str | os.PathLike[str],
    sample_rate: int,
    max_seconds: float | None,
    offset: float,
    mix: Callable[[np.ndarray], np.ndarray],
    layout: str | None,
    resampler: Resampler = "soxr",
) -> np.ndarray:
    """Decode, mix with `mix` ([C, n] -> [C', n]) and resample to `sample_rate`; returns float32 [C', n]."""
    import av

    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    if offset < 0 or not math.isfinite(offset):
        raise InputError(path, f"offset must be a finite number of seconds >= 0, got {offset}")
    if max_seconds is not None and (max_seconds <= 0 or not math.isfinite(max_seconds)):
        raise InputError(path, f"max_seconds must be a positive number of seconds, got {max_seconds}")
    path = check_readable_file(path)
    if resampler == "sinc":
        # The filter reaches a few samples ahead: decode past the cut so the last samples match a whole-file resample.
        decoded = None if max_seconds is None else max_seconds + SINC_MARGIN_S
        convert = functools.partial(_sinc_resample, keep=None if max_seconds is None else round(max_seconds * sample_rate))
    else:
        decoded, convert = max_seconds, _resample
    try:
        blocks = _pyav_blocks(path, offset, decoded, layout)
        return convert(path, blocks, sample_rate, mix)
    except InputError as error:
        if not isinstance(error.__cause__, av.error.FFmpegError):
            raise
        log.debug("%s: FFmpeg refused the file (%s); trying libsndfile", path, error.problem)
        blocks = _soundfile_blocks(path, offset, decoded, first_error=error)
        return convert(path, blocks, sample_rate, mix)


def _resample(
    path: Path, blocks: Iterator[tuple[np.ndarray, int]], sample_rate: int, mix: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Mix and resample blocks of [C, n] float32 audio at their native rate, streaming (memory = the output)."""
    import soxr

    resampler = None
    native_rate = None
    out: list[np.ndarray] = []
    for block, rate in blocks:
        block = mix(block)
        if resampler is None:
            native_rate = rate
            resampler = (
                None
                if rate == sample_rate
                else soxr.ResampleStream(rate, sample_rate, block.shape[0], dtype="float32", quality="HQ")
            )
        elif rate != native_rate:
            raise InputError(path, f"sample rate changes inside the file ({native_rate} Hz -> {rate} Hz)")
        chunk = block.T if resampler is None else resampler.resample_chunk(np.ascontiguousarray(block.T))
        out.append(np.asarray(chunk, dtype=np.float32))
    if native_rate is None:
        raise InputError(path, "no audio samples could be decoded")
    if resampler is not None:
        out.append(resampler.resample_chunk(np.zeros((0, out[0].shape[1]), dtype=np.float32), last=True))
    return np.ascontiguousarray(np.concatenate(out, axis=0).T)


def _sinc_resample(
    path: Path,
    blocks: Iterator[tuple[np.ndarray, int]],
    sample_rate: int,
    mix: Callable[[np.ndarray], np.ndarray],
    keep: int | None,
) -> np.ndarray:
    """Mix blocks at their native rate, then resample them at once with the windowed sinc; keep `keep` samples."""
    from mgsv.media.resample import sinc_resample

    native_rate = None
    mixed: list[np.ndarray] = []
    for block, rate in blocks:
        if native_rate is None:
            native_rate = rate
        elif rate != native_rate:
            raise InputError(path, f"sample rate changes inside the file ({native_rate} Hz -> {rate} Hz)")
        mixed.append(mix(block))
    if native_rate is None:
        raise InputError(path, "no audio samples could be decoded")
    out = sinc_resample(np.concatenate(mixed, axis=1), native_rate, sample_rate)
    return np.ascontiguousarray(out if keep is None else out[:, :keep])


def _pyav_blocks(
    path: Path, offset: float, max_seconds: float | None, layout: str | None
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ([C, n] float32, rate) blocks of the first audio stream between offset and offset + max_seconds.

    Decodes from the start and counts samples instead of seeking: a seek lands on a packet boundary whose
    timestamp may be rounded to 1 ms (WebM), and AAC/Vorbis need the previous packet to rebuild the first one
    after a seek, so seeking would shift or distort the excerpt. Audio decodes at ~100x real time, so this is cheap.
    Samples are counted, but a hole of more than 50 ms in the timestamps (damaged packets that were skipped) is
    filled with silence so that later audio keeps its place in time.
    """
    import av

    with open_media(path) as container:
        if not container.streams.audio:
            raise InputError(path, "video has no audio track" if video_stream(container) else "has no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        origin = Fraction(stream.start_time or 0) * stream.time_base if stream.time_base else Fraction(0)
        window = _SampleWindow()
        resampler = None
        first_time: Fraction | None = None
        try:
            for frame in decode_stream(path, container, stream):
                if resampler is None:
                    window.start(frame.sample_rate, offset, max_seconds)
                    # converts the sample format (and the channel layout, when asked) at the native rate
                    resampler = av.AudioResampler(
                        format="fltp", layout=layout or frame.layout.name, rate=frame.sample_rate
                    )
                elif frame.sample_rate != window.rate:
                    raise InputError(
                        path, f"sample rate changes inside the audio ({window.rate} Hz -> {frame.sample_rate} Hz)"
                    )
                converted = resampler.resample(frame)
                if not converted:
                    continue
                block = np.concatenate([f.to_ndarray() for f in converted], axis=1)
                if frame.pts is not None:
                    time = Fraction(frame.pts) * stream.time_base
                    if time < origin:  # priming samples before the stream's start: not part of the audio
                        early = min(block.shape[1], round((origin - time) * window.rate))
                        block, time = block[:, early:], time + Fraction(early, window.rate)
                        if not block.shape[1]:
                            continue
                    first_time = time if first_time is None else first_time
                    hole = round((time - first_time) * window.rate) - window.position
                    if hole > window.rate // 20:
                        yield from window.take(np.zeros((block.shape[0], hole), dtype=np.float32))
                yield from window.take(block)
                if window.done:
                    return
            flushed = resampler.resample(None) if resampler is not None else []
            if flushed:
                yield from window.take(np.concatenate([f.to_ndarray() for f in flushed], axis=1))
        except av.error.FFmpegError as exc:
            raise InputError(path, f"cannot decode audio ({getattr(exc, 'strerror', None) or exc})") from exc
        if window.rate and window.position <= window.skip:
            raise InputError(
                path, f"offset {offset:g} s is past the end of the audio ({window.position / window.rate:.2f} s)"
            )


class _SampleWindow:
    """Cuts a stream of sample blocks to [offset, offset + max_seconds), counting samples from the first one."""

    def __init__(self) -> None:
        self.rate = 0
        self.position = 0  # samples seen so far
        self.skip = 0
        self.wanted: int | None = None

    def start(self, rate: int, offset: float, max_seconds: float | None) -> None:
        self.rate = rate
        self.skip = round(offset * rate)
        self.wanted = None if max_seconds is None else round(max_seconds * rate)

    @property
    def done(self) -> bool:
        return self.wanted == 0

    def take(self, block: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Yield the part of `block` ([C, n]) that falls inside the window."""
        block_start, self.position = self.position, self.position + block.shape[1]
        if self.position <= self.skip or self.done:
            return
        block = block[:, max(0, self.skip - block_start) :]
        if self.wanted is not None:
            block = block[:, : self.wanted]
            self.wanted -= block.shape[1]
        if block.shape[1]:
            yield block, self.rate


def _soundfile_blocks(
    path: Path, offset: float, max_seconds: float | None, first_error: InputError
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ([C, n] float32, rate) blocks read by libsndfile, for files FFmpeg refuses."""
    import soundfile

    try:
        handle = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise InputError(path, f"{first_error.problem}; libsndfile cannot read it either ({exc})") from exc
    with handle:
        rate = handle.samplerate
        first = round(offset * rate)
        if handle.frames and first >= handle.frames:
            raise InputError(path, f"offset {offset:g} s is past the end of the audio ({handle.frames / rate:.2f} s)")
        remaining = None if max_seconds is None else round(max_seconds * rate)
        try:
            if first:
                handle.seek(first)
            while remaining is None or remaining > 0:
                count = 1 << 16 if remaining is None else min(1 << 16, remaining)
                block = handle.read(count, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                if remaining is not None:
                    remaining -= block.shape[0]
                yield np.ascontiguousarray(block.T), rate
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise InputError(path, f"cannot decode audio with libsndfile ({exc})") from exc
