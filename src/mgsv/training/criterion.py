"""Training losses of the baselines: MaDe's detection loss for several moment queries, and the retrieval InfoNCE.

Detection (`set_prediction_losses`), per decoder layer, as DETR / Moment-DETR compute it:
- the Hungarian matcher assigns queries to ground-truth moments by the cost 10 * L1 + 1 * (-GIoU) + 4 * (-p(fg));
  MGSV has exactly one ground-truth moment per (video, track) pair, so the optimal assignment is the argmin of that
  cost over the queries (no `linear_sum_assignment` needed);
- the matched query gets the span L1 and 1 - GIoU losses; every query gets the foreground / background
  cross-entropy (matched = foreground, the others background, background weighted by eos_coef);
- terms are weighted like MaDe's (4 / 1 / 0.8 by default, the official MGSV values) and summed over layers.

Loss names follow `mgsv.training.losses.made_losses` (`loss_span`, `loss_giou`, `loss_label`, `class_error` for the
last layer, `_0`, `_1`, ... for earlier ones, `L_loc`, `L_total`), so logs and curves read the same for every model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mgsv.models.made import Detection
from mgsv.training.losses import LossWeights, generalized_iou, infonce, span_cw_to_se

DEFAULT_WEIGHTS = LossWeights()  # MaDe's official loss weights


@dataclass(frozen=True)
class MatchingCosts:
    """Weights of the matching cost (Moment-DETR's `set_cost_*`, also MaDe's official matcher)."""

    span: float = 10.0
    giou: float = 1.0
    label: float = 4.0


def match_queries(spans: Tensor, logits: Tensor, target: Tensor, costs: MatchingCosts = MatchingCosts()) -> Tensor:
    """Index [B] of the query matched to each item's single ground-truth moment.

    spans [B, Q, 2] and logits [B, Q, 2] of one decoder layer, target [B, 2] (all normalised (centre, width)).
    """
    with torch.no_grad():
        spans, target = spans.float(), target.float()[:, None, :].expand_as(spans)
        cost = (costs.span * (spans - target).abs().sum(-1)
                - costs.giou * generalized_iou(span_cw_to_se(spans), span_cw_to_se(target))
                - costs.label * logits.float().softmax(-1)[..., 0])
        return cost.argmin(-1)


def layer_losses(spans: Tensor, logits: Tensor, target: Tensor, eos_coef: float,
                 costs: MatchingCosts = MatchingCosts()) -> dict[str, Tensor]:
    """Span L1, 1 - GIoU, foreground label loss and class error of one decoder layer (several queries)."""
    matched = match_queries(spans, logits, target, costs)
    rows = torch.arange(len(matched), device=matched.device)
    pred, gt = spans[rows, matched], target.to(spans.dtype)
    losses = {
        "loss_span": F.l1_loss(pred, gt),
        "loss_giou": (1 - generalized_iou(span_cw_to_se(pred), span_cw_to_se(gt))).mean(),
    }
    # Class 0 is the foreground (Moment-DETR's and MaDe's convention); unmatched queries are background.
    labels = torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)
    labels[rows, matched] = 0
    weight = torch.tensor([1.0, eos_coef], device=logits.device, dtype=logits.dtype)
    losses["loss_label"] = F.cross_entropy(logits.transpose(1, 2), labels, weight, reduction="none").mean()
    with torch.no_grad():
        correct = (logits[rows, matched].argmax(-1) == 0).float().sum()
        losses["class_error"] = 100 - correct * (100.0 / len(matched))
    return losses


def set_prediction_losses(detection: Detection, target_spans: Tensor,
                          weights: LossWeights = DEFAULT_WEIGHTS) -> dict[str, Tensor]:
    """Detection losses of every decoder layer (matched per layer) plus `L_loc` and `L_total` (no retrieval term).

    target_spans [B, 1, 2] normalised (centre, width), as the trainer passes it to every model.
    """
    if target_spans.dim() != 3 or target_spans.shape[1] != 1:
        raise ValueError(f"expected one ground-truth moment per pair, target shape [B, 1, 2]; got {list(target_spans.shape)}")
    target = target_spans[:, 0]
    layers = detection.spans.shape[0]
    term_weights = {"loss_span": weights.span, "loss_giou": weights.giou, "loss_label": weights.label}
    losses: dict[str, Tensor] = {}
    localization = []
    for layer in [layers - 1, *range(layers - 1)]:  # the last layer first, as MaDe's (official) loss dict
        suffix = "" if layer == layers - 1 else f"_{layer}"
        for name, value in layer_losses(detection.spans[layer], detection.logits[layer], target,
                                        weights.eos_coef).items():
            losses[name + suffix] = value
            if name in term_weights:
                localization.append(term_weights[name] * value)
    losses["L_loc"] = sum(localization)
    losses["L_total"] = weights.localization * losses["L_loc"]
    return losses


def retrieval_losses(similarity: Tensor, logit_scale: Tensor, weights: LossWeights = DEFAULT_WEIGHTS) -> dict[str, Tensor]:
    """The symmetric InfoNCE of a [B, B] video-track similarity (diagonal positives) as `L_ret` and `L_total`."""
    loss = infonce(similarity, logit_scale)
    return {"L_ret": loss, "L_total": weights.retrieval * loss}
