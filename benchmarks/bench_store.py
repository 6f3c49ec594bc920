"""Batch assembly: the packed feature store versus the official per-id `.pt` loader.

Builds synthetic features of MGSV-EC's real sizes (53,000 videos with ~23 of 50 valid frames, 4,000 tracks with ~56
of 96 valid windows) both as a feature store and in the official layout (docs/official-code.md), then times assembling random
training batches of 512 (video, music) pairs: tracks are reused across videos as in training. "Cold" numbers evict
the files of the batch from the page cache first (posix_fadvise DONTNEED), "warm" ones read them again.

    nice .venv/bin/python benchmarks/bench_store.py                      # real sizes (~7 GB of temp files)
    .venv/bin/python benchmarks/bench_store.py --videos 2000 --tracks 300  # quick run
    .venv/bin/python benchmarks/bench_store.py --videos 2000 --tracks 300 --json

Batch assembly is file I/O, not arithmetic: each time is printed with `gflop: n/a (I/O bound)`, the matrix-product
peaks of the process (for the record) and a floor in bytes over a bandwidth measured in the same run. Cold rows:
the bytes the layout must read for the batch (official: the batch's .pt files, padded float32 + masks; store: the
valid tokens in float16) over a cold sequential read of a file on the same disk. Warm and in-RAM rows: those bytes
read from memory plus the float32 batch written (unpadded, or padded to 50 / 96 for the pad row) over an in-memory
copy's bandwidth (which counts bytes read + written).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _peak import Peaks, load_average
from _report import emit, io_rate, json_mode, memory_gbs, read_gbs

from mgsv.features.official import MUSIC_DIRS, VIDEO_DIR
from mgsv.features.spec import MUSIC_SPEC, VIDEO_SPEC
from mgsv.features.store import FeatureStore


def lengths(rng: np.random.Generator, count: int, mean: float, sd: float, low: int, high: int) -> np.ndarray:
    return np.clip(np.rint(rng.normal(mean, sd, count)), low, high).astype(np.int64)


def evict(paths: list[Path]) -> None:
    """Drop files from the page cache so that the next read comes from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def build(root: Path, videos: int, tracks: int, seed: int) -> tuple[list[str], list[str], float, float, dict]:
    rng = np.random.default_rng(seed)
    video_len = lengths(rng, videos, 23.3, 10.0, 5, 50)
    music_len = lengths(rng, tracks, 56.4, 22.0, 12, 96)
    video_ids = [str(110_000_000_000 + i) for i in range(videos)]
    music_ids = [f"{i % 10}+{i:016x}" for i in range(tracks)]
    # Token values do not matter for timing; slices of one random pool keep generation fast.
    pool = torch.randn(4096, 768)

    started = time.perf_counter()
    official = root / "official"
    dirs = {
        "vf": official / VIDEO_DIR / "vit_feature",
        "vm": official / VIDEO_DIR / "vit_mask",
        "af": official / MUSIC_DIRS[2.5] / "ast_feature",
        "am": official / MUSIC_DIRS[2.5] / "ast_mask",
    }
    for folder in dirs.values():
        folder.mkdir(parents=True)
    for kind, ids, lens, (width, dim) in (
        ("v", video_ids, video_len, (50, 512)),
        ("a", music_ids, music_len, (96, 768)),
    ):
        for i, (item_id, n) in enumerate(zip(ids, lens)):
            start = (i * 37) % (4096 - width)
            feats = pool[start : start + width, :dim].clone()
            mask = torch.zeros(width)
            mask[:n] = 1
            torch.save(feats, dirs[kind + "f"] / f"{item_id}.pt")
            torch.save(mask, dirs[kind + "m"] / f"{item_id}.pt")
    official_s = time.perf_counter() - started

    started = time.perf_counter()
    store = FeatureStore.create(root / "store", {"video": VIDEO_SPEC, "music": MUSIC_SPEC})
    for name, ids, lens, dim in (("video", video_ids, video_len, 512), ("music", music_ids, music_len, 768)):
        with store.writer(name, flush_every=8192) as w:
            for i, (item_id, n) in enumerate(zip(ids, lens)):
                start = (i * 37) % (4096 - 96)
                w.add(item_id, pool[start : start + n, :dim], torch.ones(n))
    store_s = time.perf_counter() - started
    # Valid values (tokens x width) of every item, for the byte counts of the floors.
    valid = dict(zip(video_ids, (int(n) * 512 for n in video_len)))
    valid |= dict(zip(music_ids, (int(n) * 768 for n in music_len)))
    return video_ids, music_ids, official_s, store_s, valid


