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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from mgsv.atomic_io import TEMP_PREFIX, write_json_atomic
from mgsv.errors import InputError, MgsvError, OptionError
from mgsv.manifests import read_versioned_json
from mgsv.search.index_segments import HASH_DTYPE, Segment, SegmentInfo, SegmentWriter, bucket_file

if TYPE_CHECKING:
    import torch

    from mgsv.features.store import FeatureTable

log = logging.getLogger(__name__)

FORMAT = "mgsv-track-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENCODE_BATCH = 128  # tracks per encode_music call while building
READ_CHUNK = 128  # tracks per block read and scored at once (bounded buffers that stay in cache)
COMPACT_DEAD_FRACTION = 0.25  # compact when this share of the stored tracks left the library ...
MAX_SEGMENTS = 16  # ... or when updates made more segments than this
MEMORY_CHOICES = ("disk", "ram")

Progress = Callable[[str, int, int], None]


class IndexMemoryError(MgsvError):
    """A track index configuration that does not fit in this machine's memory."""


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
            "open it with `index_memory` disk (the default: tokens stay on disk and each query reads its "
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
            held = torch.empty(count, dtype=dtype, device="cpu")  # host: blocks are read from disk into it
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
                    path = bucket_file(folder, kind, length)
                    if path.is_file():
                        arrays[kind] = np.load(path, mmap_mode="r", allow_pickle=False)[slots]
                writer.put(base + picked, arrays)
            base += len(keep)
        return writer.publish(root, _next_name(root, manifest))
    except BaseException:
        writer.abort()
        raise
