"""Grounding models: MaDe (`made.py`), shared blocks (`layers.py`), presets (`registry.py`), checkpoints."""

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
from mgsv.models import baselines  # noqa: E402, F401, I001  (registers the baseline presets)

__all__ = [
    "Detection", "MaDe", "MaDeConfig", "MaDeOutput", "MusicEncoding", "Preset", "Relevance", "TrainingRecipe",
    "UnknownPresetError", "VideoEncoding", "build_model", "get_preset", "list_presets", "param_groups",
    "parameter_counts",
]
