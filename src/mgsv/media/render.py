"""Put a music moment under a video: the deliverable of grounding (`mgsv render`).

The music moment [start, end] of a track becomes the video's soundtrack: cut to the video's duration, faded in
and out, normalised to an integrated loudness (ITU-R BS.1770 / EBU R128, measured with pyloudnorm), and either
replacing the original audio or mixed over it at a given gain. The video stream is copied packet for packet when
the output container can hold its codec (no quality loss, ~100x faster), otherwise re-encoded with H.264. Audio is
AAC, 48 kHz stereo. The file is written under a temporary name in the output folder and renamed when complete.

Rules a caller should know:
- A moment that runs past the end of the track is refused (a clear message gives the latest possible start).
- A moment shorter than the video is used as it is and followed by silence (`padded_seconds` says how much):
  refusing would make a deliberately short sting impossible, and looping would invent music.
- A silent moment is not amplified (`silent=True`, and a warning is logged).
- After the loudness gain the peak is kept at or below -1 dBFS by lowering the gain (no limiter, so no
  distortion); `loudness_after` then reports the loudness actually reached.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mgsv.atomic_io import atomic_path
from mgsv.errors import InputError, OptionError, OutputExistsError
from mgsv.limits import check_video_duration, check_video_stream
from mgsv.media.decode import decode_stream, is_silent, read_audio_channels
from mgsv.media.probe import check_readable_file, open_media, probe, video_stream

log = logging.getLogger(__name__)

OUTPUT_RATE = 48000
AUDIO_BITRATE = 192_000
PEAK_CEILING_DBFS = -1.0
END_TOLERANCE = 0.05  # seconds a moment may overshoot the track's end (rounding in predictions, header durations)
# Video codecs each output container takes as they are; anything else is re-encoded with H.264.
COPYABLE = {
    ".mp4": {"h264", "hevc", "av1"},
    ".m4v": {"h264", "hevc", "av1"},
    ".mov": {"h264", "hevc"},
    ".mkv": {"h264", "hevc", "av1", "vp8", "vp9", "mpeg4"},
}


@dataclass(frozen=True)
class RenderResult:
    """What `render_with_music` wrote."""

    path: Path
    duration: float  # seconds of video (and of the soundtrack)
    copied_video_stream: bool  # False: the video was re-encoded with H.264
    music_start: float
    music_end: float  # end of the music actually used (start + the shorter of the moment and the video)
    padded_seconds: float  # silence after the music when the moment is shorter than the video
    loudness_before: float | None  # LUFS of the moment as it is in the track (-inf: silent, None: < 0.4 s)
    loudness_after: float | None  # LUFS of the rendered soundtrack
    gain_db: float  # gain applied to the music
    silent: bool  # the moment is (near-)silent, so it was not normalised
    keep_audio: float  # gain of the original audio in the mix (0: dropped or the video had none)

    def to_json(self) -> dict:
        """The result as plain JSON types."""
        data = asdict(self)
        data["path"] = str(self.path)
        for key in ("loudness_before", "loudness_after"):  # -inf (silence) is not JSON; `silent` says why
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None
        return data


def render_with_music(
    video: str | os.PathLike[str],
    track: str | os.PathLike[str],
    start: float,
    end: float | None = None,
    out: str | os.PathLike[str] = "rendered.mp4",
    keep_audio: float = 0.0,
    fade: float = 0.5,
    loudness: float = -14.0,
    force: bool = False,
) -> RenderResult:
    """Write `video` with the music moment [start, end] of `track` as its soundtrack to `out`; see the module doc."""
    video = check_readable_file(video)
    track = check_readable_file(track)
    out = _check_output(Path(out), video, track, force)
    _check_numbers(start, end, keep_audio, fade, loudness)

    video_duration, has_audio = _video_timeline(video)
    music, moment_end = _music_moment(track, start, end, video_duration)
    samples = round(video_duration * OUTPUT_RATE)
    music = music[:, :samples]
    padded_seconds = (samples - music.shape[1]) / OUTPUT_RATE

    loudness_before = _loudness(music)
    silent = is_silent(music) or loudness_before == -math.inf
    music = _apply_fades(music, fade)
    faded_loudness = _loudness(music)  # the gain is set on what will be heard, fades included
    gain_db = 0.0
    if silent:
        log.warning(
            "%s: the moment %.2f-%.2f s is silent; rendering it without loudness normalisation",
            track,
            start,
            moment_end,
        )
    elif faded_loudness is not None and faded_loudness != -math.inf:
        gain_db = _gain_db(music, faded_loudness, loudness)
    music = music * np.float32(10 ** (gain_db / 20))

    mix = np.zeros((2, samples), dtype=np.float32)
    mix[:, : music.shape[1]] = music
    kept = 0.0
    if keep_audio > 0:
        if has_audio:
            original = read_audio_channels(video, OUTPUT_RATE, max_seconds=video_duration)[:, :samples]
            mix[:, : original.shape[1]] += np.float32(keep_audio) * original
            kept = keep_audio
        else:
            log.warning("%s: the video has no audio to keep; the soundtrack is the music alone", video)
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > 1.0:  # the original audio pushed the mix over full scale: scale all down rather than clip
        mix /= np.float32(peak / 10 ** (PEAK_CEILING_DBFS / 20))
    if padded_seconds > 0:
        log.warning("%s: the music moment is %.2f s shorter than the video; the rest is silence", track, padded_seconds)

    copied = _write_atomically(video, mix, out)
    return RenderResult(
        path=out,
        duration=video_duration,
        copied_video_stream=copied,
        music_start=float(start),
        music_end=float(start) + music.shape[1] / OUTPUT_RATE,
        padded_seconds=padded_seconds,
        loudness_before=loudness_before,
        loudness_after=_loudness(mix),
        gain_db=gain_db,
        silent=silent,
        keep_audio=kept,
    )


# ------------------------------------------------------------------------------------------------ checks


def _same_file(out: Path, source: Path) -> bool:
    """True if `out` is `source` under any name (same device and inode: a symbolic or a hard link to it)."""
    try:
        return os.path.samefile(out, source)
    except OSError:  # `out` does not exist (yet), or cannot be looked at: it is not an existing input
        return False


def _check_output(out: Path, video: Path, track: Path, force: bool) -> Path:
    if out.suffix.lower() not in COPYABLE:
        raise InputError(
            out, f"unsupported output type {out.suffix or '(none)'}; use one of {', '.join(sorted(COPYABLE))}"
        )
    for role, source in (("video", video), ("music track", track)):
        if _same_file(out, source):  # the same path, or a symbolic or hard link to it: --force does not matter
            alias = "" if out == source else f" {source} (the same file under another name)"
            raise InputError(out, f"the output would overwrite the input {role}{alias}; choose another `out`")
    if out.is_dir():
        raise InputError(out, "is a directory; `out` must be a file name")
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists; pass `force` to overwrite it")
    if not out.parent.is_dir():
        raise InputError(out, f"the folder {out.parent} does not exist")
    return out


def _check_numbers(start: float, end: float | None, keep_audio: float, fade: float, loudness: float) -> None:
    if not math.isfinite(start) or start < 0:
        raise OptionError("start", f"must be a number of seconds >= 0, got {start}")
    if end is not None and (not math.isfinite(end) or end <= start):
        raise OptionError("end", f"must be after the start ({start:g} s), got {end}")
    if not 0 <= keep_audio <= 1:
        raise OptionError("keep_audio", f"must be a gain between 0 (drop) and 1 (unchanged), got {keep_audio}")
    if not 0 <= fade <= 10:
        raise OptionError("fade", f"must be between 0 and 10 seconds, got {fade}")
    if not -70 <= loudness <= 0:
        raise OptionError("loudness", f"must be a LUFS target between -70 and 0, got {loudness}")


# ------------------------------------------------------------------------------------------------ audio


def _video_timeline(video: Path) -> tuple[float, bool]:
    """(seconds of video from its first frame to the end of its last, whether it has an audio stream).

    Read from the packets rather than the headers: Matroska/WebM headers carry no stream duration, and MP4
    headers may count audio that runs past the video.
    """
    with open_media(video) as container:
        stream = video_stream(container)
        if stream is None:
            raise InputError(video, "has no video stream to put music under")
        check_video_stream(video, container, stream)  # the limits of every door (mgsv.limits)
        first = last_end = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            first = packet.pts if first is None else min(first, packet.pts)
            end = packet.pts + (packet.duration or 0)
            last_end = end if last_end is None else max(last_end, end)
        if first is None or last_end is None or last_end <= first:
            raise InputError(video, "the video stream has no frames")
        seconds = float((last_end - first) * stream.time_base)
        check_video_duration(video, seconds)
        return seconds, bool(container.streams.audio)


def _music_moment(track: Path, start: float, end: float | None, video_duration: float) -> tuple[np.ndarray, float]:
    """The moment's samples [2, n] at 48 kHz (at most the video's duration) and the moment's end in seconds."""
    info = probe(track)
    if not info.has_audio:
        raise InputError(track, "has no audio to use as music")
    track_duration = info.audio.duration if info.audio and info.audio.duration else info.duration
    end = start + video_duration if end is None else end
    if track_duration is not None:
        if start >= track_duration:
            raise InputError(
                track, f"the moment starts at {start:g} s, after the end of the track ({track_duration:.2f} s)"
            )
        if end > track_duration + END_TOLERANCE:
            latest = max(0.0, track_duration - video_duration)
            raise InputError(
                track,
                f"the moment {start:g}-{end:g} s runs past the end of the track ({track_duration:.2f} s); "
                f"for this {video_duration:.2f} s video the latest start is {latest:.2f} s, or pass an earlier `end`",
            )
        end = min(end, track_duration)
    length = min(end - start, video_duration)
    return read_audio_channels(track, OUTPUT_RATE, max_seconds=length, offset=start), end


