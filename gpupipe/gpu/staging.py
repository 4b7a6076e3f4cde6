"""Staging memory for the GPU path: the byte budget, batch splitting, OOM retry and CPU fallback.

* Device buffers that gpupipe allocates itself (the base64 kernel's input and output) come from a
  CuPy ``MemoryPool`` whose limit is ``staging.max_bytes`` (:func:`make_device_pool`), used through
  ``cupy.cuda.using_allocator`` so that other CuPy users in the process are not affected.
* Pinned host buffers (:class:`PinnedBuffers`) are allocated once and reused across batches, up to
  ``staging.pinned_bytes`` in all; a batch needing more gets ordinary pageable memory for that once.
* :class:`StagingBudget` accounts the bytes of the batches in flight (an estimate that also covers
  DALI's and nvImageCodec's own device memory, which does not come from the CuPy pool); its
  :meth:`~StagingBudget.stats` feed ``GpuBackend.info()`` / ``gpupipe info``.
* :class:`StagedRunner` runs a job list through a device function in batches that fit the budget:
  a batch that would exceed it is split; a device out-of-memory error frees cached blocks, halves
  the batch and retries; a single frame that still does not fit (or alone exceeds the budget) is
  encoded on the CPU path (:func:`gpupipe.cpu_backend.run_job`) with a warning. No frame is lost:
  every job gets its URI or its :class:`~gpupipe.errors.FrameError`.

Nothing here imports CuPy at module level; the device is reached only through the callables the
runner is given, so the logic is tested without a GPU by substituting them.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..plan import Job

__all__ = [
    "StagingStats",
    "StagingBudget",
    "PinnedBuffers",
    "StagedRunner",
    "plan_batches",
    "cpu_fallback",
    "make_device_pool",
    "GpuFallbackWarning",
]

log = logging.getLogger("gpupipe.gpu.staging")

Result = Any  # str | FrameError (or a device-resident URI)


class GpuFallbackWarning(RuntimeWarning):
    """A frame that should have run on the GPU was encoded on the CPU path instead."""


@dataclass(frozen=True)
class StagingStats:
    """Staging state: bytes in flight now and at peak, the budget, and what the runner had to do."""

    inflight_bytes: int
    peak_inflight_bytes: int
    max_bytes: int
    pinned_bytes: int
    pinned_limit: int
    batches: int
    splits: int
    oom_retries: int
    cpu_fallbacks: int

    def as_dict(self) -> dict[str, int]:
        """The stats as a plain dict."""
        return dict(self.__dict__)


class StagingBudget:
    """Thread-safe accounting of the staging bytes held by batches in flight, against ``max_bytes``."""

    def __init__(self, max_bytes: int, pinned_limit: int = 0) -> None:
        if max_bytes < 1:
            raise ValueError(f"staging max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.pinned_limit = int(pinned_limit)
        self._lock = threading.Lock()
        self._inflight = 0
        self._peak = 0
        self.batches = 0
        self.splits = 0
        self.oom_retries = 0
        self.cpu_fallbacks = 0
        self.pinned_bytes: Callable[[], int] = lambda: 0

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[int]:
        """Count ``nbytes`` as in flight for the duration of the block."""
        nbytes = max(0, int(nbytes))
        with self._lock:
            self._inflight += nbytes
            self._peak = max(self._peak, self._inflight)
            self.batches += 1
        try:
            yield nbytes
        finally:
            with self._lock:
                self._inflight -= nbytes

    @property
    def inflight_bytes(self) -> int:
        """Bytes held by batches in flight now."""
        with self._lock:
            return self._inflight

    def note(self, *, splits: int = 0, oom_retries: int = 0, cpu_fallbacks: int = 0) -> None:
        """Add to the event counters."""
        with self._lock:
            self.splits += splits
            self.oom_retries += oom_retries
            self.cpu_fallbacks += cpu_fallbacks

    def stats(self) -> StagingStats:
        """A snapshot."""
        with self._lock:
            return StagingStats(
                inflight_bytes=self._inflight,
                peak_inflight_bytes=self._peak,
                max_bytes=self.max_bytes,
                pinned_bytes=int(self.pinned_bytes()),
                pinned_limit=self.pinned_limit,
                batches=self.batches,
                splits=self.splits,
                oom_retries=self.oom_retries,
                cpu_fallbacks=self.cpu_fallbacks,
            )


def plan_batches(
    device_costs: Sequence[int],
    max_bytes: int,
    max_batch: int,
    host_costs: Sequence[int] | None = None,
    host_max_bytes: int | None = None,
) -> list[list[int]]:
    """Split job indices ``0..n-1``, in order, into batches of at most ``max_batch`` jobs whose
    device costs sum to at most ``max_bytes`` (and host costs to at most ``host_max_bytes``).

    A job that alone exceeds a budget gets a batch of its own (the caller decides what to do
    with it: device over budget → CPU fallback; host over budget → unpinned memory).
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be positive, got {max_batch}")
    batches: list[list[int]] = []
    cur: list[int] = []
    dev = host = 0
    for i, c in enumerate(device_costs):
        h = host_costs[i] if host_costs is not None else 0
        fits = (
            len(cur) < max_batch
            and dev + c <= max_bytes
            and (host_max_bytes is None or host + h <= host_max_bytes)
        )
        if cur and not fits:
            batches.append(cur)
            cur, dev, host = [], 0, 0
        cur.append(i)
        dev += c
        host += h
    if cur:
        batches.append(cur)
    return batches


