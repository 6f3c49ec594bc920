"""A persistent music library in a folder: track metadata, AST tokens, and each model's music-side work.

Layout:

    LIB/library.json                 {"format": "mgsv-music-library", "format_version": 1}: written last at creation
    LIB/tracks.sqlite                tracks (id, path, content hash, title, artist, album, licence, tags, duration,
                                     added time) and a revision counter, in SQLite (WAL journal, synchronous=FULL)
    LIB/features/                    a feature store with one modality, "music" (AST tokens, item id = content hash)
    LIB/index/<model fingerprint>/   one model's track index: what `encode_music` gives for every track, in the
                                     compact form search reads (`mgsv.search.track_index`)

Durability: a track is added in two steps, tokens first (a store shard is published atomically and fsynced), then
its metadata row in one SQLite transaction. A process killed at any moment leaves either a committed track with
its tokens, or tokens without a track (invisible; a later `add` of the same file reuses them without encoding).
Removing a track deletes its row only: its tokens stay in the store (so re-adding it is instant) and search never
sees them, because search reads the tokens of listed tracks only.

Ids: a track's id is its file stem ("battle-epic"); when another track already has that id, "-2", "-3", ... is
appended. The same content (SHA-256 of the file bytes) is never added twice, whatever its name or folder.

Tracks longer than 240 s: the model's horizon is 240 s (REF §1.4), so the tokens cover the first 240 s; the track
keeps its full duration, and `Track.beyond_horizon` says that moments are only ever found in its first 240 s.

Track indexes are keyed by a fingerprint of the model (preset, config and every weight), so another checkpoint
gets its own. `encoded` brings one up to date on use: new tracks are encoded into a new segment, removed tracks are
hidden at once and compacted away once they are many. The three most recently updated indexes are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.atomic_io import make_temp_dir, write_json_atomic
from mgsv.errors import InputError, MgsvError, OutputExistsError
from mgsv.extract.discover import find_media
from mgsv.extract.hashing import content_hash
from mgsv.extract.media import DecodedTrack, decode_track, encode_track, prefetched
from mgsv.extract.problems import Problem, problem_for
from mgsv.features.spec import MUSIC_HORIZON_S, FeatureSpec
from mgsv.features.store import FeatureStore, FeatureTable, StoreWriter, UnknownIdsError
from mgsv.search.candidates import CandidateIndex, SearchOptions, open_candidates
from mgsv.search.catalog import Catalog
from mgsv.search.track_index import TrackIndex, read_manifest, update_track_index

if TYPE_CHECKING:
    import torch

    from mgsv.encoders.ast import AstMusicEncoder

log = logging.getLogger(__name__)

FORMAT = "mgsv-music-library"
FORMAT_VERSION = 1
META_FILE = "library.json"
DB_FILE = "tracks.sqlite"
FEATURES_DIR = "features"
INDEX_DIR = "index"
LEGACY_CACHE_DIR = "cache"  # model caches of earlier versions (one safetensors file per model): removed on update
KEPT_INDEXES = 3
DEFAULT_COMMIT_EVERY = 8  # tracks per commit during `add`
DEFAULT_COMMIT_SECONDS = 30.0  # ... or sooner, so that a killed add with a slow encoder loses at most this much work
COMPACT_ABOVE_SHARDS = 16  # after an add, merge the store's shards when there are more than this

Progress = Callable[[str, int, int], None]  # (stage, done, total)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    title TEXT,
    artist TEXT,
    album TEXT,
    licence TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    duration REAL NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO state (key, value) VALUES ('revision', '0');
"""
_COLUMNS = "id, content_hash, path, title, artist, album, licence, tags, duration, added_at"


