"""The official-key table covers every official MaDe tensor exactly once and maps it onto ours with equal shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mgsv.errors import InputError
from mgsv.models.layers import sinusoidal_table
from mgsv.models.made import MaDe, MaDeConfig
from mgsv.models.official_keys import (
    KEY_TABLE,
    expand,
    infer_config,
    official_to_ours,
    ours_to_official,
    strip_wrappers,
)

FIXTURE_CONFIG = MaDeConfig(dim=32, detr_ffn_dim=128, enhance_ffn_dim=1024, contrastive_dim=256)


@pytest.fixture(scope="module")
def official(parity_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(parity_dir / "model_perturbed.safetensors")


def test_table_covers_all_199_official_keys_one_to_one(official) -> None:
    rows = expand(FIXTURE_CONFIG)
    assert len(official) == 199
    assert sorted(key for key, _, _ in rows) == sorted(official)
    assert len({key for key, _, _ in rows}) == len(rows)
    ours = [target for _, targets, _ in rows for target in targets]
    model_keys = set(MaDe(FIXTURE_CONFIG).state_dict())
    loaded = [t for t in ours if t in model_keys]
    assert len(loaded) == len(set(loaded)) == len(model_keys)  # every tensor of ours comes from exactly one row
    kinds = {key: kind for key, _, kind in rows}
    assert {k for k, kind in kinds.items() if kind == "rebuilt"} == {
        "video_position_embedding.pe", "audio_position_embedding.pe"}
    assert [k for k, kind in kinds.items() if kind == "constant"] == ["criterion.empty_weight"]
    assert sum(kind == "split" for kind in kinds.values()) == 2 * (2 + 2 + 6 + 6)  # weight + bias per MHA


def test_shapes_are_equal_and_packed_projections_split_in_qkv_order(official) -> None:
    model = MaDe(FIXTURE_CONFIG)
    ours = official_to_ours(official, FIXTURE_CONFIG)
    expected = model.state_dict()
    assert set(ours) == set(expected)
    for key, tensor in ours.items():
        assert tensor.shape == expected[key].shape, key
    packed = official["detr_transformer.encoder.layers.1.self_attn.in_proj_weight"]
    assert torch.equal(ours["fusion.layers.1.self_attn.q_proj.weight"], packed[:32])
    assert torch.equal(ours["fusion.layers.1.self_attn.k_proj.weight"], packed[32:64])
    assert torch.equal(ours["fusion.layers.1.self_attn.v_proj.weight"], packed[64:])
    assert torch.equal(ours["query_pos"], official["decoder_query_embed.weight"])


def test_round_trip_to_official_is_exact(official) -> None:
    back = ours_to_official(official_to_ours(official, FIXTURE_CONFIG), FIXTURE_CONFIG)
    assert set(back) == set(official)
    for key, tensor in official.items():
        assert torch.equal(back[key], tensor), key


def test_position_tables_are_rebuilt_bit_for_bit(official) -> None:
    assert torch.equal(sinusoidal_table(250, 32)[None], official["video_position_embedding.pe"])
    assert torch.equal(sinusoidal_table(300, 32)[None], official["audio_position_embedding.pe"])
    broken = dict(official)
    broken["audio_position_embedding.pe"] = official["audio_position_embedding.pe"] + 1e-3
    with pytest.raises(InputError, match="audio_position_embedding.pe: differs from the sinusoidal table"):
        official_to_ours(broken, FIXTURE_CONFIG)


def test_config_is_inferred_from_shapes(official) -> None:
    assert infer_config(official) == FIXTURE_CONFIG
    assert infer_config(official, query="music").query == "music"


def test_missing_and_unexpected_keys_are_listed(official) -> None:
    broken = {k: v for k, v in official.items() if k != "class_embed.bias"}
    broken["moment_embed.layers.0.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as info:
        official_to_ours(broken, FIXTURE_CONFIG, where="ckpt.pth")
    message = str(info.value)
    assert message.startswith("ckpt.pth: ")
    assert "missing official key(s): class_embed.bias" in message
    assert "unexpected key(s) (an unsupported official variant?): moment_embed.layers.0.weight" in message


def test_wrappers_and_frozen_encoders_are_removed(official) -> None:
    wrapped = {f"module.{k}": v for k, v in official.items()}
    wrapped["module.vit_model.visual.conv1.weight"] = torch.zeros(2)
    wrapped["ast_model.module.v.cls_token"] = torch.zeros(2)
    state, dropped = strip_wrappers(wrapped)
    assert dropped == 2
    assert set(state) == set(official)


def test_default_config_matches_the_official_module_sizes(parity_dir: Path) -> None:
    """Official keys of the full-size model, summed per official module, give the published counts."""
    counts = json.loads((parity_dir / "made-default-param-counts.json").read_text())["per_module"]
    config = MaDeConfig()
    with torch.device("meta"):
        model = MaDe(config)
    official = ours_to_official({k: v for k, v in model.state_dict().items()}, config)
    for module, expected in counts.items():
        total = sum(v.numel() for k, v in official.items()
                    if (k == module or k.startswith(module + ".")) and not k.endswith(".pe"))
        assert total == expected, module


def test_cross_attention_fusion_variant_round_trips() -> None:
    config = MaDeConfig(dim=32, detr_ffn_dim=64, enhance_ffn_dim=64, contrastive_dim=16, fusion="cross_attention",
                        cross_fusion_head_dim=16)
    state = MaDe(config).state_dict()
    official = ours_to_official(state, config)
    assert official["video_music_fusion_cross_transformer.layers.0.0.to_kv.weight"].shape == (2 * 8 * 16, 32)
    assert infer_config(official) == config
    back = official_to_ours(official, config)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_every_rule_names_a_known_switch() -> None:
    for rule in KEY_TABLE:
        assert rule.kind in ("copy", "split", "rebuilt", "constant")
        if rule.when not in (None, "uses_cross_fusion"):
            assert hasattr(MaDeConfig(), rule.when), rule
