"""Load test of `mgsv serve` on loopback: concurrent grounding requests against a real server process.

Builds tiny encoders, a tiny MaDe checkpoint and a library of random-token tracks (tests/grounding_factory.py),
starts `mgsv serve --port 0` as a subprocess, then sends rounds of N simultaneous POST /v1/ground requests (each
uploads the same generated video). Prints per-round latency percentiles, status counts and the server process's
memory (VmRSS, and VmHWM = its peak) before and after, and how fast /v1/health answers meanwhile (the event loop
must stay free while model jobs run). With --overload it restarts the server with a small queue
and shows the burst being answered 503 + Retry-After instead of being queued without bound.

    nice .venv/bin/python benchmarks/bench_serve.py                          # 2 rounds of 32 requests
    nice .venv/bin/python benchmarks/bench_serve.py --requests 64 --rounds 3 --tracks 2000 --overload

The model work is tiny by design (the point is the HTTP path, queue and memory, not MaDe's speed: see
bench_made.py / bench_ground.py for that); numbers are wall-clock on whatever else the machine is doing.

No useful FLOPs are counted: the models are tiny on purpose and the time is the HTTP path, video decoding, the
queue and process bookkeeping, so every row says `gflop: n/a (I/O bound)` with no floor; the matrix-product peaks
of this process are printed (and put in `--json`) so that runs on different machines can be told apart.

    nice .venv/bin/python benchmarks/bench_serve.py --requests 4 --rounds 1 --tracks 50 --json   # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from _peak import Peaks, load_average
from _report import IO_BOUND, emit, json_mode, no_floor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test factories build the tiny models, library and video
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from grounding_factory import make_synthetic_library, make_tiny_setup
from media_factory import write_test_video, write_tone

TOKEN = "bench-serve-token-0123456789"
ROWS: list[dict] = []  # every reported round, for --json
URL_LINE = re.compile(r"mgsv serve: (http://127\.0\.0\.1:\d+/)")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process in MB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


@contextmanager
def server(library: Path, setup, work: Path, queue_size: int) -> Iterator[tuple[str, int]]:
    """`mgsv serve` in a subprocess; yields (base URL, pid) once it is ready."""
    env = {**os.environ, "MGSV_API_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mgsv", "serve", "--library", str(library), "--checkpoint", str(setup.checkpoint),
               "--clip", str(setup.clip_dir), "--dtype", "fp32", "--port", "0", "--work-dir", str(work),
               "--queue-size", str(queue_size)]  # fmt: skip
    log_path = work / f"server-{queue_size}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log_path.read_text()}")
            match = URL_LINE.search(log_path.read_text(errors="replace"))
            url = match.group(1) if match else None
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while httpx.get(f"{url}v1/ready", headers=headers).json()["status"] == "loading":
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(60)


async def one_request(client: httpx.AsyncClient, video: bytes) -> tuple[int, float, str | None]:
    started = time.perf_counter()
    response = await client.post("/v1/ground", files={"video": ("q.mp4", video, "video/mp4")}, data={"top": "5"})
    return response.status_code, time.perf_counter() - started, response.headers.get("Retry-After")


async def poll_health(url: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """GET /v1/health every 100 ms until `stop`: how responsive the event loop stays while jobs run."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            await client.get("/v1/health")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)


