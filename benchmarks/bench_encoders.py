"""Encoder speed against this machine's own limit, at REAL size: seconds per CLIP frame and per AST window.

Models are built from the real configs (`CLIPVisionConfig()` is ViT-B/32 with a 512-d projection; `ASTConfig()`
is the AudioSet AST of `mgsv.defaults.DEFAULT_AST_ID`) with random weights, because the hub is not reachable here:
speed does not depend on the weights, but the bf16 error of trained weights can differ from these numbers.

    nice .venv/bin/python benchmarks/bench_encoders.py                 # 2 threads, eager fp32/bf16
    nice .venv/bin/python benchmarks/bench_encoders.py --only ast --ast-batches 4 --json
    nice .venv/bin/python benchmarks/bench_encoders.py --compile       # also torch.compile (inductor, frozen weights)
    .venv/bin/python benchmarks/bench_encoders.py --device cuda        # on a GPU (timings synchronised)

Timings include the preprocessing (CLIP: PIL resize/crop of 720x1280 frames; AST: Kaldi fbank of the windows),
since that is what extraction pays; each is also timed apart, and AST's model alone. Each configuration runs
`--repeats` times, interleaved with the others so that load from other processes hits all of them alike; min and
median are printed.

Beside every time: the useful FLOPs of one item (`_encoder_flops`: every matrix product of the encoder at its
config sizes; AST ~261 GFLOP a 10 s window, CLIP ~8.8 GFLOP a frame; preprocessing, norms, softmax and GELU not
counted), the matrix-product peak of this process in the precision used (measured before and after, the higher
kept, `_peak`), and x floor = seconds / (FLOPs / peak). The fbank has no FLOPs counted (it is FFTs and a small
mel product): its share is what it adds to x floor.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _encoder_flops import ast_window_flops, clip_frame_flops
from _peak import Peaks, load_average, rate, synchronize

from mgsv.encoders.ast import AstMusicEncoder
from mgsv.encoders.clip import ClipFrameEncoder

MUSIC = Path(__file__).resolve().parents[1] / ".media/usr/share/games/wesnoth/1.16/data/core/music"
PRECISION_OF = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def smooth_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Natural-ish images: upsampled random colour blocks (pure noise is an unrealistic input for bicubic + ViT)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n, 12, 7, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(b).resize((width, height), Image.BILINEAR)) for b in blocks])


def music_waveform(seconds: float) -> tuple[np.ndarray, str]:
    """A real track's first `seconds` (channel 0, 16 kHz) if the Debian test music is installed, else tones+noise."""
    tracks = sorted(MUSIC.glob("*.ogg")) if MUSIC.is_dir() else []
    if tracks:
        from mgsv.media.decode import read_audio

        return read_audio(tracks[0], max_seconds=seconds, channel=0), tracks[0].name
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(0)
    wave = 0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(np.pi * t) + 0.02 * rng.standard_normal(len(t))
    return wave.astype(np.float32), "synthetic tones"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def timed(runs: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, list[float]]:
    """Run every callable once to warm up, then `repeats` interleaved rounds; seconds per call."""
    for fn in runs.values():
        fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def rows_of(times: dict[str, list[float]], per: int, flops: float | None, precision: dict[str, str]) -> list[dict]:
    """One result row per configuration: seconds per item (min, median) and, later, their rates."""
    return [{"name": name, "precision": precision[name], "items": per, "flops_per_item": flops,
             "min_s": min(values) / per, "median_s": statistics.median(values) / per}
            for name, values in times.items()]


