"""Ground videos in a music library: the library and the grounding service every front door uses.

- `library`: `MusicLibrary`, a folder with its track catalog (`catalog`, SQLite), AST tokens (a feature store,
  filled by `ingest`) and per-model track indexes (`library_index`, `track_index`, `candidates`).
- `options`: `GroundOptions` (one request) and `SearchOptions` (a service); `filters`: `TrackFilter`.
- `grounder`: `Grounder`, the service: a video -> `GroundingResult`; `render_moment`.
- `ranker`: exact p_s of candidates, detection on the top k, moments placed inside tracks.
- `alternatives`: more moments of a track (`alternatives`, `Grounder.more_moments`); `diversity`: the diverse top k.
- `beats`: snapping a moment's start to a beat (librosa, optional).

    from mgsv.search import GroundOptions, Grounder, MusicLibrary

    grounder = Grounder.from_checkpoint("runs/made/checkpoints/best_mor1_iou07", MusicLibrary("lib"))
    result = grounder.ground("clip.mp4", GroundOptions(top=5))

Importing `mgsv.search` does not import torch; the grounder and the ranker import it when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mgsv.search.catalog import Track
from mgsv.search.filters import TrackFilter
from mgsv.search.library import MusicLibrary
from mgsv.search.options import GroundOptions, SearchOptions

if TYPE_CHECKING:
    from mgsv.search.grounder import EncodedVideo, GroundedMoment, Grounder, GroundingResult, render_moment

__all__ = [
    "EncodedVideo", "GroundOptions", "GroundedMoment", "Grounder", "GroundingResult", "MusicLibrary", "SearchOptions",
    "Track", "TrackFilter", "render_moment",
]
_LAZY = ("EncodedVideo", "GroundedMoment", "Grounder", "GroundingResult", "render_moment")


def __getattr__(name: str) -> Any:
    # The grounder pulls in torch and the model; load it on first use so that `mgsv library list` stays light.
    if name in _LAZY:
        from mgsv.search import grounder

        return getattr(grounder, name)
    raise AttributeError(f"module 'mgsv.search' has no attribute {name!r}")
