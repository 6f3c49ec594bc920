"""MaDe learns the planted signal: after a short CPU training run, held-out grounding beats the start-zero
baseline and retrieval is far above chance (DESIGN §7). About 50 s on one core (measured: test mIoU 0.558 vs start-zero 0.372, R@1 100 %, MoR@1 65 %)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mgsv.data.dataset import PairDataset
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.evaluation.protocol import EvalOptions, evaluate
from mgsv.evaluation.scoring import baseline_scores
from mgsv.models.checkpoint import load_checkpoint
from mgsv.training.trainer import Trainer, TrainSettings

# Short tracks and videos keep the run small; 23 % of the moments start at 0 s as in MGSV-EC, so start-zero is a
# real bar (~0.37 mIoU here).
CONFIG = SyntheticConfig(num_tracks=40, num_train_videos=600, val_size=40, test_size=40, seed=5, max_track_s=60.0,
                         max_video_s=20.0)
# A small `made` with the paper's dropout (the official 0.8 / 0.3 are tuned for d = 256 and 100 epochs) and a
# learning rate that converges in ~500 steps; everything else is the preset's.
MODEL = {"dim": 64, "detr_ffn_dim": 128, "enhance_ffn_dim": 128, "enhance_dropout": 0.1, "xpool_dropout": 0.1}
EPOCHS = 14
RECIPE = {"epochs": EPOCHS, "min_epochs": EPOCHS, "batch_size": 16, "eval_batch_size": 64,
          "lr": {"enhancement": 1e-3, "matching": 1e-3, "detection": 1e-3}}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny matrices gain nothing from two, and on a busy machine two threads that wait for
    each other at every operator make a step ~10x slower (measured: 0.18 s vs 1.5-3 s per step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_made_learns_matching_and_detection(tmp_path: Path, one_thread: None) -> None:
    data = write_synthetic_dataset(tmp_path / "data", CONFIG)
    run = tmp_path / "run"
    Trainer(TrainSettings(preset="made", data_dir=data, out_dir=run, model_overrides=MODEL, recipe_overrides=RECIPE,
                          progress=False)).fit()

    model, _ = load_checkpoint(run / "checkpoints" / "best_miou")
    test = PairDataset.from_folder(data, "test")
    result = evaluate(model, test, EvalOptions(top_k=10))
    start_zero = baseline_scores(test.annotations, "start-zero").metrics["mIoU"]
    chance_r1 = 100 / CONFIG.test_size
    print(f"test mIoU {result.metrics['mIoU']:.3f} (start-zero {start_zero:.3f}), R@1 {result.metrics['R@1']:.1f}, "
          f"MoR@1 (IoU>0.5) {result.metrics['MoR@1 (IoU>0.5)']:.1f}")
    assert result.metrics["mIoU"] > start_zero + 0.05, (result.metrics["mIoU"], start_zero)
    assert result.metrics["R@1"] > 10 * chance_r1
    assert result.metrics["MoR@1 (IoU>0.5)"] > 0
    # MsG with detection on each query's top-10 tracks (the realistic protocol) gives what the official
    # ground-truth-pair shortcut gives, on a model whose rankings and moments are not trivial.
    realistic = {name: value for name, value in result.metrics.items() if name.endswith("[top-10 detection]")}
    assert len(realistic) >= 4
    for name, value in realistic.items():
        assert value == result.metrics[name.removesuffix(" [top-10 detection]")], name
    assert "equal to the official ground-truth-pair shortcut" in result.notes["MsG"]
