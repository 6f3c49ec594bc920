"""A library as one model sees it: the model's track index kept up to date, and a snapshot ready to search.

    LIB/index/<model fingerprint>/   one model's track index (`mgsv.search.track_index`)

Track indexes are keyed by a fingerprint of the model (preset, config and every weight), so another checkpoint
gets its own. `LibraryIndexes.encoded` brings one up to date on use: new tracks are encoded into a new segment,
removed tracks are hidden at once and compacted away once they are many. The three most recently updated indexes
are kept. A library that cannot be written (read-only, disk full) gets a private copy of the index for the
process, removed when the library object goes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mgsv.errors import InputError
from mgsv.features.store import FeatureTable
from mgsv.search.candidates import CandidateIndex, open_candidates
from mgsv.search.catalog import TrackCatalog
from mgsv.search.filters import EligibleRows
from mgsv.search.options import SearchOptions
from mgsv.search.track_index import COMPACT_DEAD_FRACTION, MAX_SEGMENTS, TrackIndex, read_manifest, update_track_index

if TYPE_CHECKING:
    import torch

    from mgsv.search.ingest import Progress

log = logging.getLogger(__name__)

INDEX_DIR = "index"
LEGACY_CACHE_DIR = "cache"  # model caches of earlier versions (one safetensors file per model): removed on update
KEPT_INDEXES = 3


@dataclass
class EncodedLibrary:
    """A library as one model sees it, ready to search: its track index, which rows are tracks (one revision) and
    the candidate stage (see `mgsv.search.ranker`)."""

    index: TrackIndex
    catalog: EligibleRows
    candidates: CandidateIndex
    options: SearchOptions
    fingerprint: str

    @property
    def revision(self) -> int:
        """The library revision the snapshot describes."""
        return self.catalog.revision

    def __len__(self) -> int:
        return self.catalog.count


class LibraryIndexes:
    """The track indexes of one library folder, and what this process has opened of them."""

    def __init__(self, root: Path, catalog: TrackCatalog, features: Callable[[], FeatureTable]) -> None:
        self.root = root
        self.catalog = catalog
        self.features = features  # the library's AST tokens as the store holds them now
        self._encodings: dict[str, EncodedLibrary] = {}
        self._scratch: list[Path] = []  # private index folders built when the library's own cannot be written
        weakref.finalize(self, _remove_folders, self._scratch)

    def encoded(
        self,
        model: torch.nn.Module,
        fingerprint: str,
        device: str = "cpu",
        progress: Progress | None = None,
        options: SearchOptions | None = None,
    ) -> EncodedLibrary:
        """The library encoded by `model`, ready to search (see `MusicLibrary.encoded`)."""
        options = options or SearchOptions()
        held = self._encodings.get(fingerprint)
        if held is not None and held.options == options and self.catalog.revision == held.revision:
            return held
        rows = self.catalog.rows()
        if not len(rows.hashes):
            raise InputError(self.root, "the music library has no tracks; add some with `mgsv library add`")
        index = self._open_index(model, fingerprint, rows.hashes, device, progress, options, held)
        catalog = EligibleRows(
            rows.revision, index.rows_of(np.array(rows.hashes, dtype="S64")), rows.rowids, rows.durations,
            rows.licences, len(index), self.catalog.rowids_with_tag,
        )  # fmt: skip
        same_stage = held is not None and held.index is index and held.options.index == options.index and (
            held.options.faiss_factory == options.faiss_factory)
        candidates = held.candidates if same_stage else open_candidates(index, options.index, options.faiss_factory)
        encoding = EncodedLibrary(index, catalog, candidates, options, fingerprint)
        self._encodings[fingerprint] = encoding
        return encoding

    def _open_index(
        self,
        model: torch.nn.Module,
        fingerprint: str,
        hashes: list[str],
        device: str,
        progress: Progress | None,
        options: SearchOptions,
        held: EncodedLibrary | None,
    ) -> TrackIndex:
        """The model's track index holding `hashes`: the one held if still current, else updated and reopened."""
        root = self._index_root(fingerprint)
        if held is not None and held.index.memory == options.memory and not _needs_update(held.index, hashes):
            manifest = read_manifest(held.index.root)
            if manifest is not None and manifest["generation"] == held.index.generation:
                return held.index
        if root.is_dir() and read_manifest(root) is not None:
            index = TrackIndex(root, options.memory)
            if not _needs_update(index, hashes):
                return index
            index.close()
        try:
            update_track_index(root, model, fingerprint, self.features(), hashes, device, progress)
        except OSError as exc:  # a read-only library (or disk full): build a private copy for this process
            scratch = Path(tempfile.mkdtemp(prefix="mgsv-index-")) / fingerprint
            log.warning("%s: cannot write the track index (%s); building it in %s for this process", root, str(exc),
                        scratch.parent)
            self._scratch.append(scratch.parent)
            update_track_index(scratch, model, fingerprint, self.features(), hashes, device, progress)
            return TrackIndex(scratch, options.memory)
        self._drop_old_indexes(root)
        return TrackIndex(root, options.memory)

    def _index_root(self, fingerprint: str) -> Path:
        """Where a model's track index lives (its scratch copy if this process had to build one elsewhere)."""
        for scratch in self._scratch:
            if (scratch / fingerprint).is_dir():
                return scratch / fingerprint
        return self.root / INDEX_DIR / fingerprint

    def _drop_old_indexes(self, current: Path) -> None:
        """Keep the KEPT_INDEXES most recently updated track indexes; remove the previous versions' caches."""
        shutil.rmtree(self.root / LEGACY_CACHE_DIR, ignore_errors=True)
        folders = [p for p in current.parent.iterdir() if p.is_dir() and (p / "manifest.json").is_file()]
        folders.sort(key=lambda p: (p == current, (p / "manifest.json").stat().st_mtime), reverse=True)
        for old in folders[KEPT_INDEXES:]:
            shutil.rmtree(old, ignore_errors=True)


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _needs_update(index: TrackIndex, hashes: list[str]) -> bool:
    """True if the index lacks some of `hashes`, or holds many rows of tracks no longer listed."""
    rows = index.rows_of(np.array(hashes, dtype="S64"))
    dead = len(index) - int((rows >= 0).sum())
    return bool((rows < 0).any()) or dead > COMPACT_DEAD_FRACTION * len(index) or (
        dead > 0 and len(index.segments) > MAX_SEGMENTS)
