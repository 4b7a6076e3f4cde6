"""Building a batch's URI ``str`` s on several host threads.

:func:`gpupipe.uri.build_uri` (pybase64's libbase64 writing into a preallocated ``str`` through
``ctypes``) and :func:`gpupipe.uri.assemble_uri` (one ``memmove``) release the GIL while they
write, and the writing (with its page faults) is nearly all of their cost, so one batch's strings
can be built on several threads at once. :class:`HostStrings` splits a batch into contiguous
runs, one per thread, and returns the results in order. A failure is the failing item's own:
``on_error(index, exc)`` gives that item its result (e.g. a :class:`~gpupipe.errors.FrameError`)
and the other items are unaffected.

Small batches (fewer than ``min_bytes`` in all, or one item) are built on the calling thread:
handing them to a pool costs more than it saves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .stage_clock import StageClock

__all__ = ["HostStrings"]

T = TypeVar("T")

STAGE = "host_string"
"""The :class:`~gpupipe.gpu.stage_clock.StageClock` stage name of the work done here."""


class HostStrings:
    """Runs a per-item function over a batch on up to ``threads`` threads, results in order.

    ``clock``: where each thread's share is recorded as stage ``host_string`` (wall and thread CPU).
    """

    def __init__(self, threads: int, *, min_bytes: int = 1 << 20, clock: StageClock | None = None) -> None:
        self.threads = max(1, int(threads))
        self.min_bytes = int(min_bytes)
        self.clock = clock or StageClock()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(
        self,
        fn: Callable[[T], Any],
        items: Sequence[T],
        sizes: Sequence[int],
        on_error: Callable[[int, Exception], Any],
    ) -> list[Any]:
        """``fn(item)`` for every item, in order; ``sizes`` (bytes each item writes) decides the
        split; an item whose ``fn`` raises gets ``on_error(index, exc)`` instead."""
        n = len(items)
        if n == 0:
            return []
        out: list[Any] = [None] * n

        def run(lo: int, hi: int) -> None:
            with self.clock.stage(STAGE):
                for i in range(lo, hi):
                    try:
                        out[i] = fn(items[i])
                    except Exception as e:  # noqa: BLE001 - the item's own result
                        out[i] = on_error(i, e)

        total = sum(sizes)
        parts = min(self.threads, n)
        if parts == 1 or total < self.min_bytes:
            run(0, n)
            return out
        bounds = _split(sizes, parts)
        futures = [self._executor().submit(run, lo, hi) for lo, hi in bounds[1:]]
        run(*bounds[0])  # the calling thread takes the first run
        for f in futures:
            f.result()
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1 or 1, thread_name_prefix="gpupipe-host-string")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _split(sizes: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, non-empty index ranges over ``sizes`` with about equal byte sums."""
    n = len(sizes)
    total = max(1, sum(sizes))
    bounds: list[tuple[int, int]] = []
    lo, acc = 0, 0
    for i, s in enumerate(sizes):
        acc += s
        left_items, left_parts = n - i - 1, parts - len(bounds) - 1
        if left_parts > 0 and (acc * parts >= total * (len(bounds) + 1) or left_items == left_parts):
            bounds.append((lo, i + 1))
            lo = i + 1
    bounds.append((lo, n))
    return [b for b in bounds if b[0] < b[1]]
