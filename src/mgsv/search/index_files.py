"""Rows of `.npy` arrays on disk, read and written by position: what a track index's files need at any size.

Memory maps would be simpler, but every page a map touches stays in the process's RSS until it is unmapped:
tens of GB for a large index being built or searched. Positioned reads (`os.preadv`) into reused buffers and
positioned writes (`os.pwrite`) into preallocated files keep memory bounded, and `posix_fadvise(WILLNEED)` lets a
cold disk fetch every row a query will read at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mgsv.errors import InputError


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
