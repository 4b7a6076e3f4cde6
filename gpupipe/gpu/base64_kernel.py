"""The CuPy base64 kernel: a whole batch of frames into ``data:`` URIs in one launch.

The batch layout (inputs concatenated at 16-byte aligned offsets, prefixes after them; one output
buffer with each URI one contiguous span, payloads 16-byte aligned) and the reference algorithm
are in :mod:`gpupipe.base64_batch`; this kernel must be byte-identical to :func:`gpupipe.base64_batch.encode_packed`.

Design for memory bandwidth (the reasoning is in the header of ``b64_kernel.cu``): a work item
("chunk") is 12 input bytes → 16 characters, three 4-byte loads and one aligned 16-byte store.
Block ``b`` takes a contiguous range of tiles of ``THREADS * CHUNKS_PER_THREAD`` chunks; in a tile,
adjacent threads take adjacent chunks (a warp reads 384 and writes 512 contiguous bytes), and each
thread issues the loads of its ``CHUNKS_PER_THREAD`` chunks before computing any, so that many
bytes are in flight per SM. The characters are computed four at a time in a 32-bit register
(SWAR), no table. A thread finds its frame once by binary search and then only moves forward. One
thread per frame copies its ``data:<mime>;base64,`` prefix and encodes its last ``len % 12``
bytes with the padding, in the same launch. The grid is one wave: the blocks every SM can hold at
once (occupancy API), fewer for a small batch.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import cupy as cp
import numpy as np

from ..base64_batch import BatchLayout
from . import kernel_build

__all__ = ["CHUNKS_PER_THREAD", "KERNEL_FILE", "KERNEL_SOURCE", "Base64Kernel", "encode_device", "get_kernel", "load_module"]

log = logging.getLogger("gpupipe.gpu.kernel")

KERNEL_FILE = kernel_build.KERNEL_FILE
KERNEL_SOURCE = kernel_build.source_path().read_text(encoding="utf-8")
"""The kernel's CUDA C++ source (``gpupipe/gpu/b64_kernel.cu``)."""

THREADS = 256
CHUNKS_PER_THREAD = 4
"""Chunks a thread loads before it computes (``CHUNKS_PER_THREAD`` in ``b64_kernel.cu``)."""
_BLOCKS_PER_SM = 8  # at most 8 x 256 threads = 2048, the H100's resident-thread limit per SM


def load_module() -> tuple[Any, Any, str]:
    """``(module, function, source)`` for the current device: the prebuilt fatbin when it is current
    and the driver accepts it (``source`` ``"prebuilt"``), else the source compiled by CuPy with
    NVRTC (``"nvrtc"``). Loading happens in ``get_function``, so a refused fatbin is seen here."""
    pre = kernel_build.prebuilt_status()
    if pre.usable:
        try:
            module = cp.RawModule(path=str(pre.path))
            return module, module.get_function("b64_batch"), "prebuilt"
        except Exception as e:  # noqa: BLE001 - e.g. CUDA_ERROR_NO_BINARY_FOR_GPU on a device it does not cover
            log.warning("the prebuilt base64 kernel did not load (%s); compiling it with NVRTC", e)
    else:
        log.warning("%s; compiling the base64 kernel with NVRTC", pre.reason)
    module = cp.RawModule(code=KERNEL_SOURCE, options=kernel_build.NVRTC_FLAGS)
    return module, module.get_function("b64_batch"), "nvrtc"


class Base64Kernel:
    """The kernel loaded for one device (``loaded_from``: ``"prebuilt"`` or ``"nvrtc"``);
    :meth:`encode` runs a batch in one launch."""

    def __init__(self) -> None:
        self._module, self._fn, self.loaded_from = load_module()
        dev = cp.cuda.Device()
        try:  # resident blocks per SM at this kernel's register use (nvcc 13.0 for sm_90: 48 registers, so 5)
            per_sm = int(cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(self._fn.kernel.ptr, THREADS, 0))
        except Exception:  # noqa: BLE001 - the occupancy query is an optimisation only
            per_sm = _BLOCKS_PER_SM
        self.blocks_per_sm = max(1, min(per_sm, _BLOCKS_PER_SM))
        self._max_blocks = int(dev.attributes["MultiProcessorCount"]) * self.blocks_per_sm

    def grid(self, chunks: int) -> int:
        """Blocks to launch for ``chunks`` full chunks: one wave that fills the device, and no more
        blocks than tiles of ``THREADS * CHUNKS_PER_THREAD`` chunks (at least one, for the prefixes)."""
        return max(1, min(self._max_blocks, -(-chunks // (THREADS * CHUNKS_PER_THREAD))))

    def encode(
        self,
        d_in: Any,
        layout: BatchLayout,
        d_table: Any | None = None,
        d_out: Any | None = None,
        stream: Any | None = None,
    ) -> Any:
        """Encode the packed input ``d_in`` (device ``uint8``, ``layout.in_size`` bytes) into ``d_out``.

        ``d_table`` is ``layout.kernel_table()`` on the device (uploaded here when ``None``);
        ``d_out`` (device ``uint8``, at least ``layout.out_size`` bytes) is allocated when ``None``.
        Asynchronous on ``stream`` (default: the current stream); returns ``d_out``.
        """
        if d_in.dtype != cp.uint8 or d_in.size < layout.in_size:
            raise ValueError(f"device input too small: {d_in.size} < {layout.in_size} bytes")
        if d_in.data.ptr % 16:
            raise ValueError("device input must be 16-byte aligned")
        stream = stream if stream is not None else cp.cuda.get_current_stream()
        with stream:
            if d_table is None:
                d_table = cp.asarray(layout.kernel_table())
            if d_out is None:
                d_out = cp.empty(max(layout.out_size, 1), cp.uint8)
            elif d_out.dtype != cp.uint8 or d_out.size < layout.out_size:
                raise ValueError(f"device output too small: {d_out.size} < {layout.out_size} bytes")
            if d_out.data.ptr % 16:
                raise ValueError("device output must be 16-byte aligned")
            if layout.n:
                self._fn(
                    (self.grid(layout.total_chunks),),
                    (THREADS,),
                    (d_in, d_out, d_table, d_table[5 * layout.n :], np.int32(layout.n), np.int64(layout.total_chunks)),
                    stream=stream,
                )
        return d_out


_kernels: dict[int, Base64Kernel] = {}
_lock = threading.Lock()


def get_kernel() -> Base64Kernel:
    """The (cached) :class:`Base64Kernel` for the current device."""
    dev = cp.cuda.Device().id
    with _lock:
        k = _kernels.get(dev)
        if k is None:
            k = _kernels[dev] = Base64Kernel()
        return k


def encode_device(datas: list[bytes], mimes: list[str]) -> tuple[np.ndarray, BatchLayout]:
    """Convenience for tests: pack on the host, upload, run the kernel, download; ``(output, layout)``."""
    from ..base64_batch import batch_layout, pack_batch

    layout = batch_layout(mimes, [len(d) for d in datas])
    host_in = pack_batch(datas, layout)
    d_in = cp.asarray(host_in) if host_in.size else cp.zeros(16, cp.uint8)
    d_out = cp.zeros(max(layout.out_size, 16), cp.uint8)
    get_kernel().encode(d_in, layout, d_out=d_out)
    return cp.asnumpy(d_out[: layout.out_size]), layout
