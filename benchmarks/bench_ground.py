"""Grounding latency: one query video against a music library of thousands of tracks, after the library is built.

Builds (or reuses, with --workdir) a synthetic library of random AST tokens with realistic lengths (track durations
drawn around MGSV-EC's ~140 s mean, so ~56 of 96 windows valid on average; no audio is decoded) and a real-size
random `made` checkpoint, then times `Grounder.ground_features` on 30 s of CLIP frame features: everything after
CLIP (encode_video, candidates and exact p_s, detection on the top k, moment placement; with the default
2,000 candidates a library of up to 2,000 tracks is scored exhaustively), also with 3 alternatives per track and
with the diverse list. Also timed:

- the one-off cost of the library's track index (encode_music of every track) and of opening it again,
- CLIP ViT-B/32 at real size (random weights) on 30 frames of 720p, the part that precedes grounding.

    nice .venv/bin/python benchmarks/bench_ground.py                        # 4,000 tracks, 2 threads
    nice .venv/bin/python benchmarks/bench_ground.py --tracks 4000 --workdir /tmp/bench-ground --repeats 30

Numbers are wall-clock seconds; p50 / p95 over --repeats queries (each with new random frame features).

Beside each p50: the useful FLOPs of one query (counted with bench_made's counters from the lengths: encode_video of
the 30 frames, the candidate stage's h0 scores over the whole library, X-Pool's per-pair sums for the K candidates
(their per-track state is stored in the index), detection of the top-k; the candidates' and listed tracks' lengths
are taken from the library's length distribution, not from the tracks a query actually picks), the matrix-product
peak of this process in the row's precision (measured before and after, the higher kept) and x floor. Every query
row is given the count of the plain query: rows with alternatives or the diverse list do extra detections that are
not counted (their x floor overstates the distance to the limit); the filtered row scores fewer candidates than
counted (its x floor understates it). The index build counts encode_music and the per-track X-Pool state of every track;
CLIP counts ~8.8 GFLOP a frame (`_encoder_flops`).

    nice .venv/bin/python benchmarks/bench_ground.py --tracks 300 --repeats 3 --skip-clip --json    # quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _encoder_flops import clip_frame_flops
from _peak import Peaks, load_average, rate
from bench_made import detection_flops, enhancement_flops, relevance_flops

from mgsv.features.spec import DEFAULT_SPECS, MUSIC_SPEC, VIDEO_SPEC
from mgsv.models import get_preset
from mgsv.models.checkpoint import load_checkpoint, save_checkpoint
from mgsv.models.registry import build_model
from mgsv.search import GroundOptions, TrackFilter
from mgsv.search.grounder import Grounder, checkpoint_specs
from mgsv.search.library import MusicLibrary
from mgsv.search.options import DEFAULT_CANDIDATES


def build_library(folder: Path, tracks: int, seed: int) -> MusicLibrary:
    """A library of `tracks` synthetic tracks (random tokens, durations ~ N(140 s, 50 s) clipped to 15-300 s)."""
    library = MusicLibrary.create(folder, MUSIC_SPEC)
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.normal(140.0, 50.0, tracks), 15.0, 300.0)
    with library.writer(commit_every=tracks) as writer:
        for number, (duration, windows) in enumerate(zip(durations, window_counts(durations))):
            tokens = (0.5 * rng.standard_normal((windows, MUSIC_SPEC.dim))).astype(np.float32)
            writer.add_tokens(tokens, np.ones(windows, dtype=bool), path=folder / f"track-{number}.ogg",
                              content_hash=f"{number:064x}", duration=float(duration))  # fmt: skip
    return library


def window_counts(durations: np.ndarray) -> list[int]:
    """Valid windows of each track (centres every 2.5 s up to its duration, at most 96)."""
    return [min(96, int(min(duration, 240.0) // 2.5) + 1) for duration in durations]


def library_segments(tracks: int, seed: int) -> torch.Tensor:
    """The window counts `build_library` gives its tracks (the same draws)."""
    rng = np.random.default_rng(seed)
    return torch.tensor(window_counts(np.clip(rng.normal(140.0, 50.0, tracks), 15.0, 300.0)))


def query_flops(segments: torch.Tensor, frames: int, top: int, candidates: int) -> float:
    """Useful FLOPs of one `ground_features` query (see the module docstring)."""
    config = get_preset("made").config()
    video = torch.tensor([frames])
    picked = segments[: min(candidates, len(segments))]
    per_pair = relevance_flops(config, 1, picked) - relevance_flops(config, 0, picked)  # the stored state excluded
    listed = torch.full((top,), float(segments.double().mean()))
    return (enhancement_flops(config, video, config.video_dim) + 2 * len(segments) * config.dim + per_pair
            + detection_flops(config, video.repeat(top), listed))


def index_flops(segments: torch.Tensor) -> float:
    """encode_music of every track and its X-Pool state (what the track index stores)."""
    config = get_preset("made").config()
    return enhancement_flops(config, segments, config.music_dim) + relevance_flops(config, 0, segments)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
        f"min {ordered[0] * 1000:7.1f} ms   (n={len(ordered)})"
    )


def time_queries(grounder: Grounder, repeats: int, **options: object) -> tuple[list[float], float]:
    """Seconds per query, and the mean number of alternatives per listed track."""
    rng = np.random.default_rng(1)
    times, alternatives = [], []
    for _ in range(repeats):
        feats = rng.standard_normal((30, VIDEO_SPEC.dim)).astype(np.float32)
        start = time.perf_counter()
        result = grounder.ground_features(feats, 30.0, GroundOptions(**options))
        times.append(time.perf_counter() - start)
        alternatives += [len(m.alternatives) for m in result.moments]
    return times, float(np.mean(alternatives))


def time_clip(repeats: int) -> tuple[list[float], str]:
    """Seconds to CLIP-encode 30 frames of 720p with a real-size ViT-B/32 (random weights) in the auto dtype."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.encoders.loading import resolve_dtype

    dtype = resolve_dtype("auto", torch.device("cpu"))
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=32, image_size=224, projection_dim=512))
    model = model.eval().requires_grad_(False).to(dtype)
    encoder = ClipFrameEncoder(model, VIDEO_SPEC.encoder, torch.device("cpu"), batch_size=32)
    frames = np.random.default_rng(0).integers(0, 256, (30, 720, 1280, 3), dtype=np.uint8)
    encoder.encode(frames[:2])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(frames)
        times.append(time.perf_counter() - start)
    print(f"CLIP encoder dtype: {dtype}")
    return times, "bf16" if dtype == torch.bfloat16 else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep (and reuse) the library and checkpoint here.")
    parser.add_argument("--skip-clip", action="store_true", help="Do not time the real-size CLIP encoder.")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real_stdout = sys.stdout
    if args.json:
        sys.stdout = sys.stderr  # the tables become the log; stdout holds the JSON object only
    peaks = Peaks.measure()
    print(f"{peaks.describe()}; load {load_average()}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ground-"))
    workdir.mkdir(parents=True, exist_ok=True)

    checkpoint = workdir / "checkpoint"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(build_model("made"), checkpoint, feature_specs=DEFAULT_SPECS)
    library_dir = workdir / f"library-{args.tracks}"
    if not (library_dir / "library.json").exists():
        start = time.perf_counter()
        build_library(library_dir, args.tracks, seed=0)
        print(f"built a {args.tracks}-track synthetic library in {time.perf_counter() - start:.1f} s: {library_dir}")
    library = MusicLibrary(library_dir)
    model, info = load_checkpoint(checkpoint)
    grounder = Grounder(model, checkpoint_specs(info.feature_specs, str(checkpoint)), library, source=str(checkpoint))
    print(f"{len(library)} tracks, real-size made ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{args.threads} threads")  # fmt: skip

    segments = library_segments(args.tracks, seed=0)
    rows: list[dict] = []
    index = next((library_dir / "index").glob("*/manifest.json"), None)
    start = time.perf_counter()
    library.encoded(model)
    label = "opened the track index" if index else "built the track index (encode_music of every track)"
    build_s = time.perf_counter() - start
    if index:
        print(f"{label}: {build_s:.2f} s")
    else:
        rows.append({"name": "build track index", "precision": "fp32", "seconds": build_s,
                     "flops": index_flops(segments)})
        print(f"{label}: {build_s:.2f} s ({rows[-1]['flops'] / 1e9:.1f} GFLOP)")
    start = time.perf_counter()
    MusicLibrary(library_dir).encoded(model)
    print(f"opened the track index (fresh library object): {time.perf_counter() - start:.2f} s")

    specs = checkpoint_specs(info.feature_specs, str(checkpoint))
    long_tracks = TrackFilter(min_duration=150.0)
    runs = {
        "fp32": (grounder, {}),
        "fp32, fit-duration": (grounder, {"fit_duration": True}),
        # Tracks of 150 s or more: room for 3 more moments of a 30 s video beside the first.
        "fp32, fit, >= 150 s": (grounder, {"fit_duration": True, "filters": long_tracks}),
        "+ alternatives 3": (grounder, {"fit_duration": True, "filters": long_tracks, "alternatives": 3}),
        "fp32, diverse": (grounder, {"diverse": True}),
        "bf16 autocast": (Grounder(model, specs, library, precision="bf16"), {}),
    }
    flops = query_flops(segments, 30, args.top, DEFAULT_CANDIDATES)
    for name, (runner, extra) in runs.items():
        time_queries(runner, 2, top=args.top, **extra)  # warm-up
        times, alternatives = time_queries(runner, args.repeats, top=args.top, **extra)
        found = f"   {alternatives:.1f} alternatives per track" if "alternatives" in extra else ""
        print(f"ground (after CLIP), top-{args.top}, {name:20} {percentiles(times)}{found}")
        rows.append({"name": f"ground top-{args.top}, {name}", "precision": "bf16" if "bf16" in name else "fp32",
                     "seconds": statistics.median(times), "p95_s": sorted(times)[round(0.95 * (len(times) - 1))],
                     "flops": flops})
    if not args.skip_clip:
        clip_times, clip_precision = time_clip(max(3, args.repeats // 4))
        print(f"CLIP ViT-B/32, 30 frames of 720p:                {percentiles(clip_times)}  "
              f"({statistics.median(clip_times) / 30 * 1000:.1f} ms per frame)")  # fmt: skip
        from transformers import CLIPVisionConfig

        rows.append({"name": "CLIP 30 frames of 720p", "precision": clip_precision,
                     "seconds": statistics.median(clip_times), "flops": 30 * clip_frame_flops(CLIPVisionConfig())})

    peaks = peaks.best(Peaks.measure())
    print(f"\n{peaks.describe()} (best of before / after); x floor = p50 / (useful FLOPs / peak of the precision)")
    for row in rows:
        row["rate"] = rate(row["seconds"], row["flops"], peaks.of(row["precision"]))
        print(f"  {row['name']:42} {row['precision']}  {row['seconds'] * 1000:9.1f} ms  "
              f"{row['rate']['gflop']:8.2f} GFLOP  {row['rate']['x_floor']:8.1f}x floor")
    if args.json:
        print(json.dumps({"tracks": len(library), "threads": args.threads, "repeats": args.repeats, "top": args.top,
                          "candidates": DEFAULT_CANDIDATES, "peaks": peaks.to_dict(), "load": load_average(),
                          "rows": rows}, indent=2), file=real_stdout)


if __name__ == "__main__":
    main()
