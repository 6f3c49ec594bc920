"""The official MaDe state-dict keys (xxayt/MGSV `Uni_model`) and ours, in one explicit table.

Every official key is covered by exactly one row of `KEY_TABLE`:
- `copy`: the tensor is ours under another name;
- `split`: a packed tensor becomes several of ours (attention `in_proj_*` -> q, k, v; X-Attn `to_kv` -> k, v),
  in equal chunks along dim 0, in that order;
- `rebuilt`: a deterministic buffer (the sinusoidal tables) that we recompute; the official copy is compared and a
  difference is an error;
- `constant`: the DETR criterion's class weights [1.0, eos_coef]; checked, not loaded.
`{i}` in a row stands for a layer index; a row's `when` names the config switch that makes its module exist.
Frozen encoder keys (`vit_model.*`, `ast_model.*`) and a DDP `module.` prefix are removed before mapping.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mgsv.errors import InputError
from mgsv.models.layers import sinusoidal_table
from mgsv.models.made import MaDe, MaDeConfig

FROZEN_ENCODER_PREFIXES = ("vit_model.", "ast_model.")


@dataclass(frozen=True)
class KeyRule:
    """One row: official key pattern -> our key(s), how the tensor moves, which layer count and switch apply."""

    official: str
    ours: tuple[str, ...]
    kind: str = "copy"  # copy | split | rebuilt | constant
    layers: str | None = None  # config field giving the range of {i}
    when: str | None = None  # config switch (attribute / property) that must be true


def _rules_attention(official: str, ours: str, layers: str, when: str | None = None) -> list[KeyRule]:
    """The four rows of one `nn.MultiheadAttention` (packed in-projection split into q, k, v)."""
    qkv = tuple(f"{ours}.{p}_proj" for p in "qkv")
    return [
        KeyRule(f"{official}.in_proj_weight", tuple(f"{k}.weight" for k in qkv), "split", layers, when),
        KeyRule(f"{official}.in_proj_bias", tuple(f"{k}.bias" for k in qkv), "split", layers, when),
        KeyRule(f"{official}.out_proj.weight", (f"{ours}.out_proj.weight",), "copy", layers, when),
        KeyRule(f"{official}.out_proj.bias", (f"{ours}.out_proj.bias",), "copy", layers, when),
    ]


def _rules_module(official: str, ours: str, layers: str | None = None, when: str | None = None,
                  params: tuple[str, ...] = ("weight", "bias")) -> list[KeyRule]:
    """Rows of a Linear or LayerNorm: weight and bias under the new name."""
    return [KeyRule(f"{official}.{p}", (f"{ours}.{p}",), "copy", layers, when) for p in params]


def _build_table() -> tuple[KeyRule, ...]:
    rows: list[KeyRule] = []
    for official, ours in (("video", "video"), ("audio", "music")):
        proj = "vit_proj" if official == "video" else "ast_proj"
        block, layer = f"{official}_transformer", f"{official}_transformer.layers.{{i}}"
        mine = f"enhance.{ours}.layers.{{i}}"
        rows += _rules_module(proj, f"enhance.{ours}.proj")
        rows.append(KeyRule(f"{official}_position_embedding.pe", (f"enhance.{ours}.pe",), "rebuilt", when="enhance"))
        rows += _rules_module(f"{layer}.0", f"{mine}.attn_norm", "enhance_layers", "enhance")
        rows += _rules_attention(f"{layer}.1", f"{mine}.attn", "enhance_layers", "enhance")
        rows += _rules_module(f"{layer}.2", f"{mine}.ffn_norm", "enhance_layers", "enhance")
        rows += _rules_module(f"{layer}.3.0", f"{mine}.ffn.fc1", "enhance_layers", "enhance")
        rows += _rules_module(f"{layer}.3.3", f"{mine}.ffn.fc2", "enhance_layers", "enhance")
        rows += _rules_module(f"{block}.final_linear", f"enhance.{ours}.final_linear", when="enhance")

    xpool = "video_guided_to_music_pooling_cross_transformer"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rows += _rules_module(f"{xpool}.cross_attn.{proj}", f"xpool.{proj}", when="uses_xpool")
    rows += _rules_module(f"{xpool}.linear_proj", "xpool.linear_proj", when="uses_xpool")
    for n, ours in ((1, "norm_in"), (2, "norm_attn"), (3, "norm_out")):
        rows += _rules_module(f"{xpool}.layer_norm{n}", f"xpool.{ours}", when="uses_xpool")
    rows.append(KeyRule("logit_scale", ("logit_scale",)))

    ca = "video_music_fusion_cross_transformer"
    rows.append(KeyRule(f"{ca}.layers.0.0.to_q.weight", ("cross_fusion.to_q.weight",), when="uses_cross_fusion"))
    rows.append(KeyRule(f"{ca}.layers.0.0.to_kv.weight", ("cross_fusion.to_k.weight", "cross_fusion.to_v.weight"),
                        "split", when="uses_cross_fusion"))
    rows += _rules_module(f"{ca}.layers.0.0.to_out.0", "cross_fusion.to_out", when="uses_cross_fusion")
    rows += _rules_module(f"{ca}.layers.0.1.net.0", "cross_fusion.ffn.fc1", when="uses_cross_fusion")
    rows += _rules_module(f"{ca}.layers.0.1.net.3", "cross_fusion.ffn.fc2", when="uses_cross_fusion")
    rows += _rules_module(f"{ca}.attention_query_layer_norms.0", "cross_fusion.query_norm", when="uses_cross_fusion")
    rows += _rules_module(f"{ca}.attention_context_layer_norms.0", "cross_fusion.context_norm",
                          when="uses_cross_fusion")
    rows += _rules_module(f"{ca}.ff_layer_norms.0", "cross_fusion.ffn_norm", when="uses_cross_fusion")
    rows += _rules_module(f"{ca}.final_linear", "cross_fusion.final_linear", when="uses_cross_fusion")

    enc, mine = "detr_transformer.encoder.layers.{i}", "fusion.layers.{i}"
    rows += _rules_attention(f"{enc}.self_attn", f"{mine}.self_attn", "encoder_layers")
    rows += _rules_module(f"{enc}.linear1", f"{mine}.ffn.fc1", "encoder_layers")
    rows += _rules_module(f"{enc}.linear2", f"{mine}.ffn.fc2", "encoder_layers")
    rows += _rules_module(f"{enc}.norm1", f"{mine}.attn_norm", "encoder_layers")
    rows += _rules_module(f"{enc}.norm2", f"{mine}.ffn_norm", "encoder_layers")

    dec, mine = "detr_transformer.decoder.layers.{i}", "decoder.layers.{i}"
    rows += _rules_attention(f"{dec}.self_attn", f"{mine}.self_attn", "decoder_layers", "decoder_self_attention")
    rows += _rules_module(f"{dec}.norm1", f"{mine}.self_attn_norm", "decoder_layers", "decoder_self_attention")
    rows += _rules_attention(f"{dec}.multihead_attn", f"{mine}.cross_attn", "decoder_layers")
    rows += _rules_module(f"{dec}.norm2", f"{mine}.cross_attn_norm", "decoder_layers")
    rows += _rules_module(f"{dec}.linear1", f"{mine}.ffn.fc1", "decoder_layers")
    rows += _rules_module(f"{dec}.linear2", f"{mine}.ffn.fc2", "decoder_layers")
    rows += _rules_module(f"{dec}.norm3", f"{mine}.ffn_norm", "decoder_layers")
    rows += _rules_module("detr_transformer.decoder.norm", "decoder.norm")

    rows.append(KeyRule("decoder_query_embed.weight", ("query_pos",)))
    rows += _rules_module("span_embed.layers.{i}", "span_head.layers.{i}", "span_head_layers")
    rows += _rules_module("class_embed", "class_head")
    rows += _rules_module("contrastive_align_projection_query", "align_query_proj", when="contrastive_align")
    rows += _rules_module("contrastive_align_projection_vid", "align_video_proj", when="contrastive_align")
    rows.append(KeyRule("criterion.empty_weight", (), "constant"))
    return tuple(rows)


KEY_TABLE: tuple[KeyRule, ...] = _build_table()

# The span head is always MLP(d, d, 2, 3).
_SPAN_HEAD_LAYERS = 3


def _applies(rule: KeyRule, config: MaDeConfig) -> bool:
    if rule.when is None:
        return True
    if rule.when == "uses_cross_fusion":
        return config.fusion == "cross_attention"
    return bool(getattr(config, rule.when))


def _layer_count(rule: KeyRule, config: MaDeConfig) -> int | None:
    if rule.layers is None:
        return None
    return _SPAN_HEAD_LAYERS if rule.layers == "span_head_layers" else getattr(config, rule.layers)


def expand(config: MaDeConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """Concrete (official key, our keys, kind) rows for a config, layer patterns expanded."""
    rows = []
    for rule in KEY_TABLE:
        if not _applies(rule, config):
            continue
        count = _layer_count(rule, config)
        for i in ([None] if count is None else range(count)):
            fill = (lambda s: s) if i is None else (lambda s, i=i: s.replace("{i}", str(i)))
            rows.append((fill(rule.official), tuple(fill(k) for k in rule.ours), rule.kind))
    return rows


def strip_wrappers(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """Remove a DDP `module.` prefix and drop the frozen CLIP / AST keys; returns (state, number dropped)."""
    out: dict[str, Tensor] = {}
    dropped = 0
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(FROZEN_ENCODER_PREFIXES):
            dropped += 1
            continue
        out[key] = value
    return out, dropped


def official_to_ours(state: Mapping[str, Tensor], config: MaDeConfig,
                     where: str = "official state dict") -> dict[str, Tensor]:
    """Map an official state dict (wrappers already stripped) to our keys; every mismatch is listed in one error."""
    rows = expand(config)
    expected = {official for official, _, _ in rows}
    problems = []
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing:
        problems.append(f"missing official key(s): {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"unexpected key(s) (an unsupported official variant?): {', '.join(unexpected[:20])}"
                        + (" ..." if len(unexpected) > 20 else ""))
    if problems:
        raise InputError(where, "; ".join(problems))
    ours: dict[str, Tensor] = {}
    for official, targets, kind in rows:
        tensor = state[official]
        if kind == "copy":
            ours[targets[0]] = tensor
        elif kind == "split":
            if tensor.shape[0] % len(targets):
                raise InputError(where, f"{official}: dim 0 of shape {list(tensor.shape)} does not split into "
                                        f"{len(targets)}")
            for target, part in zip(targets, tensor.chunk(len(targets))):
                ours[target] = part
        elif kind == "rebuilt":
            modality = "video" if official.startswith("video") else "music"
            rows_ = config.video_positions if modality == "video" else config.music_positions
            rebuilt = sinusoidal_table(rows_, config.dim)[None]
            if tensor.shape != rebuilt.shape or not torch.equal(tensor.float(), rebuilt):
                raise InputError(where, f"{official}: differs from the sinusoidal table we rebuild "
                                        f"(shape {list(tensor.shape)} vs {list(rebuilt.shape)})")
        elif kind == "constant" and (tensor.numel() != 2 or float(tensor.flatten()[0]) != 1.0):
            raise InputError(where, f"{official}: expected the class weights [1.0, eos_coef], got "
                                    f"{tensor.flatten().tolist()}")
    return ours


def ours_to_official(state: Mapping[str, Tensor], config: MaDeConfig, eos_coef: float = 0.1) -> dict[str, Tensor]:
    """Our state dict -> official keys (packed in-projections, PE buffers and class weights recreated)."""
    official: dict[str, Tensor] = {}
    for key, targets, kind in expand(config):
        if kind == "copy":
            official[key] = state[targets[0]]
        elif kind == "split":
            official[key] = torch.cat([state[t] for t in targets])
        elif kind == "rebuilt":
            rows_ = config.video_positions if key.startswith("video") else config.music_positions
            official[key] = sinusoidal_table(rows_, config.dim)[None]
        else:
            official[key] = torch.tensor([1.0, eos_coef])
    return official


def _shape(state: Mapping[str, Tensor], key: str, where: str) -> torch.Size:
    if key not in state:
        raise InputError(where, f"not an official MaDe checkpoint: key {key!r} is missing")
    return state[key].shape


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of distinct layer indices under `prefix` ("x.layers.")."""
    indices = {key[len(prefix):].split(".", 1)[0] for key in state if key.startswith(prefix)}
    return len([i for i in indices if i.isdigit()])


