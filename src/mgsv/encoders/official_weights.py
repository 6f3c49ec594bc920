"""Read the official encoder weight files and convert them into the Hugging Face classes `mgsv.encoders` runs.

The official MGSV-EC extraction (docs/official-code.md) loaded two files:

- `ViT-B-32.pt`, OpenAI CLIP's release: a TorchScript archive. `clip.load` (openai/CLIP `clip/clip.py`) opens it
  with `torch.jit.load` and rebuilds the model from its `state_dict()` (`clip/model.py::build_model`), falling
  back to `torch.load` for a plain state dict. The dict holds the whole CLIP (`visual.*` and the text tower) with
  fp16 linear/conv/attention weights, plus three 0-d tensors `input_resolution`, `context_length`, `vocab_size`
  that `build_model` deletes (open_clip's `load_state_dict(is_openai=True)` drops the same three).
- `audioset_0.4593.pth`, AST's AudioSet checkpoint: `torch.save` of a `DataParallel`-wrapped `ASTModel`'s state
  dict, so every key starts with `module.` (`module.v.*`: timm's distilled DeiT; `module.mlp_head.*`: the
  classifier). The official code loads it into the DDP-wrapped model (xxayt/MGSV `model/model_Base.py`), and
  transformers' AST conversion script reads the same keys.

`openai_clip_vision` and `ast_from_official` map these tensors onto `CLIPVisionModelWithProjection` and
`ASTModel`; shapes give the architecture, as `build_model` infers it. Weights keep their values (fp16 values are
held in fp32, as `clip.load` on a CPU does). Loading runs no pickled code: the archive is read by
`torch.jit.load` (TorchScript, not pickle), a plain checkpoint by `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgsv.errors import InputError

if TYPE_CHECKING:
    import torch
    from transformers import ASTModel, CLIPVisionModelWithProjection

# OpenAI's download address of ViT-B/32 (openai/CLIP clip/clip.py `_MODELS`): the path segment is the file's SHA-256.
OPENAI_CLIP_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
)
OPENAI_CLIP_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
# Where the official AST code downloads audioset_0.4593.pth (xxayt/MGSV model/ast_models.py, YuanGongND/ast).
AST_AUDIOSET_URL = "https://www.dropbox.com/s/cv4knew8mvbrnvq/audioset_0.4593.pth?dl=1"
_CLIP_META_KEYS = ("input_resolution", "context_length", "vocab_size")
# LayerNorm epsilon of each official model: OpenAI CLIP uses torch's default, timm's DeiT 1e-6.
CLIP_LAYER_NORM_EPS = 1e-5
DEIT_LAYER_NORM_EPS = 1e-6


def fetch_weights(url: str, folder: Path, sha256: str | None = None) -> Path:
    """Download `url` into `folder` once (a file already there is reused if its SHA-256 is `sha256`, when given).

    The download goes to a temporary name and is renamed into place only when complete and (with `sha256`)
    verified, so an interrupted or corrupt download never passes for the weights.
    """
    import hashlib
    import tempfile
    import urllib.error
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InputError(url, "not an http(s) address")
    name = Path(parsed.path).name
    if not name:
        raise InputError(url, "the address does not end in a file name")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.is_file() and (sha256 is None or file_sha256(target) == sha256):
        return target
    digest = hashlib.sha256()
    handle, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise InputError(url, f"downloaded file has SHA-256 {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(url, f"cannot download ({getattr(exc, 'reason', None) or exc}); pass a local copy") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of an official weight file: a TorchScript archive's `state_dict()`, or a saved state dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such weight file" if not path.exists() else "not a file")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; OpenAI's files are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError:
        pass  # not a TorchScript archive: a state dict saved with torch.save, as clip.load also accepts
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises assorted types for files that are not checkpoints
        raise InputError(path, f"neither a TorchScript archive nor a saved state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(path, "does not hold a state dict (a mapping of names to tensors)")
    return dict(data)


def _need(state: Mapping[str, Any], keys: list[str], where: str, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(where, f"not {what}: missing {len(missing)} tensor(s) ({shown})")


def openai_clip_vision(state: Mapping[str, torch.Tensor], where: str = "CLIP weights") -> CLIPVisionModelWithProjection:
    """`CLIPVisionModelWithProjection` (fp32, eval) holding the vision tower of an OpenAI CLIP state dict."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from mgsv.encoders.loading import quiet_transformers

    _need(state, ["visual.conv1.weight", "visual.positional_embedding", "visual.proj"], where, "an OpenAI CLIP ViT")
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    layers = len({m.group(1) for k in state if (m := re.match(r"visual\.transformer\.resblocks\.(\d+)\.", k))})
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,  # clip/model.py: vision_heads = vision_width // 64
        image_size=patch * grid,
        patch_size=patch,
        projection_dim=int(state["visual.proj"].shape[1]),
        hidden_act="quick_gelu",
        layer_norm_eps=CLIP_LAYER_NORM_EPS,
    )
    new: dict[str, torch.Tensor] = {
        "visual_projection.weight": state["visual.proj"].t(),
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": conv,
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
    }
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for part in ("weight", "bias"):
            new[f"vision_model.{ours}.{part}"] = state[f"visual.{theirs}.{part}"]
    for i in range(layers):
        src, dst = f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        _need(state, [src + "attn.in_proj_weight", src + "attn.in_proj_bias"], where, "an OpenAI CLIP ViT")
        for name, part in zip(("q_proj", "k_proj", "v_proj"), state[src + "attn.in_proj_weight"].chunk(3)):
            new[dst + f"self_attn.{name}.weight"] = part
        for name, part in zip(("q_proj", "k_proj", "v_proj"), state[src + "attn.in_proj_bias"].chunk(3)):
            new[dst + f"self_attn.{name}.bias"] = part
        pairs = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                 ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
        for ours, theirs in pairs:
            for part in ("weight", "bias"):
                new[dst + f"{ours}.{part}"] = state[src + f"{theirs}.{part}"]
    with quiet_transformers():
        model = CLIPVisionModelWithProjection(config)
    return _load_exactly(model, new, where)