@dataclass(frozen=True)
class Track:
    """One track of the library."""

    id: str
    content_hash: str  # SHA-256 of the file; also the track's id in the feature store
    path: str  # absolute path of the file it was added from
    title: str | None
    artist: str | None
    album: str | None
    licence: str | None
    tags: dict[str, str]
    duration: float  # seconds of the whole track
    added_at: str  # ISO 8601, UTC

    @property
    def beyond_horizon(self) -> bool:
        """True if the track is longer than 240 s: only its first 240 s were encoded and can be found."""
        return self.duration > MUSIC_HORIZON_S

    @property
    def used_seconds(self) -> float:
        """Seconds of the track its tokens cover (at most 240)."""
        return min(self.duration, MUSIC_HORIZON_S)

    @property
    def name(self) -> str:
        """Title if the file has one, else the id."""
        return self.title or self.id

    def to_dict(self) -> dict[str, Any]:
        """The track as plain JSON types."""
        return {
            "id": self.id,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "duration": round(self.duration, 3),
            "licence": self.licence,
            "path": self.path,
            "content_hash": self.content_hash,
            "tags": self.tags,
            "added_at": self.added_at,
            "beyond_horizon": self.beyond_horizon,
        }

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Track:
        (track_id, digest, path, title, artist, album, licence, tags, duration, added_at) = row
        return cls(track_id, digest, path, title, artist, album, licence, json.loads(tags), float(duration), added_at)


