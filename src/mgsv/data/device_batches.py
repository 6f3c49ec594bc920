"""Training batches on the device they are used on, the next ones gathered while the device works on this one.

On CUDA, host memory is pinned (page-locked) so that the copy to the GPU is asynchronous (`non_blocking`, as
`torch.utils.data.DataLoader(pin_memory=True)` does); the gathering from the feature store and the pinning run in one
background thread a couple of batches ahead, so the GPU does not wait for them. A thread and not DataLoader workers:
batches are gathered from memory-mapped shards by numpy and torch copies that release the GIL, and worker processes
would each map the store again. On the CPU batches pass through as they are made.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mgsv.data.dataset import Batch
from mgsv.devices import is_cuda

T = TypeVar("T")
AHEAD = 2  # batches gathered ahead of the one in use: enough to hide the gathering behind one step


def device_batches(batches: Iterable[Batch], device: str) -> Iterator[Batch]:
    """`batches` on `device`: on CUDA gathered and pinned ahead in a thread, then copied asynchronously."""
    if not is_cuda(device):
        for batch in batches:
            yield batch.to(device)
        return
    for batch in prefetched(batches, Batch.pin_memory, AHEAD):
        yield batch.to(device)  # non_blocking from pinned memory: the copy is queued, not waited for


def prefetched(items: Iterable[T], prepare: Callable[[T], T], ahead: int) -> Iterator[T]:
    """`prepare(item)` for every item in order, computed in one background thread up to `ahead` items in advance.

    An exception of the iterable or of `prepare` is raised where its item would have been yielded; closing the
    generator early waits for the thread's current item and leaves the rest unread.
    """
    iterator = iter(items)
    done = object()

    def next_prepared() -> object:
        item = next(iterator, done)
        return item if item is done else prepare(item)  # type: ignore[arg-type]

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgsv-batches")
    try:
        pending = deque(pool.submit(next_prepared) for _ in range(max(ahead, 1)))
        while True:
            item = pending.popleft().result()
            if item is done:
                return
            pending.append(pool.submit(next_prepared))
            yield item  # type: ignore[misc]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
