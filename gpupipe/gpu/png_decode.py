"""PNG decode on the device (``png_decoder: nvcomp``): nvCOMP batched inflate, then the CuPy
un-filter kernel (``png_unfilter.cu``; its NumPy twin is :mod:`gpupipe.png_unfilter`).

For each batch: the PNGs' raw deflate streams (:func:`gpupipe.png_stream.png_stream`: IDAT chunks
concatenated, zlib header and Adler-32 stripped) are packed into one pinned host buffer and copied
to the device once; nvCOMP's ``Codec(algorithm="Deflate", bitstream_kind=RAW)`` inflates them as
one batch (one stream per frame) into one device buffer, each frame's output of exactly the size its
IHDR implies; the kernel un-filters all frames in one launch (one block per frame). The result is
one ``H×W×C`` ``uint8`` CuPy array per frame (RGB or RGBA), views of one device buffer.

Only 8-bit RGB/RGBA non-interlaced PNGs are decoded here (:func:`gpupipe.png_stream.device_decodable`);
for the others, and for any frame whose inflate or filter bytes fail (a stream that inflates short leaves rows whose
filter byte is the 0xFF the buffer was filled with, which the kernel refuses; a batch nvCOMP
refuses goes whole), the result is ``None`` and the caller sends the frame to the CPU path, which
decides whether it is damaged. Not detected: a stream cut inside its last row's pixels (the
Adler-32 is not checked); Pillow refuses such a file, the device path would show the rest as 0xFF.

NOT YET RUN ON A GPU: written against nvCOMP 5.3's Python API (``nvidia-nvcomp-cu13``, the version
DALI 2.4 pins ``nvidia-libnvcomp-cu13`` to) and CuPy 14; ``scripts/gpu_session.sh`` step ``png``
measures it. A deflate stream is inflated serially, so each 4K frame (~33 MB inflated) is one
long nvCOMP chunk: the measurement decides whether that pays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..png_stream import PngStream, device_decodable, png_stream
from ..png_unfilter import UNFILTER_BAND
from .faults import is_oom_error, is_sticky_error

__all__ = ["NvcompPngDecoder", "nvcomp_available"]

log = logging.getLogger("gpupipe.gpu.png")

_KERNEL_PATH = Path(__file__).with_name("png_unfilter.cu")


def nvcomp_available() -> bool:
    """Whether nvCOMP's Python module imports (``nvidia-nvcomp-cu13``)."""
    try:
        from nvidia import nvcomp  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a wheel whose libraries do not load
        return False
    return True


class NvcompPngDecoder:
    """Batched PNG decode on CUDA device ``device_id`` with CuPy stream ``stream`` (the caller's)."""

    def __init__(self, device_id: int, stream: Any) -> None:
        import cupy as cp
        from nvidia import nvcomp

        self._cp = cp
        self._nvcomp = nvcomp
        self.device_id = device_id
        self.stream = stream
        with cp.cuda.Device(device_id):
            self._codec = nvcomp.Codec(
                algorithm="Deflate", bitstream_kind=nvcomp.BitstreamKind.RAW, device_id=device_id, cuda_stream=stream.ptr
            )
            self._kernel = cp.RawModule(code=_KERNEL_PATH.read_text()).get_function("png_unfilter")
        self._lock = threading.Lock()  # a Codec must not be used from two threads at once
        self.frames = 0
        self.refused = 0

    def decode(self, datas: Sequence[bytes | memoryview]) -> list[Any]:
        """One ``H×W×C`` CuPy array per PNG (valid until the caller frees it), or ``None`` for one
        that goes to the CPU path. Synchronous on ``stream``."""
        streams: list[PngStream | None] = []
        for d in datas:
            try:
                s = png_stream(d)
            except ValueError:
                s = None
            streams.append(s if s is not None and device_decodable(s.header, s.has_trns) else None)
        idx = [i for i, s in enumerate(streams) if s is not None]
        out: list[Any] = [None] * len(datas)
        if not idx:
            return out
        with self._lock, self._cp.cuda.Device(self.device_id), self.stream:
            arrays = self._decode([streams[i] for i in idx])  # type: ignore[misc]
        for i, a in zip(idx, arrays):
            out[i] = a
        self.frames += sum(a is not None for a in arrays)
        self.refused += len(datas) - sum(a is not None for a in out)
        return out

    def _decode(self, streams: list[PngStream]) -> list[Any]:
        cp, nvcomp = self._cp, self._nvcomp
        comp_sizes = [len(s.deflate) for s in streams]
        infl_sizes = [s.header.filtered_size for s in streams]
        out_sizes = [s.header.height * s.header.row_bytes for s in streams]
        comp_off = np.concatenate([[0], np.cumsum(comp_sizes)]).astype(np.int64)
        infl_off = np.concatenate([[0], np.cumsum(infl_sizes)]).astype(np.int64)
        dst_off = np.concatenate([[0], np.cumsum(out_sizes)]).astype(np.int64)
        host = cp.cuda.alloc_pinned_memory(int(comp_off[-1]))
        packed = np.frombuffer(host, np.uint8, int(comp_off[-1]))
        for s, o in zip(streams, comp_off):
            packed[o : o + len(s.deflate)] = np.frombuffer(s.deflate, np.uint8)
        d_comp = cp.empty(int(comp_off[-1]), cp.uint8)
        d_comp.set(packed, stream=self.stream)
        # 0xFF is no filter type: the rows of a stream that inflates short keep it, and the kernel refuses them
        d_infl = cp.full(int(infl_off[-1]), 0xFF, cp.uint8)
        srcs = [nvcomp.as_array(d_comp[comp_off[k] : comp_off[k + 1]], self.stream.ptr) for k in range(len(streams))]
        outs = [d_infl[infl_off[k] : infl_off[k + 1]] for k in range(len(streams))]
        try:
            decoded = self._codec.decode(srcs, out=outs)
        except Exception as e:
            if is_oom_error(e) or is_sticky_error(e):
                raise
            log.info(
                "nvCOMP could not inflate a batch of %d PNGs (%s: %s); they go to the CPU path", len(streams), type(e).__name__, e
            )
            return [None] * len(streams)
        ok = [int(a.buffer_size) == infl_sizes[k] for k, a in enumerate(decoded)]
        dims = np.array([[s.header.height, s.header.row_bytes, s.header.bpp] for s in streams], np.int32)
        d_dims = cp.asarray(dims)
        d_src_off = cp.asarray(infl_off[:-1])
        d_dst_off = cp.asarray(dst_off[:-1])
        d_status = cp.zeros(len(streams), cp.int32)
        d_out = cp.empty(int(dst_off[-1]), cp.uint8)
        block = min(UNFILTER_BAND, max(s.header.height for s in streams))
        self._kernel((len(streams),), (block,), (d_infl, d_out, d_src_off, d_dst_off, d_dims, d_status))
        status = cp.asnumpy(d_status, stream=self.stream)
        self.stream.synchronize()
        res: list[Any] = []
        for k, s in enumerate(streams):
            h = s.header
            if not ok[k] or status[k]:
                res.append(None)
            else:
                res.append(d_out[dst_off[k] : dst_off[k + 1]].reshape(h.height, h.width, h.channels))
        return res
