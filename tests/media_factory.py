"""Write small test videos and audio files with PyAV, so tests never need media files checked into the repo.

Typical use:

    from media_factory import write_test_video, write_tone, read_index_pattern

    video = write_test_video(tmp_path / "q.mp4", seconds=3.5, fps=10, audio=True)
    track = write_tone(tmp_path / "t.ogg", seconds=20, freq=440)

Video frames drawn with `pattern="index"` carry their own frame number as a 4x4 grid of black/white cells that
survives lossy compression; `read_index_pattern(rgb)` reads it back, so a test can check which frame a decoder
picked. Codecs follow the file suffix (mp4/mov/mkv: H.264 + AAC, webm: VP9 + Opus; wav/flac/ogg/opus/mp3/m4a for
audio) unless given explicitly.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Container suffix -> (video codec, audio codec) used when none is given.
VIDEO_CODECS = {
    ".mp4": ("libx264", "aac"),
    ".m4v": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "aac"),
    ".webm": ("libvpx-vp9", "libopus"),
}
# Audio suffix -> (encoder, sample rate it must run at or None for any).
AUDIO_CODECS = {
    ".wav": ("pcm_s16le", None),
    ".flac": ("flac", None),
    ".ogg": ("vorbis", None),
    ".opus": ("libopus", 48000),
    ".mp3": ("libmp3lame", None),
    ".m4a": ("aac", None),
}
PATTERN_GRID = 4  # index pattern: 4x4 cells = 16 bits of frame number


def index_pattern(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame [height, width, 3] showing `index` as 16 black/white cells (most significant bit first)."""
    bits = [(index >> (15 - b)) & 1 for b in range(PATTERN_GRID * PATTERN_GRID)]
    cells = np.array(bits, dtype=np.uint8).reshape(PATTERN_GRID, PATTERN_GRID) * 255
    rows = np.arange(height) * PATTERN_GRID // height
    cols = np.arange(width) * PATTERN_GRID // width
    gray = cells[rows[:, None], cols[None, :]]
    frame = np.repeat(gray[:, :, None], 3, axis=2)
    frame[:, :, 0] = np.where(gray > 0, 255, 40)  # a red tint on black cells makes channel-order bugs visible
    return frame


def read_index_pattern(frame: np.ndarray) -> int:
    """The frame number drawn by `index_pattern`, read from the centres of the cells of an RGB frame [H, W, 3]."""
    height, width = frame.shape[:2]
    gray = frame.astype(np.float32).mean(axis=2)
    value = 0
    for r in range(PATTERN_GRID):
        for c in range(PATTERN_GRID):
            y = int((r + 0.5) * height / PATTERN_GRID)
            x = int((c + 0.5) * width / PATTERN_GRID)
            value = (value << 1) | int(gray[y, x] > 128)
    return value


def tone(
    seconds: float, freq: float = 440.0, sample_rate: int = 48000, channels: int = 2, amplitude: float = 0.3
) -> np.ndarray:
    """A sine tone as float32 [channels, samples]."""
    n = round(seconds * sample_rate)
    wave = amplitude * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate)
    return np.repeat(wave[None, :], channels, axis=0).astype(np.float32)


