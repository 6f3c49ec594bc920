"""Grounding models: MaDe (`made.py`), the paper's baselines (`baselines/`), shared blocks (`layers.py`), what a
model can do (`contract.py`), the presets (`registry.py`) and checkpoints (`checkpoint.py`)."""

from mgsv.models.contract import Capabilities, CapabilityError, capabilities_of
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
    UnknownPresetError,
    build_model,
    get_preset,
    list_presets,
    parameter_counts,
)

__all__ = [
    "Capabilities", "CapabilityError", "Detection", "MaDe", "MaDeConfig", "MaDeOutput", "MusicEncoding", "Preset",
    "Relevance", "UnknownPresetError", "VideoEncoding", "build_model", "capabilities_of", "get_preset", "list_presets",
    "parameter_counts",
]
