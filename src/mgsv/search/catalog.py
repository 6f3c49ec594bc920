"""The library's track catalog: one SQLite table of tracks (id, file, content hash, tags, duration) and a revision.

    LIB/tracks.sqlite   tracks (id, path, content hash, title, artist, album, licence, tags, duration, added time)
                        and a revision counter (WAL journal, synchronous=FULL)

Ids: a track's id is its file stem ("battle-epic"); when another track already has that id, "-2", "-3", ... is
appended. The same content (SHA-256 of the file bytes) is never listed twice, whatever its name or folder. Every
change (tracks added or removed) bumps the revision, which tells a search that its snapshot is stale.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mgsv.defaults import MUSIC_HORIZON_S
from mgsv.errors import InputError
from mgsv.features.store import UnknownIdsError

DB_FILE = "tracks.sqlite"

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


@dataclass(frozen=True)
class NewTrack:
    """A track to list: what `TrackCatalog.insert` needs (the id is chosen there)."""

    content_hash: str
    path: str
    duration: float
    tags: dict[str, str]
    stem: str  # the id it gets unless taken

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], content_hash: str, duration: float,
                  tags: dict[str, str]) -> NewTrack:
        """A new track for a file (its id will be the file's stem)."""
        return cls(content_hash, str(Path(path).resolve()), float(duration), dict(tags),
                   Path(path).stem.strip() or content_hash[:16])


@dataclass(frozen=True)
class CatalogRows:
    """One revision of the catalog as columns, in rowid order: what a search snapshot is built from."""

    revision: int
    rowids: np.ndarray  # int64 SQLite rowids
    hashes: list[str]
    durations: np.ndarray  # float32 seconds
    licences: list[str | None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class TrackCatalog:
    """The SQLite track table of a library (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], format_version: int) -> None:
        self.path = Path(path)
        self.format_version = format_version

    @classmethod
    def create(cls, path: str | os.PathLike[str], format_version: int) -> TrackCatalog:
        """A new, empty catalog file."""
        connection = sqlite3.connect(path)
        try:
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {int(format_version)}")
            connection.commit()
        finally:
            connection.close()
        return cls(path, format_version)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection (autocommit: callers open their own transactions); a broken file raises InputError."""
        try:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(self.path, f"cannot open the track database: {exc}") from exc
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > self.format_version:
                raise InputError(self.path, f"track database format {version} is newer than this mgsv reads")
            yield connection
        except sqlite3.DatabaseError as exc:
            raise InputError(self.path, f"the track database is unreadable: {exc}") from exc
        finally:
            connection.close()

    # -- reading ----------------------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """A counter that changes whenever tracks are added or removed."""
        with self.connect() as db:
            return _revision(db)

    def tracks(self) -> list[Track]:
        """Every track, in the order they were added."""
        with self.connect() as db:
            return [Track.from_row(r) for r in db.execute(f"SELECT {_COLUMNS} FROM tracks ORDER BY rowid")]

    def count(self) -> int:
        """Number of tracks."""
        with self.connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])

    def has(self, track_id: object) -> bool:
        """Whether a track has this id."""
        with self.connect() as db:
            return db.execute("SELECT 1 FROM tracks WHERE id = ?", (track_id,)).fetchone() is not None

    def track(self, track_id: str, where: str) -> Track:
        """One track by id; an unknown id raises UnknownIdsError naming `where` (the library)."""
        with self.connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM tracks WHERE id = ?", (track_id,)).fetchone()
        if row is None:
            raise UnknownIdsError(where, [track_id])
        return Track.from_row(row)

    def ids_by_hash(self) -> dict[str, str]:
        """content hash -> track id of every track."""
        with self.connect() as db:
            return dict(db.execute("SELECT content_hash, id FROM tracks").fetchall())

    def tracks_by_rowid(self, rowids: Sequence[int], where: str) -> list[Track]:
        """Tracks by their SQLite rowid (as `CatalogRows` lists them), in the given order."""
        wanted = [int(r) for r in rowids]
        with self.connect() as db:
            marks = ",".join("?" * len(wanted))
            found = {row[0]: Track.from_row(row[1:]) for row in
                     db.execute(f"SELECT rowid, {_COLUMNS} FROM tracks WHERE rowid IN ({marks})", wanted)}  # fmt: skip
        missing = [r for r in wanted if r not in found]
        if missing:
            raise UnknownIdsError(where, [f"rowid {r}" for r in missing])
        return [found[r] for r in wanted]

    def rowids_with_tag(self, key: str, value: str) -> np.ndarray:
        """SQLite rowids of tracks whose tag `key` equals `value` (case-insensitive)."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT rowid FROM tracks WHERE lower(json_extract(tags, ?)) = lower(?)", (f'$."{key}"', value)
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def rows(self) -> CatalogRows:
        """Every track's rowid, hash, duration and licence at one revision (one read transaction)."""
        with self.connect() as db:
            db.execute("BEGIN")
            revision = _revision(db)
            rows = db.execute("SELECT rowid, content_hash, duration, licence FROM tracks ORDER BY rowid").fetchall()
            db.execute("COMMIT")
        return CatalogRows(
            revision, np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows],
            np.array([r[2] for r in rows], dtype=np.float32), [r[3] for r in rows],
        )  # fmt: skip

    # -- changing ---------------------------------------------------------------------------------------------

    def insert(self, new: Sequence[NewTrack]) -> list[Track]:
        """List new tracks in one transaction (content already listed is skipped); returns those listed."""
        added: list[Track] = []
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                taken = {row[0] for row in db.execute("SELECT id FROM tracks")}
                present = {row[0] for row in db.execute("SELECT content_hash FROM tracks")}
                now = _now()
                for item in new:
                    if item.content_hash in present:
                        continue  # added by someone else meanwhile, or twice in this batch
                    tags = item.tags
                    track = Track(_free_id(item.stem, taken), item.content_hash, item.path, tags.get("title"),
                                  tags.get("artist"), tags.get("album"), tags.get("license"), tags, item.duration,
                                  now)  # fmt: skip
                    db.execute(
                        f"INSERT INTO tracks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (track.id, track.content_hash, track.path, track.title, track.artist, track.album,
                         track.licence, json.dumps(track.tags, sort_keys=True), track.duration, track.added_at),
                    )  # fmt: skip
                    taken.add(track.id)
                    present.add(track.content_hash)
                    added.append(track)
                _bump_revision(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added

    def remove(self, track_ids: Sequence[str], where: str) -> list[Track]:
        """Remove tracks by id (all or none: an unknown id raises UnknownIdsError); returns the removed tracks."""
        wanted = list(dict.fromkeys(track_ids))
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = {}
                for track_id in wanted:
                    row = db.execute(f"SELECT {_COLUMNS} FROM tracks WHERE id = ?", (track_id,)).fetchone()
                    if row is not None:
                        rows[track_id] = Track.from_row(row)
                missing = [t for t in wanted if t not in rows]
                if missing:
                    raise UnknownIdsError(where, missing)
                db.executemany("DELETE FROM tracks WHERE id = ?", [(t,) for t in wanted])
                _bump_revision(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [rows[t] for t in wanted]


def _revision(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM state WHERE key = 'revision'").fetchone()[0])


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
