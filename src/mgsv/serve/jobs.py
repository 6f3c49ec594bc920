"""A bounded work queue: blocking work runs on a few threads, off the event loop, and a burst gets 503s.

A request first reserves a place (`queue.reserve()`), before it reads its upload, so that the number of uploads
on disk and jobs in memory is bounded by `workers + waiting`; when every place is taken, `QueueFull` carries a
Retry-After estimate and the request is answered 503 at once. The place is released when both the request's
`with` block and its job have ended: a request cancelled while its job runs cannot make room for another job
beside it, and files the job reads are removed only after it.

    with queue.reserve() as ticket:
        ticket.on_done(scratch.remove)           # runs once the block is left and no job can still use the files
        result = await ticket.run(ground, path)  # in a worker thread
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from typing_extensions import Self

log = logging.getLogger("mgsv.serve")

T = TypeVar("T")
MAX_RETRY_AFTER_S = 300


class QueueFull(Exception):
    """Every place in the queue is taken; try again after `retry_after` seconds."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"the {name} queue is full")
        self.name = name
        self.retry_after = retry_after


class JobQueue:
    """`workers` threads and at most `workers + waiting` reserved places (see the module docstring)."""

    def __init__(self, name: str, workers: int, waiting: int) -> None:
        if workers < 1 or waiting < 0:
            raise ValueError("a queue needs at least one worker and a waiting count >= 0")
        self.name = name
        self.workers = workers
        self.capacity = workers + waiting
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"mgsv-{name}")
        self._lock = threading.Lock()
        self._reserved = 0
        self._running = 0
        self._seconds: deque[float] = deque(maxlen=32)  # recent job durations, for Retry-After

    def reserve(self) -> Ticket:
        """A place in the queue, or QueueFull."""
        with self._lock:
            if self._reserved >= self.capacity:
                raise QueueFull(self.name, self._retry_after())
            self._reserved += 1
        return Ticket(self)

    def stats(self) -> dict[str, Any]:
        """Places taken, jobs running, capacity and the mean recent job time (for readiness and logs)."""
        with self._lock:
            mean = sum(self._seconds) / len(self._seconds) if self._seconds else None
            return {
                "reserved": self._reserved,
                "running": self._running,
                "capacity": self.capacity,
                "workers": self.workers,
                "mean_job_seconds": None if mean is None else round(mean, 3),
            }

    def shutdown(self) -> None:
        """Stop accepting work and drop jobs that have not started."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _retry_after(self) -> int:
        # The time for the work ahead of a new request to drain, from recent job times (1 s before any job ran).
        mean = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
        rounds = math.ceil(self._reserved / self.workers)
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(mean * rounds)))

    def _release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def _timed(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self._lock:
            self._running += 1
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1
                self._seconds.append(time.perf_counter() - started)


class Ticket:
    """A reserved place: run one job with it; the place is freed once the `with` block and the job have ended."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue
        self._lock = threading.Lock()
        self._future: Future | None = None
        self._exited = False
        self._finished = False  # the place is released and cleanups ran
        self._cleanups: list[Callable[[], None]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._exited = True
        self._maybe_finish()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on a worker thread and return its result (or raise its exception)."""
        with self._lock:
            if self._future is not None or self._exited:
                raise RuntimeError("a ticket runs one job, inside its with block")
            future = self._queue._executor.submit(self._queue._timed, fn, args, kwargs)
            self._future = future
        future.add_done_callback(lambda _: self._maybe_finish())
        # Cancelling the awaiting task cancels a job that has not started; a running job runs to its end.
        return await asyncio.wrap_future(future)

    def on_done(self, cleanup: Callable[[], None]) -> None:
        """Call `cleanup` when the ticket finishes (now, if it already has)."""
        with self._lock:
            if not self._finished:
                self._cleanups.append(cleanup)
                return
        cleanup()

    def _maybe_finish(self) -> None:
        with self._lock:
            job_running = self._future is not None and not self._future.done()
            if self._finished or not self._exited or job_running:
                return
            self._finished = True
            cleanups, self._cleanups = self._cleanups, []
        self._queue._release()
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception:  # a failed cleanup must not keep the place or hide the job's own result
                log.exception("cleanup after a %s job failed", self._queue.name)
