"""MaDe's training losses, as the official code computes them (docs/official-code.md, "Losses").

L_total = w_ret * L_ret + w_loc * L_loc, with
- L_ret = InfoNCE(S0) + InfoNCE(S1): symmetric cross-entropy over rows and columns of S * exp(logit_scale), the
  diagonal being the positive pairs (other items of the batch are negatives, even with the same track);
- L_loc = sum over decoder layers of 4 * L1(span) + 1 * (1 - GIoU) + 0.8 * CE(foreground) + 0.2 * contrastive
  align (exactly 0 with one query).

`made_losses` returns every term under the names of the official loss dict (the keys of the parity fixture without
their `loss.` prefix; `fixture_key` adds it): `loss_span`, `loss_giou`, `loss_label`, `class_error`,
`loss_contrastive_align` for the last decoder layer and the same with `_0` ... `_4` for the earlier layers, plus
`L_ret_S0_infonce`, `L_ret_S1_clip`, `L_ret`, `L_loc` and `L_total`.

Matching predictions to targets: DETR's Hungarian matcher assigns queries to ground-truth moments. MaDe has one
query and one ground-truth moment per pair, so the only assignment is query 0 -> moment 0; running scipy's
`linear_sum_assignment` for that would cost a CPU round trip per item and change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossWeights:
    """Loss weights (the official values). `eos_coef` is the background class weight of the label loss."""

    retrieval: float = 1.0
    localization: float = 1.0
    span: float = 4.0
    giou: float = 1.0
    label: float = 0.8
    contrastive_align: float = 0.2
    eos_coef: float = 0.1

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LossWeights:
        """From a preset's `TrainingRecipe.loss_weights`; unknown names are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in values.items()})


def fixture_key(name: str) -> str:
    """Our loss name -> the key of the official-parity fixture (`loss.` + name)."""
    return f"loss.{name}"


def infonce(similarity: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE on a square similarity matrix [B, B] (rows videos, columns tracks, diagonal positives)."""
    logits = similarity * logit_scale.exp()
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def span_cw_to_se(spans: Tensor) -> Tensor:
    """(centre, width) -> (start, end), last dimension."""
    centre, width = spans.unbind(-1)
    return torch.stack([centre - 0.5 * width, centre + 0.5 * width], dim=-1)


def generalized_iou(pred_se: Tensor, target_se: Tensor) -> Tensor:
    """Element-wise generalised IoU of (start, end) spans [..., 2] (the diagonal of the official pairwise matrix)."""
    pred_se, target_se = pred_se.float(), target_se.float()
    left = torch.maximum(pred_se[..., 0], target_se[..., 0])
    right = torch.minimum(pred_se[..., 1], target_se[..., 1])
    inter = (right - left).clamp(min=0)
    union = (pred_se[..., 1] - pred_se[..., 0]) + (target_se[..., 1] - target_se[..., 0]) - inter
    iou = inter / union
    enclosing = (torch.maximum(pred_se[..., 1], target_se[..., 1])
                 - torch.minimum(pred_se[..., 0], target_se[..., 0])).clamp(min=0)
    return iou - (enclosing - union) / enclosing


def detection_layer_losses(pred_spans: Tensor, pred_logits: Tensor, target_spans: Tensor,
                           contrastive_logits: Tensor | None, eos_coef: float) -> dict[str, Tensor]:
    """The four official terms (and class_error) of one decoder layer.

    pred_spans [B, Q, 2] and pred_logits [B, Q, 2] with Q = 1; target_spans [B, 1, 2] normalised (centre, width);
    contrastive_logits [B, Q] or None.
    """
    if pred_spans.shape[1] != 1 or target_spans.shape[1] != 1:
        raise ValueError("MaDe's criterion handles one query and one ground-truth moment per pair")
    matched, target = pred_spans[:, 0], target_spans[:, 0].to(pred_spans.dtype)
    losses = {
        "loss_span": F.l1_loss(matched, target),
        "loss_giou": (1 - generalized_iou(span_cw_to_se(matched), span_cw_to_se(target))).mean(),
    }
    # Class 0 is the foreground; the matched query's target is foreground, unmatched ones (none here) background.
    class_weight = torch.tensor([1.0, eos_coef], device=pred_logits.device, dtype=pred_logits.dtype)
    labels = torch.zeros(pred_logits.shape[:2], dtype=torch.long, device=pred_logits.device)
    losses["loss_label"] = F.cross_entropy(pred_logits.transpose(1, 2), labels, class_weight,
                                           reduction="none").mean()
    with torch.no_grad():
        correct = (pred_logits[:, 0].argmax(-1) == 0).float().sum()
        losses["class_error"] = 100 - correct * (100.0 / pred_logits.shape[0])
    if contrastive_logits is not None:
        # Computed as the official code does: -positive logit / #positives + logsumexp over queries. With a single
        # (positive) query both terms are the same number, so this is exactly 0 and passes no gradient.
        positive = contrastive_logits[:, 0]
        losses["loss_contrastive_align"] = (-positive + contrastive_logits.logsumexp(1)).mean()
    return losses


def made_losses(output: Any, target_spans: Tensor, weights: LossWeights = LossWeights()) -> dict[str, Tensor]:
    """Every loss term of a `MaDeOutput` against normalised target spans [B, 1, 2]; see the module docstring.

    The retrieval terms follow the model's matching variant: S0 and / or S1, whichever the output has.
    """
    losses: dict[str, Tensor] = {}
    retrieval = []
    if output.s0 is not None:
        losses["L_ret_S0_infonce"] = infonce(output.s0, output.logit_scale)
        retrieval.append(losses["L_ret_S0_infonce"])
    if output.s1 is not None:
        losses["L_ret_S1_clip"] = infonce(output.s1, output.logit_scale)
        retrieval.append(losses["L_ret_S1_clip"])
    losses["L_ret"] = sum(retrieval)

    detection = output.detection
    layers = detection.spans.shape[0]
    term_weights = {"loss_span": weights.span, "loss_giou": weights.giou, "loss_label": weights.label,
                    "loss_contrastive_align": weights.contrastive_align}
    localization = []
    # The official order: the last layer first (no suffix), then the earlier layers 0 .. layers-2.
    for layer in [layers - 1, *range(layers - 1)]:
        contrastive = None if output.contrastive_logits is None else output.contrastive_logits[layer]
        terms = detection_layer_losses(detection.spans[layer], detection.logits[layer], target_spans,
                                       contrastive, weights.eos_coef)
        suffix = "" if layer == layers - 1 else f"_{layer}"
        for name, value in terms.items():
            losses[name + suffix] = value
            if name in term_weights:
                localization.append(term_weights[name] * value)
    losses["L_loc"] = sum(localization)
    losses["L_total"] = weights.retrieval * losses["L_ret"] + weights.localization * losses["L_loc"]
    return losses
