"""The candidate stage of library search: the K tracks whose h0 is closest to the video's h(v).

p_s = cos(h(v), h0(M)) + cos(h(v), h1(M | v)) has a query-conditioned term (X-Pool), so no vector index answers
it. The query-independent term S0 = h(v) . h0(M) (both unit vectors) can be: a `CandidateIndex` returns the top K
rows by S0 among the eligible rows (filters are applied before or inside the scan, so all K are eligible), and
`mgsv.search.ranker` scores those K exactly.

Kinds (`--index`):
- `exact` (default): brute force, h0 of every track in RAM and one matrix-vector product per query (4 bytes x d per
  track: 1 GB per million tracks at d = 256). Measured here: 100k x 256 in ~3 ms; graph indexes (HNSW) recalled only
  68-90 % of these neighbours, so brute force is the default up to millions of tracks.
- `faiss`: a FAISS index (`faiss-cpu`, extra `mgsv[faiss]`) built from a factory string, by default IVF with
  4 sqrt(N) lists and flat vectors; "IVF65536,PQ32" keeps 32 bytes per track for tens of millions. Filters go in
  as an id selector, inside the scan.
- `lance`: a LanceDB table of (row, h0) (extra `mgsv[lance]`), flat scan below `LANCE_ANN_ROWS` rows and an
  IVF-PQ index above; the same files work from object storage. Filters are applied by fetching more neighbours
  until K eligible ones are found.

Built indexes live beside the track index (`faiss-<generation>.index`, `lance/`) and are rebuilt when the track
index changes (its generation).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import numpy as np

from mgsv.atomic_io import atomic_path
from mgsv.errors import OptionError, require_extra
from mgsv.search.options import INDEX_CHOICES
from mgsv.search.track_index import TrackIndex, require_memory

log = logging.getLogger(__name__)

LANCE_ANN_ROWS = 100_000  # below this a Lance flat scan is exact and fast enough


class CandidateIndex(Protocol):
    """Top-K rows of a track index by h(v) . h0 among eligible rows."""

    kind: str

    def search(self, query: np.ndarray, k: int, eligible: np.ndarray | None) -> np.ndarray:
        """Rows (ascending) of the k highest h0 . query among `eligible` rows (all rows when None)."""


def _all_or_none(size: int, k: int, eligible: np.ndarray | None) -> np.ndarray | None:
    """Every eligible row when there are at most k of them (no scan needed), else None."""
    if eligible is None:
        return np.arange(size, dtype=np.int64) if size <= k else None
    if int(eligible.sum()) <= k:
        return np.flatnonzero(eligible).astype(np.int64)
    return None


class ExactCandidates:
    """Brute force over h0 held in RAM as float16: the top K by S0 (computed with float16 inputs, float32 sums).

    The scan reads 2 bytes x d per track per query; float16 halves the memory and the time of float32 (measured
    here: 100k x 256 in ~7 ms vs ~20 ms on one core) and moves scores by ~1e-3 at most, which only matters for
    tracks tied at the K-th place. The exact stage recomputes S0 from float32 h0.
    """

    kind = "exact"

    def __init__(self, index: TrackIndex) -> None:
        import torch

        require_memory(
            f"{index.root}: the exact candidate stage over {len(index):,} tracks",
            {"h0 (float16)": len(index) * index.dim * 2},
            "use `index` faiss with a compressed factory (e.g. `faiss_factory` IVF65536,PQ32) or `index` lance",
        )
        parts = [torch.from_numpy(np.array(s.embedding, dtype=np.float16)) for s in index.segments]
        self.matrix = torch.cat(parts) if parts else torch.zeros(0, index.dim, dtype=torch.float16)

    def search(self, query: np.ndarray, k: int, eligible: np.ndarray | None) -> np.ndarray:
        import torch

        every = _all_or_none(len(self.matrix), k, eligible)
        if every is not None:
            return every
        scores = (self.matrix @ torch.from_numpy(np.asarray(query, dtype=np.float16))).float()
        if eligible is not None:
            scores.masked_fill_(torch.from_numpy(~eligible), float("-inf"))
        rows = torch.topk(scores, k, sorted=False).indices.numpy()
        return np.sort(rows).astype(np.int64)


class FaissCandidates:
    """A FAISS inner-product index over h0 (IVF by default); filters as an id selector inside the scan."""

    kind = "faiss"

    def __init__(self, index: TrackIndex, factory: str | None = None, nprobe: int = 32) -> None:
        faiss = require_extra("faiss", "faiss", "the FAISS candidate stage (index faiss)")
        self.size = len(index)
        self.nprobe = nprobe
        lists = max(1, min(int(4 * math.sqrt(max(self.size, 1))), self.size // 39 or 1))
        self.factory = factory or f"IVF{lists},Flat"
        name = "".join(c if c.isalnum() else "_" for c in self.factory)
        path = index.root / f"faiss-{index.generation}-{name}.index"
        if path.is_file():
            self.index = faiss.read_index(str(path))
        else:
            self.index = self._build(faiss, index)
            with atomic_path(path) as tmp:
                faiss.write_index(self.index, str(tmp))
            for old in index.root.glob("faiss-*.index"):
                if old != path:
                    old.unlink(missing_ok=True)
        self._faiss = faiss

    def _build(self, faiss: Any, index: TrackIndex) -> Any:
        vectors = index.all_embeddings()
        built = faiss.index_factory(index.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        if not built.is_trained:
            rng = np.random.default_rng(0)
            sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), 256 * 1024), replace=False))]
            built.train(sample)
        built.add(vectors)
        log.info("built a FAISS %s index over %d tracks", self.factory, len(vectors))
        return built

    def search(self, query: np.ndarray, k: int, eligible: np.ndarray | None) -> np.ndarray:
        faiss = self._faiss
        every = _all_or_none(self.size, k, eligible)
        if every is not None:
            return every
        selector = None
        bitmap = None if eligible is None else np.packbits(eligible, bitorder="little")  # alive through the search
        if bitmap is not None:
            selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=selector) if hasattr(self.index, "nprobe") else (
            faiss.SearchParameters(sel=selector))
        _, found = self.index.search(np.ascontiguousarray(query[None], dtype=np.float32), k, params=params)
        rows = found[0]
        return np.sort(rows[rows >= 0]).astype(np.int64)


class LanceCandidates:
    """A LanceDB table of (row, h0): flat scan, or IVF-PQ above LANCE_ANN_ROWS rows; filters by over-fetching."""

    kind = "lance"

    def __init__(self, index: TrackIndex, nprobes: int = 32) -> None:
        lancedb = require_extra("lancedb", "lance", "the LanceDB candidate stage (index lance)")
        import pyarrow as pa

        self.size = len(index)
        self.nprobes = nprobes
        database = lancedb.connect(str(index.root / "lance"))
        name = f"h0_{index.generation}"
        existing = database.list_tables().tables  # a handful: one table per generation, older ones dropped
        if name in existing:
            self.table = database.open_table(name)
        else:
            vectors = index.all_embeddings()
            data = pa.table({
                "row": pa.array(np.arange(len(vectors), dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), index.dim),
            })
            self.table = database.create_table(name, data, mode="overwrite")
            if self.size >= LANCE_ANN_ROWS:
                self.table.create_index(metric="dot", num_partitions=int(math.sqrt(self.size)),
                                        num_sub_vectors=max(1, index.dim // 8))
            for old in existing:
                if old != name:
                    database.drop_table(old)

    def search(self, query: np.ndarray, k: int, eligible: np.ndarray | None) -> np.ndarray:
        every = _all_or_none(self.size, k, eligible)
        if every is not None:
            return every
        wanted = k if eligible is None else math.ceil(k * self.size / max(1, int(eligible.sum())))
        while True:
            fetch = min(self.size, max(k, wanted))
            found = (self.table.search(np.asarray(query, dtype=np.float32)).distance_type("dot")
                     .nprobes(self.nprobes).limit(fetch).select(["row"]).to_arrow())  # fmt: skip
            rows = found.column("row").to_numpy()
            if eligible is not None:
                rows = rows[eligible[rows]]
            if len(rows) >= k or fetch >= self.size:
                return np.sort(rows[:k]).astype(np.int64)
            wanted = fetch * 4


def open_candidates(index: TrackIndex, kind: str = "exact", factory: str | None = None) -> CandidateIndex:
    """The candidate stage of a track index, of the given kind (see the module docstring)."""
    if kind == "exact":
        return ExactCandidates(index)
    if kind == "faiss":
        return FaissCandidates(index, factory)
    if kind == "lance":
        return LanceCandidates(index)
    raise OptionError("index", f"must be one of {', '.join(INDEX_CHOICES)}, got {kind!r}")
