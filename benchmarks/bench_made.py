"""MaDe speed on this CPU: evaluation of 512 pairs and one training step at batch 512.

Evaluation = encode 512 videos and 512 tracks, the 512 x 512 relevance matrix, 512 detections (one per aligned
pair), split as the paper's Table 8 (enhancement / matching / detection). Training = forward + backward + Adam
over the three official parameter groups. Both in float32 and under a bfloat16 autocast, for realistic sequence
lengths (drawn from the MGSV-EC test split: ~23 of 50 frames, ~56 of 96 segments) and for the worst case (all
valid). Also prints how far the bf16 results are from float32 on the realistic batch.

    nice .venv/bin/python benchmarks/bench_made.py              # everything (a few minutes)
    nice .venv/bin/python benchmarks/bench_made.py --skip-train
Timings are medians of wall-clock seconds; on a shared machine compare them only with runs taken under the same
load (the process CPU time is printed beside them for that reason).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import statistics
import time
from collections.abc import Callable
from importlib import resources

import torch

from mgsv.models import build_model, get_preset
from mgsv.training.losses import made_losses
from mgsv.training.recipe import param_groups, recipe_for

BATCH = 512


def real_lengths(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame and segment counts of `count` random test-split rows (1 fps frames, 2.5 s segment centres)."""
    table = resources.files("mgsv.resources").joinpath("mgsv_ec/test_data.csv")
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    frames, segments = [], []
    for i in pick:
        video = float(rows[i]["video_end"]) - float(rows[i]["video_start"])
        frames.append(min(50, math.floor(video) + 1))
        segments.append(min(96, math.floor(float(rows[i]["music_total_duration"]) / 2.5) + 1))
    return torch.tensor(frames), torch.tensor(segments)


def make_inputs(frames: torch.Tensor, segments: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.arange(50)[None] < frames[:, None]
    segment_mask = torch.arange(96)[None] < segments[:, None]
    return (torch.randn(len(frames), 50, 512, generator=g) * frame_mask[..., None], frame_mask,
            torch.randn(len(segments), 96, 768, generator=g) * segment_mask[..., None], segment_mask)


def precision(name: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def eval_once(model, inputs, dtype: str) -> dict[str, float]:
    """One evaluation pass, timed per Table 8 part (wall and CPU seconds)."""
    frames, frame_mask, segments, segment_mask = inputs
    times: dict[str, float] = {}
    with torch.inference_mode(), precision(dtype):
        video, wall_v, cpu_v = timed(lambda: model.encode_video(frames, frame_mask))
        music, wall_m, cpu_m = timed(lambda: model.encode_music(segments, segment_mask, matching_state=False))
        music, wall_s, cpu_s = timed(lambda: model.with_matching_state(music))
        _, wall_r, cpu_r = timed(lambda: model.relevance(video, music))
        _, wall_d, cpu_d = timed(lambda: model.detect(video, music))
    times["enhancement"], times["enhancement_cpu"] = wall_v + wall_m, cpu_v + cpu_m
    times["matching"], times["matching_cpu"] = wall_s + wall_r, cpu_s + cpu_r
    times["detection"], times["detection_cpu"] = wall_d, cpu_d
    times["total"] = times["enhancement"] + times["matching"] + times["detection"]
    times["total_cpu"] = times["enhancement_cpu"] + times["matching_cpu"] + times["detection_cpu"]
    return times


def train_once(model, optimiser, inputs, target, dtype: str) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with precision(dtype):
        losses = made_losses(model(*inputs), target)
    optimiser.zero_grad(set_to_none=True)
    losses["L_total"].backward()
    optimiser.step()
    return {"total": time.perf_counter() - wall, "total_cpu": time.process_time() - cpu}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def accuracy_of_bf16(model, inputs) -> str:
    frames, frame_mask, segments, segment_mask = inputs
    results = {}
    for dtype in ("fp32", "bf16"):
        with torch.inference_mode(), precision(dtype):
            video, music = model.encode_video(frames, frame_mask), model.encode_music(segments, segment_mask)
            results[dtype] = (model.relevance(video, music), model.detect(video, music).final_spans)
    (p32, s32), (p16, s16) = results["fp32"], results["bf16"]
    same_top1 = float((p32.argmax(1) == p16.argmax(1)).float().mean()) * 100
    diff = (p16 - p32).abs()
    return (f"bf16 vs fp32 (realistic batch, random weights): |p_s diff| max {float(diff.max()):.4f} mean "
            f"{float(diff.mean()):.5f} (p_s spread: std {float(p32.std()):.4f}), same top-1 track for {same_top1:.1f}% "
            f"of videos, max span diff {float((s16 - s32).abs().max()) * 240:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one warm-up)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frames, segments = real_lengths(BATCH, seed=0)
    cases = {
        f"realistic ({frames.float().mean():.1f}/50 frames, {segments.float().mean():.1f}/96 segments)":
            make_inputs(frames, segments),
        "worst case (50/50 frames, 96/96 segments)": make_inputs(torch.full((BATCH,), 50), torch.full((BATCH,), 96)),
    }
    print(f"MaDe (preset made, d=256), batch {BATCH}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.repeats} runs; wall seconds (process CPU seconds)")

    if not args.skip_eval:
        model = build_model("made").eval()
        print("\nEvaluation: 512 detections + 512 x 512 relevance")
        print(f"  {'case':58s} {'dtype':5s} {'enhancement':>14s} {'matching':>14s} {'detection':>14s} {'total':>14s}")
        for name, inputs in cases.items():
            for dtype in ("fp32", "bf16"):
                eval_once(model, inputs, dtype)
                t = median([eval_once(model, inputs, dtype) for _ in range(args.repeats)])
                cells = " ".join(f"{t[k]:6.3f} ({t[k + '_cpu']:5.2f})" for k in
                                 ("enhancement", "matching", "detection", "total"))
                print(f"  {name:58s} {dtype:5s} {cells}", flush=True)
        print("  " + accuracy_of_bf16(model, next(iter(cases.values()))))

    if not args.skip_train:
        print("\nTraining step: forward + backward + Adam (3 groups), batch 512")
        target = torch.rand(BATCH, 1, 2, generator=torch.Generator().manual_seed(1)) * 0.2 + 0.05
        preset = get_preset("made")
        for name, inputs in cases.items():
            for dtype in ("fp32", "bf16"):
                model = preset.build_model().train()
                optimiser = torch.optim.Adam(param_groups(model, recipe_for(preset.name)))
                train_once(model, optimiser, inputs, target, dtype)
                t = median([train_once(model, optimiser, inputs, target, dtype) for _ in range(args.repeats)])
                print(f"  {name:58s} {dtype:5s} {t['total']:7.2f} s ({t['total_cpu']:6.2f})", flush=True)


if __name__ == "__main__":
    main()
