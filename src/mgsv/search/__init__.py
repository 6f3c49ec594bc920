"""Music search: the persistent music library and grounding videos in it.

- `library`: `MusicLibrary`, a folder with track metadata (SQLite), AST tokens (a feature store) and a per-model
  cache of the music-side work.
- `ranker`: p_s against every track, detection on the top k, moments placed inside tracks.
- `grounder`: `Grounder`, from a video file to `GroundedMoment`s; `render_moment`.
- `beats`: snapping a moment's start to a beat (librosa, optional).

Importing `mgsv.search` does not import torch; `Grounder` and the ranker import it when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mgsv.search.library import MusicLibrary, Track

if TYPE_CHECKING:
    from mgsv.search.grounder import GroundedMoment, Grounder

__all__ = ["GroundedMoment", "Grounder", "MusicLibrary", "Track"]


def __getattr__(name: str) -> Any:
    # Grounder pulls in torch and the model; load it on first use so that `mgsv library list` stays light.
    if name in ("Grounder", "GroundedMoment"):
        from mgsv.search import grounder

        return getattr(grounder, name)
    raise AttributeError(f"module 'mgsv.search' has no attribute {name!r}")
