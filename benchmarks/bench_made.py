"""MaDe speed against this machine's own limit: evaluation of 512 pairs and the trainer's training step.

Evaluation = encode 512 videos and 512 tracks, the 512 x 512 relevance matrix (p_s) and 512 detections (one per
aligned pair), split as the paper's Table 8 (enhancement / relevance / detection). Training step = what
`mgsv.training.trainer` runs per batch: forward and losses under the trainer's autocast, the finite-loss check, then
`mgsv.training.step.apply_gradients` (backward, per-group clipping, Adam over the three official groups, the
warmup-cosine schedule step), at batch 128 and 512. Sequence lengths are those of random MGSV-EC test rows
(~23 of 50 frames, ~56 of 96 segments); `--worst-case` adds all-valid batches.

Beside every time it prints the useful FLOPs (counted from the lengths, `made_flops`), the matrix-product peak of
this process in the precision used (measured before and after the work, the higher kept) and how many times above
that floor the time is: the ratio, unlike the seconds, can be compared across machines and loads. Also prints how
far bf16 results are from float32 on the realistic batch (|p_s| difference, top-1 agreement, span difference).

    nice .venv/bin/python benchmarks/bench_made.py                   # everything (a few minutes)
    nice .venv/bin/python benchmarks/bench_made.py --skip-train --json
    .venv/bin/python benchmarks/bench_made.py --device cuda --precision bf16    # a GPU (benchmarks/gpu_check.sh)
Timings are medians of wall-clock seconds (process CPU seconds beside them); the 1-minute load average is printed
with each row, since other jobs on a shared machine slow it down. With `--device cuda` every timed part ends with a
synchronisation (the GPU runs asynchronously) and the peaks are the GPU's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from importlib import resources

import torch
from _peak import Peaks, format_rate, load_average, rate, synchronize

from mgsv.devices import device_name
from mgsv.inference.batched import autocast
from mgsv.models import get_preset
from mgsv.models.made import MaDeConfig
from mgsv.training.losses import LossWeights, made_losses
from mgsv.training.recipe import param_groups, recipe_for
from mgsv.training.schedule import warmup_cosine
from mgsv.training.step import apply_gradients, build_optimizer

EVAL_PAIRS = 512
TRAIN_BATCHES = (128, 512)
MAX_FRAMES, MAX_SEGMENTS = 50, 96


def real_lengths(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame and segment counts of `count` random test-split rows (1 fps frames, 2.5 s segment centres)."""
    table = resources.files("mgsv.resources").joinpath("mgsv_ec/test_data.csv")
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    frames, segments = [], []
    for i in pick:
        video = float(rows[i]["video_end"]) - float(rows[i]["video_start"])
        frames.append(min(MAX_FRAMES, math.floor(video) + 1))
        segments.append(min(MAX_SEGMENTS, math.floor(float(rows[i]["music_total_duration"]) / 2.5) + 1))
    return torch.tensor(frames), torch.tensor(segments)


