"""Full test-size evaluation: 2,000 queries x 2,000 tracks, V2MR over all 4M pairs and MsG with top-100 detection.

Builds a planted-signal dataset of the real test size (features of the real shapes: 512-d frames, 768-d windows,
realistic lengths) and evaluates a real-size `made` (random weights: the timing does not depend on them) with
`mgsv.evaluation.protocol.evaluate`, printing the wall time of each stage and the peak memory (max RSS).

    python benchmarks/bench_eval.py                      # bf16 and fp32, 2 threads
    python benchmarks/bench_eval.py --precision bf16 --queries 500

Targets on a 2-core CPU: peak memory < 4 GB; V2MR scoring of all 4M pairs < 60 s; MsG with top-100 detection
< 10 min in bf16.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from mgsv.data.dataset import PairDataset
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.evaluation.protocol import EvalOptions, evaluate
from mgsv.models.registry import build_model


def peak_rss_gb() -> float:
    """Max resident set size of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000, help="queries = tracks of the split (real: 2,000)")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--precision", choices=["bf16", "fp32", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the synthetic dataset")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        started = time.perf_counter()
        config = SyntheticConfig(num_tracks=args.queries, num_train_videos=1, val_size=1, test_size=args.queries)
        data = write_synthetic_dataset(Path(tmp) / "data", config)
        print(f"dataset: {args.queries} queries x {args.queries} tracks written in {time.perf_counter() - started:.1f} s")
        dataset = PairDataset.from_folder(data, "test")
        dataset.videos.load_into_memory()
        dataset.music.load_into_memory()
        torch.manual_seed(0)
        model = build_model("made").eval()
        print(f"after loading features and model: peak RSS {peak_rss_gb():.2f} GB")
        for precision in (["bf16", "fp32"] if args.precision == "both" else [args.precision]):
            stages: dict[str, float] = {}
            last = [time.perf_counter()]

            def progress(stage: str, done: int, total: int, stages: dict = stages, last: list = last) -> None:
                now = time.perf_counter()
                stages[stage] = stages.get(stage, 0.0) + now - last[0]
                last[0] = now

            options = EvalOptions(top_k=args.top_k, precision=precision, batch_size=256, detect_batch_size=512)
            begin = time.perf_counter()
            result = evaluate(model, dataset, options, progress)
            total = time.perf_counter() - begin
            v2mr = sum(v for k, v in stages.items() if k in ("encode videos", "encode tracks", "relevance"))
            print(f"\n{precision}, {args.threads} threads, top-{args.top_k} detection:")
            for stage, seconds in stages.items():
                print(f"  {stage:<24} {seconds:8.1f} s")
            print(f"  V2MR (encode + all {args.queries * args.queries / 1e6:.1f}M pairs) {v2mr:8.1f} s")
            print(f"  total                    {total:8.1f} s   peak RSS {peak_rss_gb():.2f} GB")
            print(f"  (random weights) mIoU {result.metrics['mIoU']:.3f}  R@1 {result.metrics['R@1']:.2f}  "
                  f"{result.notes['MsG']}")


if __name__ == "__main__":
    main()
