"""Adding music to a library: files are found, hashed, decoded, AST-encoded, and listed in the catalog.

Durability: a track is added in two steps, tokens first (a store shard is published atomically and fsynced), then
its catalog row in one SQLite transaction. A process killed at any moment leaves either a listed track with its
tokens, or tokens without a track (invisible; a later `add` of the same file reuses them without encoding).
Only one writer per library at a time (the store's writer lock; another raises StoreBusyError).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.defaults import MUSIC_HORIZON_S
from mgsv.encoders.inputs import encode_track
from mgsv.errors import InputError, MgsvError
from mgsv.features.spec import decode_options
from mgsv.features.store import FeatureStore, StoreWriter
from mgsv.files.discover import find_media
from mgsv.files.hashing import content_hash
from mgsv.files.prefetch import prefetched
from mgsv.files.problems import Problem, problem_for
from mgsv.media.tracks import DecodedTrack, decode_track
from mgsv.search.catalog import NewTrack, Track, TrackCatalog

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.features.spec import FeatureSpec

DEFAULT_COMMIT_EVERY = 8  # tracks per commit during `add`
DEFAULT_COMMIT_SECONDS = 30.0  # ... or sooner, so that a killed add with a slow encoder loses at most this much work
COMPACT_ABOVE_SHARDS = 16  # after an add, merge the store's shards when there are more than this

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class AddReport:
    """What `add_files` did."""

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


class LibraryWriter:
    """Adds tracks from tokens: tokens are published to the store, then the tracks listed (see the module doc).

    `add_tokens` buffers a track; every `commit_every` tracks (or `commit_seconds`) and at a clean exit the
    buffer is committed. If the `with` block raises, uncommitted tracks are dropped and the library is unchanged
    by them.
    """

    def __init__(self, store: FeatureStore, catalog: TrackCatalog, commit_every: int = DEFAULT_COMMIT_EVERY,
                 commit_seconds: float = DEFAULT_COMMIT_SECONDS) -> None:
        if commit_every < 1:
            raise ValueError("commit_every must be at least 1")
        self.store = store
        self.catalog = catalog
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.committed: list[Track] = []
        self._pending: list[NewTrack] = []
        self._store_writer: StoreWriter | None = None
        self._last_commit = time.monotonic()

    def __enter__(self) -> LibraryWriter:
        self._store_writer = self.store.writer("music", flush_every=1 << 30)
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
        if exc_type is None and self.store.shard_count("music") > COMPACT_ABOVE_SHARDS:
            self.store.compact("music")

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
        self._pending.append(NewTrack.from_file(path, content_hash, duration, dict(tags or {})))
        if len(self._pending) >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def commit(self) -> list[Track]:
        """Publish buffered tokens, then list the buffered tracks in one transaction; returns them."""
        assert self._store_writer is not None
        self._last_commit = time.monotonic()
        if not self._pending:
            return []
        self._store_writer.flush()  # tokens are durable before any catalog row names them
        added = self.catalog.insert(self._pending)
        self._pending = []
        self.committed.extend(added)
        return added


def add_files(
    writer_factory: Callable[[], LibraryWriter],
    catalog: TrackCatalog,
    store: FeatureStore,
    spec: FeatureSpec,
    inputs: Sequence[str | os.PathLike[str]],
    encoder: AstMusicEncoder | Callable[[], AstMusicEncoder],
    progress: Progress | None = None,
    where: str = "the music library",
) -> AddReport:
    """Decode, encode and add music files and folders; a file already listed is a no-op.

    `encoder` may be a callable that loads it: it is called only if some file needs encoding, and its spec must
    be the library's `spec`. Bad files are collected in the report and the others are added.
    """
    report = AddReport()
    found = find_media([Path(p) for p in inputs], "music")
    report.failures.extend(Problem(str(p), r) for p, r in found.problems)
    if not found.files and not found.problems:
        raise InputError(", ".join(map(str, inputs)) or "(no inputs)", "no music files found")
    known = catalog.ids_by_hash()
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
    stored = set(store.modality("music").ids)
    loaded: list[AstMusicEncoder] = []

    def get_encoder() -> AstMusicEncoder:
        if not loaded:
            loaded.append(encoder if hasattr(encoder, "spec") else encoder())
            spec.check_compatible(loaded[0].spec, what=f"{where} (music library) vs the AST encoder")
        return loaded[0]

    if any(digest not in stored for _, digest in todo):
        get_encoder()  # a spec mismatch is refused before any work
    done = 0
    if progress:
        progress("add", 0, len(todo))
    with writer_factory() as writer:
        options = decode_options(spec)  # decoded as the library's spec records (channel, resampler)
        for fetched in prefetched(lambda item: decode_track(item[0], **options), todo):
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
                writer.add_tokens(tokens, mask, path=path, content_hash=digest, duration=track.duration,
                                  tags=track.tags)
                if track.beyond_horizon:
                    report.warnings.append(Problem(
                        str(path),
                        f"{track.duration:.1f} s long: only its first {MUSIC_HORIZON_S:g} s (the model's horizon) "
                        "can be found by grounding",
                    ))  # fmt: skip
            except MgsvError as exc:
                report.failures.append(problem_for(path, exc))
            done += 1
            if progress:
                progress("add", done, len(todo))
    report.added = writer.committed
    return report
