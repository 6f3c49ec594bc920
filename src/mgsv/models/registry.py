"""Named presets: every model mgsv can build, in one table (`PRESETS`), with its config defaults and builder.

`get_preset("made")` returns a `Preset`; `build_model("made", dim=64)` builds one (fields overridden). `mgsv models`,
checkpoints, evaluation and the trainer find every model by name here, and nowhere else. A model built from a
preset declares what it can do (`mgsv.models.contract`) and its optimiser groups (`parameter_groups()`); how each
preset is trained (learning rates, loss weights, schedule) is the trainer's business (`mgsv.training.recipe`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mgsv.errors import MgsvError
from mgsv.models.baselines.conquer import CONQUER, ConquerConfig
from mgsv.models.baselines.eatr import EaTR, EatrConfig
from mgsv.models.baselines.moment_detr import MomentDETR, MomentDetrConfig
from mgsv.models.baselines.mvpt import MVPt, MvptConfig
from mgsv.models.baselines.qd_detr import QDDETR, QdDetrConfig
from mgsv.models.baselines.tr_detr import TRDETR, TrDetrConfig
from mgsv.models.baselines.uvcom import UVCOM, UvcomConfig
from mgsv.models.contract import Capabilities, capabilities_of
from mgsv.models.made import MaDe, MaDeConfig


class UnknownPresetError(MgsvError, KeyError):
    """No preset has this name."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class ConfigError(MgsvError, ValueError):
    """A model config (from a file or the command line) has unknown keys or invalid values."""


@dataclass(frozen=True)
class Preset:
    """A named model: its config class and defaults, a builder and a one-line description."""

    name: str
    description: str
    config_class: type
    defaults: Mapping[str, Any]
    build: Callable[[Any], nn.Module]

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

    @property
    def capabilities(self) -> Capabilities:
        """What models of this preset can do (declared by the model class)."""
        return capabilities_of(self.build)


def list_presets() -> list[Preset]:
    """Every preset, in the table's order (MaDe, then the paper's baselines in its order)."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name raises `UnknownPresetError` listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownPresetError(
            f"unknown model preset {name!r}; valid presets: {', '.join(_BY_NAME)}") from None


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
# The table

PRESETS: tuple[Preset, ...] = (
    Preset(
        name="made",
        description="MaDe as the official code runs it (the published numbers): decoder self-attention, fixed P, "
                    "dropout 0.8/0.3/0.1, lr 3e-4",
        config_class=MaDeConfig,
        defaults={},
        build=MaDe,
    ),
    Preset(
        name="made-paper",
        description="MaDe as the paper's text describes it: 6 decoder cross-attentions without self-attention, "
                    "learnable P, dropout 0.1 everywhere, lr 1e-4",
        config_class=MaDeConfig,
        defaults={"decoder_self_attention": False, "train_query_pos": True, "enhance_dropout": 0.1,
                  "xpool_dropout": 0.1, "detr_dropout": 0.1},
        build=MaDe,
    ),
    # The MGSV paper's baselines (its Tables 1 and 4), in the paper's order; docs/baselines.md describes each.
    Preset(
        name="moment-detr",
        description="Moment-DETR re-purposed for SmG (grounding only): concat fusion + SA x2, decoder with 10 queries",
        config_class=MomentDetrConfig,
        defaults={},
        build=MomentDETR,
    ),
    Preset(
        name="qd-detr",
        description="QD-DETR re-purposed for SmG (grounding only): text-to-video cross-attention x2, SA x2 with a "
                    "global token, anchor decoder",
        config_class=QdDetrConfig,
        defaults={},
        build=QDDETR,
    ),
    Preset(
        name="qd-detr+",
        description="QD-DETR+ (MGSV paper): QD-DETR with the fusion cross-attention removed (concat + SA x2)",
        config_class=QdDetrConfig,
        defaults={"cross_attention": False},
        build=QDDETR,
    ),
    Preset(
        name="tr-detr",
        description="TR-DETR re-purposed for SmG (grounding only): VSL fuser, cross-attention x2, SA x2, HD2MR, "
                    "anchor decoder",
        config_class=TrDetrConfig,
        defaults={},
        build=TRDETR,
    ),
    Preset(
        name="tr-detr+",
        description="TR-DETR+ (MGSV paper): TR-DETR with the fusion cross-attention removed (concat + SA x2)",
        config_class=TrDetrConfig,
        defaults={"cross_attention": False},
        build=TRDETR,
    ),
    Preset(
        name="eatr",
        description="EaTR re-purposed for SmG (grounding only): concat + SA x3, event slots as anchors, gated-fusion "
                    "anchor decoder x3",
        config_class=EatrConfig,
        defaults={},
        build=EaTR,
    ),
    Preset(
        name="uvcom",
        description="UVCOM re-purposed for SmG (grounding only): t2v + v2t cross-attention, EM centres, random walk, "
                    "SA x2, slot-initialised anchor decoder",
        config_class=UvcomConfig,
        defaults={},
        build=UVCOM,
    ),
    Preset(
        name="uvcom+",
        description="UVCOM+ (MGSV paper): UVCOM with the fusion (text-to-video) cross-attention removed (concat + SA x2)",
        config_class=UvcomConfig,
        defaults={"cross_attention": False},
        build=UVCOM,
    ),
    Preset(
        name="mvpt",
        description="MVPt (V2MR only): two transformer towers, CLS-token embeddings, symmetric InfoNCE",
        config_class=MvptConfig,
        defaults={},
        build=MVPt,
    ),
    Preset(
        name="mvpt+",
        description="MVPt+ (MGSV paper, V2MR only): MVPt with mean pooling instead of the CLS token",
        config_class=MvptConfig,
        defaults={"pooling": "mean"},
        build=MVPt,
    ),
    Preset(
        name="conquer",
        description="CONQUER re-trained for MGSV (ranks and grounds): BiDAF query-aware clips, start / end heads, "
                    "shared normalization over candidate tracks",
        config_class=ConquerConfig,
        defaults={},
        build=CONQUER,
    ),
)

_BY_NAME: dict[str, Preset] = {preset.name: preset for preset in PRESETS}
