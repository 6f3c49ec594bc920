"""Training a preset on a dataset folder, with the official recipe (REF §4) and what users expect around it.

The loop is the official one: Adam over the preset's parameter groups (no weight decay), per-group gradient clipping,
a warmup-cosine schedule stepped every iteration, batches shuffled like DistributedSampler(seed=0) with
drop_last, a full validation after every epoch, checkpoints kept for the best val R@1, mIoU and MoR@1, and early
stopping (not before `min_epochs`, then after `patience` epochs without a new best).

Around it: resume from the last epoch (`resume=True`), bf16 autocast (`precision="bf16"`), `torchrun` DDP (each rank
trains on its share of every batch; validation is sharded and gathered, so metrics cover the whole split), rich
progress bars, `log.csv` (+ TensorBoard when installed) and `curves.png` (redrawn every `plot_every` epochs: a drawing
costs ~0.5 s, which matters for runs whose epochs take seconds). A run folder is never replaced: a new
run refuses an existing folder, and resuming refuses a folder made with another preset, config or dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgsv import __version__
from mgsv.data.dataset import PairDataset
from mgsv.errors import InputError, MgsvError, OutputExistsError
from mgsv.evaluation import metrics as M
from mgsv.evaluation.protocol import EvalOptions, autocast, check_capabilities, collect_outputs, score_outputs
from mgsv.features.store import FeatureStore
from mgsv.models.checkpoint import read_checkpoint_info, save_checkpoint
from mgsv.models.registry import Preset, TrainingRecipe, config_from_dict, get_preset, param_groups
from mgsv.training.losses import LossWeights, made_losses
from mgsv.training.schedule import warmup_cosine
from mgsv.training.step import apply_gradients, build_optimizer

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"

# Checkpoints kept by val metric: (folder, metric, compare). The official code saves best_r1 (>=), best_iou (>=),
# best_r1iou05 (>) and best_r1iou07 (>=); a tie at ">=" replaces the older checkpoint, as there.
SELECTION = (
    ("best_r1", M.recall_name(1), "ge"),
    ("best_miou", "mIoU", "ge"),
    ("best_mor1_iou05", M.mor_name(1, 0.5), "gt"),
    ("best_mor1_iou07", M.mor_name(1, 0.7), "ge"),
)
# Early stopping watches these (REF §4); a metric counts as improved only when strictly better.
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
# Distributed helpers (a single process is world size 1)


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local)


def _gather(value: Any, dist_info: Dist) -> list[Any]:
    if dist_info.world_size == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(out, value)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Set-up


def resolve_device(device: str, dist_info: Dist) -> str:
    """"auto" -> cuda (this rank's GPU) when available, else cpu."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and dist_info.world_size > 1:
        device = f"cuda:{dist_info.local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MgsvError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return device


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


def _recipe(preset: Preset, overrides: dict[str, Any]) -> TrainingRecipe:
    try:
        return dataclasses.replace(preset.training, **overrides)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(TrainingRecipe))
        raise MgsvError(f"unknown training setting in {sorted(overrides)}; known: {known}") from exc


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


