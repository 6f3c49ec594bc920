"""Full test-size evaluation: 2,000 queries x 2,000 tracks, V2MR over all 4M pairs and MsG with top-100 detection.

Builds a planted-signal dataset of the real test size (features of the real shapes: 512-d frames, 768-d windows,
realistic lengths) and evaluates a real-size `made` (random weights: the timing does not depend on them) with
`mgsv.evaluation.protocol.evaluate`, printing for each stage the wall time, the useful FLOPs (from the items' valid
lengths, as `bench_made` counts them), the matrix-product peak of this process in the precision used (measured
before and after, the higher kept) and how many times above that floor the time is, plus the peak memory (max RSS).

    nice .venv/bin/python benchmarks/bench_eval.py --precision bf16              # the test size, 2 threads
    nice .venv/bin/python benchmarks/bench_eval.py --precision both --queries 200 --json

`--queries N` makes the split N queries on N tracks (the music set), so top-100 detection runs N x 100 pairs.
`--data DIR` reuses (or writes once) the synthetic dataset folder, so that its generation, which allocates memory of
its own, does not count in the peak RSS. With `--precision both` it also prints how far bf16 is from float32 (p_s,
top-1 and top-100 agreement, moments on the ground-truth track).

Stage FLOPs: `encode videos` = video enhancement; `encode tracks` = music enhancement + X-Pool's per-track state;
`relevance` = S0 + X-Pool's per-pair sums for every (query, track); `detect (...)` = DETR encoder + decoder of each
pair. Stored lengths are taken as valid lengths (true for synthetic features).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _peak import Peaks, format_rate, load_average, rate
from bench_made import detection_flops, enhancement_flops, relevance_flops

from mgsv.data.dataset import PairDataset
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.evaluation.protocol import EvalOptions, EvalResult, evaluate
from mgsv.models.made import MaDeConfig
from mgsv.models.registry import build_model


def peak_rss_gb() -> float:
    """Max resident set size of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def dataset_folder(data: Path | None, queries: int, tmp: str) -> Path:
    """The synthetic test-size dataset: `data` if it holds one for `queries`, else written there (or in tmp)."""
    folder = data or Path(tmp) / "data"
    if (folder / "test_data.csv").is_file():
        return folder
    started = time.perf_counter()
    config = SyntheticConfig(num_tracks=queries, num_train_videos=1, val_size=1, test_size=queries)
    write_synthetic_dataset(folder, config)
    print(f"dataset: {queries} queries x {queries} tracks written in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return folder


def stage_flops(config: MaDeConfig, dataset: PairDataset, result: EvalResult) -> dict[str, float]:
    """Useful FLOPs of each progress stage of `evaluate` (see the module docstring)."""
    frames = torch.from_numpy(dataset.videos.lengths(dataset.video_ids))
    segments = torch.from_numpy(dataset.music.lengths(result.music_ids))
    tracks_flops = enhancement_flops(config, segments, config.music_dim) + relevance_flops(config, 0, segments)
    flops = {
        "encode videos": enhancement_flops(config, frames, config.video_dim),
        "encode tracks": tracks_flops,
        "relevance": relevance_flops(config, len(frames), segments) - relevance_flops(config, 0, segments),
        "detect (GT track)": detection_flops(config, frames, segments[torch.from_numpy(result.gt_column)]),
    }
    if result.top_columns is not None:
        k = result.top_columns.shape[1]
        flops[f"detect (top-{k})"] = detection_flops(
            config, frames.repeat_interleave(k), segments[torch.from_numpy(result.top_columns.reshape(-1))])
    return flops


def run(model: torch.nn.Module, dataset: PairDataset, precision: str, args: argparse.Namespace
        ) -> tuple[EvalResult, dict[str, float], float]:
    """One evaluation: the result, wall seconds per progress stage and in total."""
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now

    options = EvalOptions(top_k=args.top_k, precision=precision, batch_size=256,
                          detect_batch_size=args.detect_batch_size)
    begin = time.perf_counter()
    result = evaluate(model, dataset, options, progress)
    return result, stages, time.perf_counter() - begin


def agreement(fp32: EvalResult, bf16: EvalResult) -> dict[str, float]:
    """bf16 vs fp32 on the same split: p_s, rankings and the moments on the ground-truth track."""
    diff = np.abs(bf16.scores - fp32.scores)
    out = {"p_s_max_diff": float(diff.max()), "p_s_mean_diff": float(diff.mean()), "p_s_std": float(fp32.scores.std()),
           "top1_agreement_pct": float((fp32.scores.argmax(1) == bf16.scores.argmax(1)).mean() * 100),
           "gt_rank_equal_pct": float((fp32.gt_rank0 == bf16.gt_rank0).mean() * 100),
           "smg_moment_max_diff_s": float(np.abs(bf16.smg_moments - fp32.smg_moments).max())}
    if fp32.top_columns is not None:
        same = [len(set(a) & set(b)) / len(a) for a, b in zip(fp32.top_columns, bf16.top_columns)]
        out["top_k_overlap_pct"] = float(np.mean(same) * 100)
    out["metrics_max_diff"] = max(abs(fp32.metrics[k] - bf16.metrics[k]) for k in fp32.metrics)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000, help="queries = tracks of the split (real: 2,000)")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--precision", choices=["bf16", "fp32", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detect-batch-size", type=int, default=EvalOptions.detect_batch_size)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder to reuse (written there if absent)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write a temporary dataset")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = sys.stderr if args.json else sys.stdout
    peaks = Peaks.measure()

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        dataset = PairDataset.from_folder(dataset_folder(args.data, args.queries, tmp), "test")
        dataset.videos.load_into_memory()
        dataset.music.load_into_memory()
        torch.manual_seed(0)
        model = build_model("made").eval()
        print(f"{len(dataset)} queries, torch {torch.__version__}, {args.threads} threads, top-{args.top_k} "
              f"detection, detect batch {args.detect_batch_size}; {peaks.describe()}; after loading features and "
              f"model: peak RSS {peak_rss_gb():.2f} GB", file=log, flush=True)
        runs, results = [], {}
        for precision in (["bf16", "fp32"] if args.precision == "both" else [args.precision]):
            result, stages, total = run(model, dataset, precision, args)
            results[precision] = result
            runs.append({"precision": precision, "stages": stages, "total": total,
                         "flops": stage_flops(model.config, dataset, result), "peak_rss_gb": round(peak_rss_gb(), 3),
                         "load": load_average(), "metrics": {"mIoU": result.metrics["mIoU"],
                                                             "R@1": result.metrics["R@1"]},
                         "msg_note": result.notes.get("MsG", "")})
            print(f"  {precision}: {total:.1f} s (load {load_average()})", file=log, flush=True)

    peaks = peaks.best(Peaks.measure())
    for r in runs:
        peak = peaks.of(r["precision"])
        r["rates"] = {stage: rate(seconds, r["flops"].get(stage, 0.0), peak) for stage, seconds in r["stages"].items()}
        v2mr = [s for s in r["stages"] if not s.startswith("detect")]
        r["rates"]["V2MR"] = rate(sum(r["stages"][s] for s in v2mr), sum(r["flops"][s] for s in v2mr), peak)
        r["rates"]["total"] = rate(r["total"], sum(r["flops"].values()), peak)
    agree = agreement(results["fp32"], results["bf16"]) if len(results) == 2 else None
    if args.json:
        report = {"queries": len(dataset), "top_k": args.top_k, "threads": args.threads, "torch": torch.__version__,
                  "detect_batch_size": args.detect_batch_size, "peaks": peaks.to_dict(), "runs": runs}
        if agree:
            report["bf16_agreement"] = agree
        print(json.dumps(report, indent=2))
        return
    print(f"\n{peaks.describe()} (best of before / after); x floor = seconds / (useful FLOPs / peak)")
    for r in runs:
        print(f"\n{r['precision']}, {args.threads} threads, {len(dataset)} queries x {len(dataset)} tracks, "
              f"top-{args.top_k} detection (load {r['load']}):")
        for stage, fields in r["rates"].items():
            print(f"  {stage:<24} {format_rate(fields, 8)}")
        print(f"  peak RSS {r['peak_rss_gb']:.2f} GB; (random weights) mIoU {r['metrics']['mIoU']:.3f}  "
              f"R@1 {r['metrics']['R@1']:.2f}  {r['msg_note']}")
    if agree:
        print(f"\nbf16 vs fp32 (random weights): |p_s diff| max {agree['p_s_max_diff']:.4f} mean "
              f"{agree['p_s_mean_diff']:.5f} (p_s std {agree['p_s_std']:.4f}); same top-1 track "
              f"{agree['top1_agreement_pct']:.1f}%, same GT rank {agree['gt_rank_equal_pct']:.1f}%, top-{args.top_k} "
              f"overlap {agree.get('top_k_overlap_pct', float('nan')):.1f}%; SmG moment max diff "
              f"{agree['smg_moment_max_diff_s']:.3f} s; largest metric difference {agree['metrics_max_diff']:.3f}")


if __name__ == "__main__":
    main()
