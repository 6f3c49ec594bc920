"""Token features of videos and music: feature specs, the packed feature store, and importers."""

from mgsv.features.spec import DEFAULT_SPECS, MUSIC_SPEC, VIDEO_SPEC, FeatureSpec, music_spec
from mgsv.features.store import FeatureStore, FeatureTable, StoreWriter, UnknownIdsError

__all__ = [
    "DEFAULT_SPECS",
    "MUSIC_SPEC",
    "VIDEO_SPEC",
    "FeatureSpec",
    "FeatureStore",
    "FeatureTable",
    "StoreWriter",
    "UnknownIdsError",
    "music_spec",
]
