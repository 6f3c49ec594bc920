"""`mgsv library add` of an hour of music with a real-size AST: wall time, windows/s and x floor.

Builds the music from the Debian test tracks (.media/, Wesnoth's soundtrack: 41 Ogg Vorbis files, 44.1 kHz stereo,
128 minutes): the tracks are played one after another and cut into files of `--track-seconds` (240 s: the model's
horizon, so that every second is encoded; a longer file only has its first 240 s encoded) until `--minutes` of music
are written, as Ogg Vorbis like the sources. Saves an `ASTModel(ASTConfig())` (the AudioSet AST's architecture,
`mgsv.defaults.DEFAULT_AST_ID`) with random weights in `save_pretrained` layout, then times the real command, as a
user runs it, in a child process:

    mgsv library add MUSIC --library LIB --ast AST_FOLDER --batch-size 4 --dtype auto --device cpu --json

The wall time includes everything the user waits for: start-up, loading the AST, decoding (prefetched in a thread
while the AST runs), fbank, the AST forward and the library's writes. Preparing the music and the model is not timed.

Printed beside the time: windows encoded (every valid window: centre <= duration, 96 per 240 s file), windows/s,
the real-time factor (music seconds per wall second), the useful FLOPs (windows x ~261 GFLOP, `_encoder_flops`), the
matrix-product peak of this process in the encoder's precision (fp32 and bf16 measured before and after the run, the
higher kept; the child uses the same threads) and x floor = wall / (FLOPs / peak).

    nice .venv/bin/python benchmarks/bench_library_add.py --minutes 2          # quick check (~1 minute of work)
    nice .venv/bin/python benchmarks/bench_library_add.py                       # one hour (1,440 windows)
    nice .venv/bin/python benchmarks/bench_library_add.py --json --workdir /tmp/bla   # keep the files for a rerun
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _encoder_flops import ast_window_flops
from _peak import Peaks, load_average, rate

from mgsv.encoders.ast import window_layout

MUSIC = Path(__file__).resolve().parents[1] / ".media/usr/share/games/wesnoth/1.16/data/core/music"


def write_music(folder: Path, minutes: float, track_seconds: float, log) -> list[float]:
    """Cut the Debian tracks, played in sequence, into Ogg files of `track_seconds`; return their durations."""
    import soundfile

    sources = sorted(MUSIC.glob("*.ogg")) if MUSIC.is_dir() else []
    if not sources:
        raise SystemExit(f"{MUSIC}: no Debian test music (see README: the .media folder)")
    available = sum(soundfile.info(path).duration for path in sources)
    if minutes * 60 > available:
        raise SystemExit(f"--minutes {minutes:g}: only {available / 60:.1f} minutes of test music in {MUSIC}")
    folder.mkdir(parents=True, exist_ok=True)
    durations: list[float] = []
    pending: list[np.ndarray] = []
    rate_hz = soundfile.info(sources[0]).samplerate
    piece = int(track_seconds * rate_hz)
    left = int(minutes * 60 * rate_hz)
    for path in sources:
        if left <= 0:
            break
        audio, source_rate = soundfile.read(path, dtype="float32", always_2d=True)
        if source_rate != rate_hz:
            continue  # one sample rate for all pieces (all of Wesnoth's are 44.1 kHz)
        pending.append(audio)
        buffered = np.concatenate(pending)
        while len(buffered) >= min(piece, left) and left > 0:
            take = min(piece, left)
            out = folder / f"hour-{len(durations):03d}.ogg"
            # In one-second writes: libsndfile 1.2 crashes writing minutes of Vorbis in one call.
            with soundfile.SoundFile(out, "w", rate_hz, buffered.shape[1], format="OGG", subtype="VORBIS") as handle:
                for first in range(0, take, rate_hz):
                    handle.write(buffered[first : min(first + rate_hz, take)])
            durations.append(take / rate_hz)
            buffered, left = buffered[take:], left - take
        pending = [buffered]
    print(f"wrote {len(durations)} files, {sum(durations) / 60:.1f} minutes, to {folder}", file=log, flush=True)
    return durations


def save_real_size_ast(folder: Path) -> None:
    """The AudioSet AST architecture with seeded random weights, in save_pretrained layout (~350 MB)."""
    from transformers import ASTConfig, ASTModel

    from mgsv.encoders.tiny import save_pretrained_quietly

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_pretrained_quietly(ASTModel(ASTConfig()), folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="music to add (at most the 128 minutes there are)")
    parser.add_argument("--track-seconds", type=float, default=240.0, help="length of each written file")
    parser.add_argument("--batch-size", type=int, default=4, help="`library add --batch-size` (its default: 4)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--device", default="cpu", help="`library add --device` (peaks are measured on it too)")
    parser.add_argument("--workdir", type=Path, help="keep the music, the model and the library here (default: temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args(argv)
    log = sys.stderr if args.json else sys.stdout
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mgsv-bench-library-add-"))
    try:
        music, model, library = workdir / "music", workdir / "ast-random", workdir / "library"
        if (music / "durations.json").exists():
            durations = json.loads((music / "durations.json").read_text())
        else:
            durations = write_music(music, args.minutes, args.track_seconds, log)
            (music / "durations.json").write_text(json.dumps(durations))
        if not (model / "config.json").exists():
            save_real_size_ast(model)
        shutil.rmtree(library, ignore_errors=True)
        windows = sum(int(window_layout(d).mask.sum()) for d in durations)

        from transformers import ASTConfig

        from mgsv.encoders.loading import resolve_device, resolve_dtype

        precision = "bf16" if resolve_dtype(args.dtype, resolve_device(args.device)) == torch.bfloat16 else "fp32"
        peaks = Peaks.measure(device=args.device)
        print(f"{len(durations)} files, {sum(durations) / 60:.1f} min, {windows} windows; AST dtype {args.dtype} "
              f"({precision}), batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads; "
              f"{peaks.describe()}; load {load_average()}", file=log, flush=True)
        command = [sys.executable, "-m", "mgsv", "library", "add", str(music), "--library", str(library),
                   "--ast", str(model), "--batch-size", str(args.batch_size), "--dtype", args.dtype,
                   "--device", args.device, "--json"]
        start = time.perf_counter()
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"library add failed ({done.returncode}):\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        load = load_average()
        peaks = peaks.best(Peaks.measure(device=args.device))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    flops = windows * ast_window_flops(ASTConfig())
    fields = rate(wall, flops, peaks.of(precision))
    result = {"files": len(durations), "music_s": round(sum(durations), 1), "windows": windows,
              "added": len(report.get("added", [])), "encoded": report.get("encoded"),
              "failed": len(report.get("failures", [])), "precision": precision, "batch_size": args.batch_size,
              "device": args.device, "threads": torch.get_num_threads(), "wall_s": round(wall, 2),
              "windows_per_s": round(windows / wall, 3), "realtime_factor": round(sum(durations) / wall, 2),
              "gflop_per_window": round(ast_window_flops(ASTConfig()) / 1e9, 2), "rate": fields,
              "peaks": peaks.to_dict(), "load": load, "command": " ".join(command)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{peaks.describe()} (best of before / after); load at the end {load}")
    print(f"library add of {result['music_s'] / 60:.1f} min ({result['files']} files, {windows} windows, "
          f"{result['encoded']} encoded, {result['failed']} failed): {wall:.1f} s wall, "
          f"{result['windows_per_s']:.3f} windows/s, {result['realtime_factor']:.1f}x real time")
    print(f"  useful work {fields['gflop']:.0f} GFLOP ({result['gflop_per_window']:.0f} per window); {precision} peak "
          f"{fields['peak']:.0f} GFLOP/s -> floor {fields['floor_s']:.1f} s; {fields['x_floor']:.2f}x floor")


if __name__ == "__main__":
    main()
