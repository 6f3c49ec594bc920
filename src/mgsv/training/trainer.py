"""Training a preset on a dataset folder, with the official recipe and what users expect around it.

The loop is the official one: Adam over the preset's parameter groups (no weight decay), per-group gradient clipping,
a warmup-cosine schedule stepped every iteration, batches shuffled like DistributedSampler(seed=0) with
drop_last, a full validation after every epoch, checkpoints kept for the best val R@1, mIoU and MoR@1, and early
stopping (not before `min_epochs`, then after `patience` epochs without a new best).

Around it: resume from the last epoch (`resume=True`), bf16 autocast (`precision="bf16"`), `torchrun` DDP
(`distributed`: each rank trains on its share of every batch; validation is sharded and gathered, so metrics cover
the whole split), rich progress bars, the run folder (`run_folder`: run.json, log.csv, checkpoints, trainer state;
+ TensorBoard when installed) and `curves.png` (`plots`, redrawn every `plot_every` epochs: a drawing costs ~0.5 s,
which matters for runs whose epochs take seconds). The recipe of each preset is `recipe.recipe_for`, its loss
`objectives.objective_for`. docs/official-code.md ("Training") lists the official settings this loop follows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgsv import __version__
from mgsv.data.dataset import PairDataset
from mgsv.data.device_batches import device_batches
from mgsv.devices import device_name, synchronize
from mgsv.errors import InputError, MgsvError
from mgsv.evaluation import metrics as M
from mgsv.evaluation.protocol import EvalOptions, check_capabilities, collect_outputs, score_outputs
from mgsv.features.store import FeatureStore
from mgsv.inference.batched import autocast
from mgsv.models.checkpoint import read_checkpoint_info, save_checkpoint
from mgsv.models.registry import Preset, get_preset
from mgsv.training import run_folder
from mgsv.training.distributed import gather, init_distributed, rank_device
from mgsv.training.objectives import objective_for
from mgsv.training.overrides import apply_recipe_overrides
from mgsv.training.plots import plot_curves
from mgsv.training.recipe import TrainingRecipe, param_groups, recipe_for
from mgsv.training.schedule import warmup_cosine
from mgsv.training.step import apply_gradients, build_optimizer

log = logging.getLogger(__name__)

# Checkpoints kept by val metric: (folder, metric, compare). The official code saves best_r1 (>=), best_iou (>=),
# best_r1iou05 (>) and best_r1iou07 (>=); a tie at ">=" replaces the older checkpoint, as there.
SELECTION = (
    ("best_r1", M.recall_name(1), "ge"),
    ("best_miou", "mIoU", "ge"),
    ("best_mor1_iou05", M.mor_name(1, 0.5), "gt"),
    ("best_mor1_iou07", M.mor_name(1, 0.7), "ge"),
)
# Early stopping watches these (docs/official-code.md, "Training"); a metric counts as improved only when strictly
# better.
LOGGED_LOSSES = ("L_total", "L_ret", "L_loc", "loss_span", "loss_giou", "loss_label")  # per epoch in log.csv
EARLY_STOP_METRICS = (M.recall_name(1), M.recall_name(5), "mIoU", M.mor_name(1, 0.5), M.mor_name(1, 0.7))


@dataclass
class TrainSettings:
    """Everything a training run needs besides the preset's own config and recipe."""

    preset: str
    data_dir: Path
    out_dir: Path
    model_overrides: dict[str, Any] = field(default_factory=dict)
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    device: str = "auto"  # "auto": cuda if available, else cpu
    resume: bool = False
    train_fraction: float = 1.0  # the paper's Fig. 5: train on a random fraction of the train split
    eval_top_k: int = 0  # per-epoch validation: 0 = MsG by the official GT-pair shortcut
    progress: bool = True
    plot_every: int = 1  # redraw curves.png after every N-th epoch and after fit()'s last one (0: only the last)


@dataclass
class TrainState:
    """What resuming needs besides the weights."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best: dict[str, float] = field(default_factory=dict)  # best value per tracked metric
    last_improved_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


# ----------------------------------------------------------------------------------------------------------------
# Set-up


def seed_everything(seed: int) -> None:
    """The official seeding: python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subsample(dataset: PairDataset, fraction: float, seed: int) -> PairDataset:
    """A random `fraction` of the pairs (deterministic for a seed), for training-size experiments."""
    if not 0 < fraction <= 1:
        raise MgsvError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return dataset
    keep = max(1, round(fraction * len(dataset)))
    rows = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:keep])
    store_like = _StoreView(dataset)
    return PairDataset(dataset.annotations.iloc[rows], store_like, where="train subset")