def _prepare_run_dir(settings: TrainSettings, description: dict[str, Any], dist_info: Dist) -> None:
    out = Path(settings.out_dir)
    run_file = out / RUN_FILE
    if settings.resume:
        if not run_file.is_file():
            raise InputError(out, "nothing to resume: no run.json (start a new run without --resume)")
        previous = json.loads(run_file.read_text())
        changed = sorted(k for k in description if k != "mgsv_version" and previous.get(k) != description[k])
        if changed:
            raise MgsvError(f"{out}: cannot resume: the run was made with other {', '.join(changed)}; "
                            "start a new run in another folder instead")
        return
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: run folder already exists and is not empty; pass --resume to continue it "
                                "or choose another --out (nothing was changed)")
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({**description, "command": sys.argv}, indent=2) + "\n")
        os.replace(tmp, run_file)


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
        self.dist = init_distributed(settings.device if settings.device != "auto" else
                                     ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device = resolve_device(settings.device, self.dist)
        self.config = self.preset.config(**settings.model_overrides)
        self.recipe = _recipe(self.preset, settings.recipe_overrides)
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
                f"{self.recipe.batch_size}; lower it with --set train.batch_size=N")
        self.description = run_description(settings, self.preset, self.config, self.recipe, store)
        _prepare_run_dir(settings, self.description, self.dist)

        seed_everything(self.recipe.seed)
        self.model = self.preset.build_model(self.config).to(self.device)
        self.groups = param_groups(self.model, self.recipe)
        self.optimizer = build_optimizer(self.groups, self.recipe)
        self.total_steps = self.steps_per_epoch * self.recipe.epochs
        self.scheduler = warmup_cosine(self.optimizer, self.total_steps, self.recipe.warmup_rate)
        self.loss_weights = LossWeights.from_mapping(self.recipe.loss_weights)
        # Baselines bring their own training losses (several queries, retrieval only, ...); MaDe uses made_losses.
        self.compute_losses = getattr(self.model, "training_losses", made_losses)
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

    def _checkpoint_dir(self, name: str) -> Path:
        return self.out / "checkpoints" / name

    def _save(self, name: str, metadata: dict[str, Any]) -> None:
        save_checkpoint(self.model, self._checkpoint_dir(name), preset=self.preset.name,
                        feature_specs=self.feature_specs, metadata=metadata, overwrite=True)

    def _save_last(self) -> None:
        """Trainer state first (its own file per epoch), then the checkpoint that names it, then old states go."""
        state_dir = self.out / "state"
        state_dir.mkdir(exist_ok=True)
        name = f"epoch-{self.state.epoch:04d}.pt"
        tmp = state_dir / f".{name}.tmp"
        torch.save({
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": dataclasses.asdict(self.state),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }, tmp)
        os.replace(tmp, state_dir / name)
        self._save("last", {"epoch": self.state.epoch, "step": self.state.step, "trainer_state": f"state/{name}"})
        for old in state_dir.glob("epoch-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _load_last(self) -> None:
        folder = self._checkpoint_dir("last")
        info = read_checkpoint_info(folder)
        state_path = self.out / info.metadata.get("trainer_state", "")
        if not state_path.is_file():
            raise InputError(folder, f"cannot resume: trainer state {state_path} is missing")
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(folder / "model.safetensors"), device=self.device))
        saved = torch.load(state_path, map_location=self.device, weights_only=False)
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
        path = self.out / LOG_FILE
        names = list(row)
        if path.exists():
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), [])
            names = header + [n for n in names if n not in header]
        rows = []
        if path.exists():
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        rows.append(row)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
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
        for batch in batches:
            batch = batch.to(self.device)
            with autocast(self.settings.precision, self.device):
                output = self.train_model(batch.frame_feats, batch.frame_mask, batch.segment_feats,
                                          batch.segment_mask)
                losses = self.compute_losses(output, batch.spans_target[:, None], self.loss_weights)
            loss = losses["L_total"]
            if not torch.isfinite(loss):
                raise MgsvError(f"training diverged at step {self.state.step}: loss is {loss.item()}; "
                                "try a lower learning rate or fp32")
            apply_gradients(loss, self.optimizer, self.scheduler, self.recipe.grad_clip_norm)
            self.state.step += 1
            for name in ("L_total", "L_ret", "L_loc", "loss_span", "loss_giou", "loss_label"):
                if name in losses:
                    totals[name] = totals.get(name, 0.0) + float(losses[name].detach())
            progress.update(task, advance=1, description=f"epoch {epoch + 1}/{self.recipe.epochs} "
                                                         f"loss {loss.item():.3f}")
            if self._tensorboard is not None:
                self._tensorboard.add_scalar("train/L_total_step", loss.item(), self.state.step)
        progress.remove_task(task)
        return {f"train_{k}": v / self.steps_per_epoch for k, v in totals.items()}

    def validate(self) -> dict[str, float]:
        """Val metrics of the current weights, over the whole split on every rank."""
        options = EvalOptions(top_k=self.settings.eval_top_k, precision=self.settings.precision,
                              device=self.device, batch_size=max(self.recipe.eval_batch_size, 1))
        rows = np.arange(self.dist.rank, len(self.val_data), self.dist.world_size)
        part = collect_outputs(self.model, self.val_data, options, rows=rows)
        parts = _gather(part, self.dist)
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

    def fit(self, epochs: int | None = None) -> TrainState:
        """Train until the schedule ends or early stopping triggers (or for `epochs` more epochs); returns the state.

        Stopping after `epochs` leaves the run resumable exactly where it stopped (same schedule, same batches).
        """
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
                        plot_curves(self.state.history, self.out / CURVES_FILE)
                        plotted = self.state.epoch
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
            plot_curves(self.state.history, self.out / CURVES_FILE)
        if self._tensorboard is not None:
            self._tensorboard.close()
        return self.state


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training losses and the main val metrics per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    panels = [
        ("training loss", [k for k in ("train_L_total", "train_L_ret", "train_L_loc") if k in history[-1]]),
        ("val SmG", ["val_mIoU"]),
        ("val V2MR / MsG (%)", [f"val_{M.recall_name(1)}", f"val_{M.recall_name(10)}",
                                f"val_{M.mor_name(1, 0.7)}", f"val_{M.mor_name(10, 0.7)}"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            ax.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", ms=3, label=key.split("_", 1)[1])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def iter_override_items(items: list[str]) -> Iterator[tuple[str, str, str]]:
    """`model.dim=64` / `train.epochs=5` / `dim=64` (model by default) -> (section, key, value text)."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MgsvError(f"override {item!r}: expected KEY=VALUE (e.g. model.dim=64 or train.epochs=5)")
        section, dot, name = key.strip().partition(".")
        if not dot:
            section, name = "model", section
        if section not in ("model", "train"):
            raise MgsvError(f"override {item!r}: section must be 'model' or 'train', got {section!r}")
        yield section, name, value.strip()


def parse_train_overrides(preset: Preset, items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """CLI `--set` items -> (model config overrides, training recipe overrides), typed by their fields."""
    from mgsv.models.registry import parse_overrides

    model_items, recipe = [], {}
    recipe_types = {f.name: f.type for f in dataclasses.fields(TrainingRecipe)}
    for section, name, text in iter_override_items(items):
        if section == "model":
            model_items.append(f"{name}={text}")
            continue
        if name not in recipe_types:
            raise MgsvError(f"unknown training setting {name!r}; known: {', '.join(recipe_types)}")
        kind = str(recipe_types[name])
        try:
            if kind == "int":
                recipe[name] = int(text)
            elif kind == "float":
                recipe[name] = float(text)
            elif kind == "str":
                recipe[name] = text
            else:  # mappings and tuples: JSON
                value = json.loads(text)
                recipe[name] = tuple(value) if kind.startswith("tuple") else value
        except (ValueError, json.JSONDecodeError) as exc:
            raise MgsvError(f"training setting {name}={text!r}: {exc}") from exc
    model = parse_overrides(preset.config_class, model_items)
    config_from_dict(preset.config_class, {**preset.defaults, **model}, where="--set")  # validate now
    return model, recipe