def official_batch(root: Path, video_ids: list[str], music_ids: list[str]) -> tuple[torch.Tensor, ...]:
    """What the official dataloader does per pair (4 torch.load calls), then the default collate's stack."""
    base_v, base_a = root / "official" / VIDEO_DIR, root / "official" / MUSIC_DIRS[2.5]
    frames, frame_masks, segments, segment_masks = [], [], [], []
    for vid, mid in zip(video_ids, music_ids):
        vf = torch.load(base_v / "vit_feature" / f"{vid}.pt", weights_only=True)
        vm = torch.load(base_v / "vit_mask" / f"{vid}.pt", weights_only=True)
        af = torch.load(base_a / "ast_feature" / f"{mid}.pt", weights_only=True)
        am = torch.load(base_a / "ast_mask" / f"{mid}.pt", weights_only=True)
        frames.append(vf.masked_fill(vm.unsqueeze(1) == 0, 0))
        frame_masks.append(vm)
        segments.append(af.masked_fill(am.unsqueeze(1) == 0, 0))
        segment_masks.append(am)
    return torch.stack(frames), torch.stack(frame_masks), torch.stack(segments), torch.stack(segment_masks)


def official_files(root: Path, video_ids: list[str], music_ids: list[str]) -> list[Path]:
    base_v, base_a = root / "official" / VIDEO_DIR, root / "official" / MUSIC_DIRS[2.5]
    paths = [base_v / kind / f"{v}.pt" for v in video_ids for kind in ("vit_feature", "vit_mask")]
    return paths + [base_a / kind / f"{m}.pt" for m in set(music_ids) for kind in ("ast_feature", "ast_mask")]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(repeats: int, fn: Callable[..., object], *args: object) -> float:
    """Median seconds of `repeats` calls of fn(*args)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=53_000)
    parser.add_argument("--tracks", type=int, default=4_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--batches", type=int, default=5, help="random batches timed per setting")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the temporary data goes (default: system temp)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both loaders")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args()
    with json_mode(args.json):
        run(args)


def run(args: argparse.Namespace) -> None:

    # One intra-op thread by default, as in DataLoader workers: on busy shared cores, many small multi-threaded ops
    # (the official per-item masked_fill) stall on OpenMP barriers and would inflate the baseline.
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.workdir))
    try:
        peaks = Peaks.measure()
        disk_gbs, ram_gbs = read_gbs(root), memory_gbs()
        print(f"{peaks.describe()}; cold file read {disk_gbs:.2f} GB/s, memory copy {ram_gbs:.1f} GB/s; "
              f"load {load_average()}")
        print(f"building {args.videos} videos + {args.tracks} tracks in {root} ...", flush=True)
        video_ids, music_ids, official_s, store_s, valid = build(root, args.videos, args.tracks, args.seed)
        store = FeatureStore(root / "store")
        store_bytes, official_bytes = du(root / "store"), du(root / "official")
        print(
            f"official .pt layout: written in {official_s:.1f} s, {official_bytes / 2**30:.2f} GiB, "
            f"{4 * (args.videos + args.tracks):,d} files"
        )
        print(f"feature store:       written in {store_s:.1f} s, {store_bytes / 2**30:.2f} GiB")

        rng = np.random.default_rng(args.seed + 1)
        batches = []
        for _ in range(args.batches):
            v = rng.choice(len(video_ids), args.batch, replace=False)
            m = rng.integers(0, len(music_ids), args.batch)  # tracks repeat across a batch as in training
            batches.append(([video_ids[i] for i in v], [music_ids[i] for i in m]))
        videos, music = store.modality("video"), store.modality("music")
        shard_files = [p for p in (root / "store").rglob("*.npy")]

        def store_batch(vids: list[str], mids: list[str], pad: bool) -> None:
            videos.batch(vids, pad_to=50 if pad else None)
            music.batch(mids, pad_to=96 if pad else None)

        results: dict[str, list[float]] = {
            k: [] for k in ("official cold", "official warm", "store cold", "store warm", "store warm pad 50/96")
        }
        for vids, mids in batches:
            evict(official_files(root, vids, mids))
            results["official cold"].append(timed(1, official_batch, root, vids, mids))
            results["official warm"].append(timed(2, official_batch, root, vids, mids))
            evict(shard_files)
            results["store cold"].append(timed(1, store_batch, vids, mids, False))
            results["store warm"].append(timed(3, store_batch, vids, mids, False))
            results["store warm pad 50/96"].append(timed(3, store_batch, vids, mids, True))

        evict(shard_files)
        started = time.perf_counter()
        videos.load_into_memory()
        music.load_into_memory()
        load_s = time.perf_counter() - started
        results["store in RAM"] = [timed(3, store_batch, v, m, False) for v, m in batches]

        peaks = peaks.best(Peaks.measure())
        # Bytes of the median batch (batches differ only by their random lengths).
        read_official = statistics.median(sum(p.stat().st_size for p in official_files(root, v, m)) for v, m in batches)
        read_store = statistics.median(2 * sum(valid[i] for i in {*v, *m}) for v, m in batches)
        written = statistics.median(4 * sum(valid[i] for i in (*v, *m)) for v, m in batches)
        padded = 4 * args.batch * (50 * 512 + 96 * 768)
        moved = {"official cold": read_official, "official warm": read_official + written,
                 "store cold": read_store, "store warm": read_store + written,
                 "store warm pad 50/96": read_store + padded, "store in RAM": read_store + written}
        rates = {name: io_rate(statistics.median(values), moved[name], disk_gbs if "cold" in name else ram_gbs,
                               "cold file read" if "cold" in name else "memory copy (read + write)")
                 for name, values in results.items()}
        print(f"\nbatch of {args.batch} (video, music) pairs, median over {args.batches} random batches "
              f"(reads {read_official / 2**20:.1f} MiB official, {read_store / 2**20:.1f} MiB store; writes "
              f"{written / 2**20:.1f} MiB; gflop: n/a (I/O bound); x floor against {disk_gbs:.2f} GB/s cold, "
              f"{ram_gbs:.1f} GB/s memory copy):")
        for name, fields in rates.items():
            print(f"  {name:22s} {1000 * fields['seconds']:9.1f} ms   {fields['x_floor']:8.1f}x floor "
                  f"({fields['bandwidth']})")
        o_cold, o_warm = statistics.median(results["official cold"]), statistics.median(results["official warm"])
        s_cold, s_warm = statistics.median(results["store cold"]), statistics.median(results["store warm"])
        print(
            f"speed-up: cold {o_cold / s_cold:.1f}x, warm {o_warm / s_warm:.1f}x, "
            f"in RAM {o_warm / statistics.median(results['store in RAM']):.1f}x (vs official warm)"
        )
        print(f"load_into_memory (both modalities, from cold): {load_s:.1f} s")
        if args.json:
            emit({"videos": args.videos, "tracks": args.tracks, "batch": args.batch, "batches": args.batches,
                  "threads": args.threads, "peaks": peaks.to_dict(), "disk_read_gbs": round(disk_gbs, 3),
                  "memory_copy_gbs": round(ram_gbs, 2), "rates": rates,
                  "written_s": {"official": official_s, "store": store_s},
                  "bytes": {"official": official_bytes, "store": store_bytes}, "load_into_memory_s": load_s,
                  "load": load_average()})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
