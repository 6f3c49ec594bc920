"""What a timeline draws of a library track, computed once per track and kept in the library folder.

    LIB/track-media/peaks-100hz-v1/<content hash>.npy          float16 [n, 2]: the waveform (`mgsv.media.waveform`)
    LIB/track-media/beats-librosa-<version>-v1/<content hash>.npy  float64 [k]: beat times of the whole track
                                                                (`mgsv.search.beats.whole_track_beats`)

Files are named by the track's content hash, so a track added again (under any id) finds its files, and a removed
track's files are never read: lookups start from a listed track. `mgsv library remove` deletes them
(`TrackMedia.forget`). A folder's name carries what its content depends on (the peak resolution, the librosa
version: another version may find other beats), so a changed format is never read as the old one; the grounder's
`--snap beats` analyses the same way in-process, so the beats here are the beats it snaps to.

Writes are atomic (`mgsv.atomic_io`): a reader sees a whole file or none. Within a process one lock per file makes
concurrent requests for the same track compute it once; two processes may both compute it and the last rename
wins, with the same content. A cache file that cannot be read or is malformed is computed again and replaced; a
library folder that cannot be written to still answers (computed on every call, with a warning in the log).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from mgsv.atomic_io import atomic_writer
from mgsv.media.waveform import PEAKS_PER_SECOND, track_peaks
from mgsv.search.beats import require_librosa, whole_track_beats

log = logging.getLogger(__name__)

MEDIA_DIR = "track-media"
PEAKS_FOLDER = f"peaks-{PEAKS_PER_SECOND}hz-v1"
_HASH = re.compile(r"^[0-9a-f]{64}$")

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


class LibraryTrack(Protocol):
    """What this module needs of a library track (`mgsv.search.library.Track`)."""

    content_hash: str
    path: str


def _lock_for(file: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(file, threading.Lock())


def _valid_peaks(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] == 2 and array.dtype == np.float16 and bool(np.isfinite(array).all())


def _valid_beats(array: np.ndarray) -> bool:
    return (
        array.ndim == 1
        and array.dtype == np.float64
        and bool(np.isfinite(array).all())
        and bool((np.diff(array) >= 0).all())
    )


def beats_folder() -> str:
    """The beats folder's name for the installed librosa (MissingExtraError without it)."""
    require_librosa()
    return f"beats-librosa-{metadata.version('librosa')}-v1"


class TrackMedia:
    """The waveform peaks and beats of a library's tracks (see the module docstring); safe to use from threads."""

    def __init__(self, library_root: str | Path) -> None:
        self.root = Path(library_root) / MEDIA_DIR

    def peaks(self, track: LibraryTrack) -> np.ndarray:
        """float16 [n, 2] peaks of the track (`mgsv.media.waveform.track_peaks`), from the cache or computed now."""
        return self._get(self._file(PEAKS_FOLDER, track), lambda: track_peaks(track.path), _valid_peaks)

    def cached_peaks(self, track: LibraryTrack) -> np.ndarray | None:
        """The cached peaks of the track, or None if they are not cached yet."""
        return self._read(self._file(PEAKS_FOLDER, track), _valid_peaks)

    def beats(self, track: LibraryTrack) -> np.ndarray:
        """float64 beat times of the whole track (`whole_track_beats`), from the cache or computed now."""
        file = self._file(beats_folder(), track)
        return self._get(file, lambda: np.array(whole_track_beats(track.path)), _valid_beats)

    def cached_beats(self, track: LibraryTrack) -> np.ndarray | None:
        """The cached beats of the track, or None if they are not cached yet (MissingExtraError without librosa)."""
        return self._read(self._file(beats_folder(), track), _valid_beats)

    def forget(self, content_hashes: Iterable[str]) -> int:
        """Delete the cached files of these content hashes (tracks removed from the library); returns how many."""
        if not self.root.is_dir():
            return 0
        names = {f"{h}.npy" for h in content_hashes if _HASH.match(h)}
        removed = 0
        for folder in self.root.iterdir():
            for name in names:
                file = folder / name
                if file.is_file():
                    file.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- files ----------------------------------------------------------------------------------------------------

    def _file(self, folder: str, track: LibraryTrack) -> Path:
        if not _HASH.match(track.content_hash):  # it names a file: never anything but a SHA-256 hex digest
            raise ValueError(f"not a content hash: {track.content_hash!r}")
        return self.root / folder / f"{track.content_hash}.npy"

    def _get(self, file: Path, compute: Callable[[], np.ndarray], valid: Callable[[np.ndarray], bool]) -> np.ndarray:
        found = self._read(file, valid)
        if found is not None:
            return found
        with _lock_for(file):
            found = self._read(file, valid)  # another thread may have computed it while this one waited
            if found is not None:
                return found
            value = compute()
            self._write(file, value)
            return value

    @staticmethod
    def _read(file: Path, valid: Callable[[np.ndarray], bool]) -> np.ndarray | None:
        try:
            array = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            log.warning("%s: unreadable cache file (%s); computing it again", file, exc)
            return None
        if not isinstance(array, np.ndarray) or not valid(array):
            log.warning("%s: malformed cache file; computing it again", file)
            return None
        return array

    @staticmethod
    def _write(file: Path, value: np.ndarray) -> None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(file, "wb") as handle:
                np.save(handle, value, allow_pickle=False)
        except OSError as exc:
            log.warning("%s: cannot cache it (%s); it will be computed again next time", file, exc)