def _loudness(samples: np.ndarray) -> float | None:
    """Integrated loudness (LUFS, BS.1770-4) of [2, n] samples; None when shorter than one 0.4 s block."""
    import pyloudnorm

    if samples.shape[1] <= int(0.4 * OUTPUT_RATE):
        return None
    if is_silent(samples):
        return -math.inf
    return float(pyloudnorm.Meter(OUTPUT_RATE).integrated_loudness(samples.T.astype(np.float64)))


def _gain_db(music: np.ndarray, measured: float, target: float) -> float:
    """The gain that brings `measured` LUFS to `target`, lowered so the peak stays at the ceiling."""
    gain = target - measured
    peak = float(np.max(np.abs(music)))
    headroom = PEAK_CEILING_DBFS - 20 * math.log10(peak)
    if gain > headroom:
        log.info(
            "loudness: %.1f LUFS reached instead of %.1f to keep the peak at %.0f dBFS",
            measured + headroom,
            target,
            PEAK_CEILING_DBFS,
        )
        gain = headroom
    return gain


def _apply_fades(music: np.ndarray, fade: float) -> np.ndarray:
    """Raised-cosine fade-in and fade-out of `fade` seconds (at most half the music each)."""
    n = min(round(fade * OUTPUT_RATE), music.shape[1] // 2)
    if n == 0:
        return music
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
    music = music.copy()
    music[:, :n] *= ramp
    music[:, -n:] *= ramp[::-1]
    return music


# ------------------------------------------------------------------------------------------------ writing


def _write_atomically(video: Path, mix: np.ndarray, out: Path) -> bool:
    """Write the output under a temporary name, fsync, rename; True if the video stream was copied."""
    import av

    try:
        # The temporary name ends in out's own name, so ffmpeg picks the container from the same suffix.
        with atomic_path(out) as temporary:
            try:
                copied = _write(video, mix, temporary, copy_video=True)
            except av.error.FFmpegError as exc:
                # e.g. a codec tag the container rejects: re-encoding always produces something the container takes
                log.info("%s: cannot copy the video stream into %s (%s); re-encoding it", video, out.suffix, exc)
                copied = _write(video, mix, temporary, copy_video=False)
    except av.error.FFmpegError as exc:
        raise InputError(video, f"cannot render ({getattr(exc, 'strerror', None) or exc})") from exc
    except OSError as exc:  # disk full, folder not writable
        raise InputError(out, f"cannot write the output ({exc.strerror or exc})") from exc
    return copied


def _write(video: Path, mix: np.ndarray, target: Path, copy_video: bool) -> bool:
    """Mux the video (copied or re-encoded) and the AAC-encoded mix into `target`; True if copied."""
    import av

    with open_media(video) as source, av.open(str(target), "w") as output:
        in_video = video_stream(source)
        copy_video = copy_video and in_video.codec_context.name in COPYABLE[target.suffix.lower()]
        audio = _AudioTrack(mix)
        if copy_video:
            out_video = output.add_stream_from_template(in_video)
            audio.add_to(output)
            for packet in source.demux(in_video):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                audio.mux_until(_seconds(packet.pts, in_video.time_base), output)
                packet.stream = out_video
                output.mux(packet)
        else:
            encoder = _H264Encoder(in_video)
            in_video.thread_type = "AUTO"
            for frame in decode_stream(video, source, in_video):
                if not encoder.started:
                    encoder.start(output, frame)
                    audio.add_to(output)
                audio.mux_until(_seconds(frame.pts, in_video.time_base), output)
                encoder.encode(frame, output)
            if not encoder.started:
                raise InputError(video, "no video frames could be decoded")
            encoder.flush(output)
        audio.mux_until(math.inf, output)
    return copy_video


def _seconds(pts: int | None, time_base: Fraction) -> float:
    return float(pts * time_base) if pts is not None else 0.0


class _AudioTrack:
    """Encodes the mix as AAC in step with the video, so the file is interleaved (playable while streaming)."""

    LEAD = 0.5  # seconds of audio muxed ahead of the video

    def __init__(self, mix: np.ndarray) -> None:
        self.mix = mix
        self.position = 0
        self.stream = None
        self.flushed = False

    def add_to(self, output) -> None:
        self.stream = output.add_stream("aac", rate=OUTPUT_RATE, layout="stereo")
        self.stream.bit_rate = AUDIO_BITRATE

    def mux_until(self, seconds: float, output) -> None:
        import av

        assert self.stream is not None
        stop = (
            self.mix.shape[1]
            if math.isinf(seconds)
            else min(self.mix.shape[1], int((seconds + self.LEAD) * OUTPUT_RATE))
        )
        chunk = 1024  # AAC frame size
        while self.position < stop:
            block = np.ascontiguousarray(self.mix[:, self.position : self.position + chunk])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = OUTPUT_RATE
            frame.pts = self.position
            frame.time_base = Fraction(1, OUTPUT_RATE)
            output.mux(self.stream.encode(frame))
            self.position += block.shape[1]
        if math.isinf(seconds) and not self.flushed:
            output.mux(self.stream.encode(None))
            self.flushed = True


class _H264Encoder:
    """Re-encodes decoded frames with libx264, keeping their timestamps (variable frame rates stay exact)."""

    def __init__(self, source) -> None:
        self.source = source
        self.stream = None

    @property
    def started(self) -> bool:
        return self.stream is not None

    def start(self, output, first_frame) -> None:
        rate = self.source.average_rate or self.source.guessed_rate or 25
        stream = output.add_stream("libx264", rate=rate)
        stream.width = first_frame.width - first_frame.width % 2  # 4:2:0 needs even sizes
        stream.height = first_frame.height - first_frame.height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = self.source.time_base
        stream.options = {"crf": "18", "preset": "veryfast"}
        if first_frame.rotation:
            stream.set_display_rotation(first_frame.rotation)
        self.stream = stream

    def encode(self, frame, output) -> None:
        picture = frame.reformat(width=self.stream.width, height=self.stream.height, format="yuv420p")
        picture.pts = frame.pts
        picture.time_base = self.source.time_base
        output.mux(self.stream.encode(picture))

    def flush(self, output) -> None:
        output.mux(self.stream.encode(None))
