"""Every system of the MGSV paper's Table 4 on the planted-signal benchmark: same data, same budget, several seeds.

    python benchmarks/bench_models.py --out bench-models            # the full comparison (about an hour on 2 cores)
    python benchmarks/bench_models.py --out /tmp/b --quick          # a 2-minute smoke version of the same pipeline

Each preset is trained with the project's trainer (the code behind `mgsv train`) at a uniform reduced width (d 64,
FFN 256, 4 heads for every model), the same batch size, number of epochs and learning rate (3e-4, warmup-cosine),
then its selected checkpoint (best val MoR@1, or best val mIoU / R@1 for grounding- / retrieval-only models: the
`mgsv eval` default) is evaluated on the test split with MsG detection on each query's top-100 tracks. The composite
MVPt+/UVCOM+ combines the mvpt+ and uvcom+ runs of the same seed. Prints a table of mean +- std over the seeds (n/a
where a model cannot produce a metric) and writes results.json. Finished runs are reused when the command is run
again with the same --out (delete the folder to start over).

Speed is not what this compares: each run's train and eval seconds are printed with the matrix-product peaks of
this process (also in results.json and `--json`, which prints the results object on stdout and the log on stderr),
but no useful FLOPs are counted for these runs (twelve architectures at a reduced width: `gflop: not counted`, no
floor). bench_made.py counts MaDe's training step and evaluation at real size.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _peak import Peaks, load_average
from _report import emit, json_mode

from mgsv.data.annotations import load_annotations
from mgsv.data.dataset import PairDataset
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.evaluation import metrics as M
from mgsv.evaluation.protocol import EvalOptions, evaluate
from mgsv.evaluation.runner import resolve_target
from mgsv.evaluation.scoring import baseline_scores
from mgsv.features.store import FeatureStore
from mgsv.models.baselines.composite import load_composite
from mgsv.models.checkpoint import load_checkpoint
from mgsv.models.registry import get_preset
from mgsv.training.trainer import Trainer, TrainSettings

SYSTEMS = ("moment-detr", "qd-detr", "qd-detr+", "tr-detr", "tr-detr+", "eatr", "uvcom", "uvcom+", "mvpt", "mvpt+",
           "conquer", "made")
COMPOSITE = ("mvpt+", "uvcom+")
COLUMNS = ("mIoU", M.recall_name(1), M.recall_name(5), M.recall_name(10),
           M.mor_name(1, 0.7), M.mor_name(10, 0.7), M.mor_name(100, 0.7))


def width_overrides(preset: str, dim: int, ffn: int, heads: int) -> dict[str, Any]:
    """The same reduced width for every model, expressed in each config's own field names."""
    fields = set(get_preset(preset).config_class.field_names())
    if "detr_ffn_dim" in fields:  # MaDe
        return {"dim": dim, "enhance_ffn_dim": ffn, "detr_ffn_dim": ffn, "enhance_heads": heads,
                "detr_heads": heads, "contrastive_dim": dim}
    overrides = {"dim": dim, "ffn_dim": ffn, "heads": heads}
    if "conv_channels" in fields:  # CONQUER's ConvSE head: 128 channels at width 768, scaled down alike
        overrides["conv_channels"] = max(8, 128 * dim // 768)
    return overrides


def train_and_test(preset: str, seed: int, data: Path, runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one preset with one seed (or reuse a finished run) and return its test metrics."""
    out = runs / f"{preset}-seed{seed}"
    done = out / "bench-metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    if out.exists() and not (out / "checkpoints" / "last").is_dir():
        shutil.rmtree(out)  # a run interrupted in its first epoch: nothing to resume
    started = time.perf_counter()
    recipe = {"epochs": args.epochs, "batch_size": args.batch_size, "min_epochs": args.epochs, "patience": args.epochs,
              "eval_batch_size": 256, "seed": seed, "warmup_rate": 0.05,
              "lr": {"enhancement": args.lr, "matching": args.lr, "detection": args.lr}}
    settings = TrainSettings(preset=preset, data_dir=data, out_dir=out, progress=False,
                             model_overrides=width_overrides(preset, args.dim, args.ffn, args.heads),
                             recipe_overrides=recipe, precision=args.precision, device="cpu", resume=out.exists())
    Trainer(settings).fit()
    train_s = time.perf_counter() - started
    target = resolve_target(out, None, None)
    model, _ = load_checkpoint(target.checkpoint)
    result = test_metrics(model, data, args)
    record = {"preset": preset, "seed": seed, "checkpoint": target.checkpoint.name, "metrics": result,
              "train_seconds": round(train_s, 1), "eval_seconds": round(time.perf_counter() - started - train_s, 1)}
    done.write_text(json.dumps(record, indent=2) + "\n")
    return record


def test_metrics(model: torch.nn.Module, data: Path, args: argparse.Namespace) -> dict[str, float]:
    """Test-split metrics with realistic MsG (detection on each query's top-k tracks) when the model can do it."""
    dataset = PairDataset.from_folder(data, "test", FeatureStore(data / "features"))
    result = evaluate(model, dataset, EvalOptions(batch_size=256, top_k=None, precision=args.precision))
    return result.metrics


def composite_metrics(seed: int, data: Path, runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MVPt+ ranks, UVCOM+ grounds: both trained runs of this seed, evaluated together."""
    ranker, grounder = (resolve_target(runs / f"{p}-seed{seed}", None, None).checkpoint for p in COMPOSITE)
    model, _ = load_composite(ranker, grounder)
    return {"preset": "/".join(COMPOSITE), "seed": seed, "metrics": test_metrics(model, data, args)}


def msg_value(metrics: dict[str, float], name: str) -> float | None:
    """MoR@k from the realistic top-k detection when computed, else the official shortcut, else None."""
    for key in (f"{name} [top-100 detection]", name):
        if key in metrics:
            return metrics[key]
    return None


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Mean and std over seeds of every column, per system (None when the system cannot produce it)."""
    table: dict[str, dict[str, tuple[float, float] | None]] = {}
    for system in [*SYSTEMS, "/".join(COMPOSITE)]:
        rows = [r["metrics"] for r in records if r["preset"] == system]
        if not rows:
            continue
        table[system] = {}
        for column in COLUMNS:
            values = [msg_value(m, column) if column.startswith("MoR") else m.get(column) for m in rows]
            values = [v for v in values if v is not None]
            table[system][column] = (float(np.mean(values)), float(np.std(values))) if values else None
    return table


def start_zero_miou(data: Path) -> float:
    """SmG mIoU of the trivial [0, video duration] moment on the test split: the bar grounding must clear."""
    annotations = load_annotations(data / "test_data.csv")
    return baseline_scores(annotations, "start-zero").metrics["mIoU"]


def print_table(table: dict[str, dict[str, tuple[float, float] | None]], seeds: int) -> None:
    """A Markdown table (mIoU as a fraction, R@k and MoR@k at IoU > 0.7 in percent)."""
    header = ["system", *(c.replace(" (IoU>0.7)", "") for c in COLUMNS)]
    print(f"\nTest split, mean +- std over {seeds} seed(s); MoR@k at IoU > 0.7 with detection on the top-100 tracks")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for system, values in table.items():
        cells = []
        for column in COLUMNS:
            value = values[column]
            if value is None:
                cells.append("n/a")
            elif column == "mIoU":
                cells.append(f"{value[0]:.3f} +- {value[1]:.3f}")
            else:
                cells.append(f"{value[0]:.1f} +- {value[1]:.1f}")
        print(f"| {system} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for the dataset, the runs and results.json.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--tracks", type=int, default=100)
    parser.add_argument("--train-videos", type=int, default=1400)
    parser.add_argument("--eval-videos", type=int, default=100, help="val and test queries (one per track)")
    parser.add_argument("--max-track-s", type=float, default=120.0, help="longest synthetic track (<= 240 s)")
    parser.add_argument("--max-video-s", type=float, default=30.0, help="longest synthetic query video (<= 50 s)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ffn", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is several times faster than 2 when other work shares the cores")
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 epochs, 1 seed: checks the pipeline")
    parser.add_argument("--json", action="store_true", help="print the results object on stdout (logs on stderr)")
    args = parser.parse_args()
    with json_mode(args.json):
        results = run(args)
    if args.json:
        emit(results)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and test every system and seed; print and write the table; return what results.json holds."""
    if args.quick:
        args.seeds, args.tracks, args.train_videos, args.eval_videos, args.epochs = [0], 24, 96, 24, 1
        args.max_track_s, args.max_video_s = 60.0, 20.0
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    peaks = Peaks.measure()
    print(f"{peaks.describe()}; load {load_average()}; gflop: not counted (see the module docstring)", flush=True)

    data = args.out / "data"
    config = SyntheticConfig(num_tracks=args.tracks, num_train_videos=args.train_videos, val_size=args.eval_videos,
                             test_size=args.eval_videos, max_track_s=args.max_track_s, max_video_s=args.max_video_s,
                             seed=0)
    if not (data / "test_data.csv").is_file():
        write_synthetic_dataset(data, config)
    runs = args.out / "runs"
    records = []
    for seed in args.seeds:
        for system in args.systems:
            record = train_and_test(system, seed, data, runs, args)
            records.append(record)
            metrics = record["metrics"]
            print(f"{system:12s} seed {seed}: mIoU {metrics.get('mIoU', math.nan):.3f}  "
                  f"R@1 {metrics.get('R@1', math.nan):5.1f}  train {record['train_seconds']:.0f} s  "
                  f"eval {record['eval_seconds']:.0f} s (gflop: not counted)", flush=True)
        if all(p in args.systems for p in COMPOSITE):
            records.append(composite_metrics(seed, data, runs, args))
    table = summarize(records)
    reference = start_zero_miou(data)
    table["start-zero (reference)"] = {c: ((reference, 0.0) if c == "mIoU" else None) for c in COLUMNS}
    budget = {"train_pairs": args.train_videos, "tracks": args.tracks, "test_queries": args.eval_videos,
              "max_track_s": args.max_track_s, "max_video_s": args.max_video_s,
              "epochs": args.epochs, "batch_size": args.batch_size, "steps": args.epochs * (args.train_videos //
                                                                                          args.batch_size),
              "lr": args.lr, "dim": args.dim, "ffn": args.ffn, "heads": args.heads, "precision": args.precision,
              "seeds": args.seeds, "torch_threads": torch.get_num_threads()}
    peaks = peaks.best(Peaks.measure())
    results = {"budget": budget, "runs": records, "table": table, "peaks": peaks.to_dict(), "load": load_average(),
               "gflop": "not counted"}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(table, len(args.seeds))
    print(f"\n{peaks.describe()} (best of before / after)")
    print(f"budget: {json.dumps(budget)}\nresults: {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
