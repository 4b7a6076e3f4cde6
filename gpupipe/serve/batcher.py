"""The dynamic batcher: requests from every client coalesced into ``get_many`` batches.

Like Triton's dynamic batcher: requests for the same pipeline and output settings (a *group*)
wait together until ``batch_size`` of them are there or the oldest has waited
``max_delay`` seconds, then run as one batch on a worker thread. Each pipeline (*lane*) runs at
most ``slots`` batches at once; while its slots are busy its groups keep filling, so batches
grow with the load. At most ``max_queue`` requests wait (those not yet handed to a batch); one
more is refused with :class:`~gpupipe.serve.errors.QueueFull` at once. A request whose waiter
is cancelled (its time limit passed) leaves the queue; one already in a batch finishes there
and its result is dropped. The event loop never blocks: batches run in ``executor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Any

from .errors import QueueFull

__all__ = ["Batcher"]

RunBatch = Callable[[list[Any]], Sequence[Any]]


class _Item:
    __slots__ = ("future", "source", "t", "taken")

    def __init__(self, source: Any, future: asyncio.Future, t: float) -> None:
        self.source = source
        self.future = future
        self.t = t
        self.taken = False


class _Group:
    __slots__ = ("batch_size", "items", "lane", "run")

    def __init__(self, lane: int, run: RunBatch, batch_size: int) -> None:
        self.lane = lane
        self.run = run
        self.batch_size = batch_size
        self.items: deque[_Item] = deque()


class Batcher:
    """Coalesces submitted sources into batches (see the module docstring).

    ``on_batch(lane, size, seconds)`` is called on the event loop after each batch.
    """

    def __init__(
        self,
        executor: Executor,
        *,
        max_delay: float,
        max_queue: int,
        slots: int = 2,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_queue < 1 or slots < 1 or max_delay < 0:
            raise ValueError("max_queue and slots must be >= 1 and max_delay >= 0")
        self.executor = executor
        self.max_delay = float(max_delay)
        self.max_queue = int(max_queue)
        self.slots = int(slots)
        self.on_batch = on_batch
        self.depth = 0
        self.batches = 0
        self._groups: dict[Hashable, _Group] = {}
        self._busy: dict[int, int] = {}
        self._running: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="gpupipe-batcher")

    async def close(self) -> None:
        """Stop dispatching; batches under way finish, requests still queued are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for g in self._groups.values():
            for it in g.items:
                if not it.future.done():
                    it.future.cancel()
        self._groups.clear()
        self.depth = 0

    # ------------------------------------------------------------------ requests

    async def submit(self, lane: int, key: Hashable, run: RunBatch, batch_size: int, source: Any) -> Any:
        """The result ``run`` gives for ``source`` (a frame source) once its batch has run (a value or a returned exception).

        ``key`` names the group (requests that may share one ``run`` call); raises
        :class:`QueueFull` when ``max_queue`` requests already wait, and whatever ``run`` raised
        for the whole batch.
        """
        if self._wake is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.depth >= self.max_queue:
            raise QueueFull(f"{self.depth} requests are waiting for a batch (serve.max_queue = {self.max_queue}); retry shortly")
        loop = asyncio.get_running_loop()
        item = _Item(source, loop.create_future(), time.monotonic())
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(lane, run, max(1, int(batch_size)))
        g.items.append(item)
        self.depth += 1
        self._wake.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            if not item.taken:
                item.taken = True
                try:
                    g.items.remove(item)
                except ValueError:
                    pass
                else:
                    self.depth -= 1
            raise

    # ------------------------------------------------------------------ dispatching

    def _take(self, g: _Group) -> list[_Item]:
        batch: list[_Item] = []
        while g.items and len(batch) < g.batch_size:
            it = g.items.popleft()
            it.taken = True
            self.depth -= 1
            if not it.future.done():
                batch.append(it)
        return batch

    def _ready(self, now: float) -> tuple[_Group | None, float | None]:
        """The group to run next (oldest head first, lane slot free), and the earliest deadline of the others."""
        best: _Group | None = None
        deadline: float | None = None
        for key in [k for k, g in self._groups.items() if not g.items]:
            del self._groups[key]
        for g in self._groups.values():
            head = g.items[0].t
            if self._busy.get(g.lane, 0) >= self.slots:
                continue
            due = head + self.max_delay
            if len(g.items) >= g.batch_size or due <= now:
                if best is None or head < best.items[0].t:
                    best = g
            elif deadline is None or due < deadline:
                deadline = due
        return best, deadline

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            while True:
                g, deadline = self._ready(time.monotonic())
                if g is None:
                    break
                batch = self._take(g)
                if not batch:
                    continue
                self._busy[g.lane] = self._busy.get(g.lane, 0) + 1
                task = asyncio.get_running_loop().create_task(self._run(g, batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _run(self, g: _Group, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, g.run, [it.source for it in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} frames returned {len(results)} results")
            for it, r in zip(batch, results):
                if not it.future.done():
                    it.future.set_result(r)
        except asyncio.CancelledError:
            for it in batch:
                if not it.future.done():
                    it.future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - the batch's failure reaches each of its requests
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
        finally:
            self._busy[g.lane] -= 1
            self.batches += 1
            if self._wake is not None:
                self._wake.set()
            if self.on_batch is not None:
                self.on_batch(g.lane, len(batch), time.perf_counter() - t0)
