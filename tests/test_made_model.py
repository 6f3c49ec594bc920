"""MaDe's structure, presets, initialisation, ablation switches and inference API (small widths, random data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mgsv.models import MaDe, MaDeConfig, MusicEncoding, build_model, get_preset, list_presets
from mgsv.models.dropout import dropout
from mgsv.models.layers import ModelInputError, MultiHeadAttention, TokenLayout
from mgsv.models.made import ABLATIONS, standardize_tokens
from mgsv.models.registry import (
    ConfigError,
    UnknownPresetError,
    config_from_dict,
    count_preset_parameters,
    parameter_counts,
)
from mgsv.training.losses import made_losses
from mgsv.training.recipe import param_groups, recipe_for

SMALL = {"dim": 32, "enhance_ffn_dim": 64, "detr_ffn_dim": 64, "contrastive_dim": 16}


def make_batch(lengths_v: list[int], lengths_m: list[int], frames: int = 50, segments: int = 96,
               seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    fm = torch.arange(frames)[None] < torch.tensor(lengths_v)[:, None]
    sm = torch.arange(segments)[None] < torch.tensor(lengths_m)[:, None]
    return (torch.randn(len(lengths_v), frames, 512, generator=g) * fm[..., None], fm,
            torch.randn(len(lengths_m), segments, 768, generator=g) * sm[..., None], sm)


def perturb(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Break the symmetric init (identity X-Pool, unit LayerNorms) so that tests see every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() < 2 else 0.3 * float(p.std() + 0.01)))
    return model


# ----------------------------------------------------------------------------------------------------------------
# Presets, parameter counts and groups


def test_default_made_has_the_official_parameter_counts(parity_dir: Path) -> None:
    official = json.loads((parity_dir / "made-default-param-counts.json").read_text())["groups"]
    counts = count_preset_parameters(get_preset("made"))
    assert counts == {
        "enhancement": official["feature_enhancement (optimizer group 0, get_temporal_parameter: vit_proj, "
                                "ast_proj, video_transformer, audio_transformer)"],
        "matching": official["matching (optimizer group 1, get_matching_parameter: X-Pool + logit_scale)"],
        "detection": official["detection incl. decoder_query_embed (not in any optimizer group)"],
        "total": official["total trainable-by-design (all non-encoder parameters)"],
    }
    assert counts == {"enhancement": 2_039_296, "matching": 330_497, "detection": 8_165_124, "total": 10_534_917}


def test_made_paper_drops_the_decoder_self_attention() -> None:
    counts = count_preset_parameters(get_preset("made-paper"))
    per_layer = 4 * (256 * 256 + 256) + 2 * 256  # q/k/v/out projections + the LayerNorm after self-attention
    assert counts["total"] == 10_534_917 - 6 * per_layer


def test_registry_lists_and_rejects_presets() -> None:
    assert [p.name for p in list_presets()][:2] == ["made", "made-paper"]
    with pytest.raises(UnknownPresetError, match="unknown model preset 'mde'; valid presets: made, made-paper"):
        get_preset("mde")
    with pytest.raises(ConfigError, match="unknown MaDeConfig key\\(s\\) 'widht'"):
        build_model("made", widht=3)
    with pytest.raises(ConfigError, match="matching must be one of both, h0, xpool"):
        config_from_dict(MaDeConfig, {"matching": "h1"})
    with pytest.raises(ConfigError, match="query 'xpool' needs the X-Pool module"):
        config_from_dict(MaDeConfig, {"matching": "h0", "query": "xpool"})
    paper = get_preset("made-paper").config()
    assert (paper.decoder_self_attention, paper.train_query_pos, paper.enhance_dropout, paper.xpool_dropout) == (
        False, True, 0.1, 0.1)


@pytest.mark.parametrize("name,lr,query_pos_trained", [("made", 3e-4, False), ("made-paper", 1e-4, True)])
def test_optimiser_groups(name: str, lr: float, query_pos_trained: bool) -> None:
    preset = get_preset(name)
    model = preset.build_model(**SMALL)
    groups = param_groups(model, recipe_for(preset.name))
    assert [g["name"] for g in groups] == ["enhancement", "matching", "detection"]
    assert all(g["lr"] == lr for g in groups)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(grouped) == trainable
    assert (id(model.query_pos) in set(grouped)) is query_pos_trained
    assert id(model.logit_scale) in {id(p) for p in groups[1]["params"]}
    counts = parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,moves", [("made", False), ("made-paper", True)])
def test_positional_query_is_trained_only_when_the_preset_says(name: str, moves: bool) -> None:
    preset = get_preset(name)
    torch.manual_seed(0)
    model = preset.build_model(**SMALL, decoder_layers=2).train()
    optimiser = torch.optim.Adam(param_groups(model, recipe_for(preset.name)))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = make_batch([5, 9, 20], [30, 12, 50])
    for _ in range(2):
        out = model(*inputs)
        optimiser.zero_grad()
        made_losses(out, torch.full((3, 1, 2), 0.2))["L_total"].backward()
        optimiser.step()
    assert (not torch.equal(before["query_pos"], model.query_pos)) is moves
    assert model.query_pos.requires_grad is moves
    assert not torch.equal(before["decoder.layers.1.cross_attn.q_proj.weight"],
                           model.decoder.layers[1].cross_attn.q_proj.weight)


# ----------------------------------------------------------------------------------------------------------------
# Initialisation (docs/official-code.md, "Model")


def test_official_initialisation() -> None:
    torch.manual_seed(0)
    model = build_model("made")
    eye = torch.eye(256)
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj", "linear_proj"):
        assert torch.equal(getattr(model.xpool, proj).weight, eye)
        assert torch.equal(getattr(model.xpool, proj).bias, torch.zeros(256))
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.03))
    assert 0.8 < float(model.query_pos.detach().std()) < 1.2  # N(0, 1)
    packed_bound = math.sqrt(6 / (256 + 3 * 256))  # xavier on the packed [3d, d] in-projection
    square_bound = math.sqrt(6 / (256 + 256))
    attentions = (model.fusion.layers[0].self_attn, model.decoder.layers[5].cross_attn,
                  model.enhance["music"].layers[0].attn)
    for attn in attentions:
        q = attn.q_proj.weight.detach()
        assert float(q.abs().max()) <= packed_bound and float(q.abs().max()) > 0.9 * packed_bound
        assert torch.equal(attn.q_proj.bias, torch.zeros(256)) and torch.equal(attn.out_proj.bias, torch.zeros(256))
    # DETR re-initialises every matrix with xavier, the enhancement out-projection keeps PyTorch's Linear init.
    assert float(model.fusion.layers[0].self_attn.out_proj.weight.detach().abs().max()) > 0.9 * square_bound
    assert float(model.enhance["video"].layers[0].attn.out_proj.weight.detach().abs().max()) <= 1 / math.sqrt(256)
    ffn_bound = math.sqrt(6 / (256 + 1024))
    assert float(model.decoder.layers[0].ffn.fc1.weight.detach().abs().max()) <= ffn_bound


# ----------------------------------------------------------------------------------------------------------------
# Inference API


@pytest.fixture(scope="module")
def small_model() -> MaDe:
    torch.manual_seed(0)
    return perturb(build_model("made", **SMALL)).eval()


def test_fast_inference_matches_the_training_forward(small_model: MaDe) -> None:
    inputs = make_batch([5, 50, 17, 1], [96, 12, 40, 3])
    with torch.no_grad():
        out = small_model(*inputs)
        video = small_model.encode_video(inputs[0], inputs[1])
        music = small_model.encode_music(inputs[2], inputs[3])
        scores = small_model.relevance(video, music, components=True)
        detection = small_model.detect(video, music)
    assert_close(scores.s0, out.s0, rtol=1e-5, atol=1e-6)
    assert_close(scores.s1, out.s1, rtol=1e-5, atol=1e-6)
    assert_close(scores.p_s, out.p_s, rtol=1e-5, atol=1e-6)
    assert_close(detection.spans, out.detection.spans, rtol=1e-5, atol=1e-6)
    assert detection.final_spans.shape == (4, 2) and detection.spans.dtype == torch.float32


def test_padding_and_batch_composition_do_not_change_results(small_model: MaDe) -> None:
    lengths_v, lengths_m = [5, 33, 17], [70, 12, 40]
    with torch.no_grad():
        reference = small_model(*make_batch(lengths_v, lengths_m))
        for frames, segments in ((33, 70), (61, 128)):
            fv, fm, sv, sm = make_batch(lengths_v, lengths_m)
            fv, fm = (F.pad(fv, (0, 0, 0, frames - 50)), F.pad(fm, (0, frames - 50))) if frames > 50 else (
                fv[:, :frames], fm[:, :frames])
            sv, sm = (F.pad(sv, (0, 0, 0, segments - 96)), F.pad(sm, (0, segments - 96))) if segments > 96 else (
                sv[:, :segments], sm[:, :segments])
            out = small_model(fv, fm, sv, sm)
            for name in ("s0", "s1", "p_s"):
                assert_close(getattr(out, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
            assert_close(out.detection.spans, reference.detection.spans, rtol=1e-5, atol=1e-6)
            assert_close(out.contrastive_logits, reference.contrastive_logits, rtol=1e-5, atol=1e-4)
        # Scoring tracks in one call, in chunks of one, or as concatenated encodings gives the same matrix.
        fv, fm, sv, sm = make_batch(lengths_v, lengths_m)
        video = small_model.encode_video(fv, fm)
        whole = small_model.encode_music(sv, sm)
        parts = MusicEncoding.concat([small_model.encode_music(sv[:1, :70], sm[:1, :70]),
                                      small_model.encode_music(sv[1:, :40], sm[1:, :40])])
        full = small_model.relevance(video, whole)
        assert_close(small_model.relevance(video, whole, chunk=1), full, rtol=1e-5, atol=1e-6)
        assert_close(small_model.relevance(video, parts), full, rtol=1e-5, atol=1e-6)
        assert_close(small_model.relevance(video, whole.select([2, 0])), full[:, [2, 0]], rtol=1e-5, atol=1e-6)
        picked = small_model.detect(video.select([2, 0]), whole.select([2, 0]))
        assert_close(picked.spans, reference.detection.spans[:, [2, 0]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("matching", ["both", "h0", "xpool"])
def test_standardized_relevance_matches_the_folded_path(matching: str) -> None:
    """p_s from standardised tokens (what a library's track index stores) equals `relevance`, any padding."""
    torch.manual_seed(1)
    model = perturb(build_model("made", **SMALL, matching=matching)).eval()
    inputs = make_batch([5, 33, 17], [70, 12, 40, 96, 1])
    with torch.no_grad():
        video = model.encode_video(inputs[0][:3], inputs[1][:3])
        music = model.encode_music(inputs[2], inputs[3])
        expected = model.relevance(video, music)
        eps = model.xpool.norm_in.eps if model.xpool is not None else 1e-5
        standard, mean, std = standardize_tokens(music.tokens, music.mask, eps)
        assert_close(standard * std[..., None] + mean[..., None], music.tokens, rtol=1e-5, atol=1e-5)
        assert_close(model.relevance_standardized(video, music.embedding, standard, music.mask), expected,
                     rtol=1e-5, atol=1e-6)
        # Cut to the tracks' own longest length, padded further, or stored as float16: the same scores.
        short = model.relevance_standardized(video, music.embedding[:3], standard[:3, :70], music.mask[:3, :70])
        assert_close(short, expected[:, :3], rtol=1e-5, atol=1e-6)
        wide = model.relevance_standardized(video, music.embedding, F.pad(standard, (0, 0, 0, 8)),
                                            F.pad(music.mask, (0, 8)))
        assert_close(wide, expected, rtol=1e-5, atol=1e-6)
        rounded = model.relevance_standardized(video, music.embedding, standard.half(), music.mask)
        assert float((rounded - expected).abs().max()) < 1e-3


def test_training_output_reaches_the_logit_scale_through_the_graph() -> None:
    """DDP (find_unused_parameters) finds used parameters by walking the graph from the outputs: the logit scale
    must come out through an op, not as the bare Parameter (which DDP took for unused, then failed on)."""
    torch.manual_seed(0)
    model = build_model("made", **SMALL).train()
    out = model(*make_batch([5, 9], [12, 30]))
    assert out.logit_scale.grad_fn is not None and float(out.logit_scale) == float(model.logit_scale)


def test_one_chunk_relevance_reads_the_state_in_place(small_model: MaDe) -> None:
    """A single chunk covering every track (one video against a library part) skips reordering, same values."""
    inputs = make_batch([9], [70, 12, 40, 96, 3])
    with torch.no_grad():
        video = small_model.encode_video(inputs[0][:1], inputs[1][:1])
        music = small_model.encode_music(inputs[2], inputs[3])
        whole = small_model.relevance(video, music)  # default chunk: every track at once
        assert_close(small_model.relevance(video, music, chunk=2), whole, rtol=1e-5, atol=1e-6)


def test_bfloat16_autocast_inference_is_close_to_float32(small_model: MaDe) -> None:
    inputs = make_batch([5, 33, 17, 48], [70, 12, 40, 96])
    with torch.no_grad():
        video = small_model.encode_video(inputs[0], inputs[1])
        music = small_model.encode_music(inputs[2], inputs[3])
        p_s, spans = small_model.relevance(video, music), small_model.detect(video, music).spans
        with torch.autocast("cpu", dtype=torch.bfloat16):
            video16 = small_model.encode_video(inputs[0], inputs[1])
            music16 = small_model.encode_music(inputs[2], inputs[3])
            p_s16, det16 = small_model.relevance(video16, music16), small_model.detect(video16, music16)
    assert p_s16.dtype == torch.float32 and det16.spans.dtype == torch.float32
    assert float((p_s16 - p_s).abs().max()) < 0.05
    assert float((det16.spans - spans).abs().max()) < 0.02


def test_training_mode_relevance_applies_dropout() -> None:
    torch.manual_seed(0)
    model = perturb(build_model("made", **SMALL, xpool_dropout=0.5)).train()
    inputs = make_batch([5, 33], [70, 12])
    video = model.encode_video(inputs[0], inputs[1])
    music = model.encode_music(inputs[2], inputs[3])
    first, second = model.relevance(video, music, components=True), model.relevance(video, music, components=True)
    assert torch.equal(first.s0, second.s0)
    assert not torch.equal(first.s1, second.s1)


@pytest.mark.parametrize("call,message", [
    (lambda m: m.encode_video(torch.zeros(2, 50, 500), torch.ones(2, 50)), "frame_feats: expected features of shape"),
    (lambda m: m.encode_video(torch.zeros(2, 50, 512), torch.ones(2, 49)), "frame_feats: mask shape"),
    (lambda m: m.encode_music(torch.zeros(2, 96, 768), torch.tensor([[1] * 96, [0] * 96])),
     "segment_feats: item\\(s\\) \\[1\\] have no valid token"),
    (lambda m: m.encode_video(torch.zeros(1, 300, 512), torch.ones(1, 300)), ("300 token positions, the model supports "
                                                                             "at most 250")),
    (lambda m: m.encode_video(torch.zeros(0, 50, 512), torch.ones(0, 50)), "frame_feats: empty batch"),
    (lambda m: m.detect(m.encode_video(torch.ones(2, 5, 512), torch.ones(2, 5)),
                        m.encode_music(torch.ones(3, 5, 768), torch.ones(3, 5))), "got 2 videos and 3 tracks"),
])
def test_bad_inputs_raise_model_input_errors(small_model: MaDe, call, message: str) -> None:
    with pytest.raises(ModelInputError, match=message):
        call(small_model)


# ----------------------------------------------------------------------------------------------------------------
# Ablation switches


ABLATION_CASES = [
    *ABLATIONS.values(),
    {"fusion": "cross_attention", "cross_fusion_head_dim": 8, "fusion_input": "projected"},
    {"decoder_layers": 3, "decoder_self_attention": False},
    {"enhance_layers": 2},
]


@pytest.mark.parametrize("switches", ABLATION_CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_ablation_trains_and_infers(switches: dict) -> None:
    torch.manual_seed(0)
    model = perturb(build_model("made", **SMALL, **switches))
    config = model.config
    inputs = make_batch([5, 33, 17], [70, 12, 40])
    out = model.train()(*inputs)
    losses = made_losses(out, torch.tensor([[[0.3, 0.1]], [[0.5, 0.2]], [[0.2, 0.05]]]))
    losses["L_total"].backward()
    assert torch.isfinite(losses["L_total"])
    layers = config.decoder_layers
    assert out.detection.spans.shape == (layers, 3, 1, 2)
    assert ("loss_span_0" in losses) is (layers > 1) and f"loss_span_{layers - 1}" not in losses
    assert (out.s0 is None) is (config.matching == "xpool") and (out.s1 is None) is (config.matching == "h0")
    assert (out.contrastive_logits is None) is (not config.contrastive_align)
    with_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # Parameters without gradient: only the contrastive projections (their loss is exactly zero, as officially).
    assert all(n.startswith(("align_", "xpool.")) for n in with_grad), with_grad
    model.eval()
    with torch.no_grad():
        reference = model(*inputs)
        video, music = model.encode_video(*inputs[:2]), model.encode_music(*inputs[2:])
        assert_close(model.relevance(video, music), reference.p_s, rtol=1e-5, atol=1e-5)
        assert_close(model.detect(video, music).spans, reference.detection.spans, rtol=1e-5, atol=1e-5)


def test_ablation_switches_change_the_right_modules() -> None:
    base = parameter_counts(build_model("made", **SMALL))
    d = SMALL["dim"]
    assert parameter_counts(build_model("made", **SMALL, matching="h0"))["matching"] == 1  # logit_scale only
    no_enhance = parameter_counts(build_model("made", **SMALL, enhance=False))
    assert no_enhance["enhancement"] == (512 + 1) * d + (768 + 1) * d
    fewer = parameter_counts(build_model("made", **SMALL, decoder_layers=2))
    per_layer = 8 * (d * d + d) + 3 * 2 * d + 2 * d * 64 + 64 + d
    assert base["detection"] - fewer["detection"] == 4 * per_layer


# ----------------------------------------------------------------------------------------------------------------
# Layers


def test_folded_attention_equals_standard_attention() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    query, keys, values = torch.randn(3, 2, 32), torch.randn(3, 7, 32), torch.randn(3, 7, 32)
    mask = torch.arange(7)[None] < torch.tensor([7, 3, 1])[:, None]
    assert_close(attn.attend_few(query, keys, values, mask), attn(query, keys, values, mask), rtol=1e-4, atol=1e-4)
    # With attention dropout the value bias counts only with the kept weight: compare on the same dropout mask.
    attn.dropout = 0.5
    attn.train()
    torch.manual_seed(3)
    folded = attn.attend_few(query, keys, values, mask)
    torch.manual_seed(3)
    q = attn.q_proj(query).unflatten(-1, (4, 8))  # [B, Q, H, 8]
    k = attn.k_proj(keys).unflatten(-1, (4, 8))  # [B, L, H, 8]
    logits = torch.einsum("bqhe,blhe->bqhl", q, k).flatten(1, 2) / math.sqrt(8)  # [B, Q*H, L], as folded
    weights = dropout(logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1), 0.5, True)
    v = attn.v_proj(values).unflatten(-1, (4, 8))  # [B, L, H, 8]
    out = torch.einsum("bqhl,blhe->bqhe", weights.unflatten(1, (2, 4)), v).flatten(2)
    assert_close(folded, attn.out_proj(out), rtol=1e-4, atol=1e-4)


def test_token_layout_packs_by_decreasing_length_and_round_trips() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    layout = TokenLayout.from_mask(mask, bucket_items=2)
    x = torch.arange(16.0).view(4, 4, 1)
    rows = layout.pack(x)
    assert rows.flatten().tolist() == [4, 5, 6, 7, 12, 14, 0, 1, 8]  # items by length 4, 3 (hole), 2, 1
    assert [b.length for b in layout.buckets] == [4, 2]
    assert [b.items.tolist() for b in layout.buckets] == [[1, 3], [0, 2]]
    assert torch.equal(layout.unpack(rows), x * mask[..., None])


# ----------------------------------------------------------------------------------------------------------------
# mgsv models


def test_models_command_lists_presets_with_group_counts(capsys) -> None:
    from mgsv.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--json"])
    assert exit_info.value.code in (0, None)
    presets = {row["name"]: row for row in json.loads(capsys.readouterr().out)["presets"]}
    assert presets["made"]["parameters"] == {"enhancement": 2_039_296, "matching": 330_497, "detection": 8_165_124,
                                             "total": 10_534_917}
    assert presets["made-paper"]["learning_rates"] == {"enhancement": 1e-4, "matching": 1e-4, "detection": 1e-4}
    with pytest.raises(SystemExit):
        main(["models"])
    table = capsys.readouterr().out
    assert "10,534,917" in table and "made-paper" in table
