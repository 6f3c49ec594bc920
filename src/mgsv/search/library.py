"""A persistent music library in a folder: track metadata, AST tokens, and each model's music-side work.

Layout:

    LIB/library.json                 {"format": "mgsv-music-library", "format_version": 1}: written last at creation
    LIB/tracks.sqlite                tracks (id, path, content hash, title, artist, album, licence, tags, duration,
                                     added time) and a revision counter, in SQLite (WAL journal, synchronous=FULL)
    LIB/features/                    a feature store with one modality, "music" (AST tokens, item id = content hash)
    LIB/cache/<model fingerprint>.safetensors
                                     what `encode_music` computed for every track (enhanced tokens, h0, X-Pool
                                     state) with one model, and the revision and rows it covers

Durability: a track is added in two steps, tokens first (a store shard is published atomically and fsynced), then
its metadata row in one SQLite transaction. A process killed at any moment leaves either a committed track with
its tokens, or tokens without a track (invisible; a later `add` of the same file reuses them without encoding).
Removing a track deletes its row only: its tokens stay in the store (so re-adding it is instant) and search never
sees them, because search reads the tokens of listed tracks only.

Ids: a track's id is its file stem ("battle-epic"); when another track already has that id, "-2", "-3", ... is
appended. The same content (SHA-256 of the file bytes) is never added twice, whatever its name or folder.

Tracks longer than 240 s: the model's horizon is 240 s (REF §1.4), so the tokens cover the first 240 s; the track
keeps its full duration, and `Track.beyond_horizon` says that moments are only ever found in its first 240 s.

The model cache is keyed by a fingerprint of the model (preset, config and every weight), so another checkpoint
gets its own cache. It is brought up to date on use: rows of removed tracks are dropped and new tracks encoded,
the rest is reused. The three most recently written caches are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.errors import InputError, MgsvError, OutputExistsError
from mgsv.extract.discover import find_media
from mgsv.extract.hashing import content_hash, write_json_atomic
from mgsv.extract.media import DecodedTrack, decode_track, encode_track, prefetched
from mgsv.extract.problems import Problem, problem_for
from mgsv.features.spec import MUSIC_HORIZON_S, FeatureSpec
from mgsv.features.store import FeatureStore, FeatureTable, StoreWriter, UnknownIdsError

if TYPE_CHECKING:
    import torch

    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.models.made import MusicEncoding

log = logging.getLogger(__name__)

FORMAT = "mgsv-music-library"
FORMAT_VERSION = 1
META_FILE = "library.json"
DB_FILE = "tracks.sqlite"
FEATURES_DIR = "features"
CACHE_DIR = "cache"
CACHE_FORMAT_VERSION = 1
KEPT_CACHES = 3
DEFAULT_COMMIT_EVERY = 8  # tracks per commit during `add`
DEFAULT_COMMIT_SECONDS = 30.0  # ... or sooner, so that a killed add with a slow encoder loses at most this much work
COMPACT_ABOVE_SHARDS = 16  # after an add, merge the store's shards when there are more than this
ENCODE_BATCH = 128  # tracks per encode_music call when a cache is built
BUCKET_STEP = 8  # cached encodings are grouped by length rounded up to this many windows

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
class LibraryEncoding:
    """Every track of the library encoded by one model, in parts of equal padded length (see `bucket_length`).

    Rows are numbered through the parts in order: row i is `tracks[i]`. Keeping each part padded only to its own
    length (instead of every track to 96 windows) halves the memory and the data X-Pool's matching reads per query.
    """

    tracks: list[Track]
    parts: list[MusicEncoding]
    revision: int
    fingerprint: str

    def __len__(self) -> int:
        return len(self.tracks)

    def rows(self, rows: Sequence[int]) -> MusicEncoding:
        """The encodings of some rows (e.g. the top k of a ranking) as one MusicEncoding, in the given order."""
        from mgsv.models.made import MusicEncoding

        starts = np.cumsum([0] + [len(p) for p in self.parts])
        picked = []
        for row in rows:
            part = int(np.searchsorted(starts, row, side="right")) - 1
            picked.append(self.parts[part].select([int(row) - int(starts[part])]))
        return MusicEncoding.concat(picked)


def bucket_length(windows: int, max_tokens: int) -> int:
    """The padded length a track of `windows` stored windows is encoded at: the next multiple of BUCKET_STEP."""
    return min(max_tokens, -(-windows // BUCKET_STEP) * BUCKET_STEP)


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
        self._encodings: dict[str, LibraryEncoding] = {}

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
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            FeatureStore.create(staging / FEATURES_DIR, {"music": spec})
            connection = sqlite3.connect(staging / DB_FILE)
            try:
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                connection.commit()
            finally:
                connection.close()
            write_json_atomic(staging / META_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION})
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

    # -- the model's music-side work, cached --------------------------------------------------------------------

    def encoded(
        self,
        model: torch.nn.Module,
        device: str = "cpu",
        progress: Progress | None = None,
        fingerprint: str | None = None,
    ) -> LibraryEncoding:
        """Every track encoded by `model` (`encode_music`), from memory, the disk cache, or computed and cached.

        `fingerprint` is `model_fingerprint(model)` when the caller has it (hashing the weights takes tens of ms).
        """
        fingerprint = fingerprint or model_fingerprint(model)
        held = self._encodings.get(fingerprint)
        with self._connect() as db:
            db.execute("BEGIN")  # one snapshot: the revision and the tracks it counts
            revision = int(db.execute("SELECT value FROM state WHERE key = 'revision'").fetchone()[0])
            if held is not None and held.revision == revision:
                db.execute("COMMIT")
                return held
            tracks = [Track.from_row(r) for r in db.execute(f"SELECT {_COLUMNS} FROM tracks ORDER BY rowid")]
            db.execute("COMMIT")
        if not tracks:
            raise InputError(self.root, "the music library has no tracks; add some with `mgsv library add`")
        cache_path = self.root / CACHE_DIR / f"{fingerprint}.safetensors"
        if held is not None:
            cached = _split_hashes(held)
        else:
            cached = _load_cache(cache_path, fingerprint, device)
        by_hash = {t.content_hash: t for t in tracks}
        if cached is not None and sorted(h for hashes, _ in cached for h in hashes) == sorted(by_hash):
            ordered = [by_hash[h] for hashes, _ in cached for h in hashes]
            encoding = LibraryEncoding(ordered, [part for _, part in cached], revision, fingerprint)
        else:
            parts = self._update_parts(model, by_hash, cached or [], device, progress)
            ordered = [by_hash[h] for hashes, _ in parts for h in hashes]
            encoding = LibraryEncoding(ordered, [part for _, part in parts], revision, fingerprint)
            _save_cache(cache_path, encoding)
        self._encodings[fingerprint] = encoding
        return encoding

    def _update_parts(
        self,
        model: torch.nn.Module,
        by_hash: dict[str, Track],
        cached: list[tuple[list[str], MusicEncoding]],
        device: str,
        progress: Progress | None,
    ) -> list[tuple[list[str], MusicEncoding]]:
        """Keep the cached rows of tracks still listed, encode the others; parts grouped by padded length."""
        import torch

        from mgsv.models.made import MusicEncoding

        groups: dict[int, list[tuple[list[str], MusicEncoding]]] = {}
        kept: set[str] = set()
        for hashes, part in cached:
            rows = [i for i, digest in enumerate(hashes) if digest in by_hash]
            if rows:
                selected = part if len(rows) == len(hashes) else part.select(torch.tensor(rows, dtype=torch.long))
                groups.setdefault(part.mask.shape[1], []).append(([hashes[i] for i in rows], selected))
                kept.update(hashes[i] for i in rows)
        new = [digest for digest in by_hash if digest not in kept]
        if new:
            table = self.features()
            max_tokens = self.spec.max_tokens
            lengths = table.lengths(new)
            by_length: dict[int, list[str]] = {}
            for digest, windows in zip(new, lengths.tolist(), strict=True):
                by_length.setdefault(bucket_length(windows, max_tokens), []).append(digest)
            was_training = model.training
            model.eval()
            done = 0
            try:
                with torch.inference_mode():
                    for length, ids in sorted(by_length.items()):
                        for start in range(0, len(ids), ENCODE_BATCH):
                            batch = ids[start : start + ENCODE_BATCH]
                            feats, mask = table.batch(batch, pad_to=length)
                            encoded = model.encode_music(feats.to(device), mask.to(device))
                            groups.setdefault(length, []).append((batch, encoded))
                            done += len(batch)
                            if progress:
                                progress("encode library", done, len(new))
            finally:
                model.train(was_training)
        parts = []
        for length in sorted(groups):
            pieces = groups[length]
            hashes = [h for piece_hashes, _ in pieces for h in piece_hashes]
            merged = pieces[0][1] if len(pieces) == 1 else MusicEncoding.concat([piece for _, piece in pieces])
            parts.append((hashes, merged))
        return parts


def _split_hashes(encoding: LibraryEncoding) -> list[tuple[list[str], MusicEncoding]]:
    """(content hashes of each part's rows, the part) of an encoding."""
    result, start = [], 0
    for part in encoding.parts:
        result.append(([t.content_hash for t in encoding.tracks[start : start + len(part)]], part))
        start += len(part)
    return result


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


_ENCODING_FIELDS = ("tokens", "mask", "embedding", "detection_tokens")
_XPOOL_FIELDS = ("keys", "values", "grams", "linear")


def _part_tensors(prefix: str, music: MusicEncoding) -> dict[str, torch.Tensor]:
    tensors = {f"{prefix}{name}": getattr(music, name) for name in ("tokens", "mask", "embedding")}
    if music.detection_tokens is not music.tokens:  # shared in the default config: stored once
        tensors[f"{prefix}detection_tokens"] = music.detection_tokens
    if music.xpool is not None:
        tensors.update({f"{prefix}xpool.{name}": getattr(music.xpool, name) for name in _XPOOL_FIELDS})
    return {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}


def _save_cache(path: Path, encoding: LibraryEncoding) -> None:
    """Write a library encoding as one safetensors file (atomically), then drop old caches beyond KEPT_CACHES."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for number, part in enumerate(encoding.parts):
        tensors.update(_part_tensors(f"part{number}.", part))
    metadata = {
        "format_version": str(CACHE_FORMAT_VERSION),
        "fingerprint": encoding.fingerprint,
        "parts": json.dumps([hashes for hashes, _ in _split_hashes(encoding)]),
    }
    tmp = path.parent / f".tmp-{os.getpid()}-{path.name}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        caches = sorted(path.parent.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in caches[KEPT_CACHES:]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # a cache is an optimisation (the library may be read-only): never fail the search
        log.warning("%s: cannot write the model cache (%s); it will be recomputed next time", path, exc)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _load_cache(path: Path, fingerprint: str, device: str) -> list[tuple[list[str], MusicEncoding]] | None:
    """(content hashes, encoding) of each part from a cache file; None if absent, unreadable or another model's."""
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    from mgsv.models.made import MusicEncoding, XPoolState

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            if (metadata.get("format_version"), metadata.get("fingerprint")) != (
                str(CACHE_FORMAT_VERSION),
                fingerprint,
            ):
                return None
            names = set(handle.keys())
            tensors = {name: handle.get_tensor(name) for name in names}
        parts = []
        for number, hashes in enumerate(json.loads(metadata["parts"])):
            prefix = f"part{number}."
            xpool = None
            if f"{prefix}xpool.keys" in names:
                xpool = XPoolState(*(tensors[f"{prefix}xpool.{name}"] for name in _XPOOL_FIELDS))
            tokens = tensors[f"{prefix}tokens"]
            music = MusicEncoding(
                tokens, tensors[f"{prefix}mask"], tensors[f"{prefix}embedding"],
                tensors.get(f"{prefix}detection_tokens", tokens), xpool,
            )  # fmt: skip
            if len(hashes) != len(music):
                return None
            parts.append((list(hashes), music))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        log.warning("%s: ignoring an unreadable model cache (%s)", path, exc)
        return None
    return parts
