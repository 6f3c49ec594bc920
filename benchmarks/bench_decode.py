"""Decoding and rendering speed of mgsv.media on this machine.

1. 1 fps frames from a long high-frame-rate video: `read_video_frames` (converts only the 50 picked frames, decoder
   threads on) against the naive way (convert every decoded frame to RGB, then pick), and with one decoder thread.
2. Music: a 240 s excerpt of a real track to 16 kHz mono (PyAV + soxr; and channel 0 + torchaudio's sinc filter,
   as features are decoded), and the libsndfile fallback on a file FFmpeg refuses.
3. Rendering a 50 s video with a music moment (stream copy, and H.264 re-encoding of a VP9 input).

    .venv/bin/python benchmarks/bench_decode.py                     # 1920x1080, 60 fps, 50 s test video
    .venv/bin/python benchmarks/bench_decode.py --size 1280x720 --fps 30
    .venv/bin/python benchmarks/bench_decode.py --size 640x360 --seconds 10 --repeats 1 --json

Decoding, resampling and rendering are codec work (entropy decoding, colour conversion, filters), not matrix
arithmetic: each time is printed with `gflop: n/a (I/O bound)` and, as the floor-free measure that still compares
across machines, the real-time factor (seconds of media per wall second); the matrix-product peaks of the process
are printed for the record.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
from _peak import Peaks, load_average
from _report import emit, json_mode, no_floor

from mgsv.media import read_audio, read_video_frames
from mgsv.media.render import render_with_music

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test media factory writes the videos
from media_factory import write_test_video

MUSIC = REPO / ".media/usr/share/games/wesnoth/1.16/data/core/music/knalgan_theme.ogg"  # 557 s Vorbis
CODEC_BOUND = "none: codec-bound (no useful-FLOP count); see realtime_factor"
REFUSED_BY_FFMPEG = REPO / ".media/usr/share/hyperrogue/music/hr-savino-ocean.ogg"


def timed(function, repeats: int) -> float:
    """Median wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def convert_every_frame(path: Path) -> int:
    """The naive reader: every frame to RGB, keep the one on screen at each whole second."""
    picked = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            second = int(frame.pts * stream.time_base)
            if second < 50:
                picked.setdefault(second, rgb)
    return len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1920x1080", help="test video size WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=60)
    parser.add_argument("--seconds", type=float, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args()
    with json_mode(args.json):
        rows, peaks = run(args)
    if args.json:
        emit({"size": args.size, "fps": args.fps, "seconds": args.seconds, "repeats": args.repeats,
              "peaks": peaks.to_dict(), "load": load_average(), "rows": rows})


def run(args: argparse.Namespace) -> tuple[list[dict], Peaks]:
    width, height = (int(v) for v in args.size.split("x"))
    peaks = Peaks.measure()
    print(f"{peaks.describe()}; load {load_average()}")
    rows: list[dict] = []

    def row(label: str, name: str, seconds: float, media_s: float, extra: str = "") -> None:
        fields = no_floor(seconds, CODEC_BOUND) | {"name": name, "media_s": media_s,
                                                    "realtime_factor": round(media_s / seconds, 1)}
        rows.append(fields)
        print(f"{label} {seconds:.2f} s ({fields['realtime_factor']:.0f}x real time; gflop: n/a (I/O bound)){extra}")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        start = time.perf_counter()
        video = write_test_video(folder / "long.mp4", args.seconds, fps=args.fps, size=(width, height))
        print(
            f"test video: {width}x{height}, {args.fps:g} fps, {args.seconds:g} s, H.264 "
            f"(written in {time.perf_counter() - start:.1f} s)"
        )

        ours = timed(lambda: read_video_frames(video), args.repeats)
        one_thread = timed(lambda: read_video_frames(video, threads=1), args.repeats)
        naive = timed(lambda: convert_every_frame(video), args.repeats)
        frames = read_video_frames(video).frames
        row("read_video_frames (picked frames only, threads auto):", "video picked frames", ours, args.seconds,
            f" -> {frames.shape}")
        row("read_video_frames (threads=1):                       ", "video picked frames, 1 thread", one_thread,
            args.seconds)
        row("naive (every frame to RGB):                          ", "video every frame to RGB", naive, args.seconds)

        if MUSIC.is_file():
            seconds = timed(lambda: read_audio(MUSIC, max_seconds=240), args.repeats)
            row("read_audio, 240 s of Ogg Vorbis 44.1 kHz stereo -> 16 kHz mono:", "audio 240 s", seconds, 240.0)
            seconds = timed(lambda: read_audio(MUSIC, max_seconds=240, channel=0, resampler="sinc"), args.repeats)
            row("  the same, channel 0 + sinc (the features' decoding):         ", "audio 240 s channel 0 sinc",
                seconds, 240.0)
            seconds = timed(lambda: read_audio(MUSIC), args.repeats)
            row("read_audio, whole 557 s track:                                ", "audio whole track", seconds,
                av_duration(MUSIC))
        if REFUSED_BY_FFMPEG.is_file():
            seconds = timed(lambda: read_audio(REFUSED_BY_FFMPEG), args.repeats)
            row("read_audio, libsndfile fallback, 60 s track:                  ", "audio libsndfile fallback",
                seconds, soundfile_duration(REFUSED_BY_FFMPEG))

        if MUSIC.is_file():
            query = write_test_video(folder / "query.mp4", 50, fps=30, size=(720, 1280))
            seconds = timed(lambda: render_with_music(query, MUSIC, 60, out=folder / "out.mp4", force=True), 1)
            row("render 50 s 720x1280 H.264 (stream copy):  ", "render stream copy", seconds, 50.0)
            vp9 = write_test_video(folder / "query.webm", 50, fps=30, size=(720, 1280))
            seconds = timed(lambda: render_with_music(vp9, MUSIC, 60, out=folder / "out2.mp4", force=True), 1)
            row("render 50 s 720x1280 VP9 (H.264 re-encode):", "render re-encode", seconds, 50.0)
    peaks = peaks.best(Peaks.measure())
    print(f"{peaks.describe()} (best of before / after); decoding has no useful-FLOP count: x real time instead")
    return rows, peaks


def av_duration(path: Path) -> float:
    """Seconds of a media file, from its container."""
    with av.open(str(path)) as container:
        return float(container.duration / av.time_base)


def soundfile_duration(path: Path) -> float:
    import soundfile

    return float(soundfile.info(str(path)).duration)


if __name__ == "__main__":
    main()
