"""The device layer of the GPU backend: the stages that touch CUDA, DALI and nvImageCodec.

:class:`DeviceLayer` implements the two batch operations :class:`~gpupipe.gpu.backend.GpuBackend`
needs, each returning one URI ``str`` (or :class:`~gpupipe.errors.FrameError`) per job:

``passthrough(jobs)``
    pack the frames and their ``data:`` prefixes into one reused pinned host buffer (with the
    kernel's frame table) → one host-to-device copy → the base64 kernel (one launch for the
    batch) → one device-to-host copy of all URIs into a reused pinned buffer → each URI ``str``
    built from its span with :func:`gpupipe.uri.assemble_uri` (one copy).
``transcode(jobs)``
    DALI decode (+ resize) on the device → nvImageCodec JPEG encode from DALI's device buffers →
    the bitstream arrives in host memory → :func:`gpupipe.uri.build_uri` (pybase64 writing
    straight into the final ``str``). Base64 of transcoded frames runs on the host on purpose:
    the JPEG is already on the host (nvImageCodec returns host ``CodeStream`` s), and sending it
    back over PCIe for the kernel and fetching 4/3 of it again costs two transfers plus a
    synchronisation, ~0.2 ms for a 2 MB 4K JPEG at ~25 GB/s, while pybase64 encodes it in
    ~0.4 ms with the final ``str`` written once, and the host string must be written anyway.

With ``device_id=None`` the same layer runs without a GPU: the NumPy twin of the kernel
(:mod:`gpupipe.b64`) instead of CuPy, DALI's CPU backend and nvImageCodec's CPU encoder. That
is how CI exercises the backend's data path end to end; it is not meant to be fast.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from ..b64 import ALIGN, batch_layout, encode_packed, pack_batch, uris_from_buffer
from ..config import Config
from ..errors import FrameDecodeError, FrameError
from ..plan import Job
from ..uri import b64_len, build_uri
from .dali_decode import DaliDecoder, is_oom_error
from .jpeg_encode import JpegEncoder
from .staging import PinnedBuffers, cpu_fallback, make_device_pool

__all__ = ["DeviceLayer", "passthrough_cost", "transcode_cost"]

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


class DeviceLayer:
    """The GPU stages on CUDA device ``device_id``, or their CPU stand-ins when it is ``None``."""

    def __init__(self, config: Config, device_id: int | None = 0, *, dali_threads: int | None = None) -> None:
        self.config = config
        self.device_id = device_id
        threads = dali_threads or max(1, min(8, os.cpu_count() or 1))
        self._lock = threading.Lock()
        if device_id is None:
            self.pinned = PinnedBuffers(config.staging.pinned_bytes, alloc=lambda n: np.empty(n, np.uint8))
            self.pool = None
        else:
            import cupy as cp

            self._cp = cp
            self._device = cp.cuda.Device(device_id)
            with self._device:
                self.pool = make_device_pool(config.staging.max_bytes)
                self.stream = cp.cuda.Stream(non_blocking=True)
                from .base64_kernel import get_kernel

                self.kernel = get_kernel()
            self.pinned = PinnedBuffers(config.staging.pinned_bytes)
        self.decoder = DaliDecoder(device_id, max_batch=max(1, config.batch_size), num_threads=threads)
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

    def release(self) -> None:
        """Free cached device memory after an out-of-memory error (CuPy pool blocks, DALI's unused memory)."""
        if self.pool is not None:
            with self._device:
                self.stream.synchronize()
                self.pool.free_all_blocks()
            try:
                from nvidia.dali import backend as dali_backend

                dali_backend.ReleaseUnusedMemory()
            except Exception:  # noqa: BLE001 - older DALI, or nothing to release
                log.debug("DALI ReleaseUnusedMemory failed", exc_info=True)

    @contextmanager
    def _on_device(self) -> Iterator[None]:
        cp = self._cp
        with self._device, cp.cuda.using_allocator(self.pool.malloc), self.stream:
            yield

    # ------------------------------------------------------------------ passthrough

    def passthrough(self, jobs: Sequence[Job]) -> list[Any]:
        """URIs of passthrough jobs: the batch base64-encoded in one kernel launch, one copy back."""
        datas = [j.frame.data for j in jobs]
        layout = batch_layout([j.frame.mime for j in jobs], [len(d) for d in datas])
        with self._lock:
            if self.device_id is None:
                host_in = pack_batch(datas, layout, self.pinned.get("in", layout.in_size))
                host_out = self.pinned.get("out", layout.out_size)
                encode_packed(host_in, layout, host_out)
                return list(uris_from_buffer(host_out, layout, check_ascii=False))
            return list(self._passthrough_device(datas, layout))

    def _passthrough_device(self, datas: list[bytes], layout: Any) -> list[str]:
        cp = self._cp
        rt = cp.cuda.runtime
        table = layout.kernel_table()
        table_off = (layout.in_size + 15) // 16 * 16
        up = table_off + table.nbytes
        host_in = self.pinned.get("in", up)
        pack_batch(datas, layout, host_in)
        host_in[table_off:up] = table.view(np.uint8)
        host_out = self.pinned.get("out", layout.out_size)
        with self._on_device():
            d_in = cp.empty(up, cp.uint8)
            rt.memcpyAsync(d_in.data.ptr, host_in.ctypes.data, up, rt.memcpyHostToDevice, self.stream.ptr)
            d_table = d_in[table_off:up].view(cp.int64)
            d_out = cp.empty(max(layout.out_size, ALIGN), cp.uint8)
            self.kernel.encode(d_in, layout, d_table=d_table, d_out=d_out, stream=self.stream)
            if layout.out_size:
                rt.memcpyAsync(host_out.ctypes.data, d_out.data.ptr, layout.out_size, rt.memcpyDeviceToHost, self.stream.ptr)
            self.stream.synchronize()
            del d_in, d_out, d_table
        # The kernel writes only prefix and alphabet bytes into the spans (so no ASCII re-check:
        # the host strings take one pass, as on the CPU path).
        return uris_from_buffer(host_out[: layout.out_size], layout, check_ascii=False)

    # ------------------------------------------------------------------ transcode

    def transcode(self, jobs: Sequence[Job]) -> list[Any]:
        """URIs of transcode jobs (target ``jpeg``): DALI decode/resize → nvImageCodec JPEG → host base64."""
        for j in jobs:
            if j.passthrough or j.target != "jpeg":
                raise ValueError(f"{j.frame.label}: the device layer transcodes to JPEG only (got target {j.target!r})")
        with self._lock:
            out = self.decoder.decode(jobs, self._encode_images)
        # A frame DALI refuses gets a second opinion from the CPU path, which decides: Pillow
        # accepts some damage that nvImageCodec does not (a PNG missing only IEND, a bad IDAT CRC),
        # and the two backends must accept and refuse the same frames. Only failing frames pay.
        for i, r in enumerate(out):
            if isinstance(r, FrameDecodeError):
                out[i] = _cpu_second_opinion(jobs[i])
        return out

    def _encode_images(self, jobs: list[Job], images: list[Any]) -> list[Any]:
        """``consume`` for the decoder: JPEG-encode DALI's images (before its next run) and build URIs."""
        out: list[Any] = [None] * len(jobs)
        if self.device_id is not None:
            # DALI writes its outputs on its own stream and nvImageCodec's as_image() defaults to
            # stream 0: finish DALI's work before the encoder reads the images. (Whether DALI's
            # run() already guarantees this has not been checked on a GPU; the sync is cheap here,
            # as this path is synchronous anyway.)
            self._cp.cuda.runtime.deviceSynchronize()
        by_q: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            by_q.setdefault(j.quality, []).append(i)
        for q, idx in by_q.items():
            streams = self.jpeg.encode([images[i] for i in idx], q)
            for i, cs in zip(idx, streams):
                if cs is None:
                    out[i] = cpu_fallback(jobs[i], "nvImageCodec could not encode it")
                else:
                    out[i] = build_uri("image/jpeg", memoryview(cs))
        return out

    # ------------------------------------------------------------------ reports

    def info(self) -> dict[str, Any]:
        """Device name, library versions and memory figures."""
        d: dict[str, Any] = {"device_id": self.device_id}
        try:
            import nvidia.dali as dali

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
        d["pinned_bytes"] = self.pinned.nbytes
        d["pinned_limit"] = self.pinned.limit
        return d

    def close(self) -> None:
        """Release the pipelines, pinned buffers and pooled device memory."""
        self.decoder.close()
        self.pinned.clear()
        if self.pool is not None:
            with self._device:
                self.stream.synchronize()
                self.pool.free_all_blocks()


def _cpu_second_opinion(job: Job) -> Any:
    from ..cpu_backend import run_job

    try:
        uri = run_job(job)
    except FrameError as e:
        return e
    except MemoryError:
        return FrameDecodeError(job.frame.label, "out of memory while decoding")
    log.info("%s: DALI could not decode it but the CPU path could; used the CPU result", job.frame.label)
    return uri
