"""The machine's own speed limit, measured in the running process, and the numbers benchmarks print beside a time.

Absolute seconds cannot be compared across machines (a CPU with AMX does bf16 matrix products ~6x faster than one
without) nor across runs on a shared machine (other jobs take cores). What can be compared is how far a time is
above its floor: the useful floating-point work divided by the matrix-product peak of *this* process, measured
right before (and after) the timed work. `Peaks.measure` times square float32 and bfloat16 matrix products; `rate`
turns (seconds, useful FLOPs, peak) into the printed fields:

    seconds   the median time
    gflop     useful work (counted by the benchmark from the shapes; padding and recomputation do not count)
    peak      the matrix-product peak in GFLOP/s of the precision the work ran in
    floor_s   gflop / peak: the time if every useful FLOP ran at the peak
    x_floor   seconds / floor_s: how many times above the floor (1.0 is the limit)

Imported by the benchmark scripts as `_peak` (they run with benchmarks/ first on sys.path).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it (nothing to wait for on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Median GFLOP/s of a [size, size] x [size, size] product in `dtype` on `device` (after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    torch.mm(a, b, out=out)
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


@dataclass
class Peaks:
    """Matrix-product peaks (GFLOP/s) of this process, per precision name ("fp32", "bf16")."""

    fp32: float
    bf16: float

    @classmethod
    def measure(cls, size: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> Peaks:
        """Time both precisions now on `device` (about a second on a 2-core CPU)."""
        return cls(matmul_gflops(torch.float32, size, repeats, device),
                   matmul_gflops(torch.bfloat16, size, repeats, device))

    def best(self, other: Peaks) -> Peaks:
        """The higher of two measurements per precision: load from other jobs only ever lowers a peak."""
        return Peaks(max(self.fp32, other.fp32), max(self.bf16, other.bf16))

    def of(self, precision: str) -> float:
        """The peak of a precision name."""
        return getattr(self, precision)

    def describe(self) -> str:
        return f"matmul peak (2048^3, this process): fp32 {self.fp32:.0f} GFLOP/s, bf16 {self.bf16:.0f} GFLOP/s"

    def to_dict(self) -> dict[str, float]:
        return {f"{k}_gflops": round(v, 1) for k, v in asdict(self).items()}


def rate(seconds: float, flops: float, peak_gflops: float) -> dict[str, float]:
    """The fields printed beside a time (see the module docstring)."""
    floor = flops / (peak_gflops * 1e9)
    return {"seconds": round(seconds, 4), "gflop": round(flops / 1e9, 2), "peak": round(peak_gflops, 1),
            "floor_s": round(floor, 4), "x_floor": round(seconds / floor, 2) if floor > 0 else float("nan")}


def format_rate(fields: dict[str, float], width: int = 7) -> str:
    """'1.234 s (206 GFLOP, 3.1x floor)' for a table cell."""
    return (f"{fields['seconds']:{width}.3f} s ({fields['gflop']:6.1f} GFLOP, "
            f"{fields['x_floor']:5.1f}x floor)")


def load_average() -> str:
    """The 1-minute load average (other jobs on the machine), as text."""
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            return handle.read().split()[0]
    except OSError:
        return "unknown"
