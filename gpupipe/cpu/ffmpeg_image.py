"""RGB frames encoded as the ``ffmpeg`` command writes image files: :class:`FfmpegImageEncoder`.

It stands in for the tail of hyperframes' extraction command, so that gpupipe's files match
FFmpeg's: the same encoders (FFmpeg's own, in this process through PyAV), the same settings.

- **JPEG** (``-q:v N``): ``scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p``
  (full-range BT.601 4:2:0, the chroma point-sampled), then FFmpeg's ``mjpeg`` encoder with the
  fixed quantiser ``N`` (``-q:v 1`` is clamped to the encoder's ``qmin``, 2, as in ffmpeg) and its default optimal Huffman tables, one slice (a threaded encoder would
  cut the picture into slices with restart markers and its default tables: 15 % larger files).
- **PNG** (``-compression_level L``): FFmpeg's ``png`` encoder on ``rgb24`` (``rgba`` with alpha),
  at that zlib level (FFmpeg's default when ``None``).

**Measured** (FFmpeg 9.0.2 binary, imageio-ffmpeg, against PyAV 18.1's FFmpeg 8.1.2; grainy
``testsrc2`` H.264 clips, :func:`gpupipe.tools.video_clips.make_clip`; the RGB given is what
:class:`~gpupipe.video.rgb.RgbConverter` makes with ``Conversion(matrix, point_chroma=True)``,
i.e. hyperframes' ``scale=flags=neighbor+accurate_rnd,format=gbrp``): the JPEGs decode to the
*same pixels* as the binary's (every frame; 640x360 x10, 1920x1080 x6, 3840x2160 x6; forced
bt709 and smpte170m), their files 0.00-0.05 % smaller (the binary's muxer adds a JFIF header).
The PNGs: the same pixels, sizes within 0.02 %. CPU time per frame (``time.process_time``,
median of 6 frames) on the shared 2-core Xeon with other work running, from the RGB array::

    frame        FFmpeg mjpeg q2 (with RGB->YUV)   Pillow q92 (old path)   FFmpeg png L1   Pillow png L1
    1920x1080               17 ms                          6 ms                  64 ms          127 ms
    3840x2160               70 ms                         22 ms                 270 ms          505 ms

(decode plus the RGB conversion: 25-29 ms at 1080p, 107-118 ms at 4K.) The old path (Pillow at
the quality that matched FFmpeg's luma PSNR) was ~40 dB from FFmpeg's files and 35-46 % larger.
Pillow with FFmpeg's quantisation tables (``qtables=``) was the other choice: its quantiser rounds
to nearest where FFmpeg's MPEG-style one biases by 3/8 (smaller files), and libjpeg averages the
2x2 chroma where FFmpeg point-samples, so it cannot give the same pixels or sizes. FFmpeg's
encoder costs ~3x libjpeg-turbo's CPU for JPEG (it is single-sliced here, and does its own
RGB->YUV in swscale); parity won, as the renderer must not see a difference.

Not thread-safe: one encoder per thread (:func:`encoder_for_thread`).
"""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any, Literal

import numpy as np

__all__ = ["FfmpegImageEncoder", "ImageFormat", "encoder_for_thread"]

ImageFormat = Literal["jpeg", "png"]

_JPEG_SCALE = "out_color_matrix=bt601:out_range=pc:flags=neighbor"
_PC = 2  # AVCOL_RANGE_JPEG
_QP2LAMBDA = 118  # FF_QP2LAMBDA: ffmpeg's -q:v N is global_quality N * 118


