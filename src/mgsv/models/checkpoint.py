"""Our checkpoints: a folder with `model.safetensors` and `config.json`, enough to rebuild the model alone.

config.json:
    {"format": "mgsv-checkpoint", "format_version": 1, "mgsv_version": "0.1.0", "preset": "made",
     "model_config": {...every config field...}, "feature_specs": {"video": {...}, "music": {...}},
     "metadata": {...free-form: training step, metrics, source...}}

Feature specs are stored as plain dicts (`FeatureSpec.to_dict()` output); this module does not interpret them.
Writes are atomic: the folder is assembled under a temporary name beside the target and renamed into place, so
an interrupted save never leaves a half-written checkpoint (and an existing one is only replaced on request).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mgsv import __version__
from mgsv.atomic_io import apply_umask, fsync_directory, fsync_file, make_temp_dir
from mgsv.errors import InputError, OutputExistsError
from mgsv.file_access import check_readable
from mgsv.hub.resolve import resolve_checkpoint
from mgsv.manifests import check_format
from mgsv.models.registry import ConfigError, UnknownPresetError, config_from_dict, get_preset

FORMAT = "mgsv-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class CheckpointInfo:
    """What a checkpoint says besides its weights."""

    path: Path
    preset: str
    config: Any
    feature_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    mgsv_version: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _spec_dict(spec: Any) -> dict[str, Any]:
    """A feature spec as a plain dict (accepts FeatureSpec-like objects with `to_dict`, or dicts)."""
    data = spec.to_dict() if hasattr(spec, "to_dict") else spec
    if not isinstance(data, Mapping):
        raise TypeError(f"feature spec must be a mapping or have to_dict(), got {type(spec).__name__}")
    return dict(data)


def save_checkpoint(
    model: nn.Module,
    folder: str | os.PathLike[str],
    *,
    preset: str | None = None,
    feature_specs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` as a checkpoint folder; refuses an existing folder unless `overwrite`. Returns the folder."""
    folder = Path(folder)
    preset = preset or getattr(model, "preset_name", None)
    if preset is None:
        raise ValueError("save_checkpoint needs the preset name (models built by the registry carry it)")
    get_preset(preset)  # fail before writing anything
    if folder.exists() and not overwrite:
        raise OutputExistsError(f"{folder}: checkpoint folder already exists (pass overwrite / --force to replace it)")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mgsv_version": __version__,
        "preset": preset,
        "model_config": model.config.to_dict(),
        "feature_specs": {name: _spec_dict(spec) for name, spec in (feature_specs or {}).items()},
        "metadata": dict(metadata or {}),
    }
    text = json.dumps(config, indent=2, sort_keys=False, allow_nan=False) + "\n"
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}

    folder.parent.mkdir(parents=True, exist_ok=True)
    # A folder swapped in whole (two files, and an old checkpoint retired first), so not mgsv.atomic_io's writer.
    staging = make_temp_dir(folder)  # not tempfile.mkdtemp (0700): the umask decides, as for any folder
    try:
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "preset": preset})
        apply_umask(staging / WEIGHTS_FILE)  # save_file makes it owner-only (0600)
        with open(staging / CONFIG_FILE, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_file(staging / WEIGHTS_FILE)
        fsync_directory(staging)
        if folder.exists():
            # Move the old checkpoint aside first: a directory cannot be renamed over a non-empty one.
            retired = make_temp_dir(folder)
            os.replace(folder, retired / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, folder)
        fsync_directory(folder.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _run_folder_hint(folder: Path) -> str:
    """For a training run folder given instead of one of its checkpoints: where the checkpoints are."""
    from mgsv.models.run_folder import checkpoints_in_run

    found = checkpoints_in_run(folder, CONFIG_FILE)
    if found is None:
        return ""
    holder, names = found
    return f"; it holds training checkpoints: pass one of them, {holder / '<name>'} (found: {', '.join(names)})"


def read_checkpoint_info(folder: str | os.PathLike[str]) -> CheckpointInfo:
    """Read and validate config.json (not the weights); `folder` may be an `hf:OWNER/NAME[@REVISION]` reference."""
    folder = resolve_checkpoint(folder)  # hf: references: downloaded once into the Hugging Face cache
    if not folder.is_dir():
        raise InputError(folder, "no such checkpoint folder" if not folder.exists() else "not a checkpoint folder")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(config_path, "missing: not an mgsv checkpoint folder" + _run_folder_hint(folder))
    try:
        data = json.loads(check_readable(config_path, "checkpoint config").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(config_path, f"not valid JSON ({exc})") from exc
    check_format(data, config_path, format_name=FORMAT, version=FORMAT_VERSION, what="mgsv checkpoint config")
    for key in ("preset", "model_config"):
        if key not in data:
            raise InputError(config_path, f"missing key {key!r}")
    try:
        preset = get_preset(data["preset"])
    except UnknownPresetError as exc:
        raise InputError(config_path, str(exc)) from exc
    try:
        config = config_from_dict(preset.config_class, data["model_config"], where="model_config")
    except ConfigError as exc:
        raise InputError(config_path, str(exc)) from exc
    specs = data.get("feature_specs", {})
    metadata = data.get("metadata", {})
    if not isinstance(specs, dict) or not all(isinstance(v, dict) for v in specs.values()):
        raise InputError(config_path, "feature_specs must map modality names to objects")
    if not isinstance(metadata, dict):
        raise InputError(config_path, "metadata must be an object")
    return CheckpointInfo(folder, preset.name, config, specs, str(data.get("mgsv_version", "")), metadata)


def load_checkpoint(
    folder: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model of a checkpoint folder from its config and load its weights (strictly)."""
    info = read_checkpoint_info(folder)
    weights_path = info.path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise InputError(weights_path, "missing: the checkpoint has no weights")
    check_readable(weights_path, "weights file")  # safetensors would call an unreadable file "No such file"
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(weights_path, f"unreadable weights (truncated or corrupt?): {exc}") from exc
    model = get_preset(info.preset).build_model(info.config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:10])}" + (" ..." if len(unexpected) > 10 else ""))
    if wrong:
        problems.append("shape mismatch: " + ", ".join(
            f"{k} {list(state[k].shape)} (config expects {list(expected[k].shape)})" for k in wrong[:10]))
    if problems:
        raise InputError(weights_path, "weights do not match config.json: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), info
