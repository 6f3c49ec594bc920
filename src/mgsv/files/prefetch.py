"""Read the next input in a thread while the caller works on the current one.

FFmpeg and libsndfile release the GIL, so decoding one file ahead overlaps the encoder's matrix products.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from mgsv.errors import InputError, MgsvError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Fetched(Generic[T, R]):
    """One input of `prefetched` with its result or the user-facing error it raised."""

    item: T
    result: R | None
    error: MgsvError | None


def prefetched(func: Callable[[T], R], items: Iterable[T], depth: int = 1) -> Iterator[Fetched[T, R]]:
    """Yield `func(item)` for each item in order, computing up to `depth` items ahead in a background thread.

    `MgsvError`s (bad input) and `OSError`s (a file that vanished or cannot be read) are handed back per item so
    the caller can go on; any other exception is a bug and is raised in the caller's thread.
    """
    items = list(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgsv-decode")
    pending: list[tuple[T, Future[R]]] = []
    try:
        position = 0
        while position < len(items) or pending:
            while position < len(items) and len(pending) <= depth:
                pending.append((items[position], pool.submit(func, items[position])))
                position += 1
            item, future = pending.pop(0)
            try:
                fetched = Fetched(item, future.result(), None)
            except MgsvError as exc:
                fetched = Fetched(item, None, exc)
            except OSError as exc:
                fetched = Fetched(item, None, InputError(str(item), f"cannot read: {exc.strerror or exc}"))
            yield fetched
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
