"""A persistent music library in a folder: its track catalog, its AST tokens, and each model's track index.

Layout:

    LIB/library.json                 {"format": "mgsv-music-library", "format_version": 1}: written last at creation
    LIB/tracks.sqlite                the track catalog (`mgsv.search.catalog`)
    LIB/features/                    a feature store with one modality, "music" (AST tokens, item id = content hash)
    LIB/index/<model fingerprint>/   one model's track index (`mgsv.search.library_index`, `track_index`)

`MusicLibrary` ties the three together; adding files is `mgsv.search.ingest`, searching an encoded library is
`mgsv.search.grounder`. Removing a track deletes its catalog row only: its tokens stay in the store (so re-adding
it is instant) and search never sees them, because search reads the tokens of listed tracks only.

Tracks longer than 240 s: the model's horizon is 240 s (docs/official-code.md, "Music features"), so the tokens
cover the first 240 s; the track keeps its full duration, and `Track.beyond_horizon` says that moments are only
ever found in its first 240 s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mgsv.atomic_io import make_temp_dir, write_json_atomic
from mgsv.errors import InputError, OutputExistsError
from mgsv.features.spec import FeatureSpec
from mgsv.features.store import FeatureStore, FeatureTable
from mgsv.manifests import read_versioned_json
from mgsv.search.catalog import DB_FILE, Track, TrackCatalog
from mgsv.search.ingest import (
    DEFAULT_COMMIT_EVERY,
    DEFAULT_COMMIT_SECONDS,
    AddReport,
    LibraryWriter,
    Progress,
    add_files,
)
from mgsv.search.library_index import EncodedLibrary, LibraryIndexes
from mgsv.search.options import SearchOptions
from mgsv.search.reindex import reindex_remedy
from mgsv.search.track_media import TrackMedia

if TYPE_CHECKING:
    import torch

    from mgsv.encoders.ast import AstMusicEncoder

FORMAT = "mgsv-music-library"
FORMAT_VERSION = 1
META_FILE = "library.json"
FEATURES_DIR = "features"

__all__ = ["AddReport", "EncodedLibrary", "LibraryWriter", "MusicLibrary", "Progress", "Track"]


class MusicLibrary:
    """A music library folder (see the module docstring). Open an existing one, or `create` / `open_or_create`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.root = Path(folder)
        self._check_format()
        self.catalog = TrackCatalog(self.root / DB_FILE, FORMAT_VERSION)
        self.store = FeatureStore(self.root / FEATURES_DIR)
        if "music" not in self.store.specs:
            raise InputError(self.root / FEATURES_DIR, "the library's feature store has no music features")
        with self.catalog.connect():
            pass  # opens the database once: a broken file is reported now, not at the first query
        self.indexes = LibraryIndexes(self.root, self.catalog, self.features)

    # -- creation and opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: str | os.PathLike[str], spec: FeatureSpec) -> MusicLibrary:
        """Create an empty library for tokens of `spec` (the AST's music spec) in a new or empty folder."""
        root = Path(folder)
        if spec.modality != "music":
            raise ValueError(f"a music library needs a music feature spec, got {spec.modality!r}")
        if (root / META_FILE).exists():
            raise OutputExistsError(f"{root}: a music library already exists here")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise OutputExistsError(f"{root}: exists and is not an empty folder (not a music library)")
        root.parent.mkdir(parents=True, exist_ok=True)
        # Built under a temporary name and renamed into place, so that a library folder is never half made.
        staging = make_temp_dir(root)  # not tempfile.mkdtemp: a library folder gets the umask's permissions
        try:
            FeatureStore.create(staging / FEATURES_DIR, {"music": spec})
            TrackCatalog.create(staging / DB_FILE, FORMAT_VERSION)
            write_json_atomic(staging / META_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION}, sort_keys=True)
            if root.exists():
                root.rmdir()  # empty (checked above); a folder cannot be renamed over another
            os.replace(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(root)

    @classmethod
    def open_or_create(cls, folder: str | os.PathLike[str], spec: FeatureSpec) -> MusicLibrary:
        """The library at `folder` (whose spec must be `spec`), created if there is none."""
        root = Path(folder)
        if not (root / META_FILE).exists():
            return cls.create(root, spec)
        library = cls(root)
        library.spec.check_compatible(spec, what=f"{root} (music library) vs the AST encoder")
        return library

    def _check_format(self) -> None:
        meta = self.root / META_FILE
        if not self.root.is_dir():
            raise InputError(self.root, "no music library here (the folder does not exist)")
        if not meta.is_file():
            raise InputError(self.root, f"not a music library (no {META_FILE}); create one with `mgsv library add`")
        read_versioned_json(meta, format_name=FORMAT, version=FORMAT_VERSION, what="music library description")

    # -- reading ----------------------------------------------------------------------------------------------

    @property
    def spec(self) -> FeatureSpec:
        """The music feature spec of the library's tokens."""
        return self.store.spec("music").with_remedy(reindex_remedy(self.root))

    @property
    def revision(self) -> int:
        """A counter that changes whenever tracks are added or removed."""
        return self.catalog.revision

    def tracks(self) -> list[Track]:
        """Every track, in the order they were added."""
        return self.catalog.tracks()

    def __len__(self) -> int:
        return self.catalog.count()

    def __contains__(self, track_id: object) -> bool:
        return self.catalog.has(track_id)

    def track(self, track_id: str) -> Track:
        """One track by id; an unknown id raises UnknownIdsError."""
        return self.catalog.track(track_id, str(self.root))

    def tracks_by_rowid(self, rowids: Sequence[int]) -> list[Track]:
        """Tracks by their catalog rowid (as an `EncodedLibrary`'s rows hold them), in the given order."""
        return self.catalog.tracks_by_rowid(rowids, str(self.root))

    def features(self) -> FeatureTable:
        """The AST tokens (item id = a track's content hash; tokens of removed tracks may still be there)."""
        return self.store.modality("music")

    # -- adding and removing ----------------------------------------------------------------------------------

    def writer(
        self, commit_every: int = DEFAULT_COMMIT_EVERY, commit_seconds: float = DEFAULT_COMMIT_SECONDS
    ) -> LibraryWriter:
        """A writer that adds tracks from tokens; use it as a context manager (one writer at a time)."""
        return LibraryWriter(self.store, self.catalog, commit_every, commit_seconds)

    def add_files(
        self,
        inputs: Sequence[str | os.PathLike[str]],
        encoder: AstMusicEncoder | Callable[[], AstMusicEncoder],
        progress: Progress | None = None,
        commit_every: int = DEFAULT_COMMIT_EVERY,
    ) -> AddReport:
        """Decode, encode and add music files and folders (`mgsv.search.ingest.add_files`)."""
        return add_files(lambda: self.writer(commit_every=commit_every), self.catalog, self.store, self.spec,
                         inputs, encoder, progress, where=str(self.root))

    def remove(self, track_ids: Sequence[str]) -> list[Track]:
        """Remove tracks by id (all or none: an unknown id raises UnknownIdsError); returns the removed tracks.

        Their waveform peaks and beats kept for the web page go too; their tokens stay (re-adding is instant).
        """
        removed = self.catalog.remove(track_ids, str(self.root))
        TrackMedia(self.root).forget(track.content_hash for track in removed)
        return removed

    # -- the model's music-side work --------------------------------------------------------------------------

    def encoded(
        self,
        model: torch.nn.Module,
        device: str = "cpu",
        progress: Progress | None = None,
        fingerprint: str | None = None,
        options: SearchOptions | None = None,
    ) -> EncodedLibrary:
        """The library encoded by `model`, ready to search: its track index brought up to date (tracks added since
        are encoded, with a progress callback) and opened as `options` say.

        `fingerprint` is `model_fingerprint(model)` when the caller has it (hashing the weights takes tens of ms).
        An instance keeps what it opened until the library's revision changes.
        """
        if fingerprint is None:
            from mgsv.models.contract import model_fingerprint

            fingerprint = model_fingerprint(model)
        return self.indexes.encoded(model, fingerprint, device, progress, options)
