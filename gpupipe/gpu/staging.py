"""Staging memory for the GPU path: the byte budget, batch splitting, OOM retry and CPU fallback.

* Device buffers that gpupipe allocates itself (the base64 kernel's input and output) come from a
  CuPy ``MemoryPool`` whose limit is ``staging.max_bytes`` (:func:`make_device_pool`), used through
  ``cupy.cuda.using_allocator`` so that other CuPy users in the process are not affected.
* Pinned host buffers (:class:`PinnedBuffers`) are allocated once and reused across batches; the
  memory they hold never exceeds ``staging.pinned_bytes`` (a buffer that grows is freed before its
  replacement is allocated); a batch needing more gets ordinary pageable memory for that once.
* :class:`StagingBudget` accounts the bytes of the batches in flight (an estimate that also covers
  DALI's and nvImageCodec's own device memory, which does not come from the CuPy pool); its
  :meth:`~StagingBudget.stats` feed ``GpuBackend.info()`` / ``gpupipe info``.
* :class:`StagedRunner` runs a job list through a device function in batches that fit the budget:
  a batch that would exceed it is split; a device out-of-memory error frees cached blocks, halves
  the batch and retries; a single frame that still does not fit (or alone exceeds the budget) is
  encoded on the CPU path (:func:`gpupipe.cpu.run_job`) with a warning. A sticky CUDA
  error ends the run with :class:`~gpupipe.errors.DeviceLost`, carrying what was finished.
  Two-phase batches overlap one batch's device work with the previous batch's host work. No frame
  is lost: every job gets its URI or its :class:`~gpupipe.errors.FrameError`.

Nothing here imports CuPy at module level; the device is reached only through the callables the
runner is given, so the logic is tested without a GPU by substituting them.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..errors import DeviceLost, GpuFallbackWarning
from ..plan import Job
from .stage_clock import StageClock

__all__ = [
    "GpuFallbackWarning",
    "PinnedBuffers",
    "StagedRunner",
    "StagingBudget",
    "StagingStats",
    "cpu_fallback",
    "make_device_pool",
    "plan_batches",
]

log = logging.getLogger("gpupipe.gpu.staging")

Result = Any  # str | FrameError (or a device-resident URI)


@dataclass(frozen=True)
class StagingStats:
    """Staging state: bytes in flight now and at peak, the budget, what is held, and what the runner had to do.

    ``device_bytes``: device memory the staging pool holds now; ``pinned_bytes`` /
    ``pinned_peak_bytes``: pinned host memory held now and at most (never above ``pinned_limit``);
    ``unpinned_requests``: batches that had to use pageable memory because pinned did not fit.
    """

    inflight_bytes: int
    peak_inflight_bytes: int
    max_bytes: int
    pinned_bytes: int
    pinned_limit: int
    batches: int
    splits: int
    oom_retries: int
    cpu_fallbacks: int
    device_bytes: int = 0
    pinned_peak_bytes: int = 0
    unpinned_requests: int = 0

    def as_dict(self) -> dict[str, int]:
        """The stats as a plain dict."""
        return dict(self.__dict__)


class StagingBudget:
    """Thread-safe accounting of the staging bytes held by batches in flight, against ``max_bytes``.

    ``gauges`` (settable): callables reporting ``device_bytes``, ``pinned_bytes``,
    ``pinned_peak_bytes`` and ``unpinned_requests`` for :meth:`stats`.
    """

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
        self.gauges: dict[str, Callable[[], int]] = {}

    def acquire(self, nbytes: int) -> int:
        """Count ``nbytes`` as in flight (until :meth:`release`); returns the count."""
        nbytes = max(0, int(nbytes))
        with self._lock:
            self._inflight += nbytes
            self._peak = max(self._peak, self._inflight)
            self.batches += 1
        return nbytes

    def release(self, nbytes: int) -> None:
        """No longer count ``nbytes`` (from :meth:`acquire`) as in flight."""
        with self._lock:
            self._inflight -= int(nbytes)

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[int]:
        """Count ``nbytes`` as in flight for the duration of the block."""
        n = self.acquire(nbytes)
        try:
            yield n
        finally:
            self.release(n)

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
        g = {k: int(f()) for k, f in self.gauges.items()}
        pinned = g.pop("pinned_bytes", None)
        with self._lock:
            return StagingStats(
                inflight_bytes=self._inflight,
                peak_inflight_bytes=self._peak,
                max_bytes=self.max_bytes,
                pinned_bytes=int(self.pinned_bytes()) if pinned is None else pinned,
                pinned_limit=self.pinned_limit,
                batches=self.batches,
                splits=self.splits,
                oom_retries=self.oom_retries,
                cpu_fallbacks=self.cpu_fallbacks,
                **g,
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
        fits = len(cur) < max_batch and dev + c <= max_bytes and (host_max_bytes is None or host + h <= host_max_bytes)
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
    from ..cpu import run_job_guarded

    msg = f"{job.frame.label}: encoded on the CPU path instead of the GPU ({why})"
    warnings.warn(msg, GpuFallbackWarning, stacklevel=3)
    return run_job_guarded(job)


class StagedRunner:
    """Runs jobs through a device function in budget-sized batches; see the module docstring.

    ``is_oom(exc)`` tells device out-of-memory errors from others; ``release()`` is called after
    one (free the pool's cached blocks, DALI's unused memory) before the retry; ``fallback(job,
    why)`` encodes one job elsewhere (default: :func:`cpu_fallback`); ``is_fatal(exc)`` tells a
    sticky CUDA error, after which :meth:`run` raises :class:`~gpupipe.errors.DeviceLost`
    carrying what it finished. ``clock`` records each phase call (wall and thread CPU seconds):
    stages ``process``, ``finish`` and ``host``.

    Phased batches (``finish`` given): ``process(batch, slot)`` does the first device part on the
    calling thread and returns a handle; ``finish(handle)`` (the rest of the device part) returns
    the results, or, when ``host`` is given, a second handle that ``host(handle2)`` turns into the
    results on the host alone. The slot (its buffers, DALI's outputs) and the batch's staging
    bytes are held until ``finish`` returns; ``host`` needs neither. With ``overlap``, ``finish``
    and ``host`` run on two helper threads, each in batch order, while the next batches'
    ``process`` runs on the other of two slots (double buffering): batch k+1's decode runs while
    batch k encodes and batch k-1's strings are built. A slot is reused only after the ``finish``
    of the batch that last used it. Batches are then planned for half the device and pinned
    budgets; one that cannot share the budget with the batch still finishing waits for it.
    At most three batches are in flight (one per phase).
    """

    def __init__(
        self,
        budget: StagingBudget,
        *,
        max_batch: int,
        is_oom: Callable[[BaseException], bool],
        release: Callable[[], None] = lambda: None,
        fallback: Callable[[Job, str], Result] = cpu_fallback,
        is_fatal: Callable[[BaseException], bool] = lambda e: False,
        clock: StageClock | None = None,
    ) -> None:
        self.budget = budget
        self.max_batch = max(1, int(max_batch))
        self.is_oom = is_oom
        self.release = release
        self.fallback = fallback
        self.is_fatal = is_fatal
        self.clock = clock or StageClock()
        """Wall and thread-CPU seconds of every phase call (stages ``process``, ``finish``, ``host``)."""
        self._finisher: ThreadPoolExecutor | None = None
        self._hoster: ThreadPoolExecutor | None = None

    def run(
        self,
        jobs: Sequence[Job],
        process: Callable[..., Any],
        device_cost: Callable[[Job], int],
        host_cost: Callable[[Job], int] | None = None,
        *,
        finish: Callable[[Any], Any] | None = None,
        host: Callable[[Any], list[Result]] | None = None,
        overlap: bool = False,
    ) -> list[Result]:
        """One result per job, in order.

        One-phase: ``process(batch)`` returns one result per job of ``batch``. Phased: see the
        class docstring.
        """
        jobs = list(jobs)
        if not jobs:
            return []
        if host is not None and finish is None:
            raise ValueError("a host phase needs a finish phase")
        overlap = overlap and finish is not None
        costs = [int(device_cost(j)) for j in jobs]
        limit = self.budget.max_bytes
        st = _RunState(jobs, [None] * len(jobs), [False] * len(jobs), deque(self._plan(jobs, costs, host_cost, overlap)))
        pending: deque[_InFlight] = deque()
        slot = 0
        try:
            while st.queue or pending:
                if not st.queue:
                    self._collect(st, pending.popleft())
                    continue
                batch = st.queue.popleft()
                if self._alone_over_budget(st, batch, costs):
                    continue
                cost = sum(costs[i] for i in batch)
                self._make_room(st, pending, cost, limit)
                reserved = self.budget.acquire(cost)
                part = [jobs[i] for i in batch]
                try:
                    with self.clock.stage("process"):
                        handle = process(part, slot) if finish is not None else process(part)
                except Exception as e:  # noqa: BLE001 - every frame must still get a result
                    self.budget.release(reserved)
                    while pending:  # drain before releasing memory or retrying
                        self._collect(st, pending.popleft())
                    self._failed(st, batch, e)
                    continue
                if not overlap:
                    self._finish_now(st, batch, finish, host, handle, reserved)
                    handle = None
                    continue
                pending.append(self._submit(batch, cast("Callable[[Any], Any]", finish), host, handle, reserved))
                handle = None
                slot ^= 1
        except BaseException:
            for p in pending:  # never leave a phase running on buffers about to be reused
                wait([p.final])
                p.release_slot(self.budget)
            raise
        assert all(st.done), "staging lost a frame"  # by construction; guards future edits
        return st.results

    # ------------------------------------------------------------------ helpers

    def _make_room(self, st: _RunState, pending: deque[_InFlight], cost: int, limit: int) -> None:
        """Before the next ``process``: at most two batches stay in flight, the next slot is free
        (the ``finish`` of the batch two back has returned), and the new batch fits the budget
        beside the batches still holding device memory (else wait for them, oldest first)."""
        while len(pending) > 2 or (pending and pending[0].final.done()):
            self._collect(st, pending.popleft())
        if len(pending) == 2:
            pending[0].wait_slot(self.budget)
        for p in pending:
            if self.budget.inflight_bytes + cost <= limit:
                break
            p.wait_slot(self.budget)  # both do not fit: let the other slot finish its device part first

    def _submit(
        self,
        batch: list[int],
        finish: Callable[[Any], Any],
        host: Callable[[Any], list[Result]] | None,
        handle: Any,
        reserved: int,
    ) -> _InFlight:
        """Queue ``finish`` (and ``host`` after it) on the helper threads, in batch order."""
        if self._finisher is None:
            self._finisher = ThreadPoolExecutor(1, thread_name_prefix="gpupipe-gpu-finish")
        fin = self._finisher.submit(self._phase, "finish", finish, handle)
        if host is None:
            return _InFlight(batch, fin, fin, reserved)
        if self._hoster is None:
            self._hoster = ThreadPoolExecutor(1, thread_name_prefix="gpupipe-gpu-host")
        # finish raising makes the host task raise the same error: the batch fails once, in _collect.
        final = self._hoster.submit(lambda: self._phase("host", host, fin.result()))
        return _InFlight(batch, fin, final, reserved)

    def _phase(self, name: str, fn: Callable[[Any], Any], arg: Any) -> Any:
        with self.clock.stage(name):
            return fn(arg)

    def _plan(self, jobs: list[Job], costs: list[int], host_cost: Callable[[Job], int] | None, overlap: bool) -> list[list[int]]:
        """Batches of job indices that fit the staging budget (half of it each while overlapping)."""
        hcosts = [int(host_cost(j)) for j in jobs] if host_cost is not None else None
        share = 2 if overlap else 1
        pinned = self.budget.pinned_limit if hcosts is not None and self.budget.pinned_limit > 0 else None
        batches = plan_batches(
            costs,
            max(1, self.budget.max_bytes // share),
            self.max_batch,
            hcosts,
            None if pinned is None else max(1, pinned // share),
        )
        naive = (len(jobs) + self.max_batch - 1) // self.max_batch
        if len(batches) > naive:
            self.budget.note(splits=len(batches) - naive)
        return batches

    def _alone_over_budget(self, st: _RunState, batch: list[int], costs: list[int]) -> bool:
        """Send a single job that needs more than the whole staging budget to the fallback; whether it did."""
        limit = self.budget.max_bytes
        if len(batch) != 1 or costs[batch[0]] <= limit:
            return False
        i = batch[0]
        self._store(st, batch, [self._fallback(st.jobs[i], f"needs ~{costs[i]} staging bytes, over the budget of {limit}")])
        return True

    def _finish_now(
        self,
        st: _RunState,
        batch: list[int],
        finish: Callable[[Any], Any] | None,
        host: Callable[[Any], list[Result]] | None,
        handle: Any,
        reserved: int,
    ) -> None:
        """Complete a batch in this thread (no overlap), releasing its staging bytes after ``finish``."""
        try:
            try:
                out = self._phase("finish", finish, handle) if finish is not None else handle
            finally:
                self.budget.release(reserved)
            if host is not None:
                out = self._phase("host", host, out)
            self._check_len(out, batch)
        except Exception as e:  # noqa: BLE001 - every frame must still get a result
            self._failed(st, batch, e)
            return
        self._store(st, batch, out)

    @staticmethod
    def _check_len(out: Any, batch: list[int]) -> None:
        if len(out) != len(batch):
            raise RuntimeError(f"device stage returned {len(out)} results for {len(batch)} jobs")

    def _store(self, st: _RunState, batch: list[int], out: Sequence[Result]) -> None:
        for i, r in zip(batch, out):
            st.results[i] = r
            st.done[i] = True

    def _collect(self, st: _RunState, p: _InFlight) -> None:
        try:
            try:
                out = p.final.result()
            finally:
                p.wait_slot(self.budget)
            self._check_len(out, p.batch)
        except Exception as e:  # noqa: BLE001
            self._failed(st, p.batch, e)
            return
        self._store(st, p.batch, out)

    def _failed(self, st: _RunState, batch: list[int], e: BaseException) -> None:
        """A batch raised ``e``: lost device, out of memory (halve and retry), or anything else (CPU path)."""
        jobs = st.jobs
        if self.is_fatal(e):
            raise DeviceLost(e, st.results, st.done) from e
        if self.is_oom(e):
            self._release()
            self.budget.note(oom_retries=1)
            if len(batch) > 1:
                half = (len(batch) + 1) // 2
                st.queue.appendleft(batch[half:])
                st.queue.appendleft(batch[:half])
                log.info("device out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
                return
            i = batch[0]
            self._store(st, batch, [self._fallback(jobs[i], f"device out of memory even alone: {_short(e)}")])
            return
        log.error("GPU batch of %d failed unexpectedly; encoding it on the CPU path", len(batch), exc_info=e)
        self._store(st, batch, [self._fallback(jobs[i], f"GPU error: {_short(e)}") for i in batch])

    def _fallback(self, job: Job, why: str) -> Result:
        self.budget.note(cpu_fallbacks=1)
        return self.fallback(job, why)

    def _release(self) -> None:
        try:
            self.release()
        except Exception:  # best effort
            log.debug("releasing device memory failed", exc_info=True)

    def close(self) -> None:
        """Stop the helper threads."""
        for ex in (self._finisher, self._hoster):
            if ex is not None:
                ex.shutdown(wait=True)
        self._finisher = self._hoster = None


@dataclass
class _InFlight:
    """A batch handed to the helper threads: ``slot_done`` is its ``finish`` (device part, slot
    and staging bytes held), ``final`` what gives its results (``host``, or ``finish`` itself)."""

    batch: list[int]
    slot_done: Future
    final: Future
    reserved: int
    released: bool = False

    def wait_slot(self, budget: StagingBudget) -> None:
        """Wait for the device part, then give its staging bytes back (once)."""
        wait([self.slot_done])
        self.release_slot(budget)

    def release_slot(self, budget: StagingBudget) -> None:
        if not self.released:
            self.released = True
            budget.release(self.reserved)


@dataclass
class _RunState:
    jobs: list[Job]
    results: list[Result]
    done: list[bool]
    queue: deque[list[int]]


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0] if s else ''}"[:200]


class PinnedBuffers:
    """Named host buffers reused across batches, pinned (page-locked), holding at most ``limit`` bytes in all.

    ``alloc(nbytes)`` returns a ``uint8`` NumPy array over pinned memory and ``release()`` hands
    pinned blocks nobody uses any more back to the system (default: a private CuPy
    ``PinnedMemoryPool`` and its ``free_all_blocks``, so replaced buffers do not linger in a pool).
    A buffer that must grow is dropped and released *before* its replacement is allocated, at the
    size needed rounded up to :attr:`GRANULE` (or up to a quarter more, when that still fits, so
    slowly growing batches do not reallocate every time). A request that cannot fit beside the
    other buffers gets a one-off pageable array (counted in ``unpinned_requests``).

    Callers must drop their views of a buffer before asking for the same name again (otherwise
    its memory cannot be released and would be held twice).
    """

    GRANULE = 64 << 10

    def __init__(
        self, limit: int, alloc: Callable[[int], np.ndarray] | None = None, release: Callable[[], None] | None = None
    ) -> None:
        self.limit = int(limit)
        if alloc is None:
            pool = _CupyPinnedPool()
            alloc, release = pool.alloc, pool.release
        self._alloc = alloc
        self._release_fn = release or (lambda: None)
        self._bufs: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.unpinned_requests = 0
        self.peak_nbytes = 0

    @property
    def nbytes(self) -> int:
        """Pinned bytes held now."""
        with self._lock:
            return sum(b.nbytes for b in self._bufs.values())

    def get(self, name: str, nbytes: int) -> np.ndarray:
        """A ``uint8`` array of exactly ``nbytes`` (a view of a buffer of at least that size)."""
        nbytes = max(1, int(nbytes))
        with self._lock:
            buf = self._bufs.get(name)
            if buf is not None and buf.nbytes >= nbytes:
                return buf[:nbytes]
            others = sum(b.nbytes for k, b in self._bufs.items() if k != name)
            room = self.limit - others
            need = -(-nbytes // self.GRANULE) * self.GRANULE
            if need > room:
                need = nbytes  # exact, when the rounding alone would not fit
            if need > room:
                self.unpinned_requests += 1
                log.debug("pinned budget of %d bytes exceeded; %d pageable bytes for %r", self.limit, nbytes, name)
                return np.empty(nbytes, np.uint8)
            if buf is not None:
                grown = -(-(buf.nbytes + buf.nbytes // 4) // self.GRANULE) * self.GRANULE
                if need < grown <= room:
                    need = grown
                del self._bufs[name], buf  # the old one goes back before the new one is allocated
                self._release()
            buf = self._bufs[name] = self._alloc(need)
            self.peak_nbytes = max(self.peak_nbytes, sum(b.nbytes for b in self._bufs.values()))
            return buf[:nbytes]

    def _release(self) -> None:
        try:
            self._release_fn()
        except Exception:  # best effort
            log.debug("releasing pinned memory failed", exc_info=True)

    def clear(self) -> None:
        """Drop every buffer and release their memory."""
        with self._lock:
            self._bufs.clear()
            self._release()


class _CupyPinnedPool:
    """Pinned allocations from a private ``cupy.cuda.PinnedMemoryPool`` (not CuPy's default pool)."""

    def __init__(self) -> None:
        import cupy as cp

        self._pool = cp.cuda.PinnedMemoryPool()

    def alloc(self, nbytes: int) -> np.ndarray:
        mem = self._pool.malloc(nbytes)
        return np.ndarray((nbytes,), np.uint8, buffer=mem)

    def release(self) -> None:
        self._pool.free_all_blocks()


def make_device_pool(max_bytes: int) -> Any:
    """A CuPy ``MemoryPool`` limited to ``max_bytes``; use it with ``cupy.cuda.using_allocator(pool.malloc)``."""
    import cupy as cp

    pool = cp.cuda.MemoryPool()
    pool.set_limit(size=int(max_bytes))
    return pool
