"""MaDe's losses: InfoNCE, span L1 / GIoU, foreground CE, the (zero) contrastive-align term and their sums."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from mgsv.models.made import Detection
from mgsv.training.losses import (
    LossWeights,
    detection_layer_losses,
    fixture_key,
    generalized_iou,
    infonce,
    made_losses,
    span_cw_to_se,
)
from mgsv.training.recipe import recipe_for


def test_infonce_is_symmetric_cross_entropy_with_diagonal_positives() -> None:
    s = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.8, 0.0], [0.5, 0.2, 0.4]])
    scale = torch.tensor(math.log(10.0))
    logits = s * 10
    rows = -torch.log_softmax(logits, 1).diag().mean()
    cols = -torch.log_softmax(logits, 0).diag().mean()
    assert_close(infonce(s, scale), (rows + cols) / 2)
    # Perfectly separated pairs give a near-zero loss; swapping the positives makes it large.
    assert infonce(torch.eye(4) * 2 - 1, torch.tensor(math.log(33.3))) < 1e-20
    assert infonce(1 - torch.eye(4) * 2, torch.tensor(math.log(33.3))) > 60


def test_span_conversion_and_generalised_iou() -> None:
    assert_close(span_cw_to_se(torch.tensor([[0.5, 0.2], [0.1, 0.4]])), torch.tensor([[0.4, 0.6], [-0.1, 0.3]]))
    # The official docstring example: diagonal of [[0.6667, 0.2], [-0.2, 0.5]].
    pred = torch.tensor([[0.0, 0.2], [0.5, 1.0]])
    target = torch.tensor([[0.0, 0.3], [0.0, 1.0]])
    assert_close(generalized_iou(pred, target), torch.tensor([2 / 3, 0.5]))
    # Disjoint spans: IoU 0, GIoU = -(gap) / enclosing.
    assert_close(generalized_iou(torch.tensor([[0.0, 0.1]]), torch.tensor([[0.3, 0.4]])), torch.tensor([-0.5]))


def test_detection_terms_of_one_layer() -> None:
    spans = torch.tensor([[[0.5, 0.2]], [[0.3, 0.1]]])
    target = torch.tensor([[[0.5, 0.2]], [[0.4, 0.1]]])
    logits = torch.tensor([[[2.0, 0.0]], [[-1.0, 1.0]]])
    contrastive = torch.tensor([[12.5], [-3.0]], requires_grad=True)
    terms = detection_layer_losses(spans, logits, target, contrastive, eos_coef=0.1)
    assert_close(terms["loss_span"], torch.tensor(0.1 / 4))
    giou = generalized_iou(span_cw_to_se(spans[:, 0]), span_cw_to_se(target[:, 0]))
    assert_close(terms["loss_giou"], (1 - giou).mean())
    expected_ce = -(torch.log_softmax(logits[:, 0], -1)[:, 0]).mean()  # foreground class 0, weight 1.0
    assert_close(terms["loss_label"], expected_ce)
    assert float(terms["class_error"]) == 50.0  # the second query predicts background
    assert terms["loss_contrastive_align"].item() == 0.0  # -l + logsumexp(l) with a single query
    terms["loss_contrastive_align"].backward()
    assert float(contrastive.grad.abs().max()) == 0.0


def test_more_than_one_query_is_refused() -> None:
    with pytest.raises(ValueError, match="one query and one ground-truth moment"):
        detection_layer_losses(torch.rand(2, 3, 2), torch.rand(2, 3, 2), torch.rand(2, 1, 2), None, 0.1)


def fake_output(layers: int, batch: int = 4, s0: bool = True, s1: bool = True) -> SimpleNamespace:
    g = torch.Generator().manual_seed(layers)
    detection = Detection(spans=torch.rand(layers, batch, 1, 2, generator=g) * 0.5 + 0.05,
                          logits=torch.randn(layers, batch, 1, 2, generator=g), hidden=torch.zeros(0))
    return SimpleNamespace(
        s0=torch.randn(batch, batch, generator=g).tanh() if s0 else None,
        s1=torch.randn(batch, batch, generator=g).tanh() if s1 else None,
        logit_scale=torch.tensor(math.log(1 / 0.03)), detection=detection,
        contrastive_logits=torch.randn(layers, batch, 1, generator=g) * 30,
    )


@pytest.mark.parametrize("layers", [6, 3, 1])
def test_totals_are_the_weighted_sums_over_every_layer(layers: int) -> None:
    out = fake_output(layers)
    target = torch.rand(4, 1, 2, generator=torch.Generator().manual_seed(9)) * 0.3 + 0.1
    weights = LossWeights(retrieval=2.0, localization=0.5)
    losses = made_losses(out, target, weights)
    suffixes = [""] + [f"_{i}" for i in range(layers - 1)]
    expected_keys = {"L_ret", "L_ret_S0_infonce", "L_ret_S1_clip", "L_loc", "L_total"} | {
        name + s for s in suffixes
        for name in ("loss_span", "loss_giou", "loss_label", "class_error", "loss_contrastive_align")}
    assert set(losses) == expected_keys
    assert_close(losses["L_ret"], infonce(out.s0, out.logit_scale) + infonce(out.s1, out.logit_scale))
    # The unsuffixed terms are those of the last layer.
    last = detection_layer_losses(out.detection.spans[-1], out.detection.logits[-1], target, None, 0.1)
    assert_close(losses["loss_span"], last["loss_span"])
    localization = sum(4 * losses["loss_span" + s] + losses["loss_giou" + s] + 0.8 * losses["loss_label" + s]
                       + 0.2 * losses["loss_contrastive_align" + s] for s in suffixes)
    assert_close(losses["L_loc"], localization)
    assert_close(losses["L_total"], 2.0 * losses["L_ret"] + 0.5 * losses["L_loc"])
    assert fixture_key("loss_giou_3") == "loss.loss_giou_3"


def test_retrieval_follows_the_matching_variant() -> None:
    target = torch.full((4, 1, 2), 0.2)
    only_h0 = made_losses(fake_output(2, s1=False), target)
    assert "L_ret_S1_clip" not in only_h0
    assert_close(only_h0["L_ret"], only_h0["L_ret_S0_infonce"])
    only_xpool = made_losses(fake_output(2, s0=False), target)
    assert "L_ret_S0_infonce" not in only_xpool
    assert_close(only_xpool["L_ret"], only_xpool["L_ret_S1_clip"])


def test_loss_weights_from_a_recipe() -> None:

    weights = LossWeights.from_mapping(recipe_for("made").loss_weights)
    assert weights == LossWeights()
    with pytest.raises(ValueError, match="unknown loss weight"):
        LossWeights.from_mapping({"spam": 1.0})