class FfmpegImageEncoder:
    """Encodes ``H x W x 3`` (``x 4`` for PNG with alpha) uint8 RGB arrays to JPEG or PNG bytes as
    ``ffmpeg`` writes them (see the module docstring). ``qscale``: ``-q:v`` for JPEG (1-31);
    ``compression_level``: PNG's zlib level (0-9, ``None`` for FFmpeg's default)."""

    def __init__(self, fmt: ImageFormat, *, qscale: int = 2, compression_level: int | None = None) -> None:
        if fmt not in ("jpeg", "png"):
            raise ValueError(f"fmt must be jpeg or png; got {fmt!r}")
        if isinstance(qscale, bool) or not isinstance(qscale, int) or not 1 <= qscale <= 31:
            raise ValueError(f"qscale must be an int from 1 to 31; got {qscale!r}")
        if compression_level is not None and not 0 <= compression_level <= 9:
            raise ValueError(f"compression_level must be 0 to 9; got {compression_level!r}")
        self.fmt: ImageFormat = fmt
        self.qscale = qscale
        self.compression_level = compression_level
        self._shape: tuple[int, ...] | None = None
        self._graph: Any = None
        self._codec: Any = None
        self._pts = 0

    def encode(self, rgb: np.ndarray) -> bytes:
        """The image file's bytes for ``rgb`` (C-contiguous ``uint8``)."""
        import av

        shape = tuple(rgb.shape)
        if shape != self._shape:
            self._open(shape)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgba" if shape[2] == 4 else "rgb24")
        frame.pts, frame.time_base = self._pts, Fraction(1, 25)
        self._pts += 1
        if self._graph is not None:
            self._graph.push(frame)
            frame = self._graph.pull()
            frame.color_range = _PC
        packets = self._codec.encode(frame)
        return b"".join(bytes(p) for p in packets)

    def _open(self, shape: tuple[int, ...]) -> None:
        import av

        h, w = shape[0], shape[1]
        alpha = shape[2] == 4
        codec: Any = av.CodecContext.create("mjpeg" if self.fmt == "jpeg" else "png", "w")
        codec.width, codec.height, codec.time_base = w, h, Fraction(1, 25)
        codec.thread_count = 1  # one slice: optimal Huffman tables, no restart markers (module docstring)
        if self.fmt == "jpeg":
            if alpha:
                raise ValueError("JPEG takes RGB, not RGBA")
            codec.pix_fmt, codec.color_range = "yuv420p", _PC
            # ffmpeg -q:v N: AV_CODEC_FLAG_QSCALE and each frame's quality N * FF_QP2LAMBDA, clamped to
            # [qmin, qmax] (2-31). PyAV cannot set a frame's quality: qmin = qmax = N gives the same quantiser.
            q = max(self.qscale, 2)
            codec.qscale = True
            codec.global_quality = q * _QP2LAMBDA
            codec.qmin = codec.qmax = q
            self._graph = _jpeg_graph(w, h)
        else:
            codec.pix_fmt = "rgba" if alpha else "rgb24"
            if self.compression_level is not None:
                codec.options = {"compression_level": str(self.compression_level)}
            self._graph = None
        codec.open()
        self._codec, self._shape, self._pts = codec, shape, 0


def _jpeg_graph(w: int, h: int) -> Any:
    import av

    graph = av.filter.Graph()
    src = graph.add("buffer", video_size=f"{w}x{h}", pix_fmt="rgb24", time_base="1/25", pixel_aspect="1/1")
    prev = src
    for name, args in (("scale", _JPEG_SCALE), ("format", "yuv420p")):
        node = graph.add(name, args)
        prev.link_to(node)
        prev = node
    sink = graph.add("buffersink")
    prev.link_to(sink)
    graph.configure()
    return graph


_local = threading.local()


def encoder_for_thread(fmt: ImageFormat, qscale: int = 2, compression_level: int | None = None) -> FfmpegImageEncoder:
    """This thread's encoder for these settings (made once per thread and settings, reused)."""
    cache: dict[tuple[str, int, int | None], FfmpegImageEncoder] = _local.__dict__.setdefault("encoders", {})
    key = (fmt, qscale, compression_level)
    enc = cache.get(key)
    if enc is None:
        enc = cache[key] = FfmpegImageEncoder(fmt, qscale=qscale, compression_level=compression_level)
    return enc
