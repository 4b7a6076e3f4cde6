"""Decoded frames to RGB (RGBA) arrays in a buffer the decoder reuses: :class:`RgbConverter`.

``VideoFrame.to_ndarray(format="rgb24")`` gives each frame a fresh buffer. Under gpupipe's fixed
mmap threshold (:mod:`gpupipe.memory`) a buffer that large is mapped when allocated and unmapped
when freed, so every frame paid the kernel's page faults on a fresh mapping: 1,519 faults
(6.2 MB) per 1080p frame, which cost more CPU than the conversion itself (docs/BENCHMARKS.md,
"Frames from video"). The converter runs the same conversion (swscale, through an FFmpeg filter
graph of ``scale`` and ``format``) and takes its output from the graph's buffer pool instead: a
buffer is reused once the array handed out with it, and every view of it, is gone.

**Bounded.** The pool keeps at most :attr:`RgbConverter.pooled` buffers
(:data:`POOLED_FRAMES`): while that many arrays it handed out are still alive, the next frame is
converted into a fresh buffer (``to_ndarray``), freed with its array. So an open decoder holds
at most ``pooled`` converted frames besides its own state;
:func:`~gpupipe.frames.clip.decoder_state_bytes` counts one.

**Equal to ``to_ndarray``.** The graph's ``scale`` takes the colour matrix and range from each
frame, as ``to_ndarray`` does, with its bilinear flags, and the chroma siting fixed at ``left``
(``to_ndarray`` ignores a stream's chroma location, which the ``scale`` filter would honour):
the arrays are identical on the test clips (8-bit and 10-bit 4:2:0, 4:4:4 with alpha;
tests/test_video.py compares every frame).

**Scaled.** Given a ``size``, the same graph's ``scale`` also scales to it, with swscale's
Lanczos filter (:data:`SCALE_FLAGS`) from the stored planes, in the same pass.

**Asked conversion** (:class:`~gpupipe.video.decoder.Conversion`). A forced ``matrix`` replaces
the frame's colorspace on the graph's buffer source (as FFmpeg's ``setparams=colorspace=`` does:
``bt709`` is 1, ``bt601`` is 6, ``smpte170m``); the range stays the frame's. ``point_chroma``
runs FFmpeg's ``scale=flags=neighbor+accurate_rnd,format=gbrp`` and then repacks to ``rgb24``
losslessly: the same RGB as hyperframes' chain, sample for sample (a direct YUV->``rgb24``
conversion with the same flags differs: swscale's packed-RGB writer rounds otherwise; measured
43 dB against the planar path on a grainy 640x360 frame).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from .decoder import DEFAULT_CONVERSION, Conversion

__all__ = ["POOLED_FRAMES", "SCALE_FLAGS", "RgbConverter"]

POOLED_FRAMES = 1
"""How many converted frames' buffers an open decoder keeps for reuse: one covers frames asked
for one at a time, in order (a batch of read-ahead gets one pooled frame, the rest fresh)."""

_SCALE = "flags=bilinear:in_chroma_loc=left"
_POINT = "flags=neighbor+accurate_rnd"
_MATRIX_CODES = {"bt709": 1, "bt601": 6}
"""FFmpeg's ``AVColorSpace`` numbers of the forced matrices (``AVCOL_SPC_BT709``, ``AVCOL_SPC_SMPTE170M``)."""
SCALE_FLAGS = "lanczos"
"""swscale's filter when a frame is scaled while converted (Lanczos, as the CPU path's resize)."""


def _refcounts(items: Iterable[Any]) -> list[int]:
    return [sys.getrefcount(item) for item in items]


_UNUSED = _refcounts([object()])[0]
"""What :func:`_refcounts` reads for an object that only its list holds (calibrated, not assumed)."""


class RgbConverter:
    """Converts one clip's decoded frames to ``rgb24`` or ``rgba`` arrays (see the module docstring).

    Not thread-safe (its decoder is used by one thread at a time); the arrays it hands out may be
    dropped on any thread. :meth:`close` frees the graph; buffers still lent out are freed when
    their arrays are. ``fresh`` counts the frames converted into fresh buffers.
    """

    def __init__(self, fmt: str, pooled: int = POOLED_FRAMES) -> None:
        self.fmt = fmt
        self.pooled = pooled
        self.fresh = 0
        self._graph: Any = None
        self._props: tuple[Any, ...] | None = None
        self._lent: list[Any] = []  # the graph's frames handed out, maybe still in use

    def convert(self, frame: Any, size: tuple[int, int] | None = None, conversion: Conversion = DEFAULT_CONVERSION) -> np.ndarray:
        """``frame`` as a C-contiguous ``H × W × C`` uint8 array; scaled to ``size`` (width, height) when
        given; converted as ``conversion`` says (see the module docstring)."""
        self._lent = [f for f, refs in zip(self._lent, _refcounts(self._lent)) if refs > _UNUSED]
        if len(self._lent) >= self.pooled:
            self.fresh += 1
            if size is None and conversion == DEFAULT_CONVERSION:
                return np.ascontiguousarray(frame.to_ndarray(format=self.fmt))
            # a copy: the graph's buffer goes back at once
            return np.array(self._run(frame, size, conversion).to_ndarray(), order="C")
        out = self._run(frame, size, conversion)
        array = out.to_ndarray()
        if not array.flags.c_contiguous:  # rows padded for alignment: the encoders take a contiguous copy
            self.fresh += 1
            return np.ascontiguousarray(array)
        self._lent.append(out)
        return array

    def _run(self, frame: Any, size: tuple[int, int] | None, conversion: Conversion) -> Any:
        props = (frame.width, frame.height, frame.format.name, int(frame.colorspace), int(frame.color_range), size, conversion)
        if self._graph is None or props != self._props:
            self._graph, self._props = self._build(frame, size, conversion), props
        self._graph.push(frame)
        return self._graph.pull()

    def _build(self, frame: Any, size: tuple[int, int] | None, conversion: Conversion) -> Any:
        import av

        colorspace = _MATRIX_CODES.get(conversion.matrix, int(frame.colorspace))
        graph = av.filter.Graph()
        src = graph.add(
            "buffer",
            video_size=f"{frame.width}x{frame.height}",
            pix_fmt=str(int(frame.format)),
            time_base=str(frame.time_base or "1/1000"),
            pixel_aspect="1/1",
            colorspace=str(colorspace),
            range=str(int(frame.color_range)),
        )
        if size is not None:
            chain = [("scale", f"w={size[0]}:h={size[1]}:flags={SCALE_FLAGS}:in_chroma_loc=left")]
        elif conversion.point_chroma:
            chain = [("scale", _POINT), ("format", "gbrap" if self.fmt == "rgba" else "gbrp")]
        else:
            chain = [("scale", _SCALE)]
        prev = src
        for name, args in [*chain, ("format", self.fmt), ("buffersink", None)]:
            node = graph.add(name, args) if args is not None else graph.add(name)
            prev.link_to(node)
            prev = node
        graph.configure()
        return graph

    def close(self) -> None:
        """Free the graph (and its idle buffers)."""
        self._graph = self._props = None
        self._lent = []
