"""The paper's baselines as registry presets: build, forward / backward, padding, learning, matching, counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mgsv.models.baselines import BASELINE_PRESETS
from mgsv.models.baselines.common import RankedDetection
from mgsv.models.baselines.table4 import PAPER_PARAMETERS, parameter_rows
from mgsv.models.contract import capabilities_of
from mgsv.models.registry import ConfigError, UnknownPresetError, count_preset_parameters, get_preset
from mgsv.training.criterion import MatchingCosts, match_queries, set_prediction_losses
from mgsv.training.losses import generalized_iou, span_cw_to_se
from mgsv.training.objectives import training_losses

SMALL = {"dim": 32, "ffn_dim": 64, "heads": 4}
GROUNDING = ("moment-detr", "qd-detr", "qd-detr+", "tr-detr", "tr-detr+", "eatr", "uvcom", "uvcom+")
RETRIEVAL = ("mvpt", "mvpt+")


def small(name: str, dropout: bool = True) -> torch.nn.Module:
    """A preset at small widths (optionally without dropout, for deterministic learning checks)."""
    torch.manual_seed(0)
    preset = get_preset(name)
    extra = {"conv_channels": 8} if name == "conquer" else {}
    if not dropout:
        extra.update({key: 0.0 for key in ("dropout", "input_dropout") if key in preset.config_class.field_names()})
    return preset.build_model(**SMALL, **extra)


def batch(frames: list[int], segments: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    fm = torch.arange(max(frames))[None] < torch.tensor(frames)[:, None]
    sm = torch.arange(max(segments))[None] < torch.tensor(segments)[:, None]
    return (torch.randn(len(frames), max(frames), 512, generator=g) * fm[..., None], fm,
            torch.randn(len(segments), max(segments), 768, generator=g) * sm[..., None], sm)


def targets(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(n, generator=g) * 0.4 + 0.1, torch.rand(n, generator=g) * 0.1 + 0.03], -1)[:, None]


# ----------------------------------------------------------------------------------------------------------------
# Every preset: build, forward / backward, padding, capabilities


@pytest.mark.parametrize("name", BASELINE_PRESETS)
def test_forward_backward_reaches_every_parameter(name: str) -> None:
    model = small(name).train()
    output = model(*batch([7, 12, 3, 9], [20, 33, 9, 40]))
    losses = training_losses(model, output, targets(4))
    assert torch.isfinite(losses["L_total"]) and losses["L_total"] > 0
    losses["L_total"].backward()
    # Every trainable parameter is connected to the loss. (Some gradients are exactly zero by design: e.g. the first
    # DETR decoder self-attention sees zero content queries, so its value projection weights cannot matter.)
    unconnected = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unconnected, f"parameters the loss does not reach: {unconnected}"
    moved = [p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad]
    assert sum(moved) > 0.9 * len(moved)
    assert set(model.parameter_groups()) <= {"enhancement", "matching", "detection"}


@pytest.mark.parametrize("name", BASELINE_PRESETS)
def test_padding_and_batch_mates_do_not_change_outputs(name: str) -> None:
    model = small(name).eval()
    fv, fm, sv, sm = batch([7, 12, 3], [20, 33, 9])
    with torch.no_grad():
        video, music = model.encode_video(fv, fm), model.encode_music(sv, sm)
        alone_v = model.encode_video(fv[2:, :3], fm[2:, :3])
        alone_m = model.encode_music(sv[2:, :9], sm[2:, :9])
        if capabilities_of(model).grounds:
            together = model.detect(video, music).final_spans[2]
            torch.testing.assert_close(model.detect(alone_v, alone_m).final_spans[0], together, atol=1e-5, rtol=1e-4)
            assert ((together >= 0) & (together <= 1)).all()
        if capabilities_of(model).ranks:
            scores = model.relevance(video, music)
            assert scores.shape == (3, 3)
            torch.testing.assert_close(model.relevance(alone_v, alone_m)[0, 0], scores[2, 2], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", BASELINE_PRESETS)
def test_bf16_autocast_inference(name: str) -> None:
    model = small(name).eval()
    fv, fm, sv, sm = batch([7, 12], [20, 33])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        video, music = model.encode_video(fv, fm), model.encode_music(sv, sm)
        outputs = []
        if capabilities_of(model).grounds:
            outputs.append(model.detect(video, music).final_spans)
        if capabilities_of(model).ranks:
            outputs.append(model.relevance(video, music))
    assert outputs and all(out.dtype == torch.float32 and torch.isfinite(out).all() for out in outputs)


def test_capabilities_follow_the_paper() -> None:
    for name in GROUNDING:
        model = small(name)
        assert capabilities_of(model).grounds and not capabilities_of(model).ranks, name
    for name in RETRIEVAL:
        model = small(name)
        assert capabilities_of(model).ranks and not capabilities_of(model).grounds, name
    assert capabilities_of(small("conquer")).ranks and capabilities_of(small("conquer")).grounds


@pytest.mark.parametrize("name", BASELINE_PRESETS)
def test_training_smoke_loss_falls(name: str) -> None:
    model = small(name, dropout=False).train()
    data = batch([8, 10, 6, 9], [20, 18, 24, 16], seed=3)
    goal = targets(4, seed=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(15):
        losses = training_losses(model, model(*data), goal)
        optimizer.zero_grad()
        losses["L_total"].backward()
        optimizer.step()
        history.append(losses["L_total"].item())
    assert np.mean(history[-3:]) < 0.8 * np.mean(history[:3]), history


def test_the_plus_variants_only_drop_the_fusion_cross_attention() -> None:
    for name in ("qd-detr", "tr-detr", "uvcom"):
        full, plus = small(name), small(name + "+")
        assert full.cross_encoder is not None and plus.cross_encoder is None
        names_full = {n for n, _ in full.named_parameters() if not n.startswith("cross_encoder.")}
        assert names_full == {n for n, _ in plus.named_parameters()}
    assert small("mvpt").music_tower.cls is not None and small("mvpt+").music_tower.cls is None


# ----------------------------------------------------------------------------------------------------------------
# Matching and the criterion


def test_matching_is_the_hungarian_assignment_for_one_moment() -> None:
    g = torch.Generator().manual_seed(5)
    spans = torch.rand(64, 10, 2, generator=g) * 0.5 + 0.05
    logits = torch.randn(64, 10, 2, generator=g)
    goal = targets(64)[:, 0]
    matched = match_queries(spans, logits, goal)
    costs = MatchingCosts()
    for i in range(64):
        target = goal[i].expand(10, 2)
        cost = (costs.span * (spans[i] - target).abs().sum(-1)
                - costs.giou * generalized_iou(span_cw_to_se(spans[i]), span_cw_to_se(target))
                - costs.label * logits[i].softmax(-1)[:, 0])
        rows, _ = linear_sum_assignment(cost[:, None].numpy())
        assert rows[0] == matched[i]


def test_criterion_supervises_the_matched_query_and_calls_the_rest_background() -> None:
    goal = torch.tensor([[[0.5, 0.2]]])
    spans = torch.tensor([[[[0.1, 0.05], [0.5, 0.2], [0.9, 0.1]]]])  # query 1 is exact
    logits = torch.tensor([[[[4.0, -4.0], [-4.0, 4.0], [4.0, -4.0]]]])  # but classified as background
    losses = set_prediction_losses(RankedDetection(spans, logits, torch.zeros(1, 1, 3, 4)), goal)
    assert losses["loss_span"] == 0 and losses["loss_giou"] == 0
    assert losses["class_error"] == 100  # the matched query says background
    assert losses["loss_label"] > 1  # and the two others say foreground


def test_the_answer_is_the_most_confident_query() -> None:
    spans = torch.tensor([[[[0.1, 0.1], [0.6, 0.2]], [[0.3, 0.1], [0.7, 0.1]]]])
    logits = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]], [[3.0, 0.0], [0.0, 0.0]]]])
    detection = RankedDetection(spans, logits, torch.zeros(1, 2, 2, 4))
    torch.testing.assert_close(detection.final_spans, torch.tensor([[0.6, 0.2], [0.3, 0.1]]))


def test_conquer_maps_moments_to_clips_and_back() -> None:
    model = small("conquer")
    mask = torch.arange(96)[None] < torch.tensor([[40], [96]])
    # (10 s, 30 s) -> clips 4 .. 12; a moment past the track's last clip is clamped to it
    spans = torch.tensor([[[20 / 240, 20 / 240]], [[235 / 240, 10 / 240]]])
    first, last = model.clip_targets(spans, mask)
    assert first.tolist() == [4, 92] and last.tolist() == [12, 95]
    start = torch.full((1, 6), -5.0)
    end = torch.full((1, 6), -5.0)
    start[0, 4], end[0, 1], end[0, 5] = 3.0, 9.0, 2.0  # end 1 precedes start 4: the best valid moment is 4 .. 5
    score, s, e = model.best_moments(start, end)
    assert (s.item(), e.item()) == (4, 5) and score.item() == 5.0


# ----------------------------------------------------------------------------------------------------------------
# Registry, configs, parameter counts


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownPresetError) as error:
        get_preset("moment_detr")
    assert "moment-detr" in str(error.value) and "uvcom+" in str(error.value) and "mvpt+" in str(error.value)


@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("qd-detr", {"dim": 30, "heads": 8}, "not divisible"),
    ("moment-detr", {"num_queries": 0}, "num_queries must be a positive integer"),
    ("uvcom", {"walk_weight": 1.5}, "walk_weight must be in"),
    ("mvpt", {"pooling": "max"}, "pooling must be one of cls, mean"),
    ("conquer", {"conv_kernel": 4}, "conv_kernel must be odd"),
    ("eatr", {"colour": 3}, "unknown EatrConfig key"),
])
def test_bad_configs_are_refused_clearly(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_preset(name).config(**overrides)


def test_parameter_counts_match_the_paper() -> None:
    rows = {row["name"]: row for row in parameter_rows()}
    assert set(PAPER_PARAMETERS) <= set(rows)
    assert count_preset_parameters(get_preset("moment-detr"))["total"] == 4_285_444
    for name, row in rows.items():
        # With the official modules only untrained losses use, every system is within 5% of Table 4 except CONQUER
        # (its MGSV adaptation is not published; docs/baselines.md).
        if name != "conquer":
            assert abs(row["gap_with_omitted"]) < 0.05, (name, row)
        if name not in ("uvcom", "uvcom+", "mvpt+/uvcom+", "conquer"):
            assert abs(row["gap"]) < 0.10, (name, row)
    assert 0.10 < rows["conquer"]["gap"] < 0.13
