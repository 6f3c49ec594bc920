"""Loading frozen Hugging Face encoders: where the weights come from, which id they stand for, device and dtype.

Both encoders (CLIP frames, AST music) load the same way:

- `name_or_path` is a Hugging Face hub id (resolved through the local cache; downloaded only when the network is
  allowed) or a local folder in `save_pretrained` layout (`config.json` + `model.safetensors`).
- The *encoder id* is what the feature spec records, so it decides whether features are interchangeable with the
  official MGSV-EC features. It is, in order: the explicit `encoder_id` argument; the hub id; the hub id of a folder
  inside the Hugging Face cache (`.../models--ORG--NAME/snapshots/REV`); otherwise `local:sha256:<hash of the
  weight files>`, so an arbitrary folder never claims to be the official model by accident.
- Claiming an official id (explicitly or by hub id) requires the folder's architecture to match that model's
  published config, so a tiny or different model cannot pose as the official one either.
- Loading refuses any checkpoint that leaves weights uninitialised (transformers only warns and fills them with
  random values, which would give plausible-looking garbage features).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from mgsv.errors import InputError
from mgsv.file_access import check_readable

# Folder names of the Hugging Face hub cache: .../models--ORG--NAME/snapshots/<revision>.
_HF_CACHE_SNAPSHOT = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")

ModelT = TypeVar("ModelT", bound=torch.nn.Module)


@dataclass(frozen=True)
class ModelSource:
    """Where to load weights from and which encoder id the resulting features carry."""

    location: str  # a local folder or a hub id, passed to `from_pretrained`
    encoder_id: str
    is_local: bool


def looks_like_path(name_or_path: str) -> bool:
    """True if the string can only be a filesystem path (hub ids are `name` or `org/name`)."""
    text = str(name_or_path)
    return (
        text.startswith(("/", "./", "../", "~", ".\\"))
        or text in (".", "..")
        or text.count("/") > 1
        or text.endswith(("/", "\\"))
        or "\\" in text
    )


def hub_id_of_cache_folder(folder: Path) -> str | None:
    """The hub id of a snapshot folder inside the Hugging Face cache, or None for any other folder."""
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots":
        match = _HF_CACHE_SNAPSHOT.search(parts[-3])
        if match:
            return f"{match['org']}/{match['name']}"
    return None


def weights_fingerprint(folder: Path) -> str:
    """`local:sha256:<16 hex>` over the folder's weight files (names and contents), for folders of unknown origin."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return f"local:sha256:{digest.hexdigest()[:16]}"


