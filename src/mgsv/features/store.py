"""The feature store: variable-length token sequences per modality, packed float16 in memory-mapped shards.

Layout (see docs/architecture.md):

    ROOT/manifest.json                  format, format_version, and per modality its spec and list of shards
    ROOT/<modality>/shard-NNNNNN.tokens.npy   [T, D] float16, the tokens of every item of the shard, concatenated
    ROOT/<modality>/shard-NNNNNN.mask.npy     [T] bool, 1 = valid position
    ROOT/<modality>/shard-NNNNNN.index.json   {"ids": [...], "offsets": [...], "lengths": [...]}

Why this format: a packed `.npy` memory map gives the fastest warm batch gathers (one vectorised take per shard),
needs no service or extra dependency, and `load_into_memory` turns the cold random-read cost into one sequential
read. Shards are immutable once published; a shard becomes visible only when `manifest.json` is atomically
replaced with a list that names it, so a killed writer leaves the previous store intact and its leftovers are
recognisable as files the manifest does not name (removed by `cleanup`).

An item is stored up to its last valid position; positions with mask 0 are stored as zeros (the official loader
zeroes them too) and padding is rebuilt as zeros when a batch is assembled.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from mgsv.atomic_io import TEMP_PREFIX, fsync_directory, fsync_file, temp_path_for, write_json_atomic
from mgsv.errors import BusyError, InputError, MgsvError, OutputExistsError, ProblemsError
from mgsv.features.spec import FeatureSpec
from mgsv.manifests import read_versioned_json

FORMAT = "mgsv-feature-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_FLUSH_EVERY = 1024
_TORCH_GRAIN = 32768  # torch runs an element-wise op on several threads only above this many elements
FLOAT16_MAX = float(np.finfo(np.float16).max)
_SHARD_RE = re.compile(r"^shard-(\d{6,})\.(tokens\.npy|mask\.npy|index\.json)$")
_SHARD_FILES = ("tokens.npy", "mask.npy", "index.json")


class UnknownIdsError(InputError):
    """Ids asked for that the store does not hold."""

    def __init__(self, where: str, missing: Sequence[str], shown: int = 5) -> None:
        self.missing = list(missing)
        listed = ", ".join(repr(m) for m in self.missing[:shown])
        more = f" (and {len(self.missing) - shown} more)" if len(self.missing) > shown else ""
        super().__init__(where, f"{len(self.missing)} unknown id(s): {listed}{more}")


class DuplicateIdError(InputError):
    """An id that is already stored (or already added in this writer session)."""


class StoreBusyError(BusyError):
    """Another process is writing the same modality of this store."""


# ----------------------------------------------------------------------------------------------------------------
# Shard files: written and fsynced under temporary names, renamed in only when the manifest lock gives them a
# shard number (a multi-file commit, so not `atomic_writer`; see mgsv.atomic_io for the single-file helpers)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _save_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _Shard:
    name: str
    items: int
    rows: int
    bytes: dict[str, int]

    @classmethod
    def from_dict(cls, data: Any, where: str) -> _Shard:
        try:
            shard = cls(
                str(data["name"]), int(data["items"]), int(data["rows"]), {k: int(v) for k, v in data["bytes"].items()}
            )
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise InputError(where, f"malformed shard entry {data!r}") from exc
        if not re.fullmatch(r"shard-\d{6,}", shard.name):
            raise InputError(where, f"malformed shard name {shard.name!r}")
        return shard

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "items": self.items, "rows": self.rows, "bytes": dict(self.bytes)}

    def path(self, folder: Path, kind: str) -> Path:
        return folder / f"{self.name}.{kind}"


class FeatureTable:
    """Read access to one modality: ids, single items and padded batches (memory-mapped or in RAM)."""

    def __init__(self, root: Path, modality: str, spec: FeatureSpec, shards: Sequence[_Shard]) -> None:
        self.root = root
        self.modality = modality
        self.spec = spec
        self.where = str(root / modality)
        folder = root / modality
        self._tokens: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        ids: list[str] = []
        shard_of, offsets, lengths = [], [], []
        for number, shard in enumerate(shards):
            index = _read_index(shard.path(folder, "index.json"))
            try:
                tokens = np.load(shard.path(folder, "tokens.npy"), mmap_mode="r", allow_pickle=False)
                mask = np.load(shard.path(folder, "mask.npy"), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(folder / shard.name, f"cannot read shard: {exc} (run verify)") from exc
            if (
                tokens.shape != (shard.rows, spec.dim)
                or mask.shape != (shard.rows,)
                or len(index["ids"]) != shard.items
            ):
                raise InputError(folder / shard.name, "shard does not match the manifest (run verify)")
            self._tokens.append(tokens)
            self._masks.append(mask)
            ids.extend(index["ids"])
            shard_of.append(np.full(len(index["ids"]), number, dtype=np.int32))
            offsets.append(np.asarray(index["offsets"], dtype=np.int64))
            lengths.append(np.asarray(index["lengths"], dtype=np.int64))
        self.ids: list[str] = ids
        self._row: dict[str, int] = {item_id: i for i, item_id in enumerate(ids)}
        if len(self._row) != len(ids):
            raise InputError(self.where, "the same id is stored twice (run verify)")
        self._shard_of = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
        self._offset = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self._length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self.in_memory = False
        self._tensors: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def __repr__(self) -> str:
        return f"FeatureTable({self.where!r}, items={len(self)}, spec={self.spec.fingerprint()})"

    def lengths(self, ids: Sequence[str]) -> np.ndarray:
        """Stored token count of each id (positions up to its last valid one)."""
        return self._length[self._items(ids)].copy()

    def get(self, item_id: str) -> tuple[Any, Any]:
        """One item as (tokens [L, D] float32, mask [L] bool) torch tensors, L = its stored length."""
        feats, mask = self.batch([item_id])
        return feats[0], mask[0]

    def batch(self, ids: Sequence[str], pad_to: int | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """Padded batch (feats [B, L, D] of `dtype`, default float32; mask [B, L] bool), zeros past each item.

        L is the longest item of the batch, or `pad_to` (e.g. the official fixed 50 / 96).
        """
        import torch

        dtype = torch.float32 if dtype is None else dtype
        items = self._items(ids)
        lengths = self._length[items]
        longest = int(lengths.max()) if len(items) else 0
        width = longest if pad_to is None else int(pad_to)
        if width < longest:
            worst = ids[int(np.argmax(lengths))]
            raise InputError(self.where, f"id {worst!r} has {longest} tokens, more than pad_to={width}")
        count, dim = len(items), self.spec.dim
        # Output memory comes from numpy: zeroed by calloc (padding is never written) and backed by huge pages,
        # which made a fresh [512, 96, 768] float32 block ~4x cheaper to fault in than torch.empty here.
        feats = _numpy_backed_zeros((count, width, dim), dtype)
        mask = np.zeros((count, width), dtype=bool)
        sources = self._token_tensors()
        starts, shards = self._offset[items], self._shard_of[items]
        # Visiting items in file order lets the kernel's read-ahead serve a cold memory map.
        order = np.lexsort((starts, shards)).tolist()
        starts, shards, lengths = starts.tolist(), shards.tolist(), lengths.tolist()
        if not self.in_memory:
            self._prefetch([(shards[r], starts[r], lengths[r]) for r in order])
        # Each item is copied (and converted from float16) in slices below torch's parallel grain size, so no copy
        # opens an OpenMP region: per-item parallel copies stalled for seconds on busy shared cores. Measured for a
        # music batch: ~20 ms at 1 or 2 threads; a float16 staging pass + one converting copy ~27 ms; a flat-index
        # np.take + scatter 60-140 ms (every row converted and written twice).
        step = max(1, _TORCH_GRAIN // dim)
        for row in order:
            start, n, shard = starts[row], lengths[row], shards[row]
            source = sources[shard]
            for first in range(0, n, step):
                last = min(n, first + step)
                feats[row, first:last].copy_(source[start + first : start + last])
            mask[row, :n] = self._masks[shard][start : start + n]
        return feats, torch.from_numpy(mask)

    def _token_tensors(self) -> list[Any]:
        """Torch views of the float16 token arrays (read-only memory maps or the in-RAM copy), made once."""
        if self._tensors is None:
            import torch

            with warnings.catch_warnings():
                # torch warns that a read-only memory map is not writable; nothing writes through these views.
                warnings.simplefilter("ignore", UserWarning)
                self._tensors = [torch.from_numpy(t) for t in self._tokens]
        return self._tensors

    def _prefetch(self, ranges: list[tuple[int, int, int]]) -> None:
        """Ask the kernel to read every item's rows now, in parallel, instead of one page fault at a time."""
        for shard, start, n in ranges:
            tokens = self._tokens[shard]
            handle = getattr(tokens, "_mmap", None)
            if handle is None or not hasattr(handle, "madvise"):
                return  # not a memory map (or no madvise on this platform): nothing to gain
            row_bytes = tokens.strides[0]
            first = tokens.offset + start * row_bytes
            aligned = first - first % mmap.PAGESIZE
            handle.madvise(mmap.MADV_WILLNEED, aligned, first + n * row_bytes - aligned)

    def load_into_memory(self) -> FeatureTable:
        """Read every shard into one RAM array so that batches never touch the disk again; returns self."""
        if self.in_memory or not self._tokens:
            self.in_memory = True
            return self
        sizes = np.array([len(t) for t in self._tokens], dtype=np.int64)
        base = np.cumsum(sizes) - sizes
        tokens = np.empty((int(sizes.sum()), self.spec.dim), dtype=np.float16)
        masks = np.empty(int(sizes.sum()), dtype=bool)
        for start, t, m in zip(base, self._tokens, self._masks, strict=True):
            tokens[start : start + len(t)] = t
            masks[start : start + len(m)] = m
        self._offset = self._offset + base[self._shard_of]
        self._shard_of = np.zeros_like(self._shard_of)
        self._tokens, self._masks = [tokens], [masks]
        self._tensors = None
        self.in_memory = True
        return self

    def _items(self, ids: Sequence[str]) -> np.ndarray:
        if isinstance(ids, str):
            raise TypeError("pass a sequence of ids, not a single string")
        row = self._row
        try:
            return np.fromiter((row[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            raise UnknownIdsError(self.where, [i for i in ids if i not in row]) from None


def _numpy_backed_zeros(shape: tuple[int, int, int], dtype: Any) -> Any:
    """A zero torch tensor whose memory numpy allocated (calloc + huge-page advice; works for any torch dtype)."""
    import torch

    itemsize = torch.empty(0, dtype=dtype, device="cpu").element_size()
    size = int(np.prod(shape))
    if size == 0:
        return torch.zeros(shape, dtype=dtype, device="cpu")  # host memory, as the store's batches always are
    return torch.from_numpy(np.zeros(size * itemsize, dtype=np.uint8)).view(dtype).view(shape)


def _read_index(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids, offsets, lengths = data["ids"], data["offsets"], data["lengths"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"cannot read shard index: {exc} (run verify)") from exc
    if not (isinstance(ids, list) and isinstance(offsets, list) and isinstance(lengths, list)):
        raise InputError(path, "malformed shard index")
    if not (len(ids) == len(offsets) == len(lengths)):
        raise InputError(path, "shard index lists have different lengths")
    return {"ids": ids, "offsets": offsets, "lengths": lengths}


# ----------------------------------------------------------------------------------------------------------------
# Writing


class StoreWriter:
    """Adds items to one modality; every `flush_every` items (and at a clean exit) a shard is published.

    Use as a context manager (`with store.writer("music") as w: w.add(id, tokens, mask)`). Items are validated
    when added. If the block raises, the unflushed items are dropped: shards published earlier stay (each one is
    complete), nothing partial becomes visible. Only one writer per modality at a time (a lock file enforces it).
    """

    def __init__(self, store: FeatureStore, modality: str, flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be >= 1")
        self.store = store
        self.modality = modality
        self.spec = store.spec(modality)
        self.flush_every = flush_every
        self.folder = store.root / modality
        self.where = str(self.folder)
        self._lock = FileLock(str(store.root / f".{modality}.lock"))
        self._known: set[str] = set()
        self._ids: list[str] = []
        self._tokens: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self.added = 0
        self._open = False

    def __enter__(self) -> StoreWriter:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreBusyError(f"{self.where}: another process is writing {self.modality!r} features") from None
        try:
            self.store._cleanup_locked(self.modality)
            self._known = set(self.store.modality(self.modality).ids)
        except BaseException:
            self._lock.release()
            raise
        self._open = True
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self._ids, self._tokens, self._masks = [], [], []
            self._open = False
            self._lock.release()

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._known

    @property
    def pending(self) -> int:
        """Items added but not yet published."""
        return len(self._ids)

    def add(self, item_id: str, tokens: Any, mask: Any) -> None:
        """Validate and buffer one item: tokens [L, D] (L <= max_tokens), mask [L] of 0/1 (1 = valid)."""
        if not self._open:
            raise RuntimeError("use the writer inside a `with` block")
        if not isinstance(item_id, str) or not item_id or item_id != item_id.strip() or "\n" in item_id:
            raise InputError(self.where, f"ids must be non-empty strings without surrounding spaces, got {item_id!r}")
        if item_id in self._known:
            raise DuplicateIdError(self.where, f"id {item_id!r} is already stored (check `id in table` before adding)")
        packed, valid = _pack_item(self.spec, f"{self.modality} id {item_id!r}", tokens, mask)
        self._known.add(item_id)
        self._ids.append(item_id)
        self._tokens.append(packed)
        self._masks.append(valid)
        self.added += 1
        if len(self._ids) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Publish the buffered items as one new shard (no-op when nothing is buffered)."""
        if not self._ids:
            return
        lengths = [len(t) for t in self._tokens]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        self.store._publish_shard(
            self.modality,
            np.concatenate(self._tokens),
            np.concatenate(self._masks),
            {"ids": self._ids, "offsets": offsets, "lengths": lengths},
        )
        self._ids, self._tokens, self._masks = [], [], []


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; avoid importing torch for numpy callers
        value = value.detach().cpu()
        if value.dtype.is_floating_point and value.dtype.itemsize < 4:
            value = value.float()  # numpy has no bfloat16
        value = value.numpy()
    return np.asarray(value)


def _pack_item(spec: FeatureSpec, where: str, tokens: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check one item against the spec and return its stored form (float16 rows up to the last valid one)."""
    tokens = _as_numpy(tokens)
    mask = _as_numpy(mask)
    if tokens.ndim != 2 or tokens.shape[1] != spec.dim or not 1 <= tokens.shape[0] <= spec.max_tokens:
        raise InputError(
            where, f"tokens have shape {list(tokens.shape)}, expected [L, {spec.dim}] with 1 <= L <= {spec.max_tokens}"
        )
    if not np.issubdtype(tokens.dtype, np.floating):
        raise InputError(where, f"tokens have dtype {tokens.dtype}, expected floating point")
    if mask.shape != (tokens.shape[0],):
        raise InputError(
            where, f"mask has shape {list(mask.shape)}, expected [{tokens.shape[0]}] (one value per token)"
        )
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.number)) or not np.isin(mask, (0, 1)).all():
            raise InputError(where, "mask values must be 0 or 1")
        mask = mask != 0
    valid = np.flatnonzero(mask)
    if len(valid) == 0:
        raise InputError(where, "mask has no valid position (an item needs at least one token)")
    length = int(valid[-1]) + 1
    rows = np.asarray(tokens[:length], dtype=np.float32)
    keep = mask[:length]
    used = rows[keep]
    if not np.isfinite(used).all():
        raise InputError(where, "tokens contain NaN or infinite values")
    peak = float(np.abs(used).max())
    if peak > FLOAT16_MAX:
        raise InputError(where, f"token value {peak:g} does not fit float16 (max {FLOAT16_MAX:g})")
    packed = rows.astype(np.float16)
    packed[~keep] = 0
    return packed, keep.copy()


# ----------------------------------------------------------------------------------------------------------------
# The store


class FeatureStore:
    """A folder of per-modality token features with their specs (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self._manifest = self._read_manifest()

    # -- create / open --------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str], specs: dict[str, FeatureSpec]) -> FeatureStore:
        """Create an empty store at `root` (which must not exist or be an empty folder)."""
        root = Path(root)
        if not specs:
            raise ValueError("a store needs at least one modality spec")
        for name, spec in specs.items():
            if name != spec.modality:
                raise ValueError(f"spec for {name!r} has modality {spec.modality!r}")
        if (root / MANIFEST).exists():
            raise OutputExistsError(f"{root}: a feature store already exists here")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise OutputExistsError(f"{root}: exists and is not an empty folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for name in specs:
                (root / name).mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(root, f"cannot create a feature store: {exc}") from exc
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "modalities": {name: {"spec": spec.to_dict(), "shards": []} for name, spec in sorted(specs.items())},
        }
        write_json_atomic(root / MANIFEST, manifest)
        return cls(root)

    @staticmethod
    def exists(root: str | os.PathLike[str]) -> bool:
        """Whether `root` holds a store manifest (it may still be invalid)."""
        return (Path(root) / MANIFEST).is_file()

    def _read_manifest(self) -> dict[str, Any]:
        where = str(self.manifest_path)
        if not self.root.exists():
            raise InputError(self.root, "no feature store here (the folder does not exist)")
        if not self.manifest_path.is_file():
            raise InputError(self.root, f"not a feature store (no {MANIFEST})")
        data = read_versioned_json(
            self.manifest_path, format_name=FORMAT, version=FORMAT_VERSION, what="feature store manifest"
        )
        modalities = data.get("modalities")
        if not isinstance(modalities, dict) or not modalities:
            raise InputError(where, "manifest lists no modalities")
        parsed: dict[str, Any] = {}
        for name, entry in modalities.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
                raise InputError(where, f"malformed entry for modality {name!r}")
            spec = FeatureSpec.from_dict(entry.get("spec"), where=f"{where} (modality {name!r})")
            spec = spec.with_remedy(
                f"To re-make the {name} features of {self.root}: extract the media again into a new store "
                "(`mgsv extract --store NEW ...`), or import the official features again into a new store "
                "(`mgsv data import ... --out NEW`)."
            )
            if spec.modality != name:
                raise InputError(where, f"modality {name!r} holds a spec for {spec.modality!r}")
            parsed[name] = {"spec": spec, "shards": [_Shard.from_dict(s, where) for s in entry["shards"]]}
        return parsed

    def _manifest_dict(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "modalities": {
                name: {"spec": entry["spec"].to_dict(), "shards": [s.to_dict() for s in entry["shards"]]}
                for name, entry in sorted(manifest.items())
            },
        }

    def refresh(self) -> None:
        """Re-read the manifest (to see shards that other processes published)."""
        self._manifest = self._read_manifest()

    # -- metadata -------------------------------------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return sorted(self._manifest)

    @property
    def specs(self) -> dict[str, FeatureSpec]:
        return {name: entry["spec"] for name, entry in self._manifest.items()}

    def spec(self, modality: str) -> FeatureSpec:
        """The spec of one modality."""
        self._check_modality(modality)
        return self._manifest[modality]["spec"]

    def _check_modality(self, modality: str) -> None:
        if modality not in self._manifest:
            raise InputError(
                self.root, f"no modality {modality!r} in this store (it has: {', '.join(self.modalities)})"
            )

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, modalities={self.modalities})"

    # -- read -----------------------------------------------------------------------------------------------
    def shard_count(self, modality: str) -> int:
        """Published shards of a modality, as the manifest on disk lists them now (other writers included)."""
        self._check_modality(modality)
        self.refresh()
        return len(self._manifest[modality]["shards"])

    def modality(self, modality: str) -> FeatureTable:
        """Read access to one modality as currently published."""
        self.refresh()
        self._check_modality(modality)
        entry = self._manifest[modality]
        return FeatureTable(self.root, modality, entry["spec"], entry["shards"])

    # -- write ----------------------------------------------------------------------------------------------
    def writer(self, modality: str, flush_every: int = DEFAULT_FLUSH_EVERY) -> StoreWriter:
        """A writer for one modality; use it as a context manager."""
        self._check_modality(modality)
        return StoreWriter(self, modality, flush_every)

    def append(self, modality: str, ids: Sequence[str], tokens_list: Sequence[Any], masks_list: Sequence[Any]) -> int:
        """Add items in one writer session; returns how many were added."""
        if not (len(ids) == len(tokens_list) == len(masks_list)):
            raise ValueError("ids, tokens_list and masks_list must have the same length")
        with self.writer(modality, flush_every=max(1, len(ids))) as w:
            for item_id, tokens, mask in zip(ids, tokens_list, masks_list, strict=True):
                w.add(item_id, tokens, mask)
        return len(ids)

    @contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        with FileLock(str(self.root / ".manifest.lock")):
            yield

    def _publish_shard(self, modality: str, tokens: np.ndarray, mask: np.ndarray, index: dict[str, list]) -> None:
        """Write a shard under temporary names, then rename it in and list it in the manifest (atomically)."""
        folder = self.root / modality
        tmp = {kind: temp_path_for(folder / kind) for kind in _SHARD_FILES}
        try:
            _save_npy(tmp["tokens.npy"], tokens)
            _save_npy(tmp["mask.npy"], mask)
            _save_json(tmp["index.json"], index)
            sizes = {kind: path.stat().st_size for kind, path in tmp.items()}
            with self._manifest_lock():
                manifest = self._read_manifest()
                shard = _Shard(
                    self._next_shard_name(folder, manifest[modality]["shards"]), len(index["ids"]), len(tokens), sizes
                )
                for kind, path in tmp.items():
                    os.replace(path, shard.path(folder, kind))
                fsync_directory(folder)
                manifest[modality]["shards"].append(shard)
                write_json_atomic(self.manifest_path, self._manifest_dict(manifest))
                self._manifest = manifest
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)

    @staticmethod
    def _next_shard_name(folder: Path, shards: Iterable[_Shard]) -> str:
        # Above every shard file present, listed or orphaned, so a name is never reused.
        numbers = [int(s.name.split("-")[1]) for s in shards]
        numbers += [int(m.group(1)) for p in folder.iterdir() if (m := _SHARD_RE.match(p.name))]
        return f"shard-{max(numbers, default=-1) + 1:06d}"

    def compact(self, modality: str) -> None:
        """Rewrite a modality's shards as one shard (after many small flushes); readers see old or new, never half."""
        self._check_modality(modality)
        with self.writer(modality):  # holds the modality's writer lock; adds nothing itself
            table = self.modality(modality)
            shards = self._manifest[modality]["shards"]
            if len(shards) <= 1:
                return
            folder = self.root / modality
            rows = sum(s.rows for s in shards)
            tmp = {kind: temp_path_for(folder / kind) for kind in _SHARD_FILES}
            try:
                # Stream shard by shard into the new files so that a large modality never sits in RAM.
                tokens = np.lib.format.open_memmap(tmp["tokens.npy"], "w+", np.float16, (rows, table.spec.dim))
                mask = np.lib.format.open_memmap(tmp["mask.npy"], "w+", np.bool_, (rows,))
                base = np.cumsum([s.rows for s in shards]) - np.array([s.rows for s in shards])
                for start, t, m in zip(base, table._tokens, table._masks, strict=True):
                    tokens[start : start + len(t)] = t
                    mask[start : start + len(m)] = m
                tokens.flush()
                mask.flush()
                del tokens, mask
                for kind in ("tokens.npy", "mask.npy"):
                    fsync_file(tmp[kind])
                offsets = (table._offset + base[table._shard_of]).tolist()
                _save_json(tmp["index.json"], {"ids": table.ids, "offsets": offsets, "lengths": table._length.tolist()})
                sizes = {kind: path.stat().st_size for kind, path in tmp.items()}
                with self._manifest_lock():
                    manifest = self._read_manifest()
                    shard = _Shard(self._next_shard_name(folder, manifest[modality]["shards"]), len(table), rows, sizes)
                    for kind, path in tmp.items():
                        os.replace(path, shard.path(folder, kind))
                    fsync_directory(folder)
                    manifest[modality]["shards"] = [shard]
                    write_json_atomic(self.manifest_path, self._manifest_dict(manifest))
                    self._manifest = manifest
            finally:
                for path in tmp.values():
                    path.unlink(missing_ok=True)
            del table
            self._cleanup_locked(modality)

    # -- maintenance ----------------------------------------------------------------------------------------
    def cleanup(self) -> list[Path]:
        """Remove leftovers of killed writers (temporary files, shards the manifest does not list); returns them.

        Modalities that a writer is working on right now are skipped.
        """
        removed: list[Path] = []
        for modality in self.modalities:
            lock = FileLock(str(self.root / f".{modality}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                removed += self._cleanup_locked(modality)
            finally:
                lock.release()
        with self._manifest_lock():
            for path in self.root.glob(f"{TEMP_PREFIX}*"):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _cleanup_locked(self, modality: str) -> list[Path]:
        """Remove one modality's leftovers; the caller holds that modality's writer lock."""
        folder = self.root / modality
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            return []
        removed = []
        with self._manifest_lock():
            listed = {s.name for s in self._read_manifest()[modality]["shards"]}
            for path in folder.iterdir():
                m = _SHARD_RE.match(path.name)
                if path.name.startswith(TEMP_PREFIX) or (m and f"shard-{m.group(1)}" not in listed):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def verify(self, deep: bool = False) -> dict[str, int]:
        """Check shard files, sizes and the manifest; `deep` also reads every value. Returns items per modality.

        Raises `ProblemsError` listing everything wrong.
        """
        self.refresh()
        problems: list[str] = []
        counts: dict[str, int] = {}
        for modality, entry in sorted(self._manifest.items()):
            spec: FeatureSpec = entry["spec"]
            folder = self.root / modality
            seen: set[str] = set()
            counts[modality] = 0
            for shard in entry["shards"]:
                label = f"{modality}/{shard.name}"
                missing = [k for k in _SHARD_FILES if not shard.path(folder, k).is_file()]
                if missing:
                    problems.append(f"{label}: missing file(s) {', '.join(missing)}")
                    continue
                for kind in _SHARD_FILES:
                    size = shard.path(folder, kind).stat().st_size
                    if size != shard.bytes.get(kind):
                        problems.append(f"{label}.{kind}: {size} bytes, manifest says {shard.bytes.get(kind)}")
                try:
                    index = _read_index(shard.path(folder, "index.json"))
                    tokens = np.load(shard.path(folder, "tokens.npy"), mmap_mode="r", allow_pickle=False)
                    mask = np.load(shard.path(folder, "mask.npy"), mmap_mode="r", allow_pickle=False)
                except (MgsvError, OSError, ValueError) as exc:
                    problems.append(f"{label}: unreadable: {exc}")
                    continue
                if tokens.dtype != np.float16 or tokens.shape != (shard.rows, spec.dim):
                    problems.append(
                        f"{label}.tokens.npy: {tokens.dtype} {list(tokens.shape)}, "
                        f"expected float16 [{shard.rows}, {spec.dim}]"
                    )
                if mask.dtype != np.bool_ or mask.shape != (shard.rows,):
                    problems.append(f"{label}.mask.npy: {mask.dtype} {list(mask.shape)}, expected bool [{shard.rows}]")
                lengths = np.asarray(index["lengths"], dtype=np.int64)
                offsets = np.asarray(index["offsets"], dtype=np.int64)
                if len(index["ids"]) != shard.items:
                    problems.append(f"{label}: {len(index['ids'])} ids, manifest says {shard.items}")
                if len(lengths) and ((lengths < 1).any() or (lengths > spec.max_tokens).any()):
                    problems.append(f"{label}: item lengths outside 1..{spec.max_tokens}")
                if not np.array_equal(offsets, np.cumsum(lengths) - lengths) or int(lengths.sum()) != shard.rows:
                    problems.append(f"{label}: offsets/lengths do not tile the {shard.rows} rows")
                dups = [i for i in index["ids"] if i in seen]
                if dups:
                    problems.append(f"{label}: id(s) stored twice: {', '.join(map(repr, dups[:5]))}")
                seen.update(index["ids"])
                counts[modality] += len(index["ids"])
                if deep and not problems:
                    if not np.isfinite(tokens).all():
                        problems.append(f"{label}: tokens contain NaN or infinite values")
                    ends = offsets + lengths - 1
                    if len(ends) and not mask[ends].all():
                        problems.append(f"{label}: an item's last stored position is not valid")
        if problems:
            raise ProblemsError(self.root, problems)
        return counts
