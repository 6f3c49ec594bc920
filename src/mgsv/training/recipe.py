"""How each preset is trained: optimiser settings, schedule, early stopping and loss weights, in one table.

`recipe_for("made")` is the official script's recipe (docs/official-code.md, "Training"); `made-paper` follows the
paper's text (lr 1e-4); every baseline trains with the official budget and loss but its own repositories'
optimiser settings (lr 1e-4, weight decay 1e-4), so that every system is compared on equal terms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mgsv.models.baselines import BASELINE_PRESETS
from mgsv.models.registry import get_preset
from mgsv.training.losses import LossWeights


@dataclass(frozen=True)
class TrainingRecipe:
    """Training hyper-parameters of a preset (the official script's unless the table below says otherwise).

    The schedule is always the official one: linear warmup from 0 over `warmup_rate` of the steps, then a half
    cosine to 0, stepped every iteration (`mgsv.training.schedule`).
    """

    lr: Mapping[str, float] = field(
        default_factory=lambda: {"enhancement": 3e-4, "matching": 3e-4, "detection": 3e-4})
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0  # applied to each optimiser group separately
    warmup_rate: float = 0.02
    epochs: int = 100
    min_epochs: int = 60  # early stop: not before this epoch ...
    patience: int = 20  # ... and only after this many epochs without a new best val metric
    batch_size: int = 512
    eval_batch_size: int = 40
    seed: int = 42
    loss_weights: Mapping[str, float] = field(default_factory=lambda: dataclasses.asdict(LossWeights()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        data = dataclasses.asdict(self)
        data["lr"], data["loss_weights"], data["betas"] = dict(self.lr), dict(self.loss_weights), list(self.betas)
        return data

    def weights(self) -> LossWeights:
        """The loss weights as `LossWeights` (unknown names are an error)."""
        return LossWeights.from_mapping(self.loss_weights)


OFFICIAL = TrainingRecipe()
PAPER = TrainingRecipe(lr={"enhancement": 1e-4, "matching": 1e-4, "detection": 1e-4})
# The baselines' own optimiser settings (lr 1e-4, weight decay 1e-4 in all five DETR repositories, CONQUER and MVPt
# alike); everything else is MGSV's official recipe.
BASELINE = TrainingRecipe(lr={"enhancement": 1e-4, "matching": 1e-4, "detection": 1e-4}, weight_decay=1e-4)

RECIPES: dict[str, TrainingRecipe] = {
    "made": OFFICIAL,
    "made-paper": PAPER,
    **dict.fromkeys(BASELINE_PRESETS, BASELINE),
}


def recipe_for(preset: str) -> TrainingRecipe:
    """The recipe of a preset (an unknown preset raises UnknownPresetError listing the valid ones)."""
    get_preset(preset)
    return RECIPES[preset]


def param_groups(model: nn.Module, recipe: TrainingRecipe) -> list[dict[str, Any]]:
    """`[{"name", "params", "lr"}, ...]` for torch optimisers, one per group the model reports."""
    groups = model.parameter_groups()
    missing = [name for name in groups if name not in recipe.lr]
    if missing:
        raise ValueError(f"the training recipe has no learning rate for group(s) {missing}")
    return [{"name": name, "params": params, "lr": recipe.lr[name]} for name, params in groups.items()]
