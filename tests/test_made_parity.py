"""MaDe reproduces the official model: every intermediate tensor and loss of the parity fixtures.

The fixtures hold official weights (reduced width d=32) and the official eval-mode outputs for a batch of 6 pairs
(tests/fixtures/official-parity/README.md). Weights are loaded by their official names through the key table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from mgsv.models.made import MaDe, MaDeConfig, MaDeOutput, standardize_tokens
from mgsv.models.official_keys import official_to_ours
from mgsv.training.losses import fixture_key, made_losses

WEIGHT_SETS = [
    ("model.safetensors", "outputs.safetensors"),
    ("model_perturbed.safetensors", "outputs_perturbed.safetensors"),
]
TOL = {"rtol": 1e-5, "atol": 1e-5}

# The reduced config of the fixtures (config.json): d=32, DETR FFN 128; the rest as the official script.
FIXTURE_CONFIG = MaDeConfig(dim=32, detr_ffn_dim=128, enhance_ffn_dim=1024, contrastive_dim=256)


@pytest.fixture(scope="module")
def inputs(parity_dir: Path) -> dict[str, torch.Tensor]:
    data = load_file(parity_dir / "inputs.safetensors")
    return {key: value.float() for key, value in data.items()}


def fixture_model(parity_dir: Path, weights: str) -> MaDe:
    model = MaDe(FIXTURE_CONFIG)
    model.load_state_dict(official_to_ours(load_file(parity_dir / weights), FIXTURE_CONFIG), strict=True)
    return model.eval()


def run(model: MaDe, inputs: dict[str, torch.Tensor], frames: int = 50, segments: int = 96) -> MaDeOutput:
    """Eval forward with the inputs cut or zero-padded to `frames` / `segments` positions."""
    def fit(x: torch.Tensor, length: int) -> torch.Tensor:
        if length <= x.shape[1]:
            return x[:, :length]
        pad = [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]]
        return torch.nn.functional.pad(x, pad)

    with torch.no_grad():
        return model(fit(inputs["frame_feats"], frames), fit(inputs["frame_mask"], frames),
                     fit(inputs["segment_feats"], segments), fit(inputs["segment_mask"], segments))


def official_memory(out: MaDeOutput, inputs: dict[str, torch.Tensor], frames: int = 50) -> torch.Tensor:
    """Our compact encoder memory put back in the official [frames | segments] layout (valid rows only)."""
    official = torch.zeros(out.fusion_memory.shape[0], frames + 96, out.fusion_memory.shape[-1])
    for b, (nv, nm) in enumerate(zip(inputs["frame_mask"].sum(1).long(), inputs["segment_mask"].sum(1).long())):
        official[b, :nv] = out.fusion_memory[b, :nv]
        official[b, frames:frames + nm] = out.fusion_memory[b, nv:nv + nm]
    return official


def valid_rows(x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = torch.cat([inputs["frame_mask"], inputs["segment_mask"]], 1).bool()
    return x[mask]


@pytest.mark.parametrize("weights,outputs", WEIGHT_SETS)
def test_forward_matches_every_official_tensor(parity_dir: Path, inputs, weights: str, outputs: str) -> None:
    ref = load_file(parity_dir / outputs)
    out = run(fixture_model(parity_dir, weights), inputs)
    ours = {
        "video_tokens": out.video.tokens, "music_tokens": out.music.tokens,
        "video_emb": out.video.embedding, "music_emb": out.music.embedding,
        "xpool_music_emb": out.xpool_music_emb, "S0": out.s0, "S1": out.s1, "p_s": out.p_s,
        "decoder_hidden": out.detection.hidden, "pred_logits_all": out.detection.logits,
        "pred_spans_all": out.detection.spans, "contrastive_logits": out.contrastive_logits,
        "logit_scale": out.logit_scale,
    }
    for name, value in ours.items():
        assert_close(value, ref[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")
    assert_close(valid_rows(official_memory(out, inputs), inputs), valid_rows(ref["detr_memory"], inputs), **TOL)
    # Padded tokens are exactly zero, as the official masked_fill leaves them.
    assert out.video.tokens[~inputs["frame_mask"].bool()].abs().max() == 0
    assert out.music.tokens[~inputs["segment_mask"].bool()].abs().max() == 0


def test_position_embedding_matches_official(parity_dir: Path, inputs) -> None:
    from mgsv.models.layers import sine_position_embedding

    ref = load_file(parity_dir / "outputs.safetensors")["detr_pos"]
    mask = torch.cat([inputs["frame_mask"], inputs["segment_mask"]], 1)
    assert_close(sine_position_embedding(mask, 32), ref, rtol=0, atol=0)
    # Inside the model the same values sit on the compact (valid-first) layout.
    out = run(fixture_model(parity_dir, "model.safetensors"), inputs)
    official_layout = official_memory(MaDeOutput(**{**out.__dict__, "fusion_memory": out.fusion_pos}), inputs)
    assert_close(valid_rows(official_layout, inputs), valid_rows(ref, inputs), rtol=0, atol=0)


@pytest.mark.parametrize("weights,outputs", WEIGHT_SETS)
def test_every_loss_component_matches(parity_dir: Path, inputs, weights: str, outputs: str) -> None:
    ref = load_file(parity_dir / outputs)
    losses = made_losses(run(fixture_model(parity_dir, weights), inputs), inputs["spans_target"])
    expected = {key for key in ref if key.startswith("loss.")}
    assert {fixture_key(name) for name in losses} == expected
    for name, value in losses.items():
        atol = 1e-4 if name.startswith("class_error") else 1e-5
        assert_close(value, ref[fixture_key(name)], rtol=1e-5, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    assert float(losses["loss_contrastive_align"]) == 0.0


@pytest.mark.parametrize("weights,outputs", WEIGHT_SETS)
def test_inference_api_matches_official(parity_dir: Path, inputs, weights: str, outputs: str) -> None:
    """encode_video / encode_music / relevance (folded X-Pool) / detect give the official values too."""
    ref = load_file(parity_dir / outputs)
    model = fixture_model(parity_dir, weights)
    with torch.no_grad():
        video = model.encode_video(inputs["frame_feats"], inputs["frame_mask"])
        music = model.encode_music(inputs["segment_feats"], inputs["segment_mask"])
        scores = model.relevance(video, music, components=True)
        detection = model.detect(video, music)
    assert_close(scores.s0, ref["S0"], **TOL)
    assert_close(scores.s1, ref["S1"], **TOL)
    assert_close(scores.p_s, ref["p_s"], **TOL)
    assert_close(model.relevance(video, music), ref["p_s"], **TOL)
    # The compact form a library's track index stores (standardised tokens) gives the official p_s too.
    standard, _, _ = standardize_tokens(music.tokens, music.mask, model.xpool.norm_in.eps)
    with torch.no_grad():
        assert_close(model.relevance_standardized(video, music.embedding, standard, music.mask), ref["p_s"], **TOL)
    assert_close(detection.spans, ref["pred_spans_all"], **TOL)
    assert_close(detection.logits, ref["pred_logits_all"], **TOL)


@pytest.mark.parametrize("items,frames,segments", [
    ([0, 1, 2, 3, 4, 5], 64, 120),  # padded longer than the official 50 / 96
    ([0, 1, 2, 5], 23, 73),  # a sub-batch padded only to its own longest video (23) and track (73)
])
def test_results_do_not_depend_on_padding(parity_dir: Path, inputs, items: list[int], frames: int,
                                          segments: int) -> None:
    ref = load_file(parity_dir / "outputs_perturbed.safetensors")
    index = torch.tensor(items)
    subset = {key: value.index_select(0, index) for key, value in inputs.items()}
    out = run(fixture_model(parity_dir, "model_perturbed.safetensors"), subset, frames, segments)
    pairs = torch.meshgrid(index, index, indexing="ij")
    for name, value in (("S0", out.s0), ("S1", out.s1), ("p_s", out.p_s)):
        assert_close(value, ref[name][pairs], **TOL, msg=lambda m, name=name: f"{name}: {m}")
    for name, value in (("pred_spans_all", out.detection.spans), ("pred_logits_all", out.detection.logits),
                        ("contrastive_logits", out.contrastive_logits)):
        assert_close(value, ref[name][:, index], **TOL, msg=lambda m, name=name: f"{name}: {m}")
    for name, value in (("video_emb", out.video.embedding), ("music_emb", out.music.embedding)):
        assert_close(value, ref[name][index], **TOL)
    shared = min(frames, 50)
    assert_close(out.video.tokens[:, :shared], ref["video_tokens"][index, :shared], **TOL)