class _StoreView:
    """The two tables of a dataset, presented as a store (so a subset reuses the loaded features)."""

    def __init__(self, dataset: PairDataset) -> None:
        self._tables = {"video": dataset.videos, "music": dataset.music}
        self.root = "the dataset's feature store"

    def modality(self, name: str) -> Any:
        return self._tables[name]


def run_description(settings: TrainSettings, preset: Preset, config: Any, recipe: TrainingRecipe,
                    store: FeatureStore) -> dict[str, Any]:
    """The identity of a run (run.json): resuming must see the same values."""
    return {
        "mgsv_version": __version__,
        "preset": preset.name,
        "model_config": config.to_dict(),
        "recipe": recipe.to_dict(),
        "data_dir": str(Path(settings.data_dir).resolve()),
        "feature_specs": {name: spec.to_dict() for name, spec in store.specs.items()},
        "precision": settings.precision,
        "train_fraction": settings.train_fraction,
        "eval_top_k": settings.eval_top_k,
    }


# ----------------------------------------------------------------------------------------------------------------
# The run


class Trainer:
    """One training run; `fit()` trains, validates, checkpoints and logs until the schedule ends or stops early."""

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings
        if isinstance(settings.plot_every, bool) or not isinstance(settings.plot_every, int) or settings.plot_every < 0:
            raise MgsvError(f"plot_every must be an integer >= 0 (0: draw curves.png only at the end), "
                            f"got {settings.plot_every!r}")
        self.preset = get_preset(settings.preset)
        device = device_name(settings.device)  # "auto" resolved, a device this machine lacks refused, first
        self.dist = init_distributed(device)
        self.device = rank_device(device, self.dist)
        self.config = self.preset.config(**settings.model_overrides)
        self.recipe = apply_recipe_overrides(recipe_for(self.preset.name), settings.recipe_overrides)
        with torch.device("meta"):  # refuse top-k validation of a model that cannot do it before anything is written
            check_capabilities(self.preset.build_model(self.config), settings.eval_top_k)
        self.out = Path(settings.out_dir)

        store = FeatureStore(Path(settings.data_dir) / "features")
        self._check_specs(store)
        self.train_data = subsample(PairDataset.from_folder(settings.data_dir, "train", store),
                                    settings.train_fraction, self.recipe.seed)
        self.val_data = PairDataset.from_folder(settings.data_dir, "val", store)
        self.feature_specs = store.specs
        self.per_rank_batch = self.recipe.batch_size // self.dist.world_size
        if self.per_rank_batch < 2:
            raise MgsvError(f"batch size {self.recipe.batch_size} is too small for {self.dist.world_size} processes")
        self.steps_per_epoch = self.train_data.num_batches(self.per_rank_batch, world_size=self.dist.world_size)
        if self.steps_per_epoch == 0:
            raise MgsvError(
                f"the train split has {len(self.train_data)} pairs, fewer than one batch of "
                f"{self.recipe.batch_size}; lower it with `overrides` train.batch_size=N")
        self.description = run_description(settings, self.preset, self.config, self.recipe, store)
        run_folder.prepare(self.out, self.description, settings.resume, self.dist.main)

        seed_everything(self.recipe.seed)
        self.model = self.preset.build_model(self.config).to(self.device)
        self.groups = param_groups(self.model, self.recipe)
        self.optimizer = build_optimizer(self.groups, self.recipe)
        self.total_steps = self.steps_per_epoch * self.recipe.epochs
        self.scheduler = warmup_cosine(self.optimizer, self.total_steps, self.recipe.warmup_rate)
        self.loss_weights = self.recipe.weights()
        self.objective = objective_for(self.model)
        self.state = TrainState()
        if settings.resume:
            self._load_last()
        self.train_model: nn.Module = self.model
        if self.dist.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if self.device.startswith("cuda") else None,
                find_unused_parameters=True)
        self._tensorboard = self._open_tensorboard() if self.dist.main else None

    def _check_specs(self, store: FeatureStore) -> None:
        for name, dim in (("video", self.config.video_dim), ("music", self.config.music_dim)):
            if name not in store.specs:
                raise InputError(store.root, f"the feature store has no {name} features")
            if store.specs[name].dim != dim:
                raise MgsvError(f"{store.root}: {name} features are {store.specs[name].dim}-d but the model "
                                f"expects {dim}-d (set {name}_dim or use matching features)")

    # -- checkpoints ------------------------------------------------------------------------------------------

    def _save(self, name: str, metadata: dict[str, Any]) -> None:
        save_checkpoint(self.model, run_folder.checkpoint_dir(self.out, name), preset=self.preset.name,
                        feature_specs=self.feature_specs, metadata=metadata, overwrite=True)

    def _save_last(self) -> None:
        """Trainer state first (its own file per epoch), then the checkpoint that names it, then old states go."""
        name = run_folder.save_trainer_state(self.out, self.state.epoch, {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": dataclasses.asdict(self.state),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        })
        self._save("last", {"epoch": self.state.epoch, "step": self.state.step, "trainer_state": name})
        run_folder.remove_old_states(self.out, name)

    def _load_last(self) -> None:
        folder = run_folder.checkpoint_dir(self.out, "last")
        info = read_checkpoint_info(folder)
        saved = run_folder.load_trainer_state(self.out, info.metadata.get("trainer_state", ""), self.device, folder)
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(folder / "model.safetensors"), device=self.device))
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainState(**saved["state"])
        rng = saved["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        log.info("resuming %s after epoch %d (step %d)", self.out, self.state.epoch, self.state.step)

    # -- logging ----------------------------------------------------------------------------------------------

    def _open_tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the CSV log and curves.png are always written
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def _log_epoch(self, row: dict[str, Any]) -> None:
        run_folder.append_log(self.out, row)
        if self._tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self._tensorboard.add_scalar(key, value, row["epoch"])
            self._tensorboard.flush()

    # -- training ---------------------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, progress: Any) -> dict[str, float]:
        self.train_model.train()
        totals: dict[str, float] = {}
        batches = self.train_data.batches(self.per_rank_batch, epoch=epoch, seed=0, rank=self.dist.rank,
                                          world_size=self.dist.world_size)
        task = progress.add_task(f"epoch {epoch + 1}/{self.recipe.epochs}", total=self.steps_per_epoch)
        for batch in device_batches(batches, self.device):
            with autocast(self.settings.precision, self.device):
                output = self.train_model(batch.frame_feats, batch.frame_mask, batch.segment_feats,
                                          batch.segment_mask)
                losses = self.objective(self.model, output, batch.spans_target[:, None], self.loss_weights)
            names = [name for name in LOGGED_LOSSES if name in losses]
            # One device-to-host copy for every logged loss: on a GPU each separate .item() waits for the queue.
            values = dict(zip(names, torch.stack([losses[n].detach().float() for n in names]).tolist(), strict=True))
            loss = values["L_total"]
            if not math.isfinite(loss):
                raise MgsvError(f"training diverged at step {self.state.step}: loss is {loss}; "
                                "try a lower learning rate or fp32")
            apply_gradients(losses["L_total"], self.optimizer, self.scheduler, self.recipe.grad_clip_norm)
            self.state.step += 1
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
            progress.update(task, advance=1, description=f"epoch {epoch + 1}/{self.recipe.epochs} "
                                                         f"loss {loss:.3f}")
            if self._tensorboard is not None:
                self._tensorboard.add_scalar("train/L_total_step", loss, self.state.step)
        progress.remove_task(task)
        return {f"train_{k}": v / self.steps_per_epoch for k, v in totals.items()}

    def time_steps(self, count: int) -> float:
        """Median seconds of one training step over `count` steps of epoch 0's first batches, after one untimed step.

        For estimating a run's length (`mgsv reproduce`); the weights change, so use a trainer made for it.
        """
        self.train_model.train()
        batches = self.train_data.batches(self.per_rank_batch, epoch=0, seed=0, rank=self.dist.rank,
                                          world_size=self.dist.world_size)
        times: list[float] = []
        for index, batch in enumerate(device_batches(batches, self.device)):
            if index > count:
                break
            started = time.perf_counter()
            with autocast(self.settings.precision, self.device):
                output = self.train_model(batch.frame_feats, batch.frame_mask, batch.segment_feats,
                                          batch.segment_mask)
                losses = self.objective(self.model, output, batch.spans_target[:, None], self.loss_weights)
            apply_gradients(losses["L_total"], self.optimizer, self.scheduler, self.recipe.grad_clip_norm)
            synchronize(self.device)
            if index:
                times.append(time.perf_counter() - started)
        if not times:
            raise MgsvError(f"{self.settings.data_dir}: the train split has too few pairs to time a training step")
        return float(np.median(times))

    def time_validation(self) -> float:
        """Seconds of one validation pass (as each epoch runs it)."""
        started = time.perf_counter()
        self.validate()
        synchronize(self.device)
        return time.perf_counter() - started

    def validate(self) -> dict[str, float]:
        """Val metrics of the current weights, over the whole split on every rank."""
        options = EvalOptions(top_k=self.settings.eval_top_k, precision=self.settings.precision,
                              device=self.device, batch_size=max(self.recipe.eval_batch_size, 1))
        rows = np.arange(self.dist.rank, len(self.val_data), self.dist.world_size)
        part = collect_outputs(self.model, self.val_data, options, rows=rows)
        parts = gather(part, self.dist)
        merged = parts[0].merge(parts[1:]) if len(parts) > 1 else parts[0]
        return score_outputs(self.val_data, merged).metrics

    def _track(self, epoch: int, val: dict[str, float]) -> list[str]:
        """Update the best values; save the checkpoints whose metric improved. Returns their names.

        Only metrics the model produces count: a grounding-only model is selected by mIoU, a retrieval-only one by
        R@1 (the other checkpoints of `SELECTION` are then never written).
        """
        saved = []
        for folder, metric, compare in SELECTION:
            if metric not in val:
                continue
            value, best = val[metric], self.state.best.get(f"ckpt:{metric}")
            if best is None or (value >= best if compare == "ge" else value > best):
                self.state.best[f"ckpt:{metric}"] = value
                if self.dist.main:
                    self._save(folder, {"epoch": epoch, "step": self.state.step, "selected_by": metric,
                                        "val_metrics": val})
                saved.append(folder)
        for metric in EARLY_STOP_METRICS:
            if metric not in val:
                continue
            best = self.state.best.get(metric)
            if best is None or val[metric] > best:
                self.state.best[metric] = val[metric]
                self.state.last_improved_epoch = epoch
        return saved

    def fit(self, epochs: int | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainState:
        """Train until the schedule ends or early stopping triggers (or for `epochs` more epochs); returns the state.

        Stopping after `epochs` leaves the run resumable exactly where it stopped (same schedule, same batches). A
        resumed run that had stopped early stays stopped. `on_epoch` receives each epoch's log row once it is saved.
        """
        if self.state.stopped_early:
            return self.state
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        show = self.settings.progress and self.dist.main
        plotted = None  # the epoch curves.png shows
        with Progress(*columns, disable=not show, transient=True) as progress:
            end = self.recipe.epochs if epochs is None else min(self.recipe.epochs, self.state.epoch + epochs)
            for epoch in range(self.state.epoch, end):
                started = time.perf_counter()
                train = self._train_epoch(epoch, progress)
                val = self.validate()
                self.state.epoch = epoch + 1
                saved = self._track(epoch + 1, val)
                row = {"epoch": epoch + 1, "step": self.state.step,
                       **{f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups},
                       **train, **{f"val_{k}": v for k, v in val.items()},
                       "seconds": round(time.perf_counter() - started, 2)}
                self.state.history.append(row)
                if self.dist.main:
                    self._log_epoch(row)
                    self._save_last()
                    if self.settings.plot_every and self.state.epoch % self.settings.plot_every == 0:
                        plot_curves(self.state.history, self.out / run_folder.CURVES_FILE)
                        plotted = self.state.epoch
                    if on_epoch is not None:
                        on_epoch(row)
                    log.info("epoch %d: loss %.4f  val mIoU %.4f  R@1 %.2f  MoR@1 %.2f%s", epoch + 1,
                             train.get("train_L_total", math.nan), val.get("mIoU", math.nan),
                             val.get(M.recall_name(1), math.nan), val.get(M.mor_name(1, 0.7), math.nan),
                             f"  saved {', '.join(saved)}" if saved else "")
                if self.state.epoch >= max(self.recipe.min_epochs, self.state.last_improved_epoch + self.recipe.patience):
                    if self.state.epoch < self.recipe.epochs:
                        self.state.stopped_early = True
                        log.info("early stop after epoch %d: no val improvement since epoch %d",
                                 self.state.epoch, self.state.last_improved_epoch)
                    break
        if self.dist.main and self.state.history and plotted != self.state.epoch:
            plot_curves(self.state.history, self.out / run_folder.CURVES_FILE)
        if self._tensorboard is not None:
            self._tensorboard.close()
        return self.state
