"""Which index rows are library tracks, and which of them a search may return (metadata filters).

A track index (`mgsv.search.track_index`) is keyed by content hash and may hold rows of tracks that were removed
since (until it is compacted); the library's SQLite table says which tracks exist. `EligibleRows` is one snapshot of
that table (one library revision) laid out as columns aligned to the index rows, so that a filter becomes a
boolean mask over rows, computed before the candidate stage: every candidate it returns is eligible.

Filters (`TrackFilter`): the track's whole duration (at least the video's, so a moment of the video's length fits),
its licence (any of several, case-insensitive) and tags (`KEY=VALUE` pairs from the file's tags, all required,
value case-insensitive). Duration and licence are numpy column tests; a tag test is one SQLite query, cached per
(key, value) for the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mgsv.errors import OptionError


@dataclass(frozen=True)
class TrackFilter:
    """Conditions every returned track meets (all of them); the default filter keeps every track."""

    min_duration: float | None = None  # seconds of the whole track
    licences: tuple[str, ...] = ()  # any of these licences (case-insensitive); empty: any licence
    tags: tuple[tuple[str, str], ...] = ()  # (key, value) tag pairs the track must all have

    def __post_init__(self) -> None:
        if self.min_duration is not None and not (np.isfinite(self.min_duration) and self.min_duration >= 0):
            raise OptionError("min_duration", f"must be a number of seconds >= 0, got {self.min_duration!r}")
        for key, _ in self.tags:
            if not key or '"' in key:
                raise OptionError("tags", f"tag names must be non-empty and without double quotes, got {key!r}")

    @classmethod
    def parse(
        cls, min_duration: float | None = None, licences: Sequence[str] = (), tags: Sequence[str] = ()
    ) -> TrackFilter:
        """A filter from command-line values; tags are "KEY=VALUE" strings."""
        pairs = []
        for text in tags:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise OptionError("tags", f"expected KEY=VALUE (e.g. genre=ambient), got {text!r}")
            pairs.append((key.strip(), value.strip()))
        return cls(min_duration, tuple(licences), tuple(pairs))

    def with_min_duration(self, seconds: float) -> TrackFilter:
        """The same filter, also requiring tracks of at least `seconds`."""
        current = self.min_duration or 0.0
        return TrackFilter(max(current, seconds), self.licences, self.tags)

    @property
    def active(self) -> bool:
        """True if the filter excludes anything."""
        return bool(self.min_duration) or bool(self.licences) or bool(self.tags)

    def describe(self) -> str:
        """The conditions in words, for messages."""
        parts = []
        if self.min_duration:
            parts.append(f"at least {self.min_duration:.1f} s long")
        if self.licences:
            parts.append("licence " + " or ".join(repr(x) for x in self.licences))
        parts += [f"tag {key}={value!r}" for key, value in self.tags]
        return ", ".join(parts) or "no conditions"


TagLookup = Callable[[str, str], np.ndarray]  # (key, value) -> SQLite rowids of tracks with that tag value


class EligibleRows:
    """The library's tracks (one revision) as columns over the rows of a track index."""

    def __init__(
        self,
        revision: int,
        index_rows: np.ndarray,
        rowids: np.ndarray,
        durations: np.ndarray,
        licences: Sequence[str | None],
        size: int,
        tag_lookup: TagLookup,
    ) -> None:
        self.revision = revision
        self.size = size
        self.track_rowid = np.full(size, -1, dtype=np.int64)  # SQLite rowid of the track of each row, -1: none
        self.track_rowid[index_rows] = rowids
        self.live = self.track_rowid >= 0
        self.count = int(self.live.sum())
        self.duration = np.zeros(size, dtype=np.float32)
        self.duration[index_rows] = durations
        names = sorted({(x or "").strip().lower() for x in licences})
        codes = {name: number for number, name in enumerate(names)}
        self.licence_names = names
        self.licence_code = np.full(size, -1, dtype=np.int32)
        self.licence_code[index_rows] = [codes[(x or "").strip().lower()] for x in licences]
        self._row_of_rowid = dict(zip(rowids.tolist(), index_rows.tolist(), strict=True))
        self._tag_lookup = tag_lookup
        self._tag_rows: dict[tuple[str, str], np.ndarray] = {}

    def eligible(self, condition: TrackFilter | None) -> np.ndarray | None:
        """Rows a search may return: library tracks meeting `condition`; None when that is every row."""
        mask = None if self.count == self.size else self.live.copy()
        if condition is None or not condition.active:
            return mask
        mask = self.live.copy() if mask is None else mask
        if condition.min_duration:
            mask &= self.duration >= np.float32(condition.min_duration)
        if condition.licences:
            wanted = [self.licence_names.index(name.strip().lower()) for name in condition.licences
                      if name.strip().lower() in self.licence_names]  # fmt: skip
            mask &= np.isin(self.licence_code, wanted)
        for pair in condition.tags:
            mask &= self._tag_mask(pair)
        return mask

    def _tag_mask(self, pair: tuple[str, str]) -> np.ndarray:
        if pair not in self._tag_rows:
            rows = [self._row_of_rowid[r] for r in self._tag_lookup(*pair).tolist() if r in self._row_of_rowid]
            self._tag_rows[pair] = np.asarray(rows, dtype=np.int64)
        mask = np.zeros(self.size, dtype=bool)
        mask[self._tag_rows[pair]] = True
        return mask
