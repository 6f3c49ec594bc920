"""Library search at scale: build time, disk size, query latency, memory and recall of the two-stage search.

Three steps, each its own process so that its peak memory is its own:

    # 100k tracks: random AST tokens of realistic lengths through the library API and a real-size random `made`
    nice .venv/bin/python benchmarks/bench_scale.py build --workdir /data/scale --tracks 100000 --mode model
    # 1M tracks: synthetic enhanced tokens written through the same index writer (see below)
    nice .venv/bin/python benchmarks/bench_scale.py build --workdir /data/scale --tracks 1000000 --mode synthetic
    nice .venv/bin/python benchmarks/bench_scale.py query --workdir /data/scale --tracks 100000
    nice .venv/bin/python benchmarks/bench_scale.py recall --workdir /data/scale --tracks 100000 --ks 500,2000,10000
    # recall after a short training on the planted-signal data (mgsv.data.synthetic)
    nice .venv/bin/python benchmarks/bench_scale.py planted --workdir /data/scale

Libraries (durations ~ N(140 s, 70 s) clipped to 30-300 s, as MGSV-EC; licences and genres rotate):
- `--mode model`: AST tokens 0.5 N(0, 1) of each track's window count are written with `MusicLibrary.writer`
  (SQLite + feature store), then `library.encoded(model)` encodes every track with a real-size `made` (random
  weights, official init) into the track index: the path a real library takes.
- `--mode synthetic`: encoding a million tracks with the real enhancement would take ~40 min of CPU here and their
  AST tokens ~86 GB, so the index writer is fed made-up *enhanced* tokens instead: s~ = a + e per window, with a
  per-track offset a ~ N(0, 0.5^2 I) and e ~ N(0, I); standardised tokens, moments and h0 (normalised masked
  mean) are derived from them exactly as for a real model (`MaDe.index_entries`). The
  SQLite rows are inserted directly. Queries use the real-size model's X-Pool and detection on this state.

`query`: `Grounder.ground_features` (everything after CLIP: encode_video, candidates, exact p_s, detection on the
top 5, placement, track lookup) on random 30-frame CLIP features, default K; then the same with filters, and a
breakdown by stage. `--cold` drops the index's token files from the page cache before each query
(`posix_fadvise(DONTNEED)` on this index's files only), so every candidate is read from the disk. `recall`: the true top 10 by exact p_s over every track (one streaming pass for all queries)
against the K candidates; recall@10 = |true top 10 in the candidates| / 10 (the exact stage then ranks them
exactly). Peak RSS is the process's `ru_maxrss`; RSS splits into anonymous and file-backed pages.

Beside each time (all steps; `--json` prints one object with them on stdout, the log on stderr): the useful FLOPs
where the work is arithmetic, counted with bench_made's counters from the tracks' window counts (building the track
index with the model: encode_music + X-Pool state of every track; a query: encode_video, the exact candidate
stage's h0 scores over every track, X-Pool's per-pair sums for the K candidates, detection of the top 5, with the
candidates' lengths taken from the library's distribution; the recall pass: X-Pool's per-pair sums for every
(query, track)), the matrix-product peaks of this process (before and after, the higher kept) and x floor. Writing
tokens, metadata and synthetic indexes is I/O (`gflop: n/a (I/O bound)`); the planted step trains a d=64 model
and is not counted. faiss / lance candidate stages are counted as the exact one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from _peak import Peaks, load_average, rate
from _report import IO_BOUND, emit, json_mode, no_floor
from bench_ground import index_flops, query_flops
from bench_made import detection_flops, enhancement_flops, relevance_flops

from mgsv.features.spec import DEFAULT_SPECS, MUSIC_SPEC, VIDEO_SPEC
from mgsv.models import get_preset
from mgsv.models.checkpoint import load_checkpoint, save_checkpoint
from mgsv.models.contract import model_fingerprint
from mgsv.models.made import MusicEncoding
from mgsv.models.registry import build_model
from mgsv.search import GroundOptions, SearchOptions, TrackFilter
from mgsv.search.grounder import Grounder, checkpoint_specs
from mgsv.search.library import MusicLibrary
from mgsv.search.ranker import detect_moments, exact_scores
from mgsv.search.track_index import update_track_index

LICENCES = ("CC0", "CC BY 4.0", "CC BY-SA 3.0", "proprietary")
GENRES = ("ambient", "rock", "pop", "jazz", "electronic", "classical")
TIMES: list[dict] = []  # every timed piece of work of this run: name, seconds, useful FLOPs (None: not arithmetic)


def record(name: str, seconds: float, flops: float | None, precision: str = "fp32") -> None:
    TIMES.append({"name": name, "seconds": seconds, "flops": flops, "precision": precision})


# ------------------------------------------------------------------------------------------------------ helpers


def rss() -> str:
    """Current resident memory, anonymous and file-backed, and the process's peak."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                name, value = line.split(":")
                fields[name] = int(value.split()[0]) / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return (f"RSS {fields['VmRSS']:.2f} GB (anonymous {fields['RssAnon']:.2f}, file-backed {fields['RssFile']:.2f}); "
            f"peak RSS {peak:.2f} GB")  # fmt: skip


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1e3:8.1f} ms   p95 {p95 * 1e3:8.1f} ms   (n={len(ordered)})"