@dataclass
class AddReport:
    """What `MusicLibrary.add_files` did."""

    added: list[Track] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)  # (path, id of the track with this content)
    failures: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    encoded: int = 0  # tracks whose tokens were computed (the others reused tokens already stored)

    @property
    def ok(self) -> bool:
        """True if no file failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "added": [t.to_dict() for t in self.added],
            "already": [{"path": p, "id": i} for p, i in self.already],
            "encoded": self.encoded,
            "failures": [p.to_dict() for p in self.failures],
            "warnings": [p.to_dict() for p in self.warnings],
        }


@dataclass
class EncodedLibrary:
    """A library as one model sees it, ready to search: its track index, which rows are tracks (one revision) and
    the candidate stage (see `mgsv.search.ranker`)."""

    index: TrackIndex
    catalog: Catalog
    candidates: CandidateIndex
    options: SearchOptions
    fingerprint: str

    @property
    def revision(self) -> int:
        """The library revision the catalog describes."""
        return self.catalog.revision

    def __len__(self) -> int:
        return self.catalog.count


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class MusicLibrary:
    """A music library folder (see the module docstring). Open an existing one, or `create` / `open_or_create`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.root = Path(folder)
        self._check_format()
        self.db_path = self.root / DB_FILE
        self.store = FeatureStore(self.root / FEATURES_DIR)
        if "music" not in self.store.specs:
            raise InputError(self.root / FEATURES_DIR, "the library's feature store has no music features")
        with self._connect():
            pass  # opens the database once: a broken file is reported now, not at the first query
        self._encodings: dict[str, EncodedLibrary] = {}
        self._scratch: list[Path] = []  # private index folders built when the library's own cannot be written
        weakref.finalize(self, _remove_folders, self._scratch)

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
            connection = sqlite3.connect(staging / DB_FILE)
            try:
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                connection.commit()
            finally:
                connection.close()
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
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(meta, f"cannot read the library description: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(meta, f"not a music library description (format is not {FORMAT!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise InputError(meta, f"invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise InputError(
                meta,
                f"written by a newer mgsv (library format {version}; this mgsv reads up to {FORMAT_VERSION}): "
                "upgrade mgsv to use this library",
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(self.db_path, f"cannot open the track database: {exc}") from exc
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > FORMAT_VERSION:
                raise InputError(self.db_path, f"track database format {version} is newer than this mgsv reads")
            yield connection
        except sqlite3.DatabaseError as exc:
            raise InputError(self.db_path, f"the track database is unreadable: {exc}") from exc
        finally:
            connection.close()

    # -- reading ----------------------------------------------------------------------------------------------

    @property
    def spec(self) -> FeatureSpec:
        """The music feature spec of the library's tokens."""
        return self.store.spec("music")

    @property
    def revision(self) -> int:
        """A counter that changes whenever tracks are added or removed."""
        with self._connect() as db:
            return int(db.execute("SELECT value FROM state WHERE key = 'revision'").fetchone()[0])

    def tracks(self) -> list[Track]:
        """Every track, in the order they were added."""
        with self._connect() as db:
            return [Track.from_row(r) for r in db.execute(f"SELECT {_COLUMNS} FROM tracks ORDER BY rowid")]

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])

    def __contains__(self, track_id: object) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM tracks WHERE id = ?", (track_id,)).fetchone() is not None

    def track(self, track_id: str) -> Track:
        """One track by id; an unknown id raises UnknownIdsError."""
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM tracks WHERE id = ?", (track_id,)).fetchone()
        if row is None:
            raise UnknownIdsError(str(self.root), [track_id])
        return Track.from_row(row)

    def features(self) -> FeatureTable:
        """The AST tokens (item id = a track's content hash; tokens of removed tracks may still be there)."""
        return self.store.modality("music")

    # -- adding and removing ----------------------------------------------------------------------------------

    def writer(
        self, commit_every: int = DEFAULT_COMMIT_EVERY, commit_seconds: float = DEFAULT_COMMIT_SECONDS
    ) -> LibraryWriter:
        """A writer that adds tracks from tokens; use it as a context manager (one writer at a time)."""
        return LibraryWriter(self, commit_every, commit_seconds)

    def add_files(
        self,
        inputs: Sequence[str | os.PathLike[str]],
        encoder: AstMusicEncoder | Callable[[], AstMusicEncoder],
        progress: Progress | None = None,
        commit_every: int = DEFAULT_COMMIT_EVERY,
    ) -> AddReport:
        """Decode, encode and add music files and folders; a file already in the library is a no-op.

        `encoder` may be a callable that loads it: it is called only if some file needs encoding. Bad files are
        collected in the report and the others are added.
        """
        report = AddReport()
        found = find_media([Path(p) for p in inputs], "music")
        report.failures.extend(Problem(str(p), r) for p, r in found.problems)
        if not found.files and not found.problems:
            raise InputError(", ".join(map(str, inputs)) or "(no inputs)", "no music files found")
        with self._connect() as db:
            known = dict(db.execute("SELECT content_hash, id FROM tracks").fetchall())
        todo: list[tuple[Path, str]] = []
        planned: dict[str, Path] = {}
        for path in found.files:
            try:
                digest = content_hash(path)
            except MgsvError as exc:
                report.failures.append(problem_for(path, exc))
                continue
            if digest in known:
                report.already.append((str(path), known[digest]))
            elif digest in planned:
                report.warnings.append(Problem(str(path), f"same content as {planned[digest]}; added once"))
            else:
                planned[digest] = path
                todo.append((path, digest))
        if not todo:
            return report
        stored = set(self.features().ids)
        loaded: list[AstMusicEncoder] = []

        def get_encoder() -> AstMusicEncoder:
            if not loaded:
                loaded.append(encoder if hasattr(encoder, "spec") else encoder())
                self.spec.check_compatible(loaded[0].spec, what=f"{self.root} (music library) vs the AST encoder")
            return loaded[0]

        if any(digest not in stored for _, digest in todo):
            get_encoder()  # a spec mismatch is refused before any work
        done = 0
        if progress:
            progress("add", 0, len(todo))
        with self.writer(commit_every=commit_every) as writer:
            for fetched in prefetched(lambda item: decode_track(item[0]), todo):
                path, digest = fetched.item
                track: DecodedTrack | None = fetched.result
                try:
                    if fetched.error is not None:
                        raise fetched.error
                    assert track is not None
                    tokens = mask = None
                    if digest not in stored:
                        tokens, mask = encode_track(track, get_encoder())
                        report.encoded += 1
                    writer.add_tokens(
                        tokens, mask, path=path, content_hash=digest, duration=track.duration, tags=track.tags
                    )
                    if track.beyond_horizon:
                        report.warnings.append(
                            Problem(
                                str(path),
                                (
                                    f"{track.duration:.1f} s long: only its first {MUSIC_HORIZON_S:g} s (the model's "
                                    "horizon) can be found by grounding"
                                ),
                            )
                        )
                except MgsvError as exc:
                    report.failures.append(problem_for(path, exc))
                done += 1
                if progress:
                    progress("add", done, len(todo))
        report.added = writer.committed
        return report

    def remove(self, track_ids: Sequence[str]) -> list[Track]:
        """Remove tracks by id (all or none: an unknown id raises UnknownIdsError); returns the removed tracks."""
        wanted = list(dict.fromkeys(track_ids))
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = {}
                for track_id in wanted:
                    row = db.execute(f"SELECT {_COLUMNS} FROM tracks WHERE id = ?", (track_id,)).fetchone()
                    if row is not None:
                        rows[track_id] = Track.from_row(row)
                missing = [t for t in wanted if t not in rows]
                if missing:
                    raise UnknownIdsError(str(self.root), missing)
                db.executemany("DELETE FROM tracks WHERE id = ?", [(t,) for t in wanted])
                _bump_revision(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [rows[t] for t in wanted]

    def _shard_count(self) -> int:
        """Shards of the music store, from its manifest (documented in docs/architecture.md)."""
        manifest = json.loads((self.store.root / "manifest.json").read_text(encoding="utf-8"))
        return len(manifest["modalities"]["music"]["shards"])

    # -- the model's music-side work: the track index ----------------------------------------------------------

    def tracks_by_rowid(self, rowids: Sequence[int]) -> list[Track]:
        """Tracks by their SQLite rowid (as a `Catalog` holds them), in the given order."""
        wanted = [int(r) for r in rowids]
        with self._connect() as db:
            marks = ",".join("?" * len(wanted))
            found = {row[0]: Track.from_row(row[1:]) for row in
                     db.execute(f"SELECT rowid, {_COLUMNS} FROM tracks WHERE rowid IN ({marks})", wanted)}  # fmt: skip
        missing = [r for r in wanted if r not in found]
        if missing:
            raise UnknownIdsError(str(self.root), [f"rowid {r}" for r in missing])
        return [found[r] for r in wanted]

    def _rowids_with_tag(self, key: str, value: str) -> np.ndarray:
        """SQLite rowids of tracks whose tag `key` equals `value` (case-insensitive)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT rowid FROM tracks WHERE lower(json_extract(tags, ?)) = lower(?)", (f'$."{key}"', value)
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

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
        options = options or SearchOptions()
        fingerprint = fingerprint or model_fingerprint(model)
        held = self._encodings.get(fingerprint)
        with self._connect() as db:
            db.execute("BEGIN")  # one snapshot: the revision and the tracks it counts
            revision = int(db.execute("SELECT value FROM state WHERE key = 'revision'").fetchone()[0])
            if held is not None and held.revision == revision and held.options == options:
                db.execute("COMMIT")
                return held
            rows = db.execute("SELECT rowid, content_hash, duration, licence FROM tracks ORDER BY rowid").fetchall()
            db.execute("COMMIT")
        if not rows:
            raise InputError(self.root, "the music library has no tracks; add some with `mgsv library add`")
        rowids = np.array([r[0] for r in rows], dtype=np.int64)
        hashes = [r[1] for r in rows]
        index = self._open_index(model, fingerprint, hashes, device, progress, options, held)
        catalog = Catalog(
            revision, index.rows_of(np.array(hashes, dtype="S64")), rowids,
            np.array([r[2] for r in rows], dtype=np.float32), [r[3] for r in rows], len(index), self._rowids_with_tag,
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
    from mgsv.search.track_index import COMPACT_DEAD_FRACTION, MAX_SEGMENTS

    rows = index.rows_of(np.array(hashes, dtype="S64"))
    dead = len(index) - int((rows >= 0).sum())
    return bool((rows < 0).any()) or dead > COMPACT_DEAD_FRACTION * len(index) or (
        dead > 0 and len(index.segments) > MAX_SEGMENTS)


class LibraryWriter:
    """Adds tracks to a library: tokens are published to the store, then metadata committed (see module doc).

    `add_tokens` buffers a track; every `commit_every` tracks (or `commit_seconds`) and at a clean exit the
    buffer is committed. If the `with` block raises, uncommitted tracks are dropped and the library is unchanged
    by them. Only one writer per library at a time (the store's writer lock; another raises StoreBusyError).
    """

    def __init__(self, library: MusicLibrary, commit_every: int, commit_seconds: float) -> None:
        if commit_every < 1:
            raise ValueError("commit_every must be at least 1")
        self.library = library
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.committed: list[Track] = []
        self._pending: list[dict[str, Any]] = []
        self._store_writer: StoreWriter | None = None
        self._last_commit = time.monotonic()

    def __enter__(self) -> LibraryWriter:
        self._store_writer = self.library.store.writer("music", flush_every=1 << 30)
        self._store_writer.__enter__()
        self._last_commit = time.monotonic()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._store_writer is not None
        try:
            if exc_type is None:
                self.commit()
        finally:
            self._pending = []
            self._store_writer.__exit__(exc_type, exc, tb)
            self._store_writer = None
        if exc_type is None and self.library._shard_count() > COMPACT_ABOVE_SHARDS:
            self.library.store.compact("music")

    def add_tokens(
        self,
        tokens: np.ndarray | None,
        mask: np.ndarray | None,
        *,
        path: str | os.PathLike[str],
        content_hash: str,
        duration: float,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Buffer one track; `tokens`/`mask` may be None when the store already holds this content hash."""
        if self._store_writer is None:
            raise RuntimeError("use the library writer inside a `with` block")
        if not (isinstance(duration, (int, float)) and np.isfinite(duration) and duration > 0):
            raise InputError(path, f"track duration must be a positive number of seconds, got {duration!r}")
        if content_hash not in self._store_writer:
            if tokens is None or mask is None:
                raise ValueError(f"no tokens stored for {content_hash}: pass tokens and mask")
            self._store_writer.add(content_hash, tokens, mask)
        tags = dict(tags or {})
        self._pending.append(
            {
                "content_hash": content_hash,
                "path": str(Path(path).resolve()),
                "title": tags.get("title"),
                "artist": tags.get("artist"),
                "album": tags.get("album"),
                "licence": tags.get("license"),
                "tags": tags,
                "duration": float(duration),
                "stem": Path(path).stem.strip() or content_hash[:16],
            }
        )
        if len(self._pending) >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def commit(self) -> list[Track]:
        """Publish buffered tokens, then insert the buffered tracks in one transaction; returns them."""
        assert self._store_writer is not None
        self._last_commit = time.monotonic()
        if not self._pending:
            return []
        self._store_writer.flush()  # tokens are durable before any metadata names them
        added: list[Track] = []
        with self.library._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                taken = {row[0] for row in db.execute("SELECT id FROM tracks")}
                present = {row[0] for row in db.execute("SELECT content_hash FROM tracks")}
                now = _now()
                for item in self._pending:
                    if item["content_hash"] in present:
                        continue  # added by someone else meanwhile, or twice in this buffer
                    track = Track(
                        _free_id(item["stem"], taken),
                        item["content_hash"],
                        item["path"],
                        item["title"],
                        item["artist"],
                        item["album"],
                        item["licence"],
                        item["tags"],
                        item["duration"],
                        now,
                    )
                    db.execute(
                        f"INSERT INTO tracks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            track.id,
                            track.content_hash,
                            track.path,
                            track.title,
                            track.artist,
                            track.album,
                            track.licence,
                            json.dumps(track.tags, sort_keys=True),
                            track.duration,
                            track.added_at,
                        ),
                    )
                    taken.add(track.id)
                    present.add(track.content_hash)
                    added.append(track)
                _bump_revision(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._pending = []
        self.committed.extend(added)
        return added


def _free_id(stem: str, taken: set[str]) -> str:
    """`stem`, or `stem-2`, `stem-3`, ... whichever is not taken."""
    if stem not in taken:
        return stem
    number = 2
    while f"{stem}-{number}" in taken:
        number += 1
    return f"{stem}-{number}"


def _bump_revision(db: sqlite3.Connection) -> None:
    db.execute("UPDATE state SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'revision'")


# ------------------------------------------------------------------------------------------------ model cache


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's preset, config and every weight: equal fingerprints compute equal encodings."""
    import torch

    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    header = {
        "preset": getattr(model, "preset_name", type(model).__name__),
        "config": config.to_dict() if hasattr(config, "to_dict") else repr(config),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{list(value.shape)}".encode())
        if value.numel():
            digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: works for bf16 too
    return digest.hexdigest()[:16]
