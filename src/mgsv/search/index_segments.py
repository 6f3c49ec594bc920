"""A track index segment: the tracks one update encoded, in length buckets, written once and never changed.

    seg-NNNNNN/
        hashes.npy          [n] |S64 content hashes (the library feature store's item ids)
        embedding.npy       [n, d] float32: the query-independent part of the score (candidates)
        place.npy           [n, 2] int32 (bucket length L, slot in that bucket)
        tokens-LLL.npy      [n_L, L, d] float16 }
        moments-LLL.npy     [n_L, L, 2] float32 } the model's per-token index form (`index_entries`)
        mask-LLL.npy        [n_L, L] bool       }
        detection-LLL.npy   [n_L, L, d] float16, only for models that detect on other tokens

A segment is written under a temporary name, fsynced and renamed into place (`SegmentWriter.publish`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mgsv.atomic_io import TEMP_PREFIX, fsync_directory, fsync_file
from mgsv.errors import InputError
from mgsv.search.index_files import ArrayWriter, RowFile

BUCKET_STEP = 8  # tracks are grouped by their number of windows rounded up to this
HASH_DTYPE = "S64"  # content hashes: 64 hex digits


def bucket_length(windows: np.ndarray | int, max_tokens: int) -> np.ndarray:
    """Padded length of tracks with `windows` stored windows: the next multiple of BUCKET_STEP (at most max_tokens)."""
    return np.minimum(max_tokens, -(-np.asarray(windows) // BUCKET_STEP) * BUCKET_STEP)


@dataclass(frozen=True)
class SegmentInfo:
    """A manifest entry: a segment's folder name, track count and tracks per bucket length."""

    name: str
    tracks: int
    buckets: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tracks": self.tracks, "buckets": {str(k): v for k, v in self.buckets.items()}}

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> SegmentInfo:
        try:
            return cls(str(data["name"]), int(data["tracks"]), {int(k): int(v) for k, v in data["buckets"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(where, f"malformed segment entry {data!r}") from exc


def bucket_file(folder: Path, kind: str, length: int) -> Path:
    """A bucket's array file of one kind in a segment folder."""
    return folder / f"{kind}-{length:03d}.npy"


class SegmentWriter:
    """Writes one segment: files preallocated from the plan (tracks and their lengths) and filled batch by batch.

    Nothing is visible until `publish` renames the finished folder into place; `abort` removes it.
    """

    def __init__(
        self, parent: Path, hashes: Sequence[str], windows: np.ndarray, dim: int, max_tokens: int, detection: bool
    ) -> None:
        self.folder = parent / f"{TEMP_PREFIX}seg-{uuid.uuid4().hex}"  # a folder renamed whole in publish()
        self.folder.mkdir(parents=True)
        self.count = len(hashes)
        self.lengths = bucket_length(windows, max_tokens).astype(np.int32)
        self.slots = np.zeros(self.count, dtype=np.int32)
        self.buckets: dict[int, int] = {}
        for length in np.unique(self.lengths).tolist():
            members = np.flatnonzero(self.lengths == length)
            self.slots[members] = np.arange(len(members))
            self.buckets[int(length)] = len(members)
        np.save(self.folder / "hashes.npy", np.array(list(hashes), dtype=HASH_DTYPE), allow_pickle=False)
        np.save(self.folder / "place.npy", np.stack([self.lengths, self.slots], axis=1), allow_pickle=False)
        self.embedding = ArrayWriter(self.folder / "embedding.npy", np.float32, (self.count, dim))
        kinds = {"tokens": (np.float16, (dim,)), "moments": (np.float32, (2,)), "mask": (np.bool_, ())}
        if detection:
            kinds["detection"] = (np.float16, (dim,))
        self.arrays = {(kind, length): ArrayWriter(bucket_file(self.folder, kind, length), dtype, (n, length, *rest))
                       for length, n in self.buckets.items() for kind, (dtype, rest) in kinds.items()}  # fmt: skip

    def put(self, positions: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Store tracks `positions` (of the plan, all of one bucket length): embedding [b, d] and per-token arrays
        "tokens" / "moments" / "mask" (/ "detection") [b, length, ...]."""
        lengths = np.unique(self.lengths[positions])
        if len(lengths) != 1:
            raise ValueError("put() takes tracks of one bucket length at a time")
        length = int(lengths[0])
        order = np.argsort(positions, kind="stable")  # ascending rows: neighbours become one write
        self.embedding.write(np.asarray(positions)[order], np.asarray(arrays["embedding"])[order])
        slots = self.slots[positions][order]
        for kind in ("tokens", "moments", "mask", "detection"):
            if (kind, length) in self.arrays:
                self.arrays[kind, length].write(slots, np.asarray(arrays[kind][:, :length])[order])

    def publish(self, parent: Path, name: str) -> SegmentInfo:
        """fsync every file, then rename the folder to `name` (atomic)."""
        for array in (self.embedding, *self.arrays.values()):
            array.close()
        for path in ("hashes.npy", "place.npy"):
            fsync_file(self.folder / path)
        fsync_directory(self.folder)  # the folder's entries, before the folder is renamed into place
        target = parent / name
        os.replace(self.folder, target)
        fsync_directory(parent)
        return SegmentInfo(name, self.count, dict(sorted(self.buckets.items())))

    def abort(self) -> None:
        """Remove the unfinished segment."""
        for array in (self.embedding, *self.arrays.values()):
            array.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Segment:
    """One published segment, opened for reading: its small arrays in RAM, its token files read by position."""

    def __init__(self, folder: Path, info: SegmentInfo, dim: int, detection: bool, memory: str) -> None:
        self.folder, self.info = folder, info
        try:
            self.hashes = np.load(folder / "hashes.npy", allow_pickle=False)
            self.embedding = np.load(folder / "embedding.npy", mmap_mode="r", allow_pickle=False)
            place = np.load(folder / "place.npy", allow_pickle=False)
            self.masks = {length: np.load(bucket_file(folder, "mask", length), allow_pickle=False)
                          for length in info.buckets}
            kinds = ("tokens", "moments") + (("detection",) if detection else ())
            self.files = {(kind, length): RowFile(bucket_file(folder, kind, length))
                          for kind in kinds for length in info.buckets}
        except (OSError, ValueError) as exc:
            raise InputError(folder, f"cannot read the track index segment: {exc}") from exc
        if self.hashes.shape != (info.tracks,) or self.embedding.shape != (info.tracks, dim) or place.shape != (
            info.tracks, 2
        ):
            raise InputError(folder, "track index segment does not match its manifest entry")
        self.lengths, self.slots = place[:, 0].copy(), place[:, 1].copy()
        # memory="ram": the token files read once into RAM; reads become copies from these arrays.
        self.loaded: dict[tuple[str, int], np.ndarray] = {}
        if memory == "ram":
            for key, handle in self.files.items():
                self.loaded[key] = np.load(handle.path, allow_pickle=False)

    def advise(self, kind: str, length: int, slots: np.ndarray) -> None:
        """Announce reads of rows `slots` (ascending) of one bucket's `kind` array (nothing to do in RAM)."""
        if (kind, length) not in self.loaded:
            self.files[kind, length].advise(slots)

    def read(self, kind: str, length: int, slots: np.ndarray, out: np.ndarray) -> None:
        """Rows `slots` (ascending) of one bucket's `kind` array into out[: len(slots)]."""
        if (kind, length) in self.loaded:
            np.take(self.loaded[kind, length], slots, axis=0, out=out[: len(slots)])
        else:
            self.files[kind, length].read(slots, out)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