def write_test_video(
    path: str | Path,
    seconds: float,
    fps: float = 10,
    size: tuple[int, int] = (160, 120),
    audio: bool | np.ndarray = True,
    pattern: str = "index",
    codec: str | None = None,
    audio_codec: str | None = None,
    audio_rate: int = 48000,
    tone_hz: float = 440.0,
    rotation: int = 0,
    seed: int = 0,
) -> Path:
    """Write a video of `seconds` at `fps` and `size` (width, height); returns the path.

    pattern: "index" (frame number as 16 cells, see `read_index_pattern`) or "noise" (random pixels, hard to
    compress, for benchmarks). audio: True for a sine tone at `tone_hz`, False for none, or float32 samples
    [channels, n] at `audio_rate`. rotation: display-matrix rotation in degrees stored in the stream.
    """
    path = Path(path)
    default_video, default_audio = VIDEO_CODECS[path.suffix.lower()]
    codec = codec or default_video
    audio_codec = audio_codec or default_audio
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)
    n_frames = round(seconds * float(rate))
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(codec, rate=rate)
        vstream.width, vstream.height = width, height
        vstream.pix_fmt = "yuv420p"
        if codec == "libx264":
            vstream.options = {"preset": "ultrafast", "crf": "18"}
        elif codec == "libvpx-vp9":
            vstream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}
        elif codec == "libsvtav1":
            vstream.options = {"preset": "12"}
        if rotation:
            vstream.set_display_rotation(rotation)
        samples = None
        astream = None
        if audio is not False:
            samples = tone(seconds, tone_hz, audio_rate) if audio is True else np.asarray(audio, dtype=np.float32)
            layout = "stereo" if samples.shape[0] == 2 else "mono"
            astream = container.add_stream(audio_codec, rate=audio_rate, layout=layout)
        for i in range(n_frames):
            if pattern == "index":
                image = index_pattern(i, width, height)
            elif pattern == "noise":
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            else:
                raise ValueError(f"unknown pattern {pattern!r}")
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None and samples is not None:
            _encode_audio(container, astream, samples, audio_rate)
    return path


def write_audio(
    path: str | Path, samples: np.ndarray, sample_rate: int, codec: str | None = None, cover_art: bool = False
) -> Path:
    """Write float32 samples ([n] or [channels, n], in [-1, 1]) to an audio file chosen by suffix; returns the path.

    cover_art=True adds a small JPEG as an attached picture (FFmpeg shows it as a one-frame video stream);
    MP3 and FLAC can hold one.
    """
    path = Path(path)
    default_codec, required_rate = AUDIO_CODECS[path.suffix.lower()]
    codec = codec or default_codec
    if required_rate is not None and sample_rate != required_rate:
        raise ValueError(f"{codec} in {path.suffix} needs sample_rate={required_rate}")
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    with av.open(str(path), "w") as container:
        layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        if cover_art:  # every stream must exist before the first packet is written
            cover = container.add_stream("mjpeg", rate=1)
            cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
            cover.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(index_pattern(7, 64, 64), format="rgb24")
            container.mux(cover.encode(picture.reformat(format="yuvj420p")))
            container.mux(cover.encode(None))
        _encode_audio(container, stream, samples, sample_rate)
    return path


def write_tone(
    path: str | Path,
    seconds: float,
    freq: float = 440.0,
    sample_rate: int = 48000,
    channels: int = 2,
    amplitude: float = 0.3,
    codec: str | None = None,
) -> Path:
    """Write a sine tone to an audio file chosen by suffix (see `write_audio`); returns the path."""
    return write_audio(path, tone(seconds, freq, sample_rate, channels, amplitude), sample_rate, codec=codec)


def write_truncated_copy(source: str | Path, target: str | Path, keep_fraction: float) -> Path:
    """Copy the first `keep_fraction` of a file's bytes (a download cut short); returns the target path."""
    data = Path(source).read_bytes()
    target = Path(target)
    target.write_bytes(data[: int(len(data) * keep_fraction)])
    return target


def _encode_audio(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, samples: np.ndarray, rate: int
) -> None:
    """Encode float samples [channels, n] in encoder-sized chunks with exact timestamps."""
    ctx = stream.codec_context
    fmt = ctx.format.name  # the encoder's preferred sample format
    chunk = ctx.frame_size or 1024
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    for start in range(0, samples.shape[1], chunk):
        block = samples[:, start : start + chunk]
        frame = av.AudioFrame.from_ndarray(_to_format(block, fmt), format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _to_format(block: np.ndarray, fmt: str) -> np.ndarray:
    """Convert float32 [channels, n] to the array layout PyAV expects for sample format `fmt`."""
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "flt":
        data = block.astype(np.float32)
    elif base == "s16":
        data = (np.clip(block, -1, 1) * 32767).astype(np.int16)
    elif base == "s32":
        data = (np.clip(block, -1, 1) * 2147483647).astype(np.int32)
    else:
        raise ValueError(f"unsupported sample format {fmt}")
    return np.ascontiguousarray(data if planar else data.T.reshape(1, -1))
