"""Re-index a music library: encode every track again, from its file, with the AST encoder's current spec.

A library's tokens carry the feature spec they were made with; a checkpoint (or encoder) of another spec refuses
them. This is the case of every library built before feature spec version 2, which did not record the audio
channel and resampler (mgsv then fed AST the mean of the channels, resampled by soxr, not the official first
channel and sinc filter; docs/encoders.md). `reindex_library` replaces the tokens of all tracks at once:

1. every listed track's file is checked (it must still hold the content the track was added with) and decoded
   and encoded, as the encoder's spec records, into a new feature store beside the library's (`.features.reindex`);
2. only if every track succeeded, the new store replaces the old one and the track indexes (which hold what the
   model computed from the old tokens) are removed; they are rebuilt on the next search. Otherwise the library is
   left as it was and the report lists the tracks to fix (re-add the file from where it is now, or remove the
   track).

A killed re-index leaves the library as it was, or (between the two renames of step 2) without its `features`
folder: the next `reindex_library` finishes the swap before anything else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgsv.atomic_io import fsync_directory
from mgsv.errors import InputError, MgsvError

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.files.problems import Problem

STAGING = ".features.reindex"  # the new store while it is built
READY = ".features.reindex.ready"  # written once the new store is complete: the swap may proceed
RETIRED = ".features.retired"  # the old store, between the swap and its removal

Progress = Callable[[str, int, int], None]


def reindex_remedy(root: str | os.PathLike[str]) -> str:
    """What a spec mismatch of a library's tokens tells the user to do."""
    return (
        f"To re-make the tokens of the music library {root}: `mgsv library reindex --library {root}` encodes every "
        "track again with the AST encoder's current choices."
    )


@dataclass
class ReindexReport:
    """What `reindex_library` did: tracks encoded, or why the library was left unchanged."""

    library: Path
    tracks: int = 0
    encoded: int = 0
    failures: list[Problem] = field(default_factory=list)
    spec: str = ""  # fingerprint of the tokens' spec after the re-index
    replaced: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "library": str(self.library), "tracks": self.tracks, "encoded": self.encoded,
            "replaced": self.replaced, "spec": self.spec, "failures": [p.to_dict() for p in self.failures],
        }


def reindex_library(
    folder: str | os.PathLike[str],
    encoder: AstMusicEncoder | Callable[[], AstMusicEncoder],
    progress: Progress | None = None,
) -> ReindexReport:
    """Encode every track of the library at `folder` again with `encoder` (or the encoder a callable loads)."""
    from mgsv.encoders.inputs import encode_track
    from mgsv.features.spec import decode_options
    from mgsv.features.store import FeatureStore
    from mgsv.files.hashing import content_hash
    from mgsv.files.prefetch import prefetched
    from mgsv.files.problems import problem_for
    from mgsv.media.tracks import decode_track
    from mgsv.search.library import FEATURES_DIR, MusicLibrary

    root = Path(folder)
    finish_interrupted_swap(root)
    library = MusicLibrary(root)
    report = ReindexReport(root)
    tracks = library.tracks()
    report.tracks = len(tracks)
    encoder = encoder if hasattr(encoder, "spec") else encoder()  # type: ignore[operator]
    options = decode_options(encoder.spec)
    staging = root / STAGING
    with library.store.writer("music"):  # holds the library's writer lock: no `add` meanwhile
        shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
        new_store = FeatureStore.create(staging, {"music": encoder.spec})

        def decode(track: Any) -> Any:
            if content_hash(Path(track.path)) != track.content_hash:
                raise InputError(
                    track.path,
                    f"no longer holds the content added as track {track.id!r}: add the file from where it is now "
                    f"(`mgsv library add`) or remove the track (`mgsv library remove {track.id}`), then re-index",
                )
            return decode_track(track.path, **options)

        if progress:
            progress("reindex", 0, len(tracks))
        with new_store.writer("music") as writer:
            for done, fetched in enumerate(prefetched(decode, tracks), start=1):
                track = fetched.item
                try:
                    if fetched.error is not None:
                        raise fetched.error
                    tokens, mask = encode_track(fetched.result, encoder)
                    writer.add(track.content_hash, tokens, mask)
                    report.encoded += 1
                except MgsvError as exc:
                    report.failures.append(problem_for(track.path, exc))
                if progress:
                    progress("reindex", done, len(tracks))
        if report.failures:
            shutil.rmtree(staging, ignore_errors=True)
            return report
        new_store.verify()
        (root / READY).write_text("", encoding="utf-8")
        fsync_directory(root)
        report.spec = encoder.spec.fingerprint()
    os.replace(root / FEATURES_DIR, root / RETIRED)
    finish_interrupted_swap(root)
    report.replaced = True
    return report


def finish_interrupted_swap(root: Path) -> None:
    """Complete a re-index whose new store is ready: put it in place, drop the track indexes and the old store."""
    from mgsv.search.library import FEATURES_DIR
    from mgsv.search.library_index import INDEX_DIR

    if (root / READY).exists():
        if (root / FEATURES_DIR).exists() and not (root / RETIRED).exists():
            os.replace(root / FEATURES_DIR, root / RETIRED)
        if (root / STAGING).exists():
            os.replace(root / STAGING, root / FEATURES_DIR)
        fsync_directory(root)
        shutil.rmtree(root / INDEX_DIR, ignore_errors=True)  # computed from the old tokens
        (root / READY).unlink()
    shutil.rmtree(root / RETIRED, ignore_errors=True)
