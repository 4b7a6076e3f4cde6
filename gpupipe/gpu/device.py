"""The device layer of the GPU backend: the stages that touch CUDA, DALI and nvImageCodec.

:class:`DeviceLayer` implements the batch operations :class:`~gpupipe.gpu.backend.GpuBackend`
needs, each giving one URI ``str`` (or :class:`~gpupipe.errors.FrameError`) per job, in two
phases so that the backend can overlap one batch's device work with the previous batch's host
work (``*_begin(jobs, slot)`` → handle, ``*_end(handle)`` → results; ``slot`` 0 or 1 picks one of
two sets of reused buffers and pipelines):

passthrough (used when ``passthrough_device: gpu``)
    begin: pack the frames and their ``data:`` prefixes into the slot's pinned host buffer (with
    the kernel's frame table) → one host-to-device copy → the base64 kernel (one launch for the
    batch) → one device-to-host copy of all URIs into the slot's pinned output buffer → wait for
    the layer's stream. end: each URI ``str`` built from its span with
    :func:`gpupipe.uri.assemble_uri` (one copy), on the host-string threads.
transcode (target JPEG), in three phases
    begin: DALI decode (+ resize) on the device, on the slot's pipelines. encode
    (:meth:`DeviceLayer.transcode_encode`): nvImageCodec JPEG encode from DALI's device buffers →
    the bitstreams arrive in host memory (nvImageCodec's download); the slot is free afterwards.
    strings (:meth:`DeviceLayer.transcode_strings`, host only): :func:`gpupipe.uri.build_uri`
    (pybase64 writing straight into the final ``str``) on :class:`~gpupipe.gpu.host_strings.HostStrings`'
    threads. The backend runs the three on three threads, so batch k's strings are built while
    batch k+1 is encoded and batch k+2 decoded. Base64 of
    transcoded frames runs on the host on purpose: the JPEG is already on the host (nvImageCodec
    returns host ``CodeStream`` s), and sending it back over PCIe for the kernel and fetching 4/3
    of it again costs two transfers plus a synchronisation, ~0.2 ms for a 2 MB 4K JPEG at
    ~25 GB/s, while pybase64 encodes it in ~0.4 ms with the final ``str`` written once.

Every CUDA call runs inside ``cupy.cuda.Device(device_id)`` (pinned allocations included), so
``gpu: 1`` never creates a context on, or synchronises, device 0. The base64 kernel is loaded on
first use (a prebuilt fatbin; see :mod:`gpupipe.gpu.kernel_build`).

With ``device_id=None`` the same layer runs without a GPU: the NumPy twin of the kernel
(:mod:`gpupipe.base64_batch`) instead of CuPy, DALI's CPU backend and nvImageCodec's CPU encoder. That
is how CI exercises the backend's data path end to end; it is not meant to be fast.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base64_batch import ALIGN, BatchLayout, batch_layout, encode_packed, pack_batch
from ..config import Config
from ..errors import FrameDecodeError, FrameError
from ..plan import Job
from ..png_stream import device_decodable, png_header
from ..uri import assemble_uri, b64_len, build_uri
from .dali_decode import DaliDecoder
from .faults import is_oom_error, is_sticky_error
from .host_strings import HostStrings
from .jpeg_encode import JpegEncoder
from .png_decode import NvcompPngDecoder, nvcomp_available
from .stage_clock import StageClock
from .staging import PinnedBuffers, cpu_fallback, make_device_pool

__all__ = ["DeviceLayer", "nvcomp_transcode_cost", "passthrough_cost", "transcode_cost"]

log = logging.getLogger("gpupipe.gpu.device")


_PREFIX_MAX = 32  # len("data:image/jpeg;base64,") is 23; room for alignment


_POOL_ROUND = 512  # CuPy's memory pool rounds every allocation up to a multiple of this
_BATCH_SLACK = 2 * _POOL_ROUND + 64  # per batch: the pool rounding of its two buffers, the table's last row, end alignment


def passthrough_cost(job: Job) -> int:
    """Staging bytes of a passthrough job: its input + prefix, its URI, alignment and table row.

    An upper bound: the batch-level slack (pool rounding of the input and output buffers, the
    table's extra row, end alignment) is charged to every job, so that any batch whose jobs'
    costs fit ``staging.max_bytes`` also fits the pool limited to it (tests/test_gpu_glue.py).
    """
    n = len(job.frame.data)
    return n + b64_len(n) + 2 * (_PREFIX_MAX + ALIGN) + 48 + _BATCH_SLACK


def transcode_cost(job: Job) -> int:
    """Estimated device bytes of a transcode job: encoded input, decoded RGB, resized RGB, and the
    JPEG encoder's device bitstream and workspace (bounded by half the output RGB)."""
    w, h = job.frame.width, job.frame.height
    ow, oh = job.out_size
    decoded = w * h * 3
    resized = ow * oh * 3 if job.needs_resize else 0
    return len(job.frame.data) + decoded + resized + ow * oh * 3 // 2 + 4096


def _for_device_png(job: Job) -> bool:
    """Whether the device PNG decoder takes ``job`` (:func:`gpupipe.png_stream.device_decodable`, no resize, upright)."""
    if job.frame.kind != "png" or job.needs_resize or job.frame.orientation != 1:
        return False
    found = png_header(job.frame.data)
    return found is not None and device_decodable(*found)


def nvcomp_transcode_cost(job: Job) -> int:
    """:func:`transcode_cost` plus, for a PNG source, the device PNG decoder's buffers: the deflate
    stream, the inflated rows and the pixels (4 bytes a pixel at most), and an RGB copy of RGBA."""
    cost = transcode_cost(job)
    if job.frame.kind == "png":
        w, h = job.frame.width, job.frame.height
        cost += len(job.frame.data) + h * (1 + 4 * w) + 4 * w * h + 3 * w * h
    return cost


@dataclass
class _PassHandle:
    layout: BatchLayout
    host_out: np.ndarray
    labels: list[str]


@dataclass
class _TransHandle:
    jobs: list[Job]
    decoded: list[Any]


@dataclass
class _Encoded:
    """A transcode batch after the device: per job a host ``CodeStream``, ``None`` (nvImageCodec
    could not encode it) or the job's :class:`~gpupipe.errors.FrameError`."""

    jobs: list[Job]
    streams: list[Any]


class DeviceLayer:
    """The GPU stages on CUDA device ``device_id``, or their CPU stand-ins when it is ``None``.

    ``string_threads``: threads that build a batch's host strings (default: the config's
    ``gpu_path.string_threads``); ``clock`` records their work as stage ``host_string``.
    """

    def __init__(
        self,
        config: Config,
        device_id: int | None = 0,
        *,
        dali_threads: int | None = None,
        string_threads: int | None = None,
        clock: StageClock | None = None,
    ) -> None:
        self.config = config
        self.device_id = device_id
        threads = dali_threads or max(1, min(8, os.cpu_count() or 1))
        self.strings = HostStrings(string_threads or config.gpu_path.host_string_threads(), clock=clock)
        self._lock = threading.Lock()
        self._kernel: Any = None
        self._kernel_lock = threading.Lock()
        if device_id is None:
            self.pinned = PinnedBuffers(config.staging.pinned_bytes, alloc=lambda n: np.empty(n, np.uint8))
            self.pool: Any = None
        else:
            import cupy as cp

            from .staging import _CupyPinnedPool

            self._cp = cp
            self._device = cp.cuda.Device(device_id)
            with self._device:
                self.pool = make_device_pool(config.staging.max_bytes)
                self.stream = cp.cuda.Stream(non_blocking=True)
                pinned_pool = _CupyPinnedPool()

            def alloc(n: int) -> np.ndarray:
                with self._device:  # cudaHostAlloc creates a context on the current device
                    return pinned_pool.alloc(n)

            self.pinned = PinnedBuffers(config.staging.pinned_bytes, alloc=alloc, release=pinned_pool.release)
        self.decoder = DaliDecoder(
            device_id, max_batch=max(1, config.batch_size), num_threads=threads, decoder_args=config.gpu_path.dali_decoder_args()
        )
        self.png: NvcompPngDecoder | None = None
        if device_id is not None and config.png_decoder == "nvcomp" and nvcomp_available():
            self.png = NvcompPngDecoder(device_id, self.stream)
            # its buffers (deflate, inflated rows, pixels, an RGB copy of RGBA) count in the staging budget
            self.transcode_cost = nvcomp_transcode_cost
        self.jpeg = JpegEncoder(device_id)

    # ------------------------------------------------------------------ costs, memory

    passthrough_cost = staticmethod(passthrough_cost)
    transcode_cost = staticmethod(transcode_cost)

    def passthrough_host_cost(self, job: Job) -> int:
        """Pinned host bytes of a passthrough job (input and output staging)."""
        return passthrough_cost(job)

    def is_oom(self, exc: BaseException) -> bool:
        """Whether ``exc`` is an out-of-memory error of the device stack."""
        return is_oom_error(exc)

    def is_fatal(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a sticky CUDA error: the context is dead for CuPy, DALI and nvImageCodec."""
        return is_sticky_error(exc)

    def device_bytes(self) -> int:
        """Device bytes the staging pool holds now."""
        return int(self.pool.total_bytes()) if self.pool is not None else 0

    def release(self) -> None:
        """Free cached memory after an out-of-memory error (CuPy pool blocks, unused pinned blocks, DALI's unused memory)."""
        if self.pool is not None:
            with self._device:
                self.stream.synchronize()
                self.pool.free_all_blocks()
            self.pinned._release()
            try:
                from nvidia.dali import backend as dali_backend

                # DALI's backend.pyi omits it (attr-defined); without DALI the module is Any (unused-ignore)
                dali_backend.ReleaseUnusedMemory()  # type: ignore[attr-defined, unused-ignore]
            except Exception:  # older DALI, or nothing to release
                log.debug("DALI ReleaseUnusedMemory failed", exc_info=True)

    def _in_device(self) -> AbstractContextManager[Any]:
        return self._device if self.device_id is not None else nullcontext()

    @contextmanager
    def _on_device(self) -> Iterator[None]:
        cp = self._cp
        with self._device, cp.cuda.using_allocator(self.pool.malloc), self.stream:
            yield

    @property
    def kernel(self) -> Any:
        """The base64 kernel on this device, loaded on first use (:func:`~gpupipe.gpu.base64_kernel.load_module`)."""
        with self._kernel_lock:
            if self._kernel is None:
                with self._device:
                    from .base64_kernel import get_kernel

                    self._kernel = get_kernel()
            return self._kernel

    # ------------------------------------------------------------------ passthrough

    def passthrough_begin(self, jobs: Sequence[Job], slot: int = 0) -> _PassHandle:
        """Device part of a passthrough batch: the URIs of ``jobs`` in ``slot``'s pinned output buffer."""
        datas = [j.frame.data for j in jobs]
        layout = batch_layout([j.frame.mime for j in jobs], [len(d) for d in datas])
        with self._lock:
            if self.device_id is None:
                host_in = pack_batch(datas, layout, self.pinned.get(f"in{slot}", layout.in_size))
                host_out = self.pinned.get(f"out{slot}", layout.out_size)
                encode_packed(host_in, layout, host_out)
                return _PassHandle(layout, host_out, [j.frame.label for j in jobs])
            return _PassHandle(layout, self._passthrough_device(datas, layout, slot), [j.frame.label for j in jobs])

    def passthrough_end(self, handle: _PassHandle) -> list[Any]:
        """Host part: one ``str`` per URI span (the kernel writes only prefix and alphabet bytes
        into the spans, so no ASCII re-check: one pass, as on the CPU path)."""
        layout = handle.layout
        mv = memoryview(np.ascontiguousarray(handle.host_out).reshape(-1))  # type: ignore[arg-type]
        spans = [layout.span(i) for i in range(layout.n)]
        labels = handle.labels

        def failed(i: int, e: Exception) -> FrameError:
            return FrameError(labels[i], f"building its URI failed: {type(e).__name__}")

        return self.strings.map(
            lambda sp: assemble_uri(mv, sp[0], sp[1], check_ascii=False), spans, [m for _, m in spans], failed
        )

    def passthrough(self, jobs: Sequence[Job]) -> list[Any]:
        """URIs of passthrough jobs: the batch base64-encoded in one kernel launch, one copy back."""
        return self.passthrough_end(self.passthrough_begin(jobs))

    def _passthrough_device(self, datas: list[bytes], layout: Any, slot: int) -> np.ndarray:
        cp = self._cp
        rt = cp.cuda.runtime
        kernel = self.kernel
        table = layout.kernel_table()
        table_off = (layout.in_size + 15) // 16 * 16
        up = table_off + table.nbytes
        host_in = self.pinned.get(f"in{slot}", up)
        pack_batch(datas, layout, host_in)
        host_in[table_off:up] = table.view(np.uint8)
        host_out = self.pinned.get(f"out{slot}", layout.out_size)
        with self._on_device():
            d_in = cp.empty(up, cp.uint8)
            rt.memcpyAsync(d_in.data.ptr, host_in.ctypes.data, up, rt.memcpyHostToDevice, self.stream.ptr)
            d_table = d_in[table_off:up].view(cp.int64)
            d_out = cp.empty(max(layout.out_size, ALIGN), cp.uint8)
            kernel.encode(d_in, layout, d_table=d_table, d_out=d_out, stream=self.stream)
            if layout.out_size:
                rt.memcpyAsync(host_out.ctypes.data, d_out.data.ptr, layout.out_size, rt.memcpyDeviceToHost, self.stream.ptr)
            self.stream.synchronize()
            del d_in, d_out, d_table
        return host_out[: layout.out_size]

    # ------------------------------------------------------------------ transcode

    def transcode_begin(self, jobs: Sequence[Job], slot: int = 0) -> _TransHandle:
        """Device part of a transcode batch: DALI decode (+ resize) on ``slot``'s pipelines."""
        for j in jobs:
            if j.passthrough or j.target != "jpeg":
                raise ValueError(f"{j.frame.label}: the device layer transcodes to JPEG only (got target {j.target!r})")
        with self._lock:
            if self.png is None:
                return _TransHandle(list(jobs), self.decoder.run_batch(jobs, slot))
            return _TransHandle(list(jobs), self._decode_with_png(list(jobs), slot))

    def _decode_with_png(self, jobs: list[Job], slot: int) -> list[Any]:
        """``png_decoder: nvcomp``: 8-bit RGB/RGBA non-interlaced PNG frames without a resize or EXIF
        rotation through nvCOMP + the un-filter kernel (RGB of the decoded pixels), the rest through
        DALI. A PNG the device decoder then fails (damaged data) gets a :class:`FrameDecodeError`,
        which :meth:`transcode_end` turns into the CPU path's result."""
        png = [i for i, j in enumerate(jobs) if _for_device_png(j)]
        out: list[Any] = [None] * len(jobs)
        if png:
            assert self.png is not None
            arrays = self.png.decode([jobs[i].frame.data for i in png])
            for i, a in zip(png, arrays):
                if a is None:
                    out[i] = FrameDecodeError(jobs[i].frame.label, "left to the CPU path by the device PNG decoder")
                else:
                    xp = self._cp if self.device_id is not None else np
                    out[i] = a if a.shape[2] == 3 else xp.ascontiguousarray(a[:, :, :3])
        rest = [i for i in range(len(jobs)) if i not in set(png)]
        if rest:
            for i, r in zip(rest, self.decoder.run_batch([jobs[i] for i in rest], slot)):
                out[i] = r
        return out

    def transcode_encode(self, handle: _TransHandle) -> _Encoded:
        """Device part two: JPEG-encode the decoded frames with nvImageCodec (before their slot runs
        again); the bitstreams come back in host memory. DALI's buffers are not touched afterwards."""
        jobs, decoded = handle.jobs, handle.decoded
        streams: list[Any] = list(decoded)
        ok = [i for i, d in enumerate(decoded) if not isinstance(d, FrameError)]
        by_q: dict[int, list[int]] = {}
        for i in ok:
            by_q.setdefault(jobs[i].quality, []).append(i)
        # DALI's run() (without a CUDA stream) returned host-synchronous outputs: the images are
        # complete, so nvImageCodec needs no synchronisation before it reads them.
        with self._in_device():
            for q, idx in by_q.items():
                for i, cs in zip(idx, self.jpeg.encode([decoded[i] for i in idx], q)):
                    streams[i] = cs
        handle.decoded = []
        return _Encoded(jobs, streams)

    def transcode_strings(self, enc: _Encoded) -> list[Any]:
        """Host part: the URIs of the encoded frames, built on the host-string threads. A frame
        nvImageCodec could not encode is encoded on the CPU path; a frame DALI refused gets the CPU
        path's verdict (Pillow accepts some damage nvImageCodec does not: a PNG missing only IEND,
        a bad IDAT CRC, and the two backends must accept and refuse the same frames)."""
        jobs, streams = enc.jobs, enc.streams
        good = [i for i, cs in enumerate(streams) if cs is not None and not isinstance(cs, FrameError)]
        views = [memoryview(streams[i]) for i in good]

        def failed(k: int, e: Exception) -> FrameError:
            return FrameError(jobs[good[k]].frame.label, f"building its URI failed: {type(e).__name__}")

        built = self.strings.map(lambda v: build_uri("image/jpeg", v), views, [b64_len(v.nbytes) for v in views], failed)
        out: list[Any] = list(streams)
        for i, r in zip(good, built):
            out[i] = r
        enc.streams = []
        for i, r in enumerate(out):
            if r is None:
                out[i] = cpu_fallback(jobs[i], "nvImageCodec could not encode it")
            elif isinstance(r, FrameDecodeError):
                out[i] = _cpu_second_opinion(jobs[i])
        return out

    def transcode_end(self, handle: _TransHandle) -> list[Any]:
        """Device part two and the host part in one call (:meth:`transcode_encode`, :meth:`transcode_strings`)."""
        return self.transcode_strings(self.transcode_encode(handle))

    def transcode(self, jobs: Sequence[Job]) -> list[Any]:
        """URIs of transcode jobs (target ``jpeg``): DALI decode/resize → nvImageCodec JPEG → host base64."""
        return self.transcode_end(self.transcode_begin(jobs))

    # ------------------------------------------------------------------ reports

    def memory(self) -> dict[str, int]:
        """Memory figures in bytes: the device's total and used (``cudaMemGetInfo``: every
        allocation on it, DALI's and nvImageCodec's included, which report none of their own), the
        staging pool's limit, used and held bytes, CuPy's default pool (NVDEC frames, other CuPy
        users), and the pinned staging buffers held, at peak and their limit. Without a device,
        the pinned figures only."""
        d = {
            "pinned_staging_bytes": self.pinned.nbytes,
            "pinned_staging_peak_bytes": self.pinned.peak_nbytes,
            "pinned_staging_limit_bytes": self.pinned.limit,
        }
        if self.device_id is None:
            return d
        cp = self._cp
        with self._device:
            free, total = cp.cuda.runtime.memGetInfo()
            default = cp.get_default_memory_pool()
            d.update(
                device_total_bytes=int(total),
                device_used_bytes=int(total) - int(free),
                staging_pool_limit_bytes=int(self.pool.get_limit()),
                staging_pool_used_bytes=int(self.pool.used_bytes()),
                staging_pool_held_bytes=int(self.pool.total_bytes()),
                cupy_default_pool_used_bytes=int(default.used_bytes()),
                cupy_default_pool_held_bytes=int(default.total_bytes()),
            )
        return d

    def stats(self) -> dict[str, int]:
        """Counters: DALI runs, failed runs, rebuilds, frames refused on the host or by DALI; PNG frames
        decoded (or left to the CPU path) by nvCOMP where ``png_decoder: nvcomp``."""
        st = self.decoder.stats()
        if self.png is not None:
            st.update(nvcomp_png_frames=self.png.frames, nvcomp_png_refused=self.png.refused)
        return st

    def info(self) -> dict[str, Any]:
        """Device name, library versions, memory figures and where the kernel comes from."""
        from .kernel_build import kernel_availability

        d: dict[str, Any] = {"device_id": self.device_id}
        try:
            from nvidia import dali

            d["dali"] = dali.__version__
        except Exception:  # noqa: BLE001
            pass
        try:
            from nvidia import nvimgcodec as nv

            d["nvimgcodec"] = getattr(nv, "__version__", "?")
        except Exception:  # noqa: BLE001
            pass
        if self.device_id is None:
            d["device"] = "none (CPU stand-ins: NumPy base64 twin, DALI cpu backend, nvImageCodec CPU encoder)"
        else:
            cp = self._cp
            props = cp.cuda.runtime.getDeviceProperties(self.device_id)
            name = props["name"]
            d["device"] = name.decode() if isinstance(name, bytes) else str(name)
            d["cupy"] = cp.__version__
            d["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
            d["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
            d["pool_limit_bytes"] = self.pool.get_limit()
            d["pool_used_bytes"] = self.pool.used_bytes()
            d["pool_held_bytes"] = self.pool.total_bytes()
            d["kernel"] = (
                self._kernel.loaded_from if self._kernel is not None else "not loaded yet (loads on the first GPU passthrough)"
            )
            d["kernel_source"] = kernel_availability()[1]
        d["png_decoder_device"] = "nvCOMP inflate + un-filter kernel" if self.png is not None else "DALI (its CPU threads)"
        d["pinned_bytes"] = self.pinned.nbytes
        d["pinned_peak_bytes"] = self.pinned.peak_nbytes
        d["pinned_limit"] = self.pinned.limit
        d.update(self.stats())
        return d

    def close(self) -> None:
        """Release the pipelines, pinned buffers, pooled device memory and the host-string threads."""
        self.strings.close()
        self.decoder.close()
        self.pinned.clear()
        if self.pool is not None:
            with self._device:
                self.stream.synchronize()
                self.pool.free_all_blocks()


def _cpu_second_opinion(job: Job) -> Any:
    from ..cpu import run_job

    try:
        uri = run_job(job)
    except FrameError as e:
        return e
    except MemoryError:
        return FrameDecodeError(job.frame.label, "out of memory while decoding")
    log.info("%s: the GPU decoder refused it but the CPU path decoded it; used the CPU result", job.frame.label)
    return uri
