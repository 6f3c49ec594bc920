"""The training loss of every model: the trainer asks `training_losses(model, output, targets, weights)`.

Models return their forward outputs and nothing else; which loss trains which model is decided here, once:
MaDe's official loss (`losses.made_losses`), the DETR baselines' set-prediction loss (`criterion`), the retrieval
InfoNCE of MVPt, and CONQUER's start / end cross-entropy over candidate tracks. Every loss dict has `L_total`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.baselines.conquer import CONQUER
from mgsv.models.baselines.grounding import DetrGroundingModel
from mgsv.models.baselines.mvpt import MVPt
from mgsv.models.contract import model_name
from mgsv.models.made import MaDe
from mgsv.training.criterion import retrieval_losses, set_prediction_losses
from mgsv.training.losses import LossWeights, made_losses

Objective = Callable[[Any, Any, Tensor, LossWeights], dict[str, Tensor]]  # (model, output, targets, weights)


def _made(model: MaDe, output: Any, target_spans: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    return made_losses(output, target_spans, weights)


def _detr(model: DetrGroundingModel, output: Any, target_spans: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """MaDe's detection loss with Hungarian matching over the model's queries."""
    return set_prediction_losses(output.detection, target_spans, weights)


def _retrieval(model: MVPt, output: Any, target_spans: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """Symmetric InfoNCE (the moments are not used: MVPt does not ground)."""
    return retrieval_losses(output.similarity, output.logit_scale, weights)


def _conquer(model: CONQUER, output: Any, target_spans: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """Cross-entropy of the ground-truth start and end clips over all candidates' clips (`L_loc`, `L_total`)."""
    first, last = model.clip_targets(target_spans, output.music_mask)
    batch = output.start_logits.shape[0]
    losses = {
        "loss_start": F.cross_entropy(output.start_logits.reshape(batch, -1), first),
        "loss_end": F.cross_entropy(output.end_logits.reshape(batch, -1), last),
    }
    losses["L_loc"] = losses["loss_start"] + losses["loss_end"]
    losses["L_total"] = weights.localization * losses["L_loc"]
    return losses


# Model class -> its loss (subclasses included: every DETR baseline is a DetrGroundingModel).
OBJECTIVES: tuple[tuple[type, Objective], ...] = (
    (MaDe, _made),
    (DetrGroundingModel, _detr),
    (MVPt, _retrieval),
    (CONQUER, _conquer),
)


def objective_for(model: nn.Module) -> Objective:
    """The loss function that trains `model` (TypeError for a model no objective is defined for)."""
    for model_class, objective in OBJECTIVES:
        if isinstance(model, model_class):
            return objective
    raise TypeError(f"no training objective for {model_name(model)} ({type(model).__name__})")


def training_losses(model: nn.Module, output: Any, target_spans: Tensor,
                    weights: LossWeights | None = None) -> dict[str, Tensor]:
    """The loss dict of one training batch: `output` is `model(...)`, targets [B, 1, 2] normalised (centre, width)."""
    return objective_for(model)(model, output, target_spans, weights or LossWeights())
