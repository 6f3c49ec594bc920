"""A library's tracks as one model sees them, on disk: what search reads per query, at any library size.

Everything a track contributes to p_s and to detection that does not depend on the query video is computed once
per (model, track) and kept here. Nothing scales with the library in RAM except h0 (d floats per track):

    LIB/index/<model fingerprint>/
        manifest.json       {"format": "mgsv-track-index", "format_version": 1, "fingerprint", "dim",
                             "generation", "detection_tokens", "segments": [{"name", "tracks", "buckets"}]}
        seg-NNNNNN/         one immutable segment per update (the tracks that update encoded)
            hashes.npy          [n] |S64 content hashes (the library feature store's item ids)
            embedding.npy       [n, d] float32 h0(M): the candidate stage and S0
            place.npy           [n, 2] int32 (bucket length L, slot in that bucket)
            tokens-LLL.npy      [n_L, L, d] float16 X-Pool's standardised tokens x (`XPool.standardize`)
            moments-LLL.npy     [n_L, L, 2] float32 (mean, std) of each token: s~ = x * std + mean (detection)
            mask-LLL.npy        [n_L, L] bool
            detection-LLL.npy   [n_L, L, d] float16, only for models that detect on other tokens than s~

What the arrays hold is the model's business (`mgsv.models.contract.LibrarySearchable`: it fills them with
`index_entries`, scores them with `index_scorer` and rebuilds encodings from them with `index_encodings`). For MaDe:
X-Pool's keys and values are both affine in LN1(s~), so the standardised tokens x are the whole of X-Pool's
per-track input (`MaDe.relevance_standardized`): one [L, d] float16 array per track, half of what keys + values
would take and a quarter of the Gram form the in-RAM path uses. Tracks sit in length buckets (windows rounded up
to 8) rather than padded to 96 windows.

Bytes per track (d = 256, MGSV-EC's mean of 56 windows, ~60 after bucketing): tokens 30.7 KB, moments 0.5 KB,
mask 60 B, h0 1 KB, hash and place 72 B: ~32 KB, so 3.2 GB per 100k tracks and 32 GB per million. Only h0 and
the masks are held in RAM (~180 B per track, `memory="disk"`). A query first tells the kernel which rows it will
read (`posix_fadvise(WILLNEED)`: on a cold disk the kernel fetches them all concurrently), then reads them block by
block with positioned reads (`os.preadv`) into reused buffers; a warm library is served from the page cache.

Durability: a segment is written under a temporary name, fsynced and renamed into place; then manifest.json is
replaced atomically. A killed update leaves the previous index intact; the next update removes its leftovers.
Readers never lock: published segments never change, and compaction only removes segments no manifest names.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from mgsv.atomic_io import TEMP_PREFIX, fsync_directory, fsync_file, write_json_atomic
from mgsv.errors import InputError, MgsvError, OptionError
from mgsv.manifests import read_versioned_json

if TYPE_CHECKING:
    import torch

    from mgsv.features.store import FeatureTable

log = logging.getLogger(__name__)

FORMAT = "mgsv-track-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUCKET_STEP = 8  # tracks are grouped by their number of windows rounded up to this
HASH_DTYPE = "S64"  # content hashes: 64 hex digits
ENCODE_BATCH = 128  # tracks per encode_music call while building
READ_CHUNK = 128  # tracks per block read and scored at once (bounded buffers that stay in cache)
COMPACT_DEAD_FRACTION = 0.25  # compact when this share of the stored tracks left the library ...
MAX_SEGMENTS = 16  # ... or when updates made more segments than this
MEMORY_CHOICES = ("disk", "ram")

Progress = Callable[[str, int, int], None]


class IndexMemoryError(MgsvError):
    """A track index configuration that does not fit in this machine's memory."""


