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
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["POOLED_FRAMES", "SCALE_FLAGS", "RgbConverter"]

POOLED_FRAMES = 1
"""How many converted frames' buffers an open decoder keeps for reuse: one covers frames asked
for one at a time, in order (a batch of read-ahead gets one pooled frame, the rest fresh)."""

_SCALE = "flags=bilinear:in_chroma_loc=left"
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

    def convert(self, frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
        """``frame`` as a C-contiguous ``H × W × C`` uint8 array; scaled to ``size`` (width, height) when given."""
        self._lent = [f for f, refs in zip(self._lent, _refcounts(self._lent)) if refs > _UNUSED]
        if len(self._lent) >= self.pooled:
            self.fresh += 1
            if size is None:
                return np.ascontiguousarray(frame.to_ndarray(format=self.fmt))
            return np.array(self._run(frame, size).to_ndarray(), order="C")  # a copy: the graph's buffer goes back at once
        out = self._run(frame, size)
        array = out.to_ndarray()
        if not array.flags.c_contiguous:  # rows padded for alignment: the encoders take a contiguous copy
            self.fresh += 1
            return np.ascontiguousarray(array)
        self._lent.append(out)
        return array

    def _run(self, frame: Any, size: tuple[int, int] | None) -> Any:
        props = (frame.width, frame.height, frame.format.name, int(frame.colorspace), int(frame.color_range), size)
        if self._graph is None or props != self._props:
            self._graph, self._props = self._build(frame, size), props
        self._graph.push(frame)
        return self._graph.pull()

    def _build(self, frame: Any, size: tuple[int, int] | None) -> Any:
        import av

        graph = av.filter.Graph()
        src = graph.add(
            "buffer",
            video_size=f"{frame.width}x{frame.height}",
            pix_fmt=str(int(frame.format)),
            time_base=str(frame.time_base or "1/1000"),
            pixel_aspect="1/1",
            colorspace=str(int(frame.colorspace)),
            range=str(int(frame.color_range)),
        )
        scale = graph.add("scale", _SCALE if size is None else f"w={size[0]}:h={size[1]}:flags={SCALE_FLAGS}:in_chroma_loc=left")
        fmt = graph.add("format", self.fmt)
        sink = graph.add("buffersink")
        src.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        return graph

    def close(self) -> None:
        """Free the graph (and its idle buffers)."""
        self._graph = self._props = None
        self._lent = []