async def burst(url: str, video: bytes, count: int, health: list[float]) -> list[tuple[int, float, str | None]]:
    """`count` grounding requests sent at the same moment, each on its own connection, while health is polled."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_health(url, stop, health))
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:
        results = await asyncio.gather(*(one_request(client, video) for _ in range(count)))
    stop.set()
    await poller
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def report(
    name: str,
    results: list[tuple[int, float, str | None]],
    memory: dict[str, float],
    wall: float,
    health: list[float] | None = None,
) -> dict:
    latencies = [seconds for status, seconds, _ in results if status == 200]
    statuses = Counter(status for status, _, _ in results)
    errors = sum(count for status, count in statuses.items() if status != 200)
    line = f"{name:<10} {len(results):>4} req  {wall:6.2f} s wall  "
    if latencies:
        line += (f"p50 {statistics.median(latencies):6.2f} s  p95 {percentile(latencies, 95):6.2f} s  "
                 f"max {max(latencies):6.2f} s  ")  # fmt: skip
    line += f"errors {errors}  statuses {dict(sorted(statuses.items()))}  "
    line += f"RSS {memory['VmRSS']:.0f} MB (peak {memory['VmHWM']:.0f} MB)"
    print(line, flush=True)
    if health:
        print(f"{'':<10} /v1/health meanwhile: {len(health)} polls, p50 {statistics.median(health) * 1000:.0f} ms, "
              f"p95 {percentile(health, 95) * 1000:.0f} ms, max {max(health) * 1000:.0f} ms", flush=True)  # fmt: skip
    retry = sorted({r for status, _, r in results if status == 503 and r})
    if retry:
        print(f"{'':<10} 503 answers carried Retry-After: {', '.join(retry)} s", flush=True)
    ROWS.append(no_floor(wall, "none: HTTP, decoding and queueing with tiny models") | {
        "name": name, "requests": len(results), "statuses": dict(statuses),
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": percentile(latencies, 95) if latencies else None, "memory_mb": memory,
        "health_p50_s": statistics.median(health) if health else None, "retry_after": retry})
    return ROWS[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32, help="simultaneous requests per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tracks", type=int, default=500, help="tracks in the (random-token) library")
    parser.add_argument("--video-seconds", type=float, default=10.0)
    parser.add_argument("--overload", action="store_true", help="also burst a server whose queue holds 4")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args()
    with json_mode(args.json):
        peaks = Peaks.measure()
        print(f"{peaks.describe()}; load {load_average()}; gflop: {IO_BOUND} (see the module docstring)")
        leftovers = run(args)
        peaks = peaks.best(Peaks.measure())
    if args.json:
        emit({"requests": args.requests, "rounds": args.rounds, "tracks": args.tracks, "peaks": peaks.to_dict(),
              "load": load_average(), "rows": ROWS, "temporary_folders_left": leftovers})


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
        root = Path(folder)
        setup = make_tiny_setup(root / "models")
        audio = write_tone(root / "tone.ogg", seconds=240)
        durations = [30.0 + (i * 37) % 200 for i in range(args.tracks)]
        library = make_synthetic_library(root / "library", setup.music_spec, durations, audio=audio)
        video_path = write_test_video(root / "query.mp4", seconds=args.video_seconds, fps=25, size=(640, 360))
        video = video_path.read_bytes()
        print(f"library: {args.tracks} tracks; video: {args.video_seconds:g} s 640x360 25 fps, "
              f"{len(video) / 1024:.0f} KB; {os.cpu_count()} CPUs", flush=True)  # fmt: skip

        work = root / "work"
        work.mkdir()
        with server(library.root, setup, work, queue_size=args.requests) as (url, pid):
            print(f"server pid {pid}, queue {args.requests} waiting + 1 running", flush=True)
            report("ready", [], memory_mb(pid), 0.0)
            started = time.perf_counter()
            warm = asyncio.run(burst(url, video, 1, []))
            report("warm-up", warm, memory_mb(pid), time.perf_counter() - started)
            for number in range(1, args.rounds + 1):
                started = time.perf_counter()
                health: list[float] = []
                results = asyncio.run(burst(url, video, args.requests, health))
                report(f"round {number}", results, memory_mb(pid), time.perf_counter() - started, health)
            kept = httpx.get(f"{url}v1/ready", headers={"Authorization": f"Bearer {TOKEN}"}).json()["kept_uploads"]
            print(f"kept uploads: {kept['count']} ({kept['bytes'] / 1024 / 1024:.1f} MB, bounded by the server)")

        if args.overload:
            with server(library.root, setup, work, queue_size=4) as (url, pid):
                started = time.perf_counter()
                results = asyncio.run(burst(url, video, args.requests, []))
                report("overload", results, memory_mb(pid), time.perf_counter() - started)
        for log in sorted(work.glob("server-*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text:  # a 500: show what the server logged
                print(f"--- {log.name} ---\n{text[-6000:]}")
        leftovers = list(work.glob("mgsv-serve-*"))
        print(f"temporary folders left after shutdown: {len(leftovers)}")
        return len(leftovers)


if __name__ == "__main__":
    main()
