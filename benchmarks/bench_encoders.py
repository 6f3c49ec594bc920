"""Encoder speed and bf16 error at REAL size: seconds per CLIP frame and per AST window, fp32 vs bf16.

Models are built from the real configs (`CLIPVisionConfig()` is ViT-B/32 with a 512-d projection; `ASTConfig()`
is the AudioSet AST) with random weights, because the hub is not reachable here: speed does not depend on the
weights, but the bf16 error of trained weights can differ from these numbers.

    nice .venv/bin/python benchmarks/bench_encoders.py                 # 2 threads, eager fp32/bf16
    nice .venv/bin/python benchmarks/bench_encoders.py --compile       # also torch.compile (inductor, frozen weights)

Timings include the preprocessing (CLIP: PIL resize/crop of 720x1280 frames; AST: Kaldi fbank of each window),
since that is what extraction pays. Each configuration runs `--repeats` times, interleaved with the others so that
load from other processes hits all of them alike; min and median are printed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mgsv.encoders.ast import AstMusicEncoder
from mgsv.encoders.clip import ClipFrameEncoder

MUSIC = Path(__file__).resolve().parents[1] / ".media/usr/share/games/wesnoth/1.16/data/core/music"


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


def timed(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run every callable once to warm up, then `repeats` interleaved rounds; seconds per call."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def report(times: dict[str, list[float]], per: dict[str, int], unit: str) -> None:
    for name, values in times.items():
        n = per[name]
        print(f"  {name:<34} min {min(values) / n:8.4f}  median {statistics.median(values) / n:8.4f}  s/{unit}")


def bench_clip(args: argparse.Namespace) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(attn_implementation="sdpa")).eval().requires_grad_(False)
    frames = smooth_frames(args.frames, 1280, 720)
    cpu = torch.device("cpu")
    fp32 = ClipFrameEncoder(model, "random-clip-vit-b32", cpu, batch_size=32)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    encoders = {f"fp32 batch {b}": ClipFrameEncoder(model, "r", cpu, batch_size=b) for b in args.clip_batches}
    encoders |= {f"bf16 batch {b}": ClipFrameEncoder(bf16_model, "r", cpu, batch_size=b) for b in args.clip_batches}
    if args.compile:
        encoders |= {
            f"bf16 batch {b} compiled": ClipFrameEncoder(bf16_model, "r", cpu, batch_size=b, compile=True)
            for b in args.clip_batches
        }
    print(f"CLIP ViT-B/32 (random weights), {len(frames)} frames of 720x1280, {torch.get_num_threads()} threads")
    runs = {name: (lambda e=e: e.encode(frames)) for name, e in encoders.items()}
    report(timed(runs, args.repeats), {name: len(frames) for name in runs}, "frame")

    from mgsv.encoders.clip import preprocess_frames

    start = time.perf_counter()
    preprocess_frames(frames)
    print(f"  of which preprocessing (PIL)       {(time.perf_counter() - start) / len(frames):8.4f}  s/frame")
    a, b = fp32.encode(frames), encoders[f"bf16 batch {args.clip_batches[0]}"].encode(frames)
    cos = cosines(a, b)
    print(f"  bf16 vs fp32 cosine per frame: mean {cos.mean():.6f}  min {cos.min():.6f}  (n={len(cos)})")


def bench_ast(args: argparse.Namespace) -> None:
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(0)
    model = ASTModel(ASTConfig(attn_implementation="sdpa")).eval().requires_grad_(False)
    # Centres 0 .. seconds: the number of valid windows is seconds / 2.5 + 1.
    wave, name = music_waveform(args.seconds)
    cpu = torch.device("cpu")
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    encoders = {f"fp32 batch {b}": AstMusicEncoder(model, "r", cpu, b, 2.5) for b in args.ast_fp32_batches}
    encoders |= {f"bf16 batch {b}": AstMusicEncoder(bf16_model, "r", cpu, b, 2.5) for b in args.ast_batches}
    if args.compile:
        encoders |= {
            f"bf16 batch {b} compiled": AstMusicEncoder(bf16_model, "r", cpu, b, 2.5, compile=True)
            for b in args.ast_batches
        }
    windows = int(encoders[next(iter(encoders))].encode(wave).mask.sum())
    print(
        f"AST AudioSet (random weights), {name}: {len(wave) / 16000:.1f} s, {windows} windows, "
        f"{torch.get_num_threads()} threads"
    )
    runs = {n: (lambda e=e: e.encode(wave)) for n, e in encoders.items()}
    report(timed(runs, args.repeats), {n: windows for n in runs}, "window")

    from mgsv.encoders.ast import window_inputs, window_layout

    layout = window_layout(len(wave) / 16000)
    padded = torch.zeros(240 * 16000)
    padded[: len(wave)] = torch.from_numpy(wave)
    start = time.perf_counter()
    window_inputs(padded, layout.starts[layout.mask], layout.ends[layout.mask])
    print(f"  of which fbank + normalisation     {(time.perf_counter() - start) / windows:8.4f}  s/window")
    first_fp32 = encoders[f"fp32 batch {args.ast_fp32_batches[0]}"].encode(wave)
    first_bf16 = encoders[f"bf16 batch {args.ast_batches[0]}"].encode(wave)
    cos = cosines(first_fp32.tokens[first_fp32.mask], first_bf16.tokens[first_bf16.mask])
    print(f"  bf16 vs fp32 cosine per token: mean {cos.mean():.6f}  min {cos.min():.6f}  (n={len(cos)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32, help="CLIP frames per run")
    parser.add_argument("--seconds", type=float, default=20.0, help="AST track length per run (20 s = 9 windows)")
    parser.add_argument("--clip-batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--ast-batches", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--ast-fp32-batches", type=int, nargs="+", default=[3])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd bf16 models")
    parser.add_argument("--only", choices=["clip", "ast"], help="run one encoder only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, bf16 capable CPU: {torch.cpu._is_avx512_bf16_supported()}", file=sys.stderr)
    if args.only != "ast":
        bench_clip(args)
    if args.only != "clip":
        bench_ast(args)


if __name__ == "__main__":
    main()
