"""``GpuBackend``: the GPU path, with the same interface and results as :class:`~gpupipe.cpu_backend.CpuBackend`.

Jobs are routed three ways (see ``docs/gpu.md``):

* **passthrough** → the device layer's batched base64 kernel (one upload, one launch, one
  download per batch, host ``str`` built from each span with one copy);
* **transcode to JPEG** → DALI decode/resize on the device → nvImageCodec JPEG encode from the
  device buffers → host base64 of the (host-resident) bitstream;
* **PNG output** (target ``png``, or ``auto`` for a frame that may carry alpha) → the CPU path
  (:func:`gpupipe.cpu_backend.run_job`) on a thread pool, concurrently with the GPU work: DALI's
  decoder is asked for RGB, nvImageCodec has no PNG encoder on the GPU, and whether such a frame
  needs PNG at all depends on its decoded alpha, which the CPU path decides exactly as
  :class:`~gpupipe.cpu_backend.CpuBackend` does.

Device work runs in batches that fit ``staging.max_bytes`` (:class:`~gpupipe.gpu.staging.StagedRunner`):
split when over budget, halved and retried after an out-of-memory error, and as a last resort a
frame is encoded on the CPU path with a :class:`~gpupipe.gpu.staging.GpuFallbackWarning`. Results
are URI ``str`` s (materialized on the host once, at the end of each batch).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, Sequence

from ..config import Config
from ..errors import FrameError
from ..plan import Job
from ..uri import b64_len
from .staging import StagedRunner, StagingBudget

__all__ = ["GpuBackend", "DeviceOps", "routes_to_cpu"]

log = logging.getLogger("gpupipe.gpu.backend")


class DeviceOps(Protocol):
    """What :class:`GpuBackend` needs from its device layer (:class:`~gpupipe.gpu.device.DeviceLayer`;
    tests substitute their own)."""

    def passthrough(self, jobs: Sequence[Job]) -> list[Any]: ...
    def transcode(self, jobs: Sequence[Job]) -> list[Any]: ...
    def passthrough_cost(self, job: Job) -> int: ...
    def passthrough_host_cost(self, job: Job) -> int: ...
    def transcode_cost(self, job: Job) -> int: ...
    def is_oom(self, exc: BaseException) -> bool: ...
    def release(self) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def routes_to_cpu(job: Job) -> bool:
    """Whether the GPU backend sends ``job`` to the CPU path: PNG output, or ``auto`` for a frame that may have alpha."""
    return not job.passthrough and job.target != "jpeg"


class GpuBackend:
    """The GPU backend for ``config`` (device ``config.gpu``, default 0).

    ``ops`` substitutes the device layer (tests; or ``DeviceLayer(config, device_id=None)`` to
    run the same data path with CPU stand-ins). ``workers`` threads run the frames that go to
    the CPU path.
    """

    name = "gpu"

    def __init__(self, config: Config, *, ops: DeviceOps | None = None, workers: int | None = None) -> None:
        self.config = config
        if ops is None:
            from .device import DeviceLayer

            ops = DeviceLayer(config, device_id=config.gpu or 0)
        self.ops = ops
        self.workers = workers or config.workers or os.cpu_count() or 1
        self.budget = StagingBudget(config.staging.max_bytes, config.staging.pinned_bytes)
        pinned = getattr(ops, "pinned", None)
        if pinned is not None:
            self.budget.pinned_bytes = lambda: pinned.nbytes
        self._runner = StagedRunner(
            self.budget, max_batch=max(1, config.batch_size), is_oom=ops.is_oom, release=ops.release
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._device_lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gpupipe-gpu-cpu")
            return self._pool

    def run(self, jobs: list[Job]) -> list[str | FrameError]:
        """Each job's URI, or its :class:`FrameError`, in order."""
        if self._closed:
            raise RuntimeError("GpuBackend is closed")
        results: list[Any] = [None] * len(jobs)
        cpu_idx = [i for i, j in enumerate(jobs) if routes_to_cpu(j)]
        pass_idx = [i for i, j in enumerate(jobs) if j.passthrough]
        gpu_idx = [i for i, j in enumerate(jobs) if not j.passthrough and not routes_to_cpu(j)]
        futures: list[tuple[int, Future]] = []
        if cpu_idx:
            from ..cpu_backend import run_job_guarded

            ex = self._executor()
            futures = [(i, ex.submit(run_job_guarded, jobs[i])) for i in cpu_idx]
        with self._device_lock:
            if pass_idx:
                out = self._runner.run(
                    [jobs[i] for i in pass_idx],
                    self.ops.passthrough,
                    self.ops.passthrough_cost,
                    self.ops.passthrough_host_cost,
                )
                for i, r in zip(pass_idx, out):
                    results[i] = r
            if gpu_idx:
                out = self._runner.run([jobs[i] for i in gpu_idx], self.ops.transcode, self.ops.transcode_cost)
                for i, r in zip(gpu_idx, out):
                    results[i] = r
        for i, f in futures:
            results[i] = f.result()
        return results

    def inflight_estimate(self, source_bytes: int) -> int:
        """Bytes that encoding a source of ``source_bytes`` holds while in flight, for cache reservations.

        Host: the source and its URI string. Device and pinned staging (passthrough, the
        largest case): the uploaded source, the URI span on the device and its pinned copy.
        The pipeline reserves this inside the cache's byte budget, so ``CacheStats.inflight_bytes``
        reports it; the staging pool is bounded separately by ``staging.max_bytes``.
        """
        src = int(source_bytes)
        uri = b64_len(src) + 32
        return (src + uri) + (src + uri) + uri

    def staging_stats(self) -> dict[str, int]:
        """In-flight staging bytes, their peak, the budget and the runner's counters."""
        return self.budget.stats().as_dict()

    def info(self) -> dict[str, Any]:
        """Device, library versions, staging figures (for ``gpupipe info`` and reports)."""
        d: dict[str, Any] = {}
        try:
            d.update(self.ops.info())
        except Exception as e:  # noqa: BLE001 - a report must not fail
            d["device_error"] = str(e)
        d["staging"] = self.staging_stats()
        d["png_output"] = "CPU path (Pillow): PNG targets and frames that may carry alpha"
        d["transcode_base64"] = "host (pybase64 into the final str); bitstreams come back from nvImageCodec in host memory"
        return d

    def close(self) -> None:
        """Shut the CPU thread pool down and release device resources."""
        if self._closed:
            return
        self._closed = True
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self.ops.close()