def bucket_length(windows: np.ndarray | int, max_tokens: int) -> np.ndarray:
    """Padded length of tracks with `windows` stored windows: the next multiple of BUCKET_STEP (at most max_tokens)."""
    return np.minimum(max_tokens, -(-np.asarray(windows) // BUCKET_STEP) * BUCKET_STEP)


def available_memory() -> int | None:
    """Bytes of memory the kernel could give this process now (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(count: float) -> str:
    """Bytes as a short human string: GB with 2 decimals, MB or kB with one."""
    if count >= 1e9:
        return f"{count / 1e9:.2f} GB"
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


# ------------------------------------------------------------------------------------------------------ files


class RowFile:
    """Rows of one `.npy` array on disk, read by position into caller buffers (no memory map, no RSS growth)."""

    def __init__(self, path: Path) -> None:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        self.path = path
        self.shape, self.dtype = array.shape, array.dtype
        self.offset = array.offset
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del array
        self.fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        """Close the file (reads fail afterwards)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def runs(self, slots: np.ndarray) -> list[tuple[int, int, int]]:
        """(first position, stop position, byte offset) of each run of consecutive slots (ascending slots)."""
        breaks = np.flatnonzero(np.diff(slots) != 1) + 1
        firsts, stops = np.r_[0, breaks], np.r_[breaks, len(slots)]
        return [(int(a), int(b), self.offset + int(slots[a]) * self.row_bytes) for a, b in zip(firsts, stops, strict=True)]

    def advise(self, slots: np.ndarray) -> None:
        """Tell the kernel these rows will be read soon, so that a cold disk fetches them all at once."""
        if not hasattr(os, "posix_fadvise"):
            return
        for first, stop, offset in self.runs(slots):
            os.posix_fadvise(self.fd, offset, (stop - first) * self.row_bytes, os.POSIX_FADV_WILLNEED)

    def read(self, slots: np.ndarray, out: np.ndarray) -> None:
        """Rows `slots` (ascending) into out[0 : len(slots)]; runs of consecutive slots are one read each."""
        flat = out.reshape(len(out), -1).view(np.uint8)
        for first, stop, offset in self.runs(slots):
            target = memoryview(flat[first:stop]).cast("B")
            done = os.preadv(self.fd, [target], offset) if hasattr(os, "preadv") else self._pread(target, offset)
            if done != len(target):
                raise InputError(self.path, f"short read at row {int(slots[first])}: the index file is damaged")

    def _pread(self, target: memoryview, offset: int) -> int:
        data = os.pread(self.fd, len(target), offset)
        target[: len(data)] = data
        return len(data)


# ------------------------------------------------------------------------------------------------------ segments


class ArrayWriter:
    """A `.npy` file of known shape, filled row by row with positioned writes (a memory map would hold every
    written page in the writer's RSS until it is flushed: tens of GB for a large index)."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": tuple(int(n) for n in shape)}  # fmt: skip
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            self.offset = handle.tell()
            handle.truncate(self.offset + int(shape[0]) * self.row_bytes)
        self.fd = os.open(path, os.O_WRONLY)  # positioned writes into a preallocated file: fsynced in close()

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        """values[i] into row rows[i]; runs of consecutive rows are one write each."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for first, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            data = values[first:stop].tobytes()
            offset = self.offset + int(rows[first]) * self.row_bytes
            while data:  # a positioned write may be short; finish it
                done = os.pwrite(self.fd, data, offset)
                data, offset = data[done:], offset + done

    def close(self) -> None:
        """fsync and close."""
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1




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


def _bucket_file(folder: Path, kind: str, length: int) -> Path:
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
        self.arrays = {(kind, length): ArrayWriter(_bucket_file(self.folder, kind, length), dtype, (n, length, *rest))
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
            self.masks = {length: np.load(_bucket_file(folder, "mask", length), allow_pickle=False)
                          for length in info.buckets}
            kinds = ("tokens", "moments") + (("detection",) if detection else ())
            self.files = {(kind, length): RowFile(_bucket_file(folder, kind, length))
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


# ------------------------------------------------------------------------------------------------------ the index


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The index manifest at `root`, or None if there is none; a malformed one raises InputError."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    data = read_versioned_json(path, format_name=FORMAT, version=FORMAT_VERSION, what="track index manifest")
    data["segments"] = [SegmentInfo.from_dict(s, path) for s in data.get("segments", [])]
    return data


def require_memory(where: str, parts: dict[str, int], fix: str) -> None:
    """Raise IndexMemoryError, with the numbers and `fix`, when `parts` (bytes by name) exceed 80% of free memory."""
    needed, free = sum(parts.values()), available_memory()
    if free is None or needed <= 0.8 * free:
        return
    listed = ", ".join(f"{name} {gigabytes(size)}" for name, size in parts.items())
    raise IndexMemoryError(
        f"{where} needs {gigabytes(needed)} of memory ({listed}) but only {gigabytes(free)} is available; {fix}"
    )


class TrackIndex:
    """An opened track index (see the module docstring): small per-track arrays in RAM, the rest read per query.

    Rows are numbered through the segments in manifest order. h0 stays memory-mapped (`embedding_rows` touches the
    candidates' rows only; `all_embeddings` is for the candidate stage to hold or index). `memory="ram"` reads the
    token files into RAM at open (no disk reads per query); it is refused, with the numbers, when it does not fit.
    """

    def __init__(self, root: str | os.PathLike[str], memory: str = "disk") -> None:
        if memory not in MEMORY_CHOICES:
            raise OptionError("index_memory", f"must be one of {', '.join(MEMORY_CHOICES)}, got {memory!r}")
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            raise InputError(self.root, "no track index here")
        self.fingerprint: str = manifest["fingerprint"]
        self.dim: int = int(manifest["dim"])
        self.generation: int = int(manifest["generation"])
        self.detection_tokens: bool = bool(manifest["detection_tokens"])
        self.memory = memory
        infos: list[SegmentInfo] = manifest["segments"]
        tracks = sum(info.tracks for info in infos)
        parts = {"masks, places and hashes": tracks * (96 + 8 + 64 + 16)}
        if memory == "ram":
            parts["tokens and moments"] = self.token_bytes(infos)
        require_memory(
            f"{self.root}: this track index of {tracks:,} tracks", parts,
            "open it with --index-memory disk (the default: tokens stay on disk and each query reads its "
            "candidates' rows)" if memory == "ram" else "use a machine with more memory",
        )
        self.segments = [Segment(self.root / info.name, info, self.dim, self.detection_tokens, memory)
                         for info in infos]
        counts = [info.tracks for info in infos]
        self.hashes = np.concatenate([s.hashes for s in self.segments]) if infos else np.zeros(0, HASH_DTYPE)
        self.segment_of = np.repeat(np.arange(len(infos), dtype=np.int32), counts)
        self.first_row = np.cumsum([0] + counts)[:-1]
        self.lengths = np.concatenate([s.lengths for s in self.segments]) if infos else np.zeros(0, np.int32)
        self.slots = np.concatenate([s.slots for s in self.segments]) if infos else np.zeros(0, np.int32)
        self._sorted = np.argsort(self.hashes, kind="stable")
        self._buffers = threading.local()  # per-thread read buffers, reused across queries

    def __len__(self) -> int:
        return len(self.hashes)

    def close(self) -> None:
        """Close the index's files."""
        for segment in self.segments:
            segment.close()

    def buffer(self, name: str, count: int, dtype: Any) -> Any:
        """A torch tensor of at least `count` elements, this thread's own, reused across calls (contents undefined).

        Fresh large buffers cost page faults on every query; reused ones stay mapped and mostly in cache.
        """
        import torch

        held = getattr(self._buffers, name, None)
        if held is None or held.numel() < count or held.dtype != dtype:
            held = torch.empty(count, dtype=dtype)
            setattr(self._buffers, name, held)
        return held[:count]

    def token_bytes(self, infos: Sequence[SegmentInfo] | None = None) -> int:
        """Bytes of the per-token files (tokens, moments, detection tokens) of the segments."""
        infos = self.segments_info if infos is None else infos
        per_token = self.dim * 2 + 8 + (self.dim * 2 if self.detection_tokens else 0)
        return sum(length * count * per_token for info in infos for length, count in info.buckets.items())

    @property
    def segments_info(self) -> list[SegmentInfo]:
        return [s.info for s in self.segments]

    def all_embeddings(self) -> np.ndarray:
        """h0 of every row as one float32 array [N, d] in RAM (read from the segments' memory maps)."""
        if not self.segments:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(s.embedding) for s in self.segments])

    def embedding_rows(self, rows: np.ndarray) -> np.ndarray:
        """h0 of some rows [len(rows), d] float32, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        segment = self.segment_of[rows]
        for number in np.unique(segment).tolist():
            picked = np.flatnonzero(segment == number)
            out[picked] = self.segments[number].embedding[rows[picked] - self.first_row[number]]
        return out

    # -- rows -----------------------------------------------------------------------------------------------

    def rows_of(self, hashes: np.ndarray) -> np.ndarray:
        """Row of each content hash (|S64 array), -1 where the index has none."""
        hashes = np.asarray(hashes, dtype=HASH_DTYPE)
        if not len(self.hashes):
            return np.full(len(hashes), -1, dtype=np.int64)
        ordered = self.hashes[self._sorted]
        where = np.minimum(np.searchsorted(ordered, hashes), len(ordered) - 1)
        found = ordered[where] == hashes
        return np.where(found, self._sorted[where], -1).astype(np.int64)

    def groups(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, int, int, np.ndarray]]:
        """(positions in `rows`, segment, bucket length, slots) per (segment, bucket), slots ascending."""
        rows = np.asarray(rows, dtype=np.int64)
        segment, length, slot = self.segment_of[rows], self.lengths[rows], self.slots[rows]
        order = np.lexsort((slot, length, segment))
        keys = np.stack([segment[order], length[order]], axis=1)
        breaks = np.flatnonzero((np.diff(keys, axis=0) != 0).any(axis=1)) + 1
        for first, stop in zip(np.r_[0, breaks], np.r_[breaks, len(order)], strict=True):
            picked = order[first:stop]
            yield picked, int(segment[picked[0]]), int(length[picked[0]]), slot[picked]

    def blocks(self, rows: np.ndarray, chunk: int = READ_CHUNK) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """(positions in `rows`, standardised tokens float16 [c, L, d], mask [c, L] bool) as torch tensors, in blocks
        of at most `chunk` tracks of one bucket. The token tensor is a reused buffer: use it before the next block."""
        import torch

        work = [(positions[i : i + chunk], segment, length, slots[i : i + chunk])
                for positions, segment, length, slots in self.groups(rows)
                for i in range(0, len(slots), chunk)]  # fmt: skip
        for _, segment, length, slots in work:
            self.segments[segment].advise("tokens", length, slots)
        largest = max((len(slots) * length for _, _, length, slots in work), default=0)
        flat = self.buffer("tokens", largest * self.dim, torch.float16)
        for positions, segment, length, slots in work:
            tokens = flat[: len(slots) * length * self.dim].view(len(slots), length, self.dim)
            self.segments[segment].read("tokens", length, slots, tokens.numpy())
            yield positions, tokens, torch.from_numpy(self.segments[segment].masks[length][slots])

    def entries(self, rows: Sequence[int], device: str = "cpu") -> dict[str, Any]:
        """The stored arrays of some rows as torch tensors padded with zeros to their longest bucket, in the given
        order: "embedding" [n, d], "tokens" [n, L, d] float16, "moments" [n, L, 2], "mask" [n, L] (+ "detection").
        The model rebuilds its encodings from them (`index_encodings`)."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        longest = int(self.lengths[rows].max()) if len(rows) else 1
        kinds = {"tokens": (np.float16, (self.dim,)), "moments": (np.float32, (2,))}
        if self.detection_tokens:
            kinds["detection"] = (np.float16, (self.dim,))
        out = {kind: np.zeros((len(rows), longest, *rest), dtype=dtype) for kind, (dtype, rest) in kinds.items()}
        out["mask"] = np.zeros((len(rows), longest), dtype=bool)
        for positions, segment, length, slots in self.groups(rows):
            part = self.segments[segment]
            for kind, (dtype, rest) in kinds.items():
                block = np.empty((len(slots), length, *rest), dtype=dtype)
                part.read(kind, length, slots, block)
                out[kind][positions, :length] = block
            out["mask"][positions, :length] = part.masks[length][slots]
        out["embedding"] = self.embedding_rows(rows)
        return {kind: torch.from_numpy(array).to(device) for kind, array in out.items()}


# ------------------------------------------------------------------------------------------------------ updates


def update_track_index(
    root: Path,
    model: torch.nn.Module,
    fingerprint: str,
    table: FeatureTable,
    wanted: Sequence[str],
    device: str = "cpu",
    progress: Progress | None = None,
) -> None:
    """Bring the index at `root` to hold exactly `wanted` (content hashes): encode the missing tracks into a new
    segment; compact when many stored tracks left the library or updates made many segments."""
    from mgsv.models.contract import require

    require(model, searchable=True, purpose="grounding in a music library")
    layout = model.index_layout()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        manifest = read_manifest(root) or {
            "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fingerprint,
            "dim": int(layout.dim), "generation": 0, "detection_tokens": bool(layout.detection_tokens),
            "segments": [],
        }  # fmt: skip
        _remove_leftovers(root, manifest["segments"])
        stored = set()
        for info in manifest["segments"]:
            stored.update(h.decode() for h in np.load(root / info.name / "hashes.npy", allow_pickle=False))
        wanted_set = set(wanted)
        missing = [h for h in dict.fromkeys(wanted) if h not in stored]
        changed = False
        if missing:
            info = _encode_segment(root, manifest, model, table, missing, device, progress)
            manifest["segments"].append(info)
            changed = True
        dead = len(stored - wanted_set)
        total = sum(info.tracks for info in manifest["segments"])
        if dead and (dead > COMPACT_DEAD_FRACTION * total or len(manifest["segments"]) > MAX_SEGMENTS):
            manifest["segments"] = [_compact(root, manifest, wanted_set)]
            changed = True
        if changed:
            manifest["generation"] += 1
            write_json_atomic(root / MANIFEST, _manifest_json(manifest))
            _remove_leftovers(root, manifest["segments"])


def _manifest_json(manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "segments": [info.to_dict() for info in manifest["segments"]]}


def _next_name(root: Path, manifest: dict[str, Any]) -> str:
    used = [int(info.name.split("-")[1]) for info in manifest["segments"]]
    used += [int(p.name.split("-")[1]) for p in root.glob("seg-*") if p.name.split("-")[1].isdigit()]
    return f"seg-{max(used, default=-1) + 1:06d}"


def _remove_leftovers(root: Path, segments: Sequence[SegmentInfo]) -> None:
    """Delete unfinished segments and files (.tmp-*) and segments the manifest does not name (under the lock)."""
    named = {info.name for info in segments}
    for path in root.iterdir():
        unnamed = path.is_dir() and path.name.startswith("seg-") and path.name not in named
        if path.name.startswith(TEMP_PREFIX) or unnamed:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _encode_segment(
    root: Path,
    manifest: dict[str, Any],
    model: torch.nn.Module,
    table: FeatureTable,
    hashes: list[str],
    device: str,
    progress: Progress | None,
) -> SegmentInfo:
    """Encode tracks `hashes` (from the library's AST tokens) into a new published segment."""
    import torch

    max_tokens = table.spec.max_tokens
    windows = table.lengths(hashes)
    writer = SegmentWriter(root, hashes, windows, manifest["dim"], max_tokens, manifest["detection_tokens"])
    was_training = model.training
    model.eval()
    done = 0
    try:
        with torch.inference_mode():
            for length in sorted(writer.buckets):
                members = np.flatnonzero(writer.lengths == length)
                for start in range(0, len(members), ENCODE_BATCH):
                    positions = members[start : start + ENCODE_BATCH]
                    feats, mask = table.batch([hashes[i] for i in positions], pad_to=length)
                    music = model.encode_music(feats.to(device), mask.to(device), matching_state=False)
                    writer.put(positions, model.index_entries(music))
                    done += len(positions)
                    if progress:
                        progress("encode library", done, len(hashes))
        return writer.publish(root, _next_name(root, manifest))
    except BaseException:
        writer.abort()
        raise
    finally:
        model.train(was_training)


def _compact(root: Path, manifest: dict[str, Any], live: set[str]) -> SegmentInfo:
    """Copy the rows of `live` hashes from every segment into one new published segment (no re-encoding)."""
    wanted = np.array(sorted(live), dtype=HASH_DTYPE)
    sources = []
    for info in manifest["segments"]:
        folder = root / info.name
        hashes = np.load(folder / "hashes.npy", allow_pickle=False)
        keep = np.flatnonzero(np.isin(hashes, wanted))
        sources.append((folder, keep, hashes[keep], np.load(folder / "place.npy", allow_pickle=False)[keep]))
    hashes = [h.decode() for _, _, kept, _ in sources for h in kept]
    lengths = np.concatenate([place[:, 0] for *_, place in sources])
    # Stored bucket lengths are kept: passing the longest as max_tokens leaves every one as it is.
    writer = SegmentWriter(root, hashes, lengths, manifest["dim"], int(lengths.max(initial=1)),
                           manifest["detection_tokens"])
    try:
        base = 0
        for folder, keep, _, place in sources:
            embedding = np.load(folder / "embedding.npy", mmap_mode="r", allow_pickle=False)
            for length in np.unique(place[:, 0]).tolist():
                picked = np.flatnonzero(place[:, 0] == length)
                slots = place[picked, 1]
                arrays = {"embedding": embedding[keep[picked]]}
                for kind in ("tokens", "moments", "mask", "detection"):
                    path = _bucket_file(folder, kind, length)
                    if path.is_file():
                        arrays[kind] = np.load(path, mmap_mode="r", allow_pickle=False)[slots]
                writer.put(base + picked, arrays)
            base += len(keep)
        return writer.publish(root, _next_name(root, manifest))
    except BaseException:
        writer.abort()
        raise