def ast_from_official(
    state: Mapping[str, torch.Tensor],
    where: str = "AST weights",
    num_heads: int | None = None,
    layer_norm_eps: float = DEIT_LAYER_NORM_EPS,
) -> ASTModel:
    """`ASTModel` (fp32, eval) holding an official AST state dict (`module.v.*` keys, or the same without `module.`).

    The file does not say the number of heads: timm's DeiTs all use 64-dim heads, the default here.
    `layer_norm_eps` is DeiT's 1e-6 (the official arithmetic); the hub's config of the same model says 1e-12.
    """
    from transformers import ASTConfig, ASTModel

    from mgsv.encoders.loading import quiet_transformers

    prefix = "module.v." if "module.v.cls_token" in state else "v."
    keys = ["cls_token", "dist_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    _need(state, [prefix + k for k in keys], where, "an AST checkpoint (module.v.* keys)")
    hidden = int(state[prefix + "cls_token"].shape[-1])
    proj = state[prefix + "patch_embed.proj.weight"]
    layers = len({m.group(1) for k in state if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))})
    tokens = int(state[prefix + "pos_embed"].shape[1]) - 2
    # The official input is 128 mel bins x 1024 frames in 16 x 16 patches at stride 10: 12 x 101 patches.
    if tokens != 12 * 101 or tuple(proj.shape[1:]) != (1, 16, 16):
        raise InputError(where, f"not the 10/10-stride AST of 1024 x 128 inputs ({tokens} patches, kernel {list(proj.shape)})")
    fc1 = state.get(prefix + "blocks.0.mlp.fc1.weight")
    config = ASTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_heads or max(1, hidden // 64),
        intermediate_size=int(fc1.shape[0]) if fc1 is not None else 4 * hidden,
        patch_size=16,
        frequency_stride=10,
        time_stride=10,
        max_length=1024,
        num_mel_bins=128,
        layer_norm_eps=layer_norm_eps,
        qkv_bias=True,
    )
    new: dict[str, torch.Tensor] = {
        "embeddings.cls_token": state[prefix + "cls_token"],
        "embeddings.distillation_token": state[prefix + "dist_token"],
        "embeddings.position_embeddings": state[prefix + "pos_embed"],
        "embeddings.patch_embeddings.projection.weight": proj,
        "embeddings.patch_embeddings.projection.bias": state[prefix + "patch_embed.proj.bias"],
    }
    with quiet_transformers():
        model = ASTModel(config)
    names = _AST_V5_NAMES if "layers.0.attention.q_proj.weight" in model.state_dict() else _AST_V4_NAMES
    for part in ("weight", "bias"):
        new[f"layernorm.{part}"] = state.get(f"{prefix}norm.{part}")
    for i in range(layers):
        src, dst = f"{prefix}blocks.{i}.", names["layer"].format(i=i)
        _need(state, [src + "attn.qkv.weight", src + "attn.qkv.bias"], where, "an AST checkpoint")
        for part in ("weight", "bias"):
            for name, chunk in zip(("query", "key", "value"), state[src + f"attn.qkv.{part}"].chunk(3)):
                new[dst + f"{names[name]}.{part}"] = chunk
            for theirs in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                new[dst + f"{names[theirs]}.{part}"] = state.get(src + f"{theirs}.{part}")
    absent = sorted(k for k, v in new.items() if v is None)
    if absent:
        raise InputError(where, f"not an AST checkpoint: no tensor for {', '.join(absent[:5])}")
    return _load_exactly(model, new, where)


# transformers renamed AST's modules in version 5 (its loader converts hub checkpoints on the fly); the official
# timm names map onto either layout.
_AST_V4_NAMES = {
    "layer": "encoder.layer.{i}.", "query": "attention.attention.query", "key": "attention.attention.key",
    "value": "attention.attention.value", "attn.proj": "attention.output.dense", "norm1": "layernorm_before",
    "norm2": "layernorm_after", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
}
_AST_V5_NAMES = {
    "layer": "layers.{i}.", "query": "attention.q_proj", "key": "attention.k_proj", "value": "attention.v_proj",
    "attn.proj": "attention.o_proj", "norm1": "layernorm_before", "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}


def _load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> Any:
    """Load every tensor (as fp32) with strict key and shape checks; the model comes back frozen in eval mode."""
    import torch

    expected = model.state_dict()
    unknown = sorted(set(state) - set(expected))
    if unknown:  # a bug in the mapping, never the file's fault: fail loudly
        raise RuntimeError(f"conversion produced names the model does not have: {unknown[:5]}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        shown = ", ".join(f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})" for k in wrong[:3])
        raise InputError(where, f"tensor shapes do not fit the architecture they imply: {shown}")
    # Buffers the conversion does not supply (e.g. CLIP's position_ids) keep the values the model built.
    converted = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    missing = [k for k in expected if k not in converted and k not in dict(model.named_buffers())]
    if missing:
        raise InputError(where, f"conversion left {len(missing)} weight(s) unset: {', '.join(missing[:5])}")
    model.load_state_dict(converted, strict=False)
    model.requires_grad_(False)
    return model.eval()