def make_inputs(frames: torch.Tensor, segments: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random features padded to the official 50 frames / 96 segments, zero at padding, with their masks."""
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.arange(MAX_FRAMES)[None] < frames[:, None]
    segment_mask = torch.arange(MAX_SEGMENTS)[None] < segments[:, None]
    return (torch.randn(len(frames), MAX_FRAMES, 512, generator=g) * frame_mask[..., None], frame_mask,
            torch.randn(len(segments), MAX_SEGMENTS, 768, generator=g) * segment_mask[..., None], segment_mask)


# ----------------------------------------------------------------------------------------------------------------
# Useful FLOPs: multiply-adds x 2 of every matrix product over valid tokens only (padding never counts), in the
# cheapest exact form the model computes (X-Pool folded at inference, the decoder's cross-attention folded).


def _transformer_layer(tokens: float, squares: float, d: int, ffn: int) -> float:
    """One attention block + FFN over `tokens` valid tokens whose per-item lengths squared sum to `squares`."""
    return 8 * tokens * d * d + 4 * squares * d + 4 * tokens * d * ffn


def enhancement_flops(config: MaDeConfig, lengths: torch.Tensor, input_dim: int) -> float:
    """Projection, enhancement layer(s) and final linear of one modality."""
    tokens, squares, d = float(lengths.sum()), float((lengths.double() ** 2).sum()), config.dim
    layers = config.enhance_layers * _transformer_layer(tokens, squares, d, config.enhance_ffn_dim)
    return 2 * tokens * input_dim * d + layers + 2 * tokens * d * d


def relevance_flops(config: MaDeConfig, videos: int, segments: torch.Tensor) -> float:
    """p_s of every (video, track) pair: S0, X-Pool's per-track state and its per-pair sums (`XPool.similarity`)."""
    d, lengths = config.dim, segments.double()
    per_track = float((2 * lengths * d * (3 * d + 5) + 6 * lengths**2 * d).sum())
    per_pair = float((2 * lengths * (2 * d + 3 * lengths + 8)).sum()) * videos
    return 2 * videos * len(segments) * d + per_track + per_pair


def detection_flops(config: MaDeConfig, frames: torch.Tensor, segments: torch.Tensor) -> float:
    """DETR encoder over each pair's valid frames + segments, the one-query decoder (cross-attention folded)."""
    d, ffn, heads = config.dim, config.detr_ffn_dim, config.detr_heads
    tokens = (frames + segments).double()
    encoder = config.encoder_layers * _transformer_layer(float(tokens.sum()), float((tokens**2).sum()), d, ffn)
    per_layer = len(tokens) * (8 * d * d + 8 * d * d + 4 * d * ffn) + 4 * heads * d * float(tokens.sum())
    return encoder + config.decoder_layers * per_layer


def training_forward_flops(config: MaDeConfig, frames: torch.Tensor, segments: torch.Tensor) -> float:
    """The training forward: enhancement, X-Pool of all B x B pairs the official way, detection."""
    d, batch = config.dim, len(frames)
    xpool = (4 * float(segments.sum()) * d * d + 2 * batch * d * d  # keys + values per track, queries
             + batch * float(4 * segments.double().sum() * d)  # attention logits and pooling, every pair
             + 2 * batch * batch * d * d)  # linear_proj on every pair's pooled vector
    return (enhancement_flops(config, frames, config.video_dim) + enhancement_flops(config, segments, config.music_dim)
            + xpool + detection_flops(config, frames, segments))


def eval_flops(config: MaDeConfig, frames: torch.Tensor, segments: torch.Tensor) -> dict[str, float]:
    enhancement = (enhancement_flops(config, frames, config.video_dim)
                   + enhancement_flops(config, segments, config.music_dim))
    parts = {"enhancement": enhancement, "relevance": relevance_flops(config, len(frames), segments),
             "detection": detection_flops(config, frames, segments)}
    return {**parts, "total": sum(parts.values())}


# ----------------------------------------------------------------------------------------------------------------
# Timing


def timed(fn: Callable[[], object], device: str = "cpu") -> tuple[object, float, float]:
    """`fn()`, its wall and process CPU seconds; on a GPU the time covers the work `fn` queued (synchronised)."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def eval_once(model, inputs, precision: str, device: str = "cpu") -> dict[str, float]:
    """One evaluation pass, timed per Table 8 part (wall and CPU seconds)."""
    frames, frame_mask, segments, segment_mask = inputs
    times: dict[str, float] = {}
    with torch.inference_mode(), autocast(precision, device):
        video, wall_v, cpu_v = timed(lambda: model.encode_video(frames, frame_mask), device)
        music, wall_m, cpu_m = timed(lambda: model.encode_music(segments, segment_mask, matching_state=False), device)
        music, wall_s, cpu_s = timed(lambda: model.with_matching_state(music), device)
        _, wall_r, cpu_r = timed(lambda: model.relevance(video, music), device)
        _, wall_d, cpu_d = timed(lambda: model.detect(video, music), device)
    times["enhancement"], times["enhancement_cpu"] = wall_v + wall_m, cpu_v + cpu_m
    times["relevance"], times["relevance_cpu"] = wall_s + wall_r, cpu_s + cpu_r
    times["detection"], times["detection_cpu"] = wall_d, cpu_d
    times["total"] = times["enhancement"] + times["relevance"] + times["detection"]
    times["total_cpu"] = times["enhancement_cpu"] + times["relevance_cpu"] + times["detection_cpu"]
    return times


class TrainStep:
    """The trainer's iteration (`Trainer._train_epoch`) on a fixed batch, with the trainer's own functions."""

    def __init__(self, inputs: tuple[torch.Tensor, ...], precision: str, device: str = "cpu") -> None:
        preset = get_preset("made")
        recipe = recipe_for(preset.name)
        torch.manual_seed(0)
        self.model = preset.build_model().train().to(device)
        self.device = device
        self.optimizer = build_optimizer(param_groups(self.model, recipe), recipe)
        self.scheduler = warmup_cosine(self.optimizer, total_steps=10_000, warmup_rate=recipe.warmup_rate)
        self.weights = LossWeights.from_mapping(recipe.loss_weights)
        self.clip = recipe.grad_clip_norm
        self.inputs, self.precision = inputs, precision
        g = torch.Generator().manual_seed(1)
        self.target = (torch.rand(len(inputs[0]), 1, 2, generator=g) * 0.2 + 0.05).to(device)

    def __call__(self) -> dict[str, float]:
        synchronize(self.device)
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast(self.precision, self.device):
            losses = made_losses(self.model(*self.inputs), self.target, self.weights)
        loss = losses["L_total"]
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is {loss.item()}")
        apply_gradients(loss, self.optimizer, self.scheduler, self.clip)
        synchronize(self.device)
        return {"total": time.perf_counter() - wall, "total_cpu": time.process_time() - cpu}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def bf16_agreement(model, inputs, device: str = "cpu") -> dict[str, float]:
    """bf16 vs fp32 on one batch: p_s difference, same top-1 track, span difference in seconds (240 s horizon)."""
    frames, frame_mask, segments, segment_mask = inputs
    results = {}
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), autocast(precision, device):
            video, music = model.encode_video(frames, frame_mask), model.encode_music(segments, segment_mask)
            results[precision] = (model.relevance(video, music), model.detect(video, music).final_spans)
    (p32, s32), (p16, s16) = results["fp32"], results["bf16"]
    diff = (p16 - p32).abs()
    return {"p_s_max_diff": float(diff.max()), "p_s_mean_diff": float(diff.mean()), "p_s_std": float(p32.std()),
            "top1_agreement_pct": float((p32.argmax(1) == p16.argmax(1)).float().mean()) * 100,
            "span_max_diff_s": float((s16 - s32).abs().max()) * 240}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one warm-up)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--train-batch", type=int, action="append", help=f"default: {TRAIN_BATCHES}")
    parser.add_argument("--worst-case", action="store_true", help="also time all-valid (50 / 96) batches")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA if available)")
    parser.add_argument("--eval-pairs", type=int, default=EVAL_PAIRS,
                        help="pairs of the evaluation (fewer for a quick check; the targets are for 512)")
    args = parser.parse_args()
    device = device_name(args.device)
    eval_pairs = args.eval_pairs
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    log = sys.stderr if args.json else sys.stdout
    config = get_preset("made").config()
    peaks = Peaks.measure(device=device)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{args.threads} threads"
    print(f"MaDe (preset made, d=256) on {device} ({where}), torch {torch.__version__}, median of {args.repeats} "
          f"runs; {peaks.describe()}; load {load_average()}", file=log, flush=True)

    cases = {}
    for batch in sorted({eval_pairs, *(args.train_batch or TRAIN_BATCHES)}):
        frames, segments = real_lengths(batch, seed=0)
        cases[("realistic", batch)] = (frames, segments)
        if args.worst_case:
            cases[("worst", batch)] = (torch.full((batch,), MAX_FRAMES), torch.full((batch,), MAX_SEGMENTS))
    runs: list[dict] = []

    if not args.skip_eval:
        model = get_preset("made").build_model().eval().to(device)
        print(f"\nEvaluation of {eval_pairs} pairs: {eval_pairs} detections + {eval_pairs} x {eval_pairs} relevance",
              file=log, flush=True)
        for (kind, batch), (frames, segments) in cases.items():
            if batch != eval_pairs:
                continue
            inputs = tuple(t.to(device) for t in make_inputs(frames, segments))
            flops = eval_flops(config, frames, segments)
            for precision in precisions:
                eval_once(model, inputs, precision, device)
                t = median([eval_once(model, inputs, precision, device) for _ in range(args.repeats)])
                runs.append({"work": "eval", "lengths": kind, "batch": batch, "precision": precision,
                             "frames_mean": float(frames.float().mean()),
                             "segments_mean": float(segments.float().mean()), "times": t, "flops": flops,
                             "load": load_average()})
                print(f"  {kind} {precision}: {t['total']:.3f} s (load {load_average()})", file=log, flush=True)
        agreement = bf16_agreement(model, tuple(t.to(device) for t in make_inputs(*cases[("realistic", eval_pairs)])),
                                   device)
        del model

    if not args.skip_train:
        print("\nTraining step (the trainer's: forward, losses, backward, per-group clip, Adam, schedule)",
              file=log, flush=True)
        for (kind, batch), (frames, segments) in cases.items():
            if batch not in (args.train_batch or TRAIN_BATCHES):
                continue
            inputs = tuple(t.to(device) for t in make_inputs(frames, segments))
            flops = 3 * training_forward_flops(config, frames, segments)
            for precision in precisions:
                step = TrainStep(inputs, precision, device)
                step()
                t = median([step() for _ in range(args.repeats)])
                runs.append({"work": "train", "lengths": kind, "batch": batch, "precision": precision,
                             "times": t, "flops": {"total": flops}, "load": load_average()})
                print(f"  batch {batch} {kind} {precision}: {t['total']:.3f} s (load {load_average()})", file=log,
                      flush=True)
                del step

    peaks = peaks.best(Peaks.measure(device=device))
    for run in runs:
        run["rates"] = {part: rate(run["times"][part], flops, peaks.of(run["precision"]))
                        for part, flops in run["flops"].items()}
    if args.json:
        report = {"device": device, "threads": args.threads, "torch": torch.__version__, "repeats": args.repeats,
                  "eval_pairs": eval_pairs,
                  "peaks": peaks.to_dict(), "runs": runs}
        if not args.skip_eval:
            report["bf16_agreement"] = agreement
        print(json.dumps(report, indent=2))
        return

    print(f"\n{peaks.describe()} (best of before / after); x floor = seconds / (useful FLOPs / peak)")
    print("Useful FLOPs: valid tokens only; training = 3 x its forward (backward ~ 2 x forward)")
    eval_runs = [r for r in runs if r["work"] == "eval"]
    if eval_runs:
        print(f"\nEvaluation of {eval_pairs} pairs; wall seconds (useful GFLOP, x above the floor), "
              "process CPU seconds in the last column")
        parts = ("enhancement", "relevance", "detection", "total")
        print(f"  {'lengths':9s} {'prec':4s} " + " ".join(f"{p:>36s}" for p in parts) + "   cpu   load")
        for r in eval_runs:
            cells = " ".join(format_rate(r["rates"][p], 6) for p in parts)
            print(f"  {r['lengths']:9s} {r['precision']:4s} {cells} {r['times']['total_cpu']:5.2f} {r['load']:>6s}")
        if eval_runs[0]["lengths"] == "realistic":
            print(f"  realistic lengths: {eval_runs[0]['frames_mean']:.1f}/50 frames, "
                  f"{eval_runs[0]['segments_mean']:.1f}/96 segments")
        a = agreement
        print(f"  bf16 vs fp32 (realistic batch, random weights): |p_s diff| max {a['p_s_max_diff']:.4f} mean "
              f"{a['p_s_mean_diff']:.5f} (p_s std {a['p_s_std']:.4f}), same top-1 track for "
              f"{a['top1_agreement_pct']:.1f}% of videos, max span diff {a['span_max_diff_s']:.3f} s")
    train_runs = [r for r in runs if r["work"] == "train"]
    if train_runs:
        print("\nTraining step; wall seconds (useful GFLOP, x above the floor), process CPU seconds")
        for r in train_runs:
            print(f"  batch {r['batch']:4d} {r['lengths']:9s} {r['precision']:4s} {format_rate(r['rates']['total'])} "
                  f"cpu {r['times']['total_cpu']:6.2f}  load {r['load']}")


if __name__ == "__main__":
    main()