def resolve_source(name_or_path: str | os.PathLike[str], encoder_id: str | None = None) -> ModelSource:
    """Decide whether `name_or_path` is a local folder or a hub id, and which encoder id it stands for."""
    text = os.fspath(name_or_path)
    if encoder_id is not None and not str(encoder_id).strip():
        raise InputError(text, "encoder_id must be a non-empty string")
    path = Path(text).expanduser()
    if path.exists() or looks_like_path(text):
        if not path.is_dir():
            problem = "is a file, not a model folder" if path.exists() else "no such model folder"
            raise InputError(text, f"{problem} (expected a save_pretrained folder with config.json and weights)")
        if not (path / "config.json").is_file():
            raise InputError(text, "no config.json: not a save_pretrained model folder")
        weights = [p for p in path.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES)]
        if not weights:
            raise InputError(text, "no weight file (*.safetensors or *.bin) in the model folder")
        for file in (path / "config.json", *weights):  # "permission denied" naming the file, not a traceback
            check_readable(file, "model file")
        resolved = encoder_id or hub_id_of_cache_folder(path) or weights_fingerprint(path)
        return ModelSource(location=str(path), encoder_id=resolved, is_local=True)
    return ModelSource(location=text, encoder_id=encoder_id or text, is_local=False)


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matmul support (AVX512-BF16 or AMX), where bf16 is several times faster."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_dtype(dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """`"auto"` picks bf16 where the hardware runs it natively (CUDA with bf16, AVX512-BF16/AMX CPUs), else fp32."""
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise InputError("dtype", f"unsupported encoder dtype {dtype}: use float32, bfloat16 or 'auto'")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        if device.type == "cpu":
            return torch.bfloat16 if cpu_supports_bf16() else torch.float32
        return torch.float32
    if key not in names:
        raise InputError("dtype", f"unknown dtype {dtype!r}: use 'float32', 'bfloat16' or 'auto'")
    return names[key]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars: our own checks report what matters."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _not_cached_message(source: ModelSource) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "downloads are off (HF_HUB_OFFLINE=1)" if offline else "it could not be downloaded"
    return (
        f"model not found in the local Hugging Face cache and {why}: run once with network access to cache it, "
        "or pass a local directory in save_pretrained layout (config.json + model.safetensors)"
    )


def load_frozen(
    model_cls: type[ModelT],
    source: ModelSource,
    model_types: tuple[str, ...],
    device: torch.device,
    dtype: torch.dtype,
    known_configs: Mapping[str, Mapping[str, Any]],
) -> ModelT:
    """Load `model_cls` from `source`, check it is complete and the right model, and return it frozen in eval mode."""
    from transformers import AutoConfig

    where = source.location
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(where)
        except OSError as exc:
            if source.is_local:
                raise InputError(where, f"unreadable config.json: {exc}") from exc
            raise InputError(where, _not_cached_message(source)) from exc
        except (ValueError, KeyError) as exc:
            raise InputError(where, f"not a transformers model config: {exc}") from exc
        if config.model_type not in model_types:
            raise InputError(
                where, f"holds a {config.model_type!r} model, expected one of {', '.join(map(repr, model_types))}"
            )
        try:
            model, info = model_cls.from_pretrained(
                where, output_loading_info=True, attn_implementation="sdpa", dtype=torch.float32
            )
        except OSError as exc:
            if source.is_local:
                raise InputError(where, f"could not load the weights: {exc}") from exc
            raise InputError(where, _not_cached_message(source)) from exc
        except Exception as exc:  # safetensors/torch raise assorted types for truncated or corrupt weight files
            raise InputError(where, f"could not load the weights ({type(exc).__name__}: {exc})") from exc
    missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(where, f"the checkpoint lacks {len(missing)} weight(s) of {model_cls.__name__}: {shown}")
    check_known_config(source, model.config, known_configs)
    model.requires_grad_(False)
    model.eval()
    return model.to(device=device, dtype=dtype)


def check_known_config(source: ModelSource, config: Any, known_configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a model that claims a known encoder id but whose architecture differs from that model's."""
    expected = known_configs.get(source.encoder_id)
    if expected is None:
        return
    wrong = [
        f"{key}={getattr(config, key, None)!r} (expected {value!r})"
        for key, value in expected.items()
        if getattr(config, key, None) != value
    ]
    if wrong:
        raise InputError(
            source.location,
            f"claims to be {source.encoder_id} but its architecture differs: {', '.join(wrong)}; "
            "pass another encoder_id (or none) for a different model",
        )


def compile_for_inference(model: torch.nn.Module) -> Callable[..., Any]:
    """`torch.compile` a frozen model with inductor's weight freezing (prepacked bf16 weights on CPU).

    Freezing is switched on only around our own calls, so it never leaks into other compiled code of the process
    (freezing treats parameters as constants). Shapes are static: callers pad batches to one size.
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)

    def forward(**inputs: Any) -> Any:
        with inductor_config.patch(freezing=True):
            return compiled(**inputs)

    return forward


def pad_batch(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a batch along dim 0 to `size` rows (compiled models see one shape; the extra rows are dropped)."""
    if len(batch) >= size:
        return batch
    return torch.cat([batch, batch.new_zeros((size - len(batch), *batch.shape[1:]))])