def bench_clip(args: argparse.Namespace, log) -> dict:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = CLIPVisionConfig(attn_implementation="sdpa")
    model = CLIPVisionModelWithProjection(config).eval().requires_grad_(False).to(device)
    frames = smooth_frames(args.frames, 1280, 720)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    encoders = {f"fp32 batch {b}": ClipFrameEncoder(model, "r", device, batch_size=b) for b in args.clip_batches}
    encoders |= {f"bf16 batch {b}": ClipFrameEncoder(bf16_model, "r", device, batch_size=b) for b in args.clip_batches}
    if args.compile:
        encoders |= {f"bf16 batch {b} compiled": ClipFrameEncoder(bf16_model, "r", device, batch_size=b, compile=True)
                     for b in args.clip_batches}
    print(f"CLIP ViT-B/32 (random weights), {len(frames)} frames of 720x1280, {torch.get_num_threads()} threads, "
          f"{device}", file=log, flush=True)
    runs = {name: (lambda e=e: e.encode(frames)) for name, e in encoders.items()}
    precision = {name: PRECISION_OF[e.dtype] for name, e in encoders.items()}
    rows = rows_of(timed(runs, args.repeats, args.device), len(frames), clip_frame_flops(config), precision)

    from mgsv.encoders.clip import preprocess_frames

    start = time.perf_counter()
    preprocess_frames(frames)
    preprocessing = (time.perf_counter() - start) / len(frames)
    a, b = encoders[f"fp32 batch {args.clip_batches[0]}"].encode(frames), encoders[
        f"bf16 batch {args.clip_batches[0]}"].encode(frames)
    cos = cosines(a, b)
    return {"frames": len(frames), "gflop_per_frame": clip_frame_flops(config) / 1e9, "rows": rows,
            "preprocessing_s_per_frame": preprocessing,
            "bf16_cosine": {"mean": float(cos.mean()), "min": float(cos.min()), "n": len(cos)}}


def bench_ast(args: argparse.Namespace, log) -> dict:
    from transformers import ASTConfig, ASTModel

    from mgsv.encoders.ast import window_inputs, window_layout

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = ASTConfig(attn_implementation="sdpa")
    model = ASTModel(config).eval().requires_grad_(False).to(device)
    # Centres 0 .. seconds: the number of valid windows is seconds / 2.5 + 1.
    wave, name = music_waveform(args.seconds)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    encoders = {f"fp32 batch {b}": AstMusicEncoder(model, "r", device, b, 2.5) for b in args.ast_fp32_batches}
    encoders |= {f"bf16 batch {b}": AstMusicEncoder(bf16_model, "r", device, b, 2.5) for b in args.ast_batches}
    if args.compile:
        encoders |= {f"bf16 batch {b} compiled": AstMusicEncoder(bf16_model, "r", device, b, 2.5, compile=True)
                     for b in args.ast_batches}
    windows = int(encoders[next(iter(encoders))].encode(wave).mask.sum())
    print(f"AST AudioSet (random weights), {name}: {len(wave) / 16000:.1f} s, {windows} windows, "
          f"{torch.get_num_threads()} threads, {device}", file=log, flush=True)

    # The parts apart: the fbank of all windows (as `encode` computes it) and the model alone on its inputs.
    layout = window_layout(len(wave) / 16000)
    padded = torch.zeros(240 * 16000)
    padded[: len(wave)] = torch.from_numpy(wave)
    starts, ends = layout.starts[layout.mask], layout.ends[layout.mask]
    inputs = window_inputs(padded, starts, ends)
    batch = args.ast_batches[0]
    bf16_inputs = inputs.to(device=device, dtype=torch.bfloat16)

    def model_only() -> None:
        with torch.inference_mode():
            for first in range(0, len(bf16_inputs), batch):
                bf16_model(input_values=bf16_inputs[first : first + batch])

    runs = {n: (lambda e=e: e.encode(wave)) for n, e in encoders.items()}
    runs[f"bf16 batch {batch}, model only"] = model_only
    runs["fbank + normalisation only"] = lambda: window_inputs(padded, starts, ends)
    precision = {n: PRECISION_OF[e.dtype] for n, e in encoders.items()}
    precision |= {f"bf16 batch {batch}, model only": "bf16", "fbank + normalisation only": "fp32"}
    rows = rows_of(timed(runs, args.repeats, args.device), windows, ast_window_flops(config), precision)
    rows[-1]["flops_per_item"] = None  # the fbank: FFTs, not counted (see the module docstring)

    first_fp32 = encoders[f"fp32 batch {args.ast_fp32_batches[0]}"].encode(wave)
    first_bf16 = encoders[f"bf16 batch {batch}"].encode(wave)
    cos = cosines(first_fp32.tokens[first_fp32.mask], first_bf16.tokens[first_bf16.mask])
    return {"track": name, "seconds": len(wave) / 16000, "windows": windows,
            "gflop_per_window": ast_window_flops(config) / 1e9, "rows": rows,
            "bf16_cosine": {"mean": float(cos.mean()), "min": float(cos.min()), "n": len(cos)}}