def cpu_fallback(job: Job, why: str) -> Result:
    """Encode ``job`` on the CPU path with a :class:`GpuFallbackWarning` naming the frame and why."""
    from ..cpu_backend import run_job_guarded

    msg = f"{job.frame.label}: encoded on the CPU path instead of the GPU ({why})"
    log.warning(msg)
    warnings.warn(msg, GpuFallbackWarning, stacklevel=3)
    return run_job_guarded(job)


class StagedRunner:
    """Runs jobs through a device function in budget-sized batches; see the module docstring.

    ``is_oom(exc)`` tells device out-of-memory errors from others; ``release()`` is called after
    one (free the pool's cached blocks, DALI's unused memory) before the retry; ``fallback(job,
    why)`` encodes one job elsewhere (default: :func:`cpu_fallback`).
    """

    def __init__(
        self,
        budget: StagingBudget,
        *,
        max_batch: int,
        is_oom: Callable[[BaseException], bool],
        release: Callable[[], None] = lambda: None,
        fallback: Callable[[Job, str], Result] = cpu_fallback,
    ) -> None:
        self.budget = budget
        self.max_batch = max(1, int(max_batch))
        self.is_oom = is_oom
        self.release = release
        self.fallback = fallback

    def run(
        self,
        jobs: Sequence[Job],
        process: Callable[[list[Job]], list[Result]],
        device_cost: Callable[[Job], int],
        host_cost: Callable[[Job], int] | None = None,
    ) -> list[Result]:
        """One result per job, in order. ``process(batch)`` returns one result per job of ``batch``."""
        jobs = list(jobs)
        if not jobs:
            return []
        costs = [int(device_cost(j)) for j in jobs]
        hcosts = [int(host_cost(j)) for j in jobs] if host_cost is not None else None
        limit = self.budget.max_bytes
        batches = plan_batches(
            costs, limit, self.max_batch, hcosts, self.budget.pinned_limit if hcosts is not None and self.budget.pinned_limit > 0 else None
        )
        naive = (len(jobs) + self.max_batch - 1) // self.max_batch
        if len(batches) > naive:
            self.budget.note(splits=len(batches) - naive)
        results: list[Result] = [None] * len(jobs)
        done = [False] * len(jobs)
        queue: deque[list[int]] = deque(batches)
        while queue:
            batch = queue.popleft()
            if len(batch) == 1 and costs[batch[0]] > limit:
                i = batch[0]
                results[i] = self._fallback(jobs[i], f"needs ~{costs[i]} staging bytes, over the budget of {limit}")
                done[i] = True
                continue
            try:
                with self.budget.reserve(sum(costs[i] for i in batch)):
                    out = process([jobs[i] for i in batch])
                if len(out) != len(batch):
                    raise RuntimeError(f"device stage returned {len(out)} results for {len(batch)} jobs")
            except Exception as e:  # noqa: BLE001 - every frame must still get a result
                if self.is_oom(e):
                    self._release()
                    self.budget.note(oom_retries=1)
                    if len(batch) > 1:
                        half = (len(batch) + 1) // 2
                        queue.appendleft(batch[half:])
                        queue.appendleft(batch[:half])
                        log.info("device out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
                        continue
                    i = batch[0]
                    results[i] = self._fallback(jobs[i], f"device out of memory even alone: {_short(e)}")
                    done[i] = True
                    continue
                log.exception("GPU batch of %d failed unexpectedly; encoding it on the CPU path", len(batch))
                for i in batch:
                    results[i] = self._fallback(jobs[i], f"GPU error: {_short(e)}")
                    done[i] = True
                continue
            for i, r in zip(batch, out):
                results[i] = r
                done[i] = True
        assert all(done), "staging lost a frame"  # by construction; guards future edits
        return results

    def _fallback(self, job: Job, why: str) -> Result:
        self.budget.note(cpu_fallbacks=1)
        return self.fallback(job, why)

    def _release(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - best effort
            log.debug("releasing device memory failed", exc_info=True)


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0] if s else ''}"[:200]


