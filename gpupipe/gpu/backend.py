"""``GpuBackend``: the GPU path, with the same interface and results as :class:`~gpupipe.cpu.CpuBackend`.

Jobs are routed to where they pay (see ``docs/gpu.md``):

* **transcode to JPEG** (and resize) → DALI decode/resize on the device → nvImageCodec JPEG
  encode from the device buffers → host base64 of the (host-resident) bitstream;
* **passthrough** → the CPU path by default (``passthrough_device: cpu``): building the host
  ``str`` is most of the cost on either path, so the GPU cannot win there; with
  ``passthrough_device: gpu``, the device layer's batched base64 kernel (one upload, one launch,
  one download per batch);
* **PNG output** (target ``png``, or ``auto`` for a frame that may carry alpha) → the CPU path
  (:func:`gpupipe.cpu.run_job`): DALI's decoder is asked for RGB, nvImageCodec has no PNG
  encoder on the GPU, and whether such a frame needs PNG at all depends on its decoded alpha.
* **PNG sources** → the CPU path by default (``png_device: cpu``): DALI decodes PNG on its own
  CPU threads anyway (no gain measured on an H200: 4K PNG transcode 20.6 f/s against the CPU
  path's 19.8, resize to 1080p 21.9 against 29.9), and the host buffers it decodes into stay in
  its pipelines, outside the cache's byte budget; ``png_device: gpu`` sends them through DALI.

CPU-path jobs run on a thread pool concurrently with the GPU batches. Device work runs in batches
that fit ``staging.max_bytes`` (:class:`~gpupipe.gpu.staging.StagedRunner`): split when over
budget, halved and retried after an out-of-memory error, a frame encoded on the CPU path with a
:class:`~gpupipe.gpu.staging.GpuFallbackWarning` as a last resort. Batch k+1's device work
overlaps batch k's host work (two slots of buffers and pipelines).

* **video frames** (:class:`gpupipe.VideoFrame`) are decoded by NVDEC where it can
  (:mod:`gpupipe.gpu.nvdec`, else the CPU decoder); those decoded on the device and going to
  JPEG without a resize are encoded there (:mod:`gpupipe.gpu.video_encode`), the others take the
  CPU path (device pixels copied to the host first).

**Fault containment.** After a sticky CUDA error (illegal address, kernel fault, ...; see
:mod:`gpupipe.gpu.faults`) the CUDA context is dead for CuPy, DALI and nvImageCodec alike. The
backend then sends every job to the CPU path for the rest of the process, with one
:class:`GpuDeviceLostWarning`; ``info()`` and :meth:`GpuBackend.stats` say so.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

from ..config import Config
from ..cpu import CpuBackend
from ..errors import DeviceLost, FrameError, GpuDeviceLostWarning
from ..footprint import gpu_footprint
from ..frames import Header
from ..plan import Job, OutputSpec
from ..video.decoder import DecoderOpener
from ..vocabulary import BackendName, Estimate
from .faults import is_sticky_error
from .nvdec import NvdecOpener, load_pynvvideocodec
from .stage_clock import StageClock
from .staging import PinnedBuffers, StagedRunner, StagingBudget
from .video_encode import DevicePixelsEncoder, encodes_on_device, to_host

__all__ = [
    "DeviceOps",
    "GpuBackend",
    "GpuDeviceLostWarning",
    "InstrumentedOps",
    "MemoryReportingOps",
    "ThreePhaseOps",
    "TwoPhaseOps",
    "routes_to_cpu",
]

log = logging.getLogger("gpupipe.gpu.backend")


@runtime_checkable
class DeviceOps(Protocol):
    """What :class:`GpuBackend` needs from its device layer (:class:`~gpupipe.gpu.device.DeviceLayer`;
    tests substitute their own). A layer may also declare :class:`TwoPhaseOps` (batches in two
    phases, for overlap) and :class:`InstrumentedOps` (memory figures, counters, fatal errors)."""

    def passthrough(self, jobs: Sequence[Job]) -> list[Any]: ...
    def transcode(self, jobs: Sequence[Job]) -> list[Any]: ...
    def passthrough_cost(self, job: Job) -> int: ...
    def passthrough_host_cost(self, job: Job) -> int: ...
    def transcode_cost(self, job: Job) -> int: ...
    def is_oom(self, exc: BaseException) -> bool: ...
    def release(self) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@runtime_checkable
class TwoPhaseOps(DeviceOps, Protocol):
    """A device layer whose batches run in two phases: ``*_begin(jobs, slot)`` starts the device work
    on one of two slots of buffers and returns a handle, ``*_end(handle)`` finishes it on the host."""

    def passthrough_begin(self, jobs: Sequence[Job], slot: int = 0) -> Any: ...
    def passthrough_end(self, handle: Any) -> list[Any]: ...
    def transcode_begin(self, jobs: Sequence[Job], slot: int = 0) -> Any: ...
    def transcode_end(self, handle: Any) -> list[Any]: ...


@runtime_checkable
class ThreePhaseOps(TwoPhaseOps, Protocol):
    """A two-phase layer whose transcode end splits in two: ``transcode_encode(handle)`` finishes the
    device work (the slot is free afterwards) and returns a host-only handle, and
    ``transcode_strings(handle2)`` builds the URIs on the host. The backend then builds batch k's
    strings while batch k+1 encodes and batch k+2 decodes."""

    def transcode_encode(self, handle: Any) -> Any: ...
    def transcode_strings(self, handle: Any) -> list[Any]: ...


@runtime_checkable
class MemoryReportingOps(DeviceOps, Protocol):
    """A device layer that reports its device and pinned memory (:meth:`DeviceLayer.memory
    <gpupipe.gpu.device.DeviceLayer.memory>`: bytes by name)."""

    def memory(self) -> dict[str, int]: ...


@runtime_checkable
class InstrumentedOps(DeviceOps, Protocol):
    """A device layer that reports its memory (``pinned`` buffers, pooled ``device_bytes``) and
    counters, and tells a sticky CUDA error (``is_fatal``) from one the next batch survives."""

    pinned: PinnedBuffers

    def device_bytes(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def is_fatal(self, exc: BaseException) -> bool: ...


def routes_to_cpu(job: Job) -> bool:
    """Whether ``job`` needs the CPU path whatever the settings: PNG output, or ``auto`` for a frame that may have alpha."""
    return not job.passthrough and job.target != "jpeg"


class GpuBackend:
    """The GPU backend for ``config`` (device ``config.gpu``, default 0).

    ``ops`` substitutes the device layer (tests; or ``DeviceLayer(config, device_id=None)`` to
    run the same data path with CPU stand-ins). ``workers`` threads run the frames that go to
    the CPU path. ``overlap`` (default on) overlaps each batch's device work with the previous
    batch's host work when the device layer has two-phase operations (and, with
    :class:`ThreePhaseOps`, builds batch k's strings while batch k+1 is on the device). ``clock``
    records each stage's wall and thread-CPU seconds (:class:`~gpupipe.gpu.stage_clock.StageClock`;
    shared with the device layer built here).
    """

    name: BackendName = "gpu"

    def __init__(
        self,
        config: Config,
        *,
        ops: DeviceOps | None = None,
        workers: int | None = None,
        overlap: bool = True,
        clock: StageClock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or StageClock()
        if ops is None:
            from .device import DeviceLayer

            ops = DeviceLayer(config, device_id=config.gpu or 0, clock=self.clock)
        self.ops = ops
        self.workers = workers or config.workers or os.cpu_count() or 1
        self.passthrough_device = config.passthrough_device
        self.png_device = config.png_device
        self.overlap = overlap
        self.budget = StagingBudget(config.staging.max_bytes, config.staging.pinned_bytes)
        # The layer's optional capabilities, checked once: Protocols it declares, not attributes probed.
        self._instrumented: InstrumentedOps | None = ops if isinstance(ops, InstrumentedOps) else None
        self._two_phase: TwoPhaseOps | None = ops if isinstance(ops, TwoPhaseOps) else None
        self._three_phase: ThreePhaseOps | None = ops if isinstance(ops, ThreePhaseOps) else None
        self._memory: MemoryReportingOps | None = ops if isinstance(ops, MemoryReportingOps) else None
        if self._instrumented is not None:
            pinned = self._instrumented.pinned
            self.budget.gauges.update(
                pinned_bytes=lambda: pinned.nbytes,
                pinned_peak_bytes=lambda: pinned.peak_nbytes,
                unpinned_requests=lambda: pinned.unpinned_requests,
                device_bytes=self._instrumented.device_bytes,
            )
        self._runner = StagedRunner(
            self.budget,
            max_batch=max(1, config.batch_size),
            is_oom=ops.is_oom,
            release=ops.release,
            is_fatal=self._instrumented.is_fatal if self._instrumented is not None else is_sticky_error,
            clock=self.clock,
        )
        self._cpu = CpuBackend(self.workers, config.png_decoder)
        self._device_lock = threading.Lock()
        self._closed = False
        self.device_lost: str | None = None
        """Why the device was given up (a sticky CUDA error), or ``None`` while it is in use."""
        self._nvdec: NvdecOpener | None = None
        self._video = DevicePixelsEncoder(config.gpu or 0)

    def route(self, job: Job) -> str:
        """Where ``job`` runs: ``"cpu"``, ``"passthrough"`` (the GPU kernel), ``"transcode"`` (DALI +
        nvImageCodec) or ``"video"`` (a frame NVDEC decoded, JPEG-encoded on the device)."""
        if job.frame.pixels is not None:
            return "video" if self.device_lost is None and encodes_on_device(job) else "cpu"
        if self.device_lost is not None or routes_to_cpu(job):
            return "cpu"
        if job.frame.kind == "png" and self.png_device == "cpu" and not job.passthrough:
            return "cpu"
        if job.passthrough:
            return "passthrough" if self.passthrough_device == "gpu" else "cpu"
        return "transcode"

    def run(self, jobs: list[Job]) -> list[str | FrameError]:
        """Each job's URI, or its :class:`FrameError`, in order."""
        if self._closed:
            raise RuntimeError("GpuBackend is closed")
        results: list[Any] = [None] * len(jobs)
        routes = [self.route(j) for j in jobs]
        futures = self._submit_cpu(jobs, [i for i, r in enumerate(routes) if r == "cpu"])
        video = [i for i, r in enumerate(routes) if r == "video"]
        if video:
            for i, r in zip(video, self._video.run([jobs[i] for i in video])):
                results[i] = r
        with self._device_lock:
            for kind in ("passthrough", "transcode"):
                idx = [i for i, r in enumerate(routes) if r == kind]
                if not idx:
                    continue
                if self.device_lost is not None:  # lost during this call's earlier kind
                    futures += self._submit_cpu(jobs, idx)
                    continue
                try:
                    out = self._run_device(kind, [jobs[i] for i in idx])
                except DeviceLost as lost:
                    self._lose_device(lost.cause)
                    out = lost.results
                    futures += self._submit_cpu(jobs, [i for k, i in enumerate(idx) if not lost.done[k]])
                    for k, i in enumerate(idx):
                        if lost.done[k]:
                            results[i] = out[k]
                    continue
                for i, r in zip(idx, out):
                    results[i] = r
        for i, f in futures:
            results[i] = f.result()
        return results

    def _run_device(self, kind: str, jobs: list[Job]) -> list[Any]:
        ops, two = self.ops, self._two_phase
        if kind == "passthrough":
            cost, host = ops.passthrough_cost, ops.passthrough_host_cost
            if two is not None:
                return self._runner.run(jobs, two.passthrough_begin, cost, host, finish=two.passthrough_end, overlap=self.overlap)
            return self._runner.run(jobs, ops.passthrough, cost, host)
        three = self._three_phase
        if three is not None:
            return self._runner.run(
                jobs,
                three.transcode_begin,
                ops.transcode_cost,
                None,
                finish=three.transcode_encode,
                host=three.transcode_strings,
                overlap=self.overlap,
            )
        if two is not None:
            return self._runner.run(
                jobs, two.transcode_begin, ops.transcode_cost, None, finish=two.transcode_end, overlap=self.overlap
            )
        return self._runner.run(jobs, ops.transcode, ops.transcode_cost, None)

    def _submit_cpu(self, jobs: list[Job], idx: list[int]) -> list[tuple[int, Future]]:
        return [(i, self._cpu.submit(to_host(jobs[i]))) for i in idx]

    def decoder_opener(self) -> DecoderOpener:
        """NVDEC through PyNvVideoCodec where it can decode a clip, else the CPU decoder
        (:class:`~gpupipe.gpu.nvdec.NvdecOpener`; every clip once the device is lost)."""
        if self._nvdec is None:
            self._nvdec = NvdecOpener(self.config.gpu or 0, load_pynvvideocodec(), usable=lambda: self.device_lost is None)
        return self._nvdec

    def _lose_device(self, cause: BaseException) -> None:
        """Give the device up for the rest of the process (once): one :class:`GpuDeviceLostWarning`."""
        if self.device_lost is not None:
            return
        first = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        self.device_lost = f"{type(cause).__name__}: {first[0] if first else ''}"[:300]
        msg = (
            f"GPU {self.config.gpu or 0} hit a sticky CUDA error ({self.device_lost}); its context cannot be used "
            "again in this process, so every frame from now on is encoded on the CPU path"
        )
        warnings.warn(msg, GpuDeviceLostWarning, stacklevel=3)

    def footprint(self, header: Header, spec: OutputSpec) -> Estimate:
        """``(host, device)`` bytes a frame with ``header`` holds at once under ``spec`` on this backend.

        Device bytes count the device and pinned staging copies (pool and pinned-buffer rounding
        included); frames routed to the CPU path (and every frame once the device is lost) cost
        what the CPU path holds. The pipeline reserves this inside the cache's byte budget; the
        staging pool is bounded separately by ``staging.max_bytes`` and pinned memory by
        ``staging.pinned_bytes``.
        """
        if self.device_lost is not None:
            return self._cpu.footprint(header, spec)
        return gpu_footprint(
            header,
            spec,
            passthrough_on_device=self.passthrough_device == "gpu",
            png_on_device=self.png_device == "gpu",
            staging_slack=2 * PinnedBuffers.GRANULE + 4096,
        )

    def staging_stats(self) -> dict[str, int]:
        """In-flight staging bytes, their peak, the budget, device and pinned bytes held, and the runner's counters."""
        return self.budget.stats().as_dict()

    def counters(self) -> dict[str, int]:
        """:meth:`staging_stats` plus the device layer's counters (DALI runs, rebuilds, refused frames),
        the jobs sent to the CPU path, and ``device_lost`` (1 after a sticky CUDA error)."""
        d = self.staging_stats()
        if self._instrumented is not None:
            try:
                d.update(self._instrumented.stats())
            except Exception:  # a report must not fail
                log.debug("device stats failed", exc_info=True)
        d.update(self._cpu.counters())
        if self._nvdec is not None:
            d.update(self._nvdec.counters())
        d["video_device_jpeg"] = self._video.frames
        d["device_lost"] = int(self.device_lost is not None)
        return d

    def device_memory(self) -> dict[str, int]:
        """The device layer's memory figures in bytes (:meth:`DeviceLayer.memory
        <gpupipe.gpu.device.DeviceLayer.memory>`); ``{}`` once the device is lost (no CUDA call is
        made then) or where the layer reports none. A report never fails."""
        if self.device_lost is not None or self._memory is None:
            return {}
        try:
            return self._memory.memory()
        except Exception:  # a report must not fail
            log.debug("device memory report failed", exc_info=True)
            return {}

    def info(self) -> dict[str, Any]:
        """Device, library versions, routing, fault state, staging figures and device memory (for ``gpupipe info`` and reports)."""
        d: dict[str, Any] = {}
        if self.device_lost is None:
            try:
                d.update(self.ops.info())
            except Exception as e:  # noqa: BLE001 - a report must not fail
                d["device_error"] = str(e)
        d["device_lost"] = self.device_lost
        d["mode"] = "cpu path for every frame (device lost)" if self.device_lost else "gpu"
        d["counters"] = self.counters()
        d["staging"] = self.staging_stats()
        d["device_memory"] = self.device_memory()
        d["device_memory_note"] = (
            "DALI 2.4 and nvImageCodec 0.9 report no memory figures of their own: their device memory is "
            "in device_used_bytes (with CUDA contexts and other processes), beside gpupipe's CuPy pools"
        )
        d["passthrough"] = (
            "GPU base64 kernel (passthrough_device: gpu)"
            if self.passthrough_device == "gpu"
            else "CPU path (passthrough_device: cpu; the host string is most of the work on either path)"
        )
        d["png_output"] = "CPU path (Pillow): PNG targets and frames that may carry alpha"
        d["png_sources"] = (
            "DALI (decoded on its CPU threads), then the device (png_device: gpu)"
            if self.png_device == "gpu"
            else "CPU path (png_device: cpu)"
        )
        d["transcode_base64"] = "host (pybase64 into the final str); bitstreams come back from nvImageCodec in host memory"
        d["overlap"] = self.overlap
        d["overlap_stages"] = (
            ("decode | encode | host strings (three batches in flight)" if self._three_phase is not None else "two phases")
            if self.overlap and self._two_phase is not None
            else "none"
        )
        return d

    def close(self) -> None:
        """Shut the thread pools down and release device resources."""
        if self._closed:
            return
        self._closed = True
        self._cpu.close()
        self._runner.close()
        try:
            self.ops.close()
        except Exception:  # after a sticky error every CUDA call fails
            if self.device_lost is None:
                raise
            log.debug("closing the device layer after the device was lost failed", exc_info=True)
