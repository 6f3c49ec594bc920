"""What the page's timeline costs the server per track: waveform peaks, beats, the whole-track MP3, and a cache hit.

For each music file: `track_peaks` (decode at 8 kHz + min/max per 10 ms), `analyse_beats` (librosa on the whole
track), `encode_preview` of the whole track with the page's fast LAME setting and with the preview's default one,
and reading the cached peaks and beats back through `TrackMedia` (what every request after the first costs).
librosa's one-time start-up (import + numba compilation) is timed separately, before the first track.

    nice .venv/bin/python benchmarks/bench_timeline.py .media/usr/share/hyperrogue/music/hr3-*.ogg
    nice .venv/bin/python benchmarks/bench_timeline.py --json FILE...

Seconds are wall-clock on whatever else the machine is doing; compare ratios within one run. Decoding, beat
tracking and MP3 encoding are codec and signal work, not matrix arithmetic: no useful FLOPs are counted
(`gflop: n/a (I/O bound)`); beside each time the real-time factor (track seconds per wall second) is the measure
that compares across machines, and the matrix-product peaks of the process are printed for the record.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _peak import Peaks, load_average

from mgsv.files.hashing import content_hash
from mgsv.media.probe import probe
from mgsv.media.waveform import track_peaks
from mgsv.search.beats import BEAT_SAMPLE_RATE, analyse_beats, require_librosa
from mgsv.search.track_media import TrackMedia
from mgsv.serve.preview import encode_preview


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def librosa_start_up() -> float:
    """Import librosa and run its beat tracker once on a second of noise (numba compiles on first use)."""
    started = time.perf_counter()
    librosa = require_librosa()
    noise = np.random.default_rng(0).standard_normal(BEAT_SAMPLE_RATE).astype(np.float32)
    librosa.beat.beat_track(y=noise, sr=BEAT_SAMPLE_RATE)
    return time.perf_counter() - started


def measure(path: Path, cache_root: Path) -> dict[str, float]:
    duration = probe(path).duration or 0.0
    peaks_s, peaks = timed(track_peaks, path)
    beats_s, beats = timed(analyse_beats, path)
    fast_s, fast = timed(encode_preview, path, 0.0, duration, fast=True)
    default_s, _ = timed(encode_preview, path, 0.0, duration)
    track = SimpleNamespace(path=str(path), content_hash=content_hash(path))
    media = TrackMedia(cache_root)
    media.peaks(track)  # computes and writes the cache files
    media.beats(track)
    hit_s, _ = timed(lambda: (media.cached_peaks(track), media.cached_beats(track)))
    return {
        "track_seconds": round(duration, 2),
        "peaks_s": round(peaks_s, 3),
        "peak_columns": len(peaks),
        "beats_s": round(beats_s, 3),
        "beats": len(beats),
        "mp3_fast_s": round(fast_s, 3),
        "mp3_default_s": round(default_s, 3),
        "mp3_bytes": len(fast),
        "cache_hit_ms": round(1000 * hit_s, 2),
        "gflop": "n/a (I/O bound)",
        "realtime_factor": {name: round(duration / seconds, 1) if seconds > 0 else None for name, seconds in
                            (("peaks", peaks_s), ("beats", beats_s), ("mp3_fast", fast_s), ("mp3_default", default_s))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="music files")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    peaks = Peaks.measure()
    start_up = librosa_start_up()
    with tempfile.TemporaryDirectory() as folder:
        rows = {str(path): measure(path, Path(folder)) for path in args.files}
    peaks = peaks.best(Peaks.measure())
    if args.json:
        print(json.dumps({"librosa_start_up_s": round(start_up, 2), "peaks": peaks.to_dict(), "load": load_average(),
                          "tracks": rows}, indent=1))
        return
    print(f"{peaks.describe()} (best of before / after); load {load_average()}")
    print("no useful FLOPs (codec and signal work: gflop n/a (I/O bound)); x real time per step below the table")
    print(f"librosa start-up (import + first beat_track): {start_up:.2f} s")
    columns = ["track_seconds", "peaks_s", "beats_s", "mp3_fast_s", "mp3_default_s", "mp3_bytes", "cache_hit_ms"]
    print(f"{'file':32} " + " ".join(f"{c:>13}" for c in columns))
    for path, row in rows.items():
        print(f"{Path(path).name[:32]:32} " + " ".join(f"{row[c]:>13}" for c in columns))
    total = {c: round(sum(r[c] for r in rows.values()), 3) for c in columns if c != "mp3_bytes"}
    print(f"{'all':32} " + " ".join(f"{total.get(c, ''):>13}" if c in total else f"{'':>13}" for c in columns))
    for name, key in (("peaks", "peaks_s"), ("beats", "beats_s"), ("mp3_fast", "mp3_fast_s"),
                      ("mp3_default", "mp3_default_s")):
        print(f"  {name:12} {total['track_seconds'] / total[key]:8.1f}x real time (all files)")


if __name__ == "__main__":
    main()