class PinnedBuffers:
    """Named host buffers reused across batches, pinned (page-locked) up to ``limit`` bytes in all.

    ``alloc(nbytes)`` returns a ``uint8`` NumPy array over pinned memory (default: CuPy's
    ``cupyx.empty_pinned``). A buffer grows (to the next power of two) when a batch needs more; a
    request that would push the total over ``limit`` gets a one-off pageable array instead.
    """

    def __init__(self, limit: int, alloc: Callable[[int], np.ndarray] | None = None) -> None:
        self.limit = int(limit)
        self._alloc = alloc or _cupy_pinned
        self._bufs: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.unpinned_requests = 0

    @property
    def nbytes(self) -> int:
        """Pinned bytes held now."""
        with self._lock:
            return sum(b.nbytes for b in self._bufs.values())

    def get(self, name: str, nbytes: int) -> np.ndarray:
        """A ``uint8`` array of at least ``nbytes`` (its first ``nbytes`` are what the caller uses)."""
        nbytes = max(1, int(nbytes))
        with self._lock:
            buf = self._bufs.get(name)
            if buf is not None and buf.nbytes >= nbytes:
                return buf[:nbytes]
            others = sum(b.nbytes for k, b in self._bufs.items() if k != name)
            size = 1 << (nbytes - 1).bit_length()
            if others + size > self.limit:
                size = nbytes
            if others + size > self.limit:
                self.unpinned_requests += 1
                log.debug("pinned budget of %d bytes exceeded; %d pageable bytes for %r", self.limit, nbytes, name)
                return np.empty(nbytes, np.uint8)
            self._bufs.pop(name, None)  # free the smaller one first
            buf = self._bufs[name] = self._alloc(size)
            return buf[:nbytes]

    def clear(self) -> None:
        """Drop every buffer."""
        with self._lock:
            self._bufs.clear()


def _cupy_pinned(nbytes: int) -> np.ndarray:
    import cupyx

    return cupyx.empty_pinned((nbytes,), dtype=np.uint8)


def make_device_pool(max_bytes: int) -> Any:
    """A CuPy ``MemoryPool`` limited to ``max_bytes``; use it with ``cupy.cuda.using_allocator(pool.malloc)``."""
    import cupy as cp

    pool = cp.cuda.MemoryPool()
    pool.set_limit(size=int(max_bytes))
    return pool