def add_rates(result: dict, peaks: Peaks) -> None:
    """x floor of each row's median and min seconds per item, against the peak of the row's precision."""
    for row in result["rows"]:
        for key, seconds in (("rate", row["median_s"]), ("rate_min", row["min_s"])):
            if row["flops_per_item"]:
                row[key] = rate(seconds, row["flops_per_item"], peaks.of(row["precision"]))
            else:  # the fbank: no FLOPs counted, no floor (JSON has no NaN)
                row[key] = {"seconds": round(seconds, 4), "gflop": "n/a (FFT preprocessing, not counted)"}


def print_table(title: str, unit: str, result: dict) -> None:
    print(f"\n{title}; seconds per {unit} (useful GFLOP per {unit}, x above the floor of the row's precision)")
    for row in result["rows"]:
        median, best = row["rate"], row["rate_min"]
        if row["flops_per_item"]:
            cells = (f"median {median['seconds']:8.4f} s  min {best['seconds']:8.4f} s  ({median['gflop']:.1f} GFLOP, "
                     f"peak {median['peak']:.0f}, {median['x_floor']:.2f}x floor median, {best['x_floor']:.2f}x min)")
        else:
            cells = f"median {median['seconds']:8.4f} s  min {best['seconds']:8.4f} s  (gflop: n/a, FFT preprocessing)"
        print(f"  {row['name']:<32} {cells}")
    cos = result["bf16_cosine"]
    print(f"  bf16 vs fp32 cosine per {unit}: mean {cos['mean']:.6f}  min {cos['min']:.6f}  (n={cos['n']})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32, help="CLIP frames per run")
    parser.add_argument("--seconds", type=float, default=20.0, help="AST track length per run (20 s = 9 windows)")
    parser.add_argument("--clip-batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--ast-batches", type=int, nargs="+", default=[4, 1, 9],
                        help="bf16 AST batch sizes; the first is also timed as model only (4: `library add`'s)")
    parser.add_argument("--ast-fp32-batches", type=int, nargs="+", default=[4])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd bf16 models")
    parser.add_argument("--only", choices=["clip", "ast"], help="run one encoder only")
    parser.add_argument("--device", default="cpu", help="torch device (cuda: timings synchronised)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = sys.stderr if args.json else sys.stdout
    peaks = Peaks.measure(device=args.device)
    print(f"torch {torch.__version__}, bf16 capable CPU: {torch.cpu._is_avx512_bf16_supported()}; {peaks.describe()}; "
          f"load {load_average()}", file=log, flush=True)
    results = {}
    if args.only != "ast":
        results["clip"] = bench_clip(args, log)
    if args.only != "clip":
        results["ast"] = bench_ast(args, log)
    peaks = peaks.best(Peaks.measure(device=args.device))
    for result in results.values():
        add_rates(result, peaks)
    if args.json:
        print(json.dumps({"device": args.device, "threads": args.threads, "torch": torch.__version__,
                          "repeats": args.repeats, "peaks": peaks.to_dict(), "load": load_average(), **results},
                         indent=2))
        return
    print(f"\n{peaks.describe()} (best of before / after); x floor = seconds / (useful FLOPs / peak); "
          f"load {load_average()}")
    if "clip" in results:
        print_table(f"CLIP ViT-B/32, {results['clip']['frames']} frames of 720x1280", "frame", results["clip"])
        print(f"  of which preprocessing (PIL)     {results['clip']['preprocessing_s_per_frame']:8.4f} s/frame")
    if "ast" in results:
        ast = results["ast"]
        print_table(f"AST, {ast['track']} ({ast['seconds']:.1f} s, {ast['windows']} windows)", "window", ast)


if __name__ == "__main__":
    main()
