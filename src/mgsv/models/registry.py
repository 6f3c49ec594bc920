"""Named presets: a model config, how to build it, and the training recipe that goes with it.

`get_preset("made")` returns a `Preset`; `build_model("made", dim=64)` builds one (fields overridden). Baselines
register their presets here too (`register`), so `mgsv models`, checkpoints and the trainer find every model
by name. A model built from a preset exposes `parameter_groups() -> {group name: [parameters]}`; `param_groups`
turns that into optimiser groups with the preset's learning rates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mgsv.errors import MgsvError
from mgsv.models.made import MaDe, MaDeConfig

GROUPS = ("enhancement", "matching", "detection")


class UnknownPresetError(MgsvError, KeyError):
    """No preset has this name."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class ConfigError(MgsvError, ValueError):
    """A model config (from a file or the command line) has unknown keys or invalid values."""


@dataclass(frozen=True)
class TrainingRecipe:
    """Training hyper-parameters of a preset (the official script's, unless the preset says otherwise)."""

    lr: Mapping[str, float] = field(
        default_factory=lambda: {"enhancement": 3e-4, "matching": 3e-4, "detection": 3e-4})
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0  # applied to each optimiser group separately
    schedule: str = "warmup_cosine"  # linear warmup from 0, then cosine to 0, stepped every iteration
    warmup_rate: float = 0.02
    epochs: int = 100
    min_epochs: int = 60  # early stop: not before this epoch ...
    patience: int = 20  # ... and only after this many epochs without a new best val metric
    batch_size: int = 512
    eval_batch_size: int = 40
    seed: int = 42
    loss_weights: Mapping[str, float] = field(default_factory=lambda: {
        "retrieval": 1.0, "localization": 1.0, "span": 4.0, "giou": 1.0, "label": 0.8,
        "contrastive_align": 0.2, "eos_coef": 0.1,
    })

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        data = dataclasses.asdict(self)
        data["lr"], data["loss_weights"], data["betas"] = dict(self.lr), dict(self.loss_weights), list(self.betas)
        return data


@dataclass(frozen=True)
class Preset:
    """A named model: its config class and defaults, a builder, a one-line description and its training recipe."""

    name: str
    description: str
    config_class: type
    defaults: Mapping[str, Any]
    build: Callable[[Any], nn.Module]
    training: TrainingRecipe = field(default_factory=TrainingRecipe)

    def config(self, **overrides: Any) -> Any:
        """A fresh config: the preset's defaults with `overrides` applied (unknown keys -> ConfigError)."""
        return config_from_dict(self.config_class, {**self.defaults, **overrides}, where=f"preset {self.name}")

    def build_model(self, config: Any | None = None, **overrides: Any) -> nn.Module:
        """Build the model from `config` (or the preset defaults with `overrides`)."""
        if config is None:
            config = self.config(**overrides)
        elif overrides:
            raise ValueError("pass either a config or overrides, not both")
        model = self.build(config)
        model.preset_name = self.name
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser groups of `model` with this preset's learning rates."""
        return param_groups(model, self.training)


_PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add a preset; names are unique."""
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _PRESETS[preset.name] = preset
    return preset


def list_presets() -> list[Preset]:
    """Every registered preset, in registration order."""
    return list(_PRESETS.values())


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name raises `UnknownPresetError` listing the valid ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise UnknownPresetError(
            f"unknown model preset {name!r}; valid presets: {', '.join(_PRESETS)}") from None


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset `name`, with some config fields overridden."""
    return get_preset(name).build_model(**overrides)


def config_from_dict(config_class: type, data: Mapping[str, Any], where: str = "model config") -> Any:
    """Build a config dataclass from a mapping; unknown keys or invalid values raise `ConfigError` naming `where`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: model config must be an object, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown {config_class.__name__} key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(known)}")
    try:
        return config_class(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_overrides(config_class: type, items: list[str]) -> dict[str, Any]:
    """`["key=value", ...]` from a command line -> typed config overrides (bool, int, float or str per field)."""
    types = {f.name: f.type for f in dataclasses.fields(config_class)}
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        if key not in types:
            raise ConfigError(f"override {item!r}: unknown {config_class.__name__} key {key!r}; known keys: "
                              f"{', '.join(types)}")
        kind = str(types[key])
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(f"expected true or false, got {text!r}")
                value: Any = text.lower() in ("true", "1", "yes")
            elif kind == "int":
                value = int(text)
            elif kind == "float":
                value = float(text)
            else:
                value = text
        except ValueError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from exc
        overrides[key] = value
    return overrides


def param_groups(model: nn.Module, training: TrainingRecipe) -> list[dict[str, Any]]:
    """`[{"name", "params", "lr"}, ...]` for torch optimisers, one per group the model reports, in GROUPS order."""
    groups = model.parameter_groups()
    missing = [name for name in groups if name not in training.lr]
    if missing:
        raise ValueError(f"the training recipe has no learning rate for group(s) {missing}")
    return [{"name": name, "params": params, "lr": training.lr[name]} for name, params in groups.items()]


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per group (frozen-by-design ones, like MaDe's positional query, counted in `detection`) + total."""
    counted: set[int] = set()
    counts: dict[str, int] = {}
    for name, params in model.parameter_groups().items():
        counts[name] = sum(p.numel() for p in params)
        counted.update(id(p) for p in params)
    rest = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    counts["detection"] = counts.get("detection", 0) + rest
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def count_preset_parameters(preset: Preset) -> dict[str, int]:
    """Parameter counts of a preset's default model, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = preset.build_model()
    return parameter_counts(model)


# ----------------------------------------------------------------------------------------------------------------
# MaDe presets

register(Preset(
    name="made",
    description="MaDe as the official code runs it (the published numbers): decoder self-attention, fixed P, "
                "dropout 0.8/0.3/0.1, lr 3e-4",
    config_class=MaDeConfig,
    defaults={},
    build=MaDe,
))

register(Preset(
    name="made-paper",
    description="MaDe as the paper's text describes it: 6 decoder cross-attentions without self-attention, "
                "learnable P, dropout 0.1 everywhere, lr 1e-4",
    config_class=MaDeConfig,
    defaults={"decoder_self_attention": False, "train_query_pos": True, "enhance_dropout": 0.1,
              "xpool_dropout": 0.1, "detr_dropout": 0.1},
    build=MaDe,
    training=TrainingRecipe(lr={"enhancement": 1e-4, "matching": 1e-4, "detection": 1e-4}),
))