def infer_config(state: Mapping[str, Tensor], where: str = "official state dict", **overrides) -> MaDeConfig:
    """The MaDeConfig of an official state dict (wrappers stripped), from its keys and shapes.

    Shapes give the widths, layer counts and which modules exist. Heads, dropouts, the content-query type and the
    temperature leave no trace in the weights: the official script's values are assumed unless overridden.
    """
    dim, video_dim = _shape(state, "vit_proj.weight", where)
    music_dim = _shape(state, "ast_proj.weight", where)[1]
    values: dict = {"dim": dim, "video_dim": video_dim, "music_dim": music_dim}
    values["enhance"] = "video_transformer.final_linear.weight" in state
    if values["enhance"]:
        values["enhance_layers"] = _count(state, "video_transformer.layers.")
        values["enhance_ffn_dim"] = _shape(state, "video_transformer.layers.0.3.0.weight", where)[0]
        values["video_positions"] = _shape(state, "video_position_embedding.pe", where)[1]
        values["music_positions"] = _shape(state, "audio_position_embedding.pe", where)[1]
    values["matching"] = "both" if any(k.startswith("video_guided_to_music_pooling") for k in state) else "h0"
    if any(k.startswith("video_music_fusion_cross_transformer.") for k in state):
        values["fusion"] = "cross_attention"
        heads = overrides.get("cross_fusion_heads", 8)
        values["cross_fusion_head_dim"] = _shape(
            state, "video_music_fusion_cross_transformer.layers.0.0.to_q.weight", where)[0] // heads
    values["encoder_layers"] = _count(state, "detr_transformer.encoder.layers.")
    values["decoder_layers"] = _count(state, "detr_transformer.decoder.layers.")
    values["detr_ffn_dim"] = _shape(state, "detr_transformer.decoder.layers.0.linear1.weight", where)[0]
    values["decoder_self_attention"] = "detr_transformer.decoder.layers.0.self_attn.in_proj_weight" in state
    queries = _shape(state, "decoder_query_embed.weight", where)[0]
    if queries != 1:
        raise InputError(where, f"{queries} moment queries: only the official single-query model is supported")
    span_out = _shape(state, "span_embed.layers.2.weight", where)[0]
    if span_out != 2:
        raise InputError(where, "the span head predicts the centre only (predict_center=1): not supported")
    values["contrastive_align"] = "contrastive_align_projection_query.weight" in state
    if values["contrastive_align"]:
        values["contrastive_dim"] = _shape(state, "contrastive_align_projection_query.weight", where)[0]
    values.update(overrides)
    try:
        return MaDeConfig(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"cannot build a MaDe config from these weights: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# Reading official checkpoint files

_STATE_KEYS = ("model_state_dict", "state_dict", "model")


def _is_state_dict(value: object) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def read_official_state_dict(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, Tensor], dict]:
    """The model state dict in an official `.pth` / `.bin` file, and what else it says (epoch, ...).

    The file may hold the state dict itself or a dict with it under "model_state_dict" (the official
    `save_model`), "state_dict" or "model". Loading uses `torch.load(weights_only=True)`, which unpickles tensors
    and plain containers only; `allow_pickle` runs the full unpickler, for trusted files that need it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise InputError(path, "not a readable PyTorch checkpoint (truncated or another format?)") from exc
        raise InputError(path, f"it holds Python objects besides tensors ({found.group(1)}); if you trust the file, "
                               "`allow_pickle` loads it with the full unpickler") from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as exc:
        raise InputError(path, f"not a readable PyTorch checkpoint (truncated or another format?): {exc}") from exc
    extras: dict = {}
    if _is_state_dict(payload):
        return dict(payload), extras
    if isinstance(payload, Mapping):
        for key in _STATE_KEYS:
            if _is_state_dict(payload.get(key)):
                for name in ("epoch", "loss"):
                    value = payload.get(name)
                    if isinstance(value, Tensor) and value.numel() == 1:
                        value = value.item()
                    if isinstance(value, (int, float, str)):
                        extras[name] = value
                return dict(payload[key]), extras
    found = ", ".join(map(repr, list(payload)[:10])) if isinstance(payload, Mapping) else type(payload).__name__
    raise InputError(path, f"no model state dict found (looked for a tensor dict or the keys "
                           f"{', '.join(_STATE_KEYS)}; found {found})")


def model_from_official(state: Mapping[str, Tensor], where: str = "official state dict",
                        **overrides) -> tuple[MaDe, int]:
    """Build a MaDe from an official state dict: strip wrappers, infer the config, map and load the weights.

    Returns the model (eval mode) and the number of frozen encoder tensors that were dropped.
    """
    state, dropped = strip_wrappers(state)
    config = infer_config(state, where, **overrides)
    model = MaDe(config)
    ours = official_to_ours(state, config, where)
    expected = model.state_dict()
    wrong = [k for k in expected if expected[k].shape != ours[k].shape]
    if wrong:
        raise InputError(where, "shape mismatch after mapping: " + ", ".join(
            f"{k} {list(ours[k].shape)} vs {list(expected[k].shape)}" for k in wrong[:10]))
    model.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True)
    model.preset_name = "made"  # the official model family; the config records any variant
    return model.eval(), dropped
