"""The optimiser and the update of one training step, as the official recipe takes them (docs/models.md).

The trainer and `benchmarks/bench_made.py` both call these, so the benchmark times the update the trainer runs:
Adam over the preset's parameter groups, the gradient of each group clipped to `grad_clip_norm` on its own, the
warmup-cosine schedule stepped after every update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from mgsv.training.recipe import TrainingRecipe


def build_optimizer(groups: list[dict[str, Any]], recipe: TrainingRecipe) -> torch.optim.Adam:
    """Adam over `groups` (from `recipe.param_groups`) with the recipe's betas, eps and weight decay.

    The fused kernel (one pass over every parameter of a group) where PyTorch has one for the parameters' device;
    it computes the same update as the per-tensor loop up to float rounding.
    """
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.Adam(groups, betas=tuple(recipe.betas), eps=recipe.eps, weight_decay=recipe.weight_decay,
                            fused=fused or None)


def apply_gradients(loss: Tensor, optimizer: Optimizer, scheduler: LRScheduler, max_norm: float) -> None:
    """Backward of `loss`, per-group clipping, the Adam update and the schedule step (one training iteration)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for group in optimizer.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], max_norm)
    optimizer.step()
    scheduler.step()
