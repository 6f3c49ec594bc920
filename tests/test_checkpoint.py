"""Checkpoint folders (save / load, atomic, clear errors) and `mgsv convert` of official checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from mgsv.cli import main
from mgsv.errors import InputError, OutputExistsError
from mgsv.features.spec import DEFAULT_SPECS
from mgsv.models import build_model
from mgsv.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint

SMALL = {"dim": 32, "enhance_ffn_dim": 64, "detr_ffn_dim": 64, "contrastive_dim": 16, "decoder_layers": 2}


def batch(seed: int = 0, count: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.arange(50)[None] < torch.tensor([5, 50, 17][:count])[:, None]
    segment_mask = torch.arange(96)[None] < torch.tensor([96, 12, 40][:count])[:, None]
    return (torch.randn(count, 50, 512, generator=g) * frame_mask[..., None], frame_mask,
            torch.randn(count, 96, 768, generator=g) * segment_mask[..., None], segment_mask)


def outputs(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        video = model.encode_video(inputs[0], inputs[1])
        music = model.encode_music(inputs[2], inputs[3])
        return model.relevance(video, music), model.detect(video, music).spans


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("made-paper", **SMALL).eval()


def test_round_trip_rebuilds_the_same_model(tmp_path: Path, model) -> None:
    specs = {name: spec.to_dict() for name, spec in DEFAULT_SPECS.items()}
    folder = save_checkpoint(model, tmp_path / "ckpt", feature_specs=DEFAULT_SPECS,
                             metadata={"step": 120, "val": {"R1": 8.8}})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded, info = load_checkpoint(folder)
    assert info.preset == "made-paper" and info.config == model.config
    assert info.feature_specs == specs
    assert info.metadata == {"step": 120, "val": {"R1": 8.8}}
    assert not loaded.training
    inputs = batch()
    for ours, theirs in zip(outputs(model, inputs), outputs(loaded, inputs)):
        assert torch.equal(ours, theirs)
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "mgsv-checkpoint" and config["format_version"] == 1
    assert config["model_config"]["decoder_self_attention"] is False
    # No rebuilt buffers in the weights file (the sinusoidal tables are recomputed).
    assert not any(key.endswith(".pe") for key in load_file(folder / "model.safetensors"))


def test_existing_folder_is_kept_unless_overwrite(tmp_path: Path, model) -> None:
    folder = save_checkpoint(model, tmp_path / "ckpt", metadata={"step": 1})
    with pytest.raises(OutputExistsError, match="ckpt: checkpoint folder already exists"):
        save_checkpoint(model, folder, metadata={"step": 2})
    assert read_checkpoint_info(folder).metadata == {"step": 1}
    save_checkpoint(model, folder, metadata={"step": 2}, overwrite=True)
    assert read_checkpoint_info(folder).metadata == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or retired folders left


def test_interrupted_save_leaves_the_old_checkpoint(tmp_path: Path, model, monkeypatch) -> None:
    folder = save_checkpoint(model, tmp_path / "ckpt", metadata={"step": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mgsv.models.checkpoint.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, folder, metadata={"step": 2}, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert read_checkpoint_info(folder).metadata == {"step": 1}


def rewrite_config(folder: Path, **changes) -> None:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))


def rewrite_model_config(folder: Path, **changes) -> None:
    data = json.loads((folder / "config.json").read_text())
    data["model_config"].update(changes)
    (folder / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize("damage,message", [
    (lambda f: (f / "config.json").unlink(), "config.json: missing: not an mgsv checkpoint folder"),
    (lambda f: (f / "config.json").write_text("{not json"), "config.json: not valid JSON"),
    (lambda f: rewrite_config(f, format="other"), "config.json: not an mgsv checkpoint config"),
    (lambda f: rewrite_config(f, format_version=9), r"config.json: written by a newer mgsv \(mgsv checkpoint config format_version 9"),
    (lambda f: rewrite_config(f, preset="made-xl"), ("config.json: unknown model preset 'made-xl'; valid presets: "
                                                    "made, made-paper")),
    (lambda f: rewrite_config(f, model_config={"dim": 32, "colour": "red"}),
     "config.json: model_config: unknown MaDeConfig key\\(s\\) 'colour'"),
    (lambda f: rewrite_config(f, model_config={"dim": -4}), "config.json: model_config: invalid MaDe config: dim must"),
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing: the checkpoint has no weights"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:1000]),
     "model.safetensors: unreadable weights"),
    (lambda f: rewrite_model_config(f, detr_ffn_dim=128), ("model.safetensors: weights do not match config.json: "
                                                          "shape mismatch: decoder.layers.0.ffn.fc1.bias \\[64\\]")),
    (lambda f: rewrite_model_config(f, decoder_layers=3),
     "model.safetensors: weights do not match config.json: missing tensors: decoder.layers.2"),
])
def test_damaged_checkpoints_raise_clear_errors(tmp_path: Path, model, damage, message: str) -> None:
    folder = save_checkpoint(model, tmp_path / "ckpt")
    damage(folder)
    with pytest.raises(InputError, match=message):
        load_checkpoint(folder)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope: no such checkpoint folder"):
        load_checkpoint(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------------------------
# mgsv convert


@pytest.fixture(scope="module")
def fixture_weights(parity_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(parity_dir / "model_perturbed.safetensors")


def fixture_scores(parity_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(parity_dir / "outputs_perturbed.safetensors")


def converted_outputs(folder: Path, parity_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model, _ = load_checkpoint(folder)
    x = {k: v.float() for k, v in load_file(parity_dir / "inputs.safetensors").items()}
    return outputs(model, (x["frame_feats"], x["frame_mask"], x["segment_feats"], x["segment_mask"]))


def test_convert_plain_state_dict(tmp_path: Path, parity_dir: Path, fixture_weights, capsys) -> None:
    source = tmp_path / "plain.pth"
    torch.save(fixture_weights, source)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "out"), "--json"])
    assert exit_info.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["dim"] == 32 and summary["config"]["detr_ffn_dim"] == 128
    assert summary["parameters"]["total"] == 337093  # the fixture's parameter count (config.json)
    p_s, spans = converted_outputs(tmp_path / "out", parity_dir)
    ref = fixture_scores(parity_dir)
    assert_close(p_s, ref["p_s"], rtol=1e-5, atol=1e-5)
    assert_close(spans, ref["pred_spans_all"], rtol=1e-5, atol=1e-5)
    info = read_checkpoint_info(tmp_path / "out")
    assert info.feature_specs == {name: spec.to_dict() for name, spec in DEFAULT_SPECS.items()}
    assert info.metadata["converted_from"] == "plain.pth"


def test_convert_official_training_checkpoint(tmp_path: Path, parity_dir: Path, fixture_weights, capsys) -> None:
    """As the official save_model writes it: DDP prefix, frozen encoders included, epoch and optimiser state."""
    state = {f"module.{k}": v for k, v in fixture_weights.items()}
    state["module.vit_model.visual.proj"] = torch.zeros(4, 4)
    state["module.ast_model.module.v.pos_embed"] = torch.zeros(1, 3, 4)
    source = tmp_path / "pytorch_model.bin.best_r1iou07"
    torch.save({"epoch": 37, "loss": 1.25, "model_state_dict": state, "optimizer_state_dict": {"state": {}}}, source)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "out"), "--set", "query=video"])
    assert exit_info.value.code in (0, None)
    assert "2 frozen encoder tensors dropped" in capsys.readouterr().out
    info = read_checkpoint_info(tmp_path / "out")
    assert info.metadata["official_epoch"] == 37 and info.metadata["frozen_encoder_tensors_dropped"] == 2
    p_s, _ = converted_outputs(tmp_path / "out", parity_dir)
    assert_close(p_s, fixture_scores(parity_dir)["p_s"], rtol=1e-5, atol=1e-5)
    # An existing output is refused without --force, replaced with it.
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert "already exists (use --force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "out"), "--force", "--set", "query=music"])
    assert exit_info.value.code in (0, None)
    assert read_checkpoint_info(tmp_path / "out").config.query == "music"


class Opaque:
    """Not a tensor container: weights-only unpickling refuses it."""


@pytest.mark.parametrize("write,message", [
    (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a readable PyTorch checkpoint"),
    (lambda p: torch.save({"model": Opaque()}, p), "--allow-pickle"),
    (lambda p: torch.save({"epoch": 3}, p), "no model state dict found"),
    (lambda p: torch.save({"vit_proj.weight": torch.zeros(32, 512)}, p), ("not an official MaDe checkpoint: key "
                                                                          "'ast_proj.weight' is missing")),
])
def test_convert_rejects_bad_files(tmp_path: Path, capsys, write, message: str) -> None:
    source = tmp_path / "bad.pth"
    write(source)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(source), str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "bad.pth" in err and message in " ".join(err.split())
    assert not (tmp_path / "out").exists()


def test_convert_rejects_bad_overrides(tmp_path: Path, fixture_weights, capsys) -> None:
    source = tmp_path / "plain.pth"
    torch.save(fixture_weights, source)
    for option, message in (("colour=red", "unknown MaDeConfig key 'colour'"), ("enhance=maybe", "expected true"),
                            ("query=audio", "query must be one of")):
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", str(source), str(tmp_path / "out"), "--set", option])
        assert exit_info.value.code == 1
        assert message in " ".join(capsys.readouterr().err.split())
