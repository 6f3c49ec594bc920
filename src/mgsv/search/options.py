"""What a grounding can be asked for, checked once for every front door (command line, HTTP API, Python).

- `SearchOptions`: how a library is searched, fixed for a grounding service (candidate stage, its size, where the
  track index's tokens live).
- `GroundOptions`: what one request wants (how many tracks, moments of the video's length, beat snapping, which
  second of a long video to start from, metadata filters, more moments per track, a diverse list).

Invalid values raise `OptionError` named by the option's key (`top`, `min_duration`, ...); the command line shows
it as its flag and the HTTP API as its JSON field. Torch-free, so that front doors can validate before loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mgsv.errors import OptionError
from mgsv.search.diversity import DEFAULT_COSINE
from mgsv.search.filters import TrackFilter
from mgsv.search.track_index import MEMORY_CHOICES

INDEX_CHOICES = ("exact", "faiss", "lance")
SNAP_CHOICES = ("beats",)
DEFAULT_CANDIDATES = 2000
DEFAULT_TOP = 5
MAX_ALTERNATIVES = 3  # more moments per track the service gives at most (`mgsv.search.alternatives`)


def _whole_number(value: object, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(key, f"must be a whole number >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SearchOptions:
    """How a library is searched: candidate stage kind and size, and where the track index's tokens live."""

    candidates: int = DEFAULT_CANDIDATES  # K: tracks scored exactly per query
    index: str = "exact"  # the candidate stage: exact, faiss or lance
    faiss_factory: str | None = None  # FAISS index factory string (default: IVF with 4 sqrt(N) lists, flat)
    memory: str = "disk"  # track index tokens: read per query ("disk") or loaded at open ("ram")

    def __post_init__(self) -> None:
        _whole_number(self.candidates, "candidates")
        if self.index not in INDEX_CHOICES:
            raise OptionError("index", f"must be one of {', '.join(INDEX_CHOICES)}, got {self.index!r}")
        if self.memory not in MEMORY_CHOICES:
            raise OptionError("index_memory", f"must be one of {', '.join(MEMORY_CHOICES)}, got {self.memory!r}")
        if self.faiss_factory is not None and self.index != "faiss":
            raise OptionError("faiss_factory", f"is only used with index faiss (the index is {self.index!r})")


@dataclass(frozen=True)
class GroundOptions:
    """What one grounding request wants (see the module docstring)."""

    top: int = DEFAULT_TOP  # tracks (one moment each) to return
    fit_duration: bool = False  # every moment exactly as long as the video; shorter tracks are not eligible
    snap: str | None = None  # "beats": move each moment's start onto a beat (needs librosa)
    window_start: float = 0.0  # videos longer than 50 s: the second the model's 50 frames start at
    filters: TrackFilter = field(default_factory=TrackFilter)
    alternatives: int = 0  # more moments per listed track, 0 to 3 (`mgsv.search.alternatives`)
    diverse: bool = False  # near-duplicate tracks do not fill the list (`mgsv.search.diversity`)
    diverse_cosine: float = DEFAULT_COSINE  # with `diverse`: embeddings this close start to count as the same music

    def __post_init__(self) -> None:
        _whole_number(self.top, "top")
        _whole_number(self.alternatives, "alternatives", minimum=0)
        if self.alternatives > MAX_ALTERNATIVES:
            raise OptionError("alternatives", f"must be at most {MAX_ALTERNATIVES}, got {self.alternatives!r}")
        if not isinstance(self.diverse, bool):
            raise OptionError("diverse", f"must be true or false, got {self.diverse!r}")
        if isinstance(self.diverse_cosine, bool) or not isinstance(self.diverse_cosine, (int, float)) or not (
            0.0 <= self.diverse_cosine < 1.0
        ):
            raise OptionError("diverse_cosine", f"must be a cosine from 0 to below 1, got {self.diverse_cosine!r}")
        if not isinstance(self.fit_duration, bool):
            raise OptionError("fit_duration", f"must be true or false, got {self.fit_duration!r}")
        if self.snap is not None and self.snap not in SNAP_CHOICES:
            raise OptionError("snap", f"must be one of {', '.join(SNAP_CHOICES)}, got {self.snap!r}")
        if isinstance(self.window_start, bool) or not isinstance(self.window_start, (int, float)) or not (
            math.isfinite(self.window_start) and self.window_start >= 0
        ):
            raise OptionError("window_start", f"must be a number of seconds >= 0, got {self.window_start!r}")
        if not isinstance(self.filters, TrackFilter):
            raise OptionError("filters", f"must be a TrackFilter, got {type(self.filters).__name__}")
        if self.snap == "beats":
            from mgsv.search.beats import require_librosa

            require_librosa()  # before any work: a missing extra is the user's to fix
