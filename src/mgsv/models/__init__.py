"""Grounding models: MaDe (`made.py`), shared blocks (`layers.py`), presets (`registry.py`), checkpoints."""

from mgsv.models import baselines  # noqa: F401  (registers the baseline presets)
from mgsv.models.made import (
    Detection,
    MaDe,
    MaDeConfig,
    MaDeOutput,
    MusicEncoding,
    Relevance,
    VideoEncoding,
)
from mgsv.models.registry import (
    Preset,
    TrainingRecipe,
    UnknownPresetError,
    build_model,
    get_preset,
    list_presets,
    param_groups,
    parameter_counts,
)

__all__ = [
    "Detection", "MaDe", "MaDeConfig", "MaDeOutput", "MusicEncoding", "Preset", "Relevance", "TrainingRecipe",
    "UnknownPresetError", "VideoEncoding", "build_model", "get_preset", "list_presets", "param_groups",
    "parameter_counts",
]