def durations_for(tracks: int, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(140.0, 70.0, tracks), 30.0, 300.0)


def windows_for(durations: np.ndarray) -> np.ndarray:
    return np.minimum(96, (np.minimum(durations, 240.0) // 2.5).astype(int) + 1)


def tags_for(number: int) -> dict[str, str]:
    return {"license": LICENCES[number % len(LICENCES)], "genre": GENRES[(number * 7) % len(GENRES)]}


def checkpoint_in(workdir: Path) -> Path:
    """A real-size random `made` checkpoint (official init), made once per workdir."""
    checkpoint = workdir / "checkpoint"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(build_model("made"), checkpoint, feature_specs=DEFAULT_SPECS)
    return checkpoint


def segments_of(tracks: int) -> torch.Tensor:
    """Window counts of the library's tracks (seed 0, as `build` makes them)."""
    return torch.from_numpy(windows_for(durations_for(tracks, 0)))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------------ build


def build_model_library(folder: Path, tracks: int, seed: int) -> MusicLibrary:
    """Random AST tokens of realistic lengths, added through the library API (SQLite + feature store)."""
    library = MusicLibrary.create(folder, MUSIC_SPEC)
    rng = np.random.default_rng(seed)
    durations = durations_for(tracks, seed)
    windows = windows_for(durations)
    with library.writer(commit_every=10_000, commit_seconds=float("inf")) as writer:
        for number in range(tracks):
            tokens = 0.5 * rng.standard_normal((int(windows[number]), MUSIC_SPEC.dim), dtype=np.float32)
            writer.add_tokens(tokens, np.ones(len(tokens), dtype=bool), path=folder / f"track-{number}.ogg",
                              content_hash=f"{number:064x}", duration=float(durations[number]),
                              tags=tags_for(number))  # fmt: skip
            if number % 10_000 == 9_999:
                print(f"  tokens of {number + 1:,} tracks written", flush=True)
    return library


class SyntheticEnhancedTokens:
    """Stands in for a library's feature store: made-up enhanced tokens s~ per track (see the module docstring)."""

    def __init__(self, windows: dict[str, int], dim: int, seed: int) -> None:
        self.windows, self.dim, self.seed = windows, dim, seed
        self.spec = SimpleNamespace(max_tokens=96)

    def lengths(self, ids: list[str]) -> np.ndarray:
        return np.array([self.windows[i] for i in ids])

    def batch(self, ids: list[str], pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(ids[0], 16)])
        feats = rng.standard_normal((len(ids), pad_to, self.dim), dtype=np.float32)
        feats += 0.5 * rng.standard_normal((len(ids), 1, self.dim), dtype=np.float32)
        lengths = torch.tensor([self.windows[i] for i in ids])
        mask = torch.arange(pad_to)[None] < lengths[:, None]
        return torch.from_numpy(feats), mask


class EnhancedTokensModel(torch.nn.Module):
    """`encode_music` that takes enhanced tokens as they are; X-Pool (its input norm's eps) from the real model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.config, self.xpool = model.config, model.xpool

    def encode_music(self, feats: torch.Tensor, mask: torch.Tensor, matching_state: bool = False) -> MusicEncoding:
        tokens = feats.masked_fill(~mask[..., None], 0.0)
        embedding = F.normalize(tokens.sum(1) / mask.sum(1, keepdim=True), dim=-1)
        return MusicEncoding(tokens, mask, embedding, tokens, None)

    def relevance_standardized(self, *args: object) -> None:
        raise NotImplementedError  # present so that the index writer accepts this stand-in


def build_synthetic_library(folder: Path, tracks: int, seed: int, model: torch.nn.Module) -> MusicLibrary:
    """SQLite rows inserted directly and a track index written from synthetic enhanced tokens (no AST tokens)."""
    library = MusicLibrary.create(folder, MUSIC_SPEC)
    durations = durations_for(tracks, seed)
    windows = windows_for(durations)
    hashes = [f"{number:064x}" for number in range(tracks)]
    with sqlite3.connect(folder / "tracks.sqlite") as db:
        db.executemany(
            "INSERT INTO tracks (id, content_hash, path, title, artist, album, licence, tags, duration, added_at) "
            "VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, ?, '2025-01-01T00:00:00+00:00')",
            ((f"track-{n}", hashes[n], str(folder / f"track-{n}.ogg"), f"Track {n}", tags_for(n)["license"],
              json.dumps(tags_for(n)), float(durations[n])) for n in range(tracks)),
        )  # fmt: skip
        db.execute("UPDATE state SET value = '1' WHERE key = 'revision'")
    fingerprint = model_fingerprint(model)
    table = SyntheticEnhancedTokens(dict(zip(hashes, windows.tolist(), strict=True)), model.config.dim, seed)

    def progress(stage: str, done: int, total: int) -> None:
        if done % 50_000 < 128 or done == total:
            print(f"  {stage}: {done:,} / {total:,}", flush=True)

    update_track_index(folder / "index" / fingerprint, EnhancedTokensModel(model), fingerprint, table, hashes,
                       progress=progress)  # fmt: skip
    return library


def build(args: argparse.Namespace) -> None:
    folder = args.workdir / f"library-{args.tracks}"
    if folder.exists():
        shutil.rmtree(folder)
    model, _ = load_checkpoint(checkpoint_in(args.workdir))
    model.eval()
    started = time.perf_counter()
    if args.mode == "model":
        library = build_model_library(folder, args.tracks, seed=0)
        tokens_s = time.perf_counter() - started
        record("write tokens + metadata", tokens_s, None)
        print(f"tokens + metadata of {args.tracks:,} tracks written in {tokens_s:.0f} s", flush=True)
        started = time.perf_counter()
        done = [0]

        def progress(stage: str, count: int, total: int) -> None:
            if count - done[0] >= 10_000 or count == total:
                done[0] = count
                print(f"  {stage}: {count:,} / {total:,} ({time.perf_counter() - started:.0f} s)", flush=True)

        library.encoded(model, progress=progress)
        seconds = time.perf_counter() - started
        record("build track index (encode_music)", seconds, index_flops(segments_of(args.tracks)))
        print(f"track index built (encode_music of every track, real-size made) in {seconds:.0f} s")
    else:
        build_synthetic_library(folder, args.tracks, 0, model)
        record("write synthetic index + metadata", time.perf_counter() - started, None)
        print(f"synthetic track index and metadata written in {time.perf_counter() - started:.0f} s")
    index_dir = folder / "index"
    print(f"disk: track index {folder_bytes(index_dir) / 1e9:.2f} GB "
          f"({folder_bytes(index_dir) / args.tracks / 1e3:.1f} KB per track); AST feature store "
          f"{folder_bytes(folder / 'features') / 1e9:.2f} GB; SQLite {(folder / 'tracks.sqlite').stat().st_size / 1e6:.0f} MB")
    print(rss())


# ------------------------------------------------------------------------------------------------------ query


def evict(index: object) -> None:
    """Drop the index's token files from the page cache (this process's files only), as on a cold disk."""
    for segment in index.segments:
        for handle in segment.files.values():
            os.posix_fadvise(handle.fd, 0, 0, os.POSIX_FADV_DONTNEED)


def query_features(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((30, VIDEO_SPEC.dim)).astype(np.float32) for _ in range(count)]


def query(args: argparse.Namespace) -> None:
    folder = args.workdir / f"library-{args.tracks}"
    checkpoint = checkpoint_in(args.workdir)
    model, info = load_checkpoint(checkpoint)
    specs = checkpoint_specs(info.feature_specs, str(checkpoint))
    options = SearchOptions(candidates=args.candidates, index=args.index, memory=args.memory)
    library = MusicLibrary(folder)
    started = time.perf_counter()
    grounder = Grounder(model, specs, library, search=options, source=str(checkpoint))
    encoded = grounder.prepare()
    print(f"{len(encoded):,} tracks; opened (catalog, index, {args.index} candidate stage, memory={args.memory}) in "
          f"{time.perf_counter() - started:.1f} s; {args.threads} threads; K = {args.candidates}")  # fmt: skip
    print(rss(), flush=True)
    filters = {"no filter": None, "licence CC0 + genre ambient + >= 60 s": TrackFilter.parse(60.0, ["CC0"],
                                                                                             ["genre=ambient"])}
    for name, condition in filters.items():
        for feats in query_features(2, 99):  # warm-up (first tag lookup included)
            grounder.ground_features(feats, 30.0, GroundOptions(top=5, filters=condition or TrackFilter()))
        times = []
        for feats in query_features(args.queries, 1):
            if args.cold:
                evict(encoded.index)
            start = time.perf_counter()
            grounder.ground_features(feats, 30.0, GroundOptions(top=5, filters=condition or TrackFilter()))
            times.append(time.perf_counter() - start)
        label = f"{name}{', cold' if args.cold else ''}"
        print(f"ground after CLIP, top 5, {label:44} {percentiles(times)}", flush=True)
        record(f"query, {label} (p50)", statistics.median(times),
               query_flops(segments_of(len(encoded)), 30, 5, args.candidates))
    # Where the time goes, on the same queries.
    stages: dict[str, list[float]] = {"encode_video": [], "candidates": [], "exact p_s": [], "detect top 5": []}
    for feats in query_features(args.queries, 1):
        start = time.perf_counter()
        with torch.inference_mode():
            video = model.encode_video(torch.from_numpy(feats)[None], torch.ones(1, 30, dtype=torch.bool))
        stages["encode_video"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rows = encoded.candidates.search(video.embedding[0].numpy(), args.candidates, None)
        stages["candidates"].append(time.perf_counter() - start)
        start = time.perf_counter()
        scores = exact_scores(model, video, encoded.index, rows)
        stages["exact p_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        top = rows[np.argsort(-scores, kind="stable")[:5]]
        detect_moments(model, video, model.index_encodings(encoded.index.entries(top)), np.arange(5))
        stages["detect top 5"].append(time.perf_counter() - start)
    config, segments = get_preset("made").config(), segments_of(len(encoded))
    picked, video = segments[: args.candidates], torch.tensor([30])
    listed = torch.full((5,), float(segments.double().mean()))
    stage_flops = {"encode_video": enhancement_flops(config, video, config.video_dim),
                   "candidates": 2.0 * len(segments) * config.dim,
                   "exact p_s": relevance_flops(config, 1, picked) - relevance_flops(config, 0, picked),
                   "detect top 5": detection_flops(config, video.repeat(5), listed)}
    for name, times in stages.items():
        print(f"  stage {name:14} {percentiles(times)}")
        record(f"stage {name} (p50)", statistics.median(times), stage_flops[name])
    print(rss())


# ------------------------------------------------------------------------------------------------------ recall


@torch.inference_mode()
def exhaustive_scores(model: torch.nn.Module, video: MusicEncoding, encoded: object) -> np.ndarray:
    """Exact p_s [videos, rows] over every row of the index, in one streaming pass."""
    index = encoded.index
    rows = np.arange(len(index))
    out = np.empty((len(video), len(rows)), dtype=np.float32)
    embeddings = torch.from_numpy(index.all_embeddings())
    for positions, tokens, mask in index.blocks(rows, chunk=256):
        picked = torch.from_numpy(positions)
        out[:, positions] = model.relevance_standardized(video, embeddings[picked], tokens.float(), mask).numpy()
    return out


def recall_at_10(model: torch.nn.Module, encoded: object, video: object, ks: list[int]) -> dict[int, list[float]]:
    scores = exhaustive_scores(model, video, encoded)
    live = encoded.catalog.live
    found: dict[int, list[float]] = {k: [] for k in ks}
    for number in range(len(video)):
        row_scores = np.where(live, scores[number], -np.inf)
        truth = set(np.argsort(-row_scores, kind="stable")[:10].tolist())
        for k in ks:
            candidates = encoded.candidates.search(video.embedding[number].numpy(), k, None)
            found[k].append(len(truth & set(candidates.tolist())) / 10)
    return found


def recall(args: argparse.Namespace) -> None:
    folder = args.workdir / f"library-{args.tracks}"
    model, _ = load_checkpoint(checkpoint_in(args.workdir))
    model.eval()
    library = MusicLibrary(folder)
    encoded = library.encoded(model)
    feats = torch.from_numpy(np.stack(query_features(args.recall_queries, 7)))
    with torch.inference_mode():
        video = model.encode_video(feats, torch.ones(feats.shape[:2], dtype=torch.bool))
    started = time.perf_counter()
    found = recall_at_10(model, encoded, video, args.ks)
    seconds = time.perf_counter() - started
    segments, config = segments_of(len(encoded)), get_preset("made").config()
    record("exhaustive p_s pass + recall", seconds,
           relevance_flops(config, args.recall_queries, segments) - relevance_flops(config, 0, segments))
    print(f"{len(encoded):,} tracks, {args.recall_queries} random queries, exhaustive pass "
          f"{seconds:.0f} s")  # fmt: skip
    for k, values in found.items():
        print(f"  recall@10 with K = {k:6,}: mean {np.mean(values):.3f}, min {np.min(values):.1f}, "
              f"queries with all 10: {np.mean(np.array(values) == 1.0) * 100:.0f} %")  # fmt: skip


# ------------------------------------------------------------------------------------------------------ planted


def planted(args: argparse.Namespace) -> None:
    """Recall on the planted-signal data after a short training: test videos against every track."""
    from mgsv.cli import main as mgsv

    def cli(argv: list[str]) -> None:
        try:
            mgsv(argv)
        except SystemExit as exc:  # the console entry point always exits
            if exc.code not in (0, None):
                raise

    data = args.workdir / "planted"
    run = args.workdir / "planted-run"
    if not (data / "features").exists():
        cli(["data", "synthetic", "--out", str(data), "--tracks", str(args.planted_tracks), "--train-videos",
             str(args.planted_train), "--val-size", "200", "--test-size", "200", "--force"])
    if not (run / "checkpoints" / "best_r1").exists():
        # A small made with the recipe that learns this data quickly (tests/test_learning.py): paper dropout, lr 1e-3.
        sets = ["--set", "dim=64", "--set", "enhance_ffn_dim=256", "--set", "detr_ffn_dim=256", "--set",
                "decoder_layers=2", "--set", "enhance_dropout=0.1", "--set", "xpool_dropout=0.1",
                "--set", f"train.epochs={args.planted_epochs}", "--set", f"train.min_epochs={args.planted_epochs}",
                "--set", "train.batch_size=128",
                "--set", 'train.lr={"enhancement": 1e-3, "matching": 1e-3, "detection": 1e-3}']
        cli(["train", "--preset", "made", "--data", str(data), "--out", str(run), "--device", "cpu",
             "--no-progress", *sets])  # fmt: skip
    from mgsv.features.store import FeatureStore

    model, _ = load_checkpoint(run / "checkpoints" / "best_r1")
    model.eval()
    store = FeatureStore(data / "features")
    music, videos = store.modality("music"), store.modality("video")
    lib_dir = args.workdir / "planted-library"
    if not lib_dir.exists():
        library = MusicLibrary.create(lib_dir, store.spec("music"))
        with library.writer(commit_every=len(music.ids)) as writer:
            for item in music.ids:
                tokens, mask = music.get(item)
                writer.add_tokens(tokens.numpy(), mask.numpy(), path=lib_dir / f"{item}.ogg",
                                  content_hash=f"{int(item):064x}" if item.isdigit() else item.ljust(64, "0"),
                                  duration=float(mask.sum()) * 2.5)  # fmt: skip
    library = MusicLibrary(lib_dir)
    encoded = library.encoded(model)
    import pandas as pd

    test = pd.read_csv(data / "test_data.csv", dtype={"video_id": str, "music_id": str})
    feats, mask = videos.batch(test["video_id"].tolist())
    with torch.inference_mode():
        video = model.encode_video(feats, mask)
    n = len(encoded)
    ks = sorted({max(1, round(n * f)) for f in (0.005, 0.02, 0.1)})
    started = time.perf_counter()
    found = recall_at_10(model, encoded, video, ks)
    record("planted recall pass (d=64 model)", time.perf_counter() - started, None)
    print(f"planted-signal: {n} tracks, {len(test)} test videos, model trained {args.planted_epochs} epochs (d=64)")
    for k, values in found.items():
        print(f"  recall@10 with K = {k:5} ({k / n * 100:.1f} % of the tracks): mean {np.mean(values):.3f}, "
              f"queries with all 10: {np.mean(np.array(values) == 1.0) * 100:.0f} %")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["build", "query", "recall", "planted"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--mode", choices=["model", "synthetic"], default="model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--index", choices=["exact", "faiss", "lance"], default="exact")
    parser.add_argument("--memory", choices=["disk", "ram"], default="disk")
    parser.add_argument("--cold", action="store_true", help="query: evict the token files before every query")
    parser.add_argument("--recall-queries", type=int, default=20)
    parser.add_argument("--ks", type=lambda text: [int(x) for x in text.split(",")], default=[500, 2000, 10_000])
    parser.add_argument("--planted-tracks", type=int, default=2000)
    parser.add_argument("--planted-train", type=int, default=20_000)
    parser.add_argument("--planted-epochs", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    with json_mode(args.json):
        peaks = Peaks.measure()
        print(f"{peaks.describe()}; load {load_average()}")
        {"build": build, "query": query, "recall": recall, "planted": planted}[args.step](args)
        peaks = peaks.best(Peaks.measure())
        print(f"\n{peaks.describe()} (best of before / after); x floor = seconds / (useful FLOPs / peak)")
        for row in TIMES:
            if row["flops"] is None:
                row["rate"] = no_floor(row["seconds"], "I/O and bookkeeping, or a model not counted")
                print(f"  {row['name']:52} {row['seconds']:10.3f} s   gflop: {IO_BOUND}")
            else:
                row["rate"] = rate(row["seconds"], row["flops"], peaks.of(row["precision"]))
                print(f"  {row['name']:52} {row['seconds']:10.3f} s   {row['rate']['gflop']:10.2f} GFLOP   "
                      f"{row['rate']['x_floor']:8.1f}x floor")
    if args.json:
        emit({"step": args.step, "tracks": args.tracks, "mode": args.mode, "threads": args.threads,
              "peaks": peaks.to_dict(), "load": load_average(), "times": TIMES})


if __name__ == "__main__":
    main()
