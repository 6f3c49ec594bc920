"""What every benchmark shares besides `_peak`: the `--json` plumbing and the floors of work that is not arithmetic.

`--json`: the tables a benchmark prints go to stderr (`json_mode`), and one JSON object goes to stdout (`emit`),
holding the matrix-product peaks of the process beside the results.

Floors of I/O-bound work (decoding, file reads, HTTP): useful FLOPs mean nothing there, so such a row says
`"gflop": "n/a (I/O bound)"` and, where a floor exists, states it in bytes: the bytes the work must move divided by
the bandwidth of this process measured in the same run (`memory_gbs`: a large in-memory copy; `read_gbs`: a file
read back cold from the disk), giving the same `floor_s` / `x_floor` fields as `_peak.rate`.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

IO_BOUND = "n/a (I/O bound)"


@contextlib.contextmanager
def json_mode(enabled: bool) -> Iterator[None]:
    """With `--json`, what the benchmark prints goes to stderr, so that stdout holds only the JSON object."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def emit(result: dict[str, Any]) -> None:
    """Print the JSON object on the real stdout (also inside `json_mode`)."""
    print(json.dumps(result, indent=2, default=str), file=sys.__stdout__, flush=True)


def memory_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of a large array copy in this process (bytes read + bytes written per second), median of `repeats`."""
    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - start)
    return 2 * source.nbytes / statistics.median(times) / 1e9


def read_gbs(folder: Path, megabytes: int = 256) -> float:
    """GB/s of reading a new file of `megabytes` back from the disk of `folder` after evicting it from the page cache."""
    path = folder / ".bandwidth-probe"
    block = os.urandom(2**20)
    with path.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        with path.open("rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            start = time.perf_counter()
            while handle.read(8 * 2**20):
                pass
            seconds = time.perf_counter() - start
    finally:
        path.unlink()
    return megabytes * 2**20 / seconds / 1e9


def io_rate(seconds: float, nbytes: float, bandwidth_gbs: float, what: str) -> dict[str, Any]:
    """The fields of an I/O-bound time: its bytes, the bandwidth it is held to, the floor and x floor."""
    floor = nbytes / (bandwidth_gbs * 1e9)
    return {"seconds": round(seconds, 4), "gflop": IO_BOUND, "bytes": int(nbytes), "bandwidth": what,
            "bandwidth_gbs": round(bandwidth_gbs, 2), "floor_s": round(floor, 5),
            "x_floor": round(seconds / floor, 2) if floor > 0 else float("nan")}


def no_floor(seconds: float, why: str) -> dict[str, Any]:
    """A time with no honest floor: the reason instead of invented numbers."""
    return {"seconds": round(seconds, 4), "gflop": IO_BOUND, "floor": why}
