"""The CuPy base64 kernel: a whole batch of frames into ``data:`` URIs in one launch.

The batch layout (inputs concatenated at 16-byte aligned offsets, prefixes after them; one output
buffer with each URI one contiguous span, payloads 16-byte aligned) and the reference algorithm
are in :mod:`gpupipe.b64`; this kernel must be byte-identical to :func:`gpupipe.b64.encode_packed`.

Design for memory bandwidth: a work item is 48 input bytes (16 groups of 3) → 64 output bytes.
A full item is three 16-byte vector loads and four 16-byte vector stores (both sides aligned by
the layout); the characters are computed four at a time with byte-SIMD intrinsics, no table.
Threads walk the items grid-stride (adjacent threads take adjacent items, so a warp's loads and
stores cover contiguous memory), with the grid sized to fill every SM, so each thread has
several items and many bytes in flight. A thread finds its frame by binary search over the
chunk offsets (a few L1-cached loads). The last, shorter item of a frame is done byte by byte,
and one extra item per frame copies its ``data:<mime>;base64,`` prefix, in the same launch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

import cupy as cp

from ..b64 import BatchLayout

__all__ = ["KERNEL_SOURCE", "Base64Kernel", "get_kernel", "encode_device"]

KERNEL_SOURCE = r"""
#define CHUNK_IN 48
#define CHUNK_OUT 64

__device__ __forceinline__ unsigned int b64_map4(unsigned int idx) {
    // Four packed 6-bit indices -> four ASCII characters (see gpupipe/b64.py).
    unsigned int off = 0x41414141u;
    off = __vadd4(off, __vcmpgeu4(idx, 0x1a1a1a1au) & 0x06060606u);
    off = __vadd4(off, __vcmpgeu4(idx, 0x34343434u) & 0xb5b5b5b5u);
    off = __vadd4(off, __vcmpeq4(idx, 0x3e3e3e3eu) & 0xf1f1f1f1u);
    off = __vadd4(off, __vcmpeq4(idx, 0x3f3f3f3fu) & 0xf4f4f4f4u);
    return __vadd4(idx, off);
}

__device__ __forceinline__ unsigned int b64_group(unsigned int b0, unsigned int b1, unsigned int b2) {
    unsigned int i0 = b0 >> 2;
    unsigned int i1 = ((b0 & 3u) << 4) | (b1 >> 4);
    unsigned int i2 = ((b1 & 15u) << 2) | (b2 >> 6);
    unsigned int i3 = b2 & 63u;
    return b64_map4(i0 | (i1 << 8) | (i2 << 16) | (i3 << 24));
}

extern "C" __global__ void __launch_bounds__(256)
b64_batch(const unsigned char* __restrict__ in,
          unsigned char* __restrict__ out,
          const long long* __restrict__ table,      // n rows: in_off, len, payload, prefix_off, prefix_len
          const long long* __restrict__ chunk_off,  // n + 1
          const int n,
          const long long total_chunks)
{
    const long long total = total_chunks + n;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < total; c += stride) {
        if (c >= total_chunks) {                      // one item per frame: copy its prefix
            const long long* t = table + 5 * (c - total_chunks);
            const unsigned char* p = in + t[3];
            unsigned char* d = out + (t[2] - t[4]);
            for (long long k = 0; k < t[4]; ++k) d[k] = p[k];
            continue;
        }
        int lo = 0, hi = n - 1;                       // the last frame whose first chunk <= c
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (__ldg(chunk_off + mid) <= c) lo = mid; else hi = mid - 1;
        }
        const long long* t = table + 5 * lo;
        const long long k = c - __ldg(chunk_off + lo);
        const long long pos = k * CHUNK_IN;
        const long long r = __ldg(t + 1) - pos;
        const unsigned char* src = in + __ldg(t) + pos;
        unsigned char* dst = out + __ldg(t + 2) + k * CHUNK_OUT;
        if (r >= CHUNK_IN) {
            const uint4* s4 = reinterpret_cast<const uint4*>(src);
            const uint4 a = __ldg(s4), b = __ldg(s4 + 1), e = __ldg(s4 + 2);
            const unsigned int w[12] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, e.x, e.y, e.z, e.w};
            unsigned int o[16];
            #pragma unroll
            for (int j = 0; j < 16; ++j) {
                const int q = 3 * j;
                const unsigned int b0 = (w[q >> 2] >> (8 * (q & 3))) & 0xffu;
                const unsigned int b1 = (w[(q + 1) >> 2] >> (8 * ((q + 1) & 3))) & 0xffu;
                const unsigned int b2 = (w[(q + 2) >> 2] >> (8 * ((q + 2) & 3))) & 0xffu;
                o[j] = b64_group(b0, b1, b2);
            }
            uint4* d4 = reinterpret_cast<uint4*>(dst);
            d4[0] = make_uint4(o[0], o[1], o[2], o[3]);
            d4[1] = make_uint4(o[4], o[5], o[6], o[7]);
            d4[2] = make_uint4(o[8], o[9], o[10], o[11]);
            d4[3] = make_uint4(o[12], o[13], o[14], o[15]);
        } else {                                      // the frame's last, shorter item
            const int rr = (int)r;
            const int full = rr / 3;
            for (int j = 0; j < full; ++j) {
                const unsigned int v = b64_group(src[3 * j], src[3 * j + 1], src[3 * j + 2]);
                dst[4 * j] = v & 0xffu; dst[4 * j + 1] = (v >> 8) & 0xffu;
                dst[4 * j + 2] = (v >> 16) & 0xffu; dst[4 * j + 3] = v >> 24;
            }
            const int rem = rr - 3 * full;
            if (rem) {
                const unsigned int b0 = src[3 * full];
                const unsigned int b1 = rem == 2 ? src[3 * full + 1] : 0u;
                const unsigned int v = b64_group(b0, b1, 0u);
                unsigned char* d = dst + 4 * full;
                d[0] = v & 0xffu; d[1] = (v >> 8) & 0xffu;
                d[2] = rem == 2 ? (unsigned char)((v >> 16) & 0xffu) : (unsigned char)'=';
                d[3] = '=';
            }
        }
    }
}
"""

THREADS = 256
_BLOCKS_PER_SM = 8  # 8 x 256 threads = 2048, the H100's resident-thread limit per SM


class Base64Kernel:
    """The compiled kernel for one device; :meth:`encode` runs a batch in one launch."""

    def __init__(self) -> None:
        self._module = cp.RawModule(code=KERNEL_SOURCE, options=("-std=c++14",))
        self._fn = self._module.get_function("b64_batch")
        dev = cp.cuda.Device()
        self._max_blocks = int(dev.attributes["MultiProcessorCount"]) * _BLOCKS_PER_SM

    def grid(self, items: int) -> int:
        """Blocks to launch for ``items`` work items: enough to fill the device, at most one item per thread."""
        return max(1, min(self._max_blocks, (items + THREADS - 1) // THREADS))

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
            items = layout.total_chunks + layout.n
            if items:
                self._fn(
                    (self.grid(items),),
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
    from ..b64 import batch_layout, pack_batch

    layout = batch_layout(mimes, [len(d) for d in datas])
    host_in = pack_batch(datas, layout)
    d_in = cp.asarray(host_in) if host_in.size else cp.zeros(16, cp.uint8)
    d_out = cp.zeros(max(layout.out_size, 16), cp.uint8)
    get_kernel().encode(d_in, layout, d_out=d_out)
    return cp.asnumpy(d_out[: layout.out_size]), layout
