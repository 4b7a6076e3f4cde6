"""The CPU decoder: FFmpeg through PyAV, one open container and codec context per clip.

Frames come out in display order; each is matched to its display index by its timestamp (the
clip's probe lists them), so B-frames, open-GOP leading frames and variable frame rates need no
special case. Only the frame asked for is converted to RGB (or RGBA for a clip with alpha); the
frames decoded on the way to it are skipped unconverted.

- **Colour.** The conversion is FFmpeg's own (swscale, through ``VideoFrame.to_ndarray``), with
  the matrix (BT.601/709/2020) and range (limited/full) the decoded frame carries from the
  stream's metadata; unspecified is BT.601 limited, as FFmpeg takes it. A load may force the
  matrix and ask for point-sampled chroma (:class:`~gpupipe.video.decoder.Conversion`). 10- and 12-bit streams
  become 8-bit RGB. Against the ``ffmpeg`` 9.0.2 command line (``-pix_fmt rgb24``/``rgba``), on
  the test clips: identical for 8-bit H.264 (4:2:0), ProRes 4444 (12-bit, with alpha) and VP9
  with alpha; for 10-bit HEVC a mean absolute difference of 0.6 per sample, up to 51 on a few
  pixels at hard chroma edges (the two swscale versions, FFmpeg 8.1 in PyAV and 9.0 in the
  command line, interpolate chroma differently there).
- **Alpha.** VP9 (and VP8) with alpha are decoded by ``libvpx-vp9`` (``libvpx``), which reads
  the alpha plane FFmpeg's native decoder drops (the clip's ``decoder``); ProRes 4444 keeps
  alpha with FFmpeg's ``prores`` decoder.
- **Rotation.** The display matrix's rotation is applied in quarter turns, counter-clockwise, as
  ``ffmpeg`` (autorotate) and browsers apply it.
- **Fitted in one pass.** Asked for a frame fitted into a box smaller than the clip, the
  converter scales it while it converts (swscale's Lanczos, from the stored planes: full chroma
  resolution, no full-size RGB frame): at 4K to 1920×1080, 20 ms against 57 ms for the full-size
  conversion plus 117 ms for Pillow's Lanczos on it (a grainy H.264 frame, 2-core Xeon). Against
  that two-step path: luma within 49.6 dB PSNR; RGB within 35 dB on strong chroma grain, as
  swscale filters the stored half-size chroma planes instead of their bilinear upsampling.
- **A frame just passed.** Decoding forward to a frame skips the ones before it unconverted; the
  last one skipped is kept (one more frame in the stream's format, counted in
  :func:`~gpupipe.frames.clip.decoder_state_bytes`), so a request for it, arriving just after a
  request for a later frame (read-ahead and a request racing on one clip), needs no seek.
- **Buffers.** The frame asked for is converted by :class:`~gpupipe.video.rgb.RgbConverter`, into
  a buffer the decoder reuses once the previous frame's array is gone (not a fresh mapping per
  frame): identical pixels to ``to_ndarray``, without its page faults.
- **Threads.** PyAV's default: slice threading with one thread per core where the stream has
  slices. Frame threading would add a full decoder state per thread (measured at 1080p: 40 MiB
  against 23.5 MiB per open decoder).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import FrameDecodeError, codec_reason
from ..frames.clip import Clip
from ..frames.source import Pixels
from ..plan import fit_size
from .decoder import DEFAULT_CONVERSION, Conversion, must_seek
from .rgb import RgbConverter

__all__ = ["PyavDecoder"]

log = logging.getLogger("gpupipe.video")

_How = tuple[tuple[int, int] | None, Conversion]  # the box to fit into, and the YUV->RGB conversion


class PyavDecoder:
    """A :class:`~gpupipe.video.decoder.VideoDecoder` for ``clip`` on the CPU (see the module docstring).

    Opening it opens the file (raises :class:`~gpupipe.errors.FrameDecodeError` if FFmpeg
    cannot); it reads nothing more until a frame is asked for.
    """

    def __init__(self, clip: Clip) -> None:
        import av

        self.clip = clip
        self.position: int | None = None
        self.seeks = 0
        self.decoded = 0
        try:
            self._container: Any = av.open(clip.path, metadata_errors="ignore")
        except av.FFmpegError as e:
            raise FrameDecodeError(clip.path, f"cannot open the clip: {codec_reason(e.strerror or str(e))}") from None
        self._stream = self._container.streams.video[0]
        self._ctx: Any = av.CodecContext.create(clip.decoder, "r") if clip.decoder else self._stream.codec_context
        self._frames: Iterator[Any] | None = None
        self._rgb = RgbConverter("rgba" if clip.alpha else "rgb24")
        self._skipped: tuple[int, Any] | None = None  # the last frame decoded past unconverted
        self._fresh = True  # nothing demuxed yet: the container stands at the clip's start

    # ------------------------------------------------------------------ decoding

    def frame(
        self, index: int, label: str, fit: tuple[int, int] | None = None, conversion: Conversion = DEFAULT_CONVERSION
    ) -> Pixels:
        import av

        how = (fit, conversion)
        try:
            if self._skipped is not None and self._skipped[0] == index:
                frame, self._skipped = self._skipped[1], None
                return self._convert(frame, how)
            if self._frames is None or must_seek(self.clip, self.position, index):
                self._seek(index)
            return self._forward(index, label, how)
        except av.FFmpegError as e:
            self._reset()
            raise FrameDecodeError(label, f"cannot decode frame {index}: {codec_reason(e.strerror or str(e))}") from None

    def _seek(self, index: int) -> None:
        """Start decoding at the keyframe at or before ``index`` (where a fresh decoder stands already
        for the first group of pictures)."""
        key = self.clip.keyframe_before(index)
        if not (self._fresh and key == 0):
            self._flush()
            self._skipped = None
            self._container.seek(self.clip.pts[key], stream=self._stream, backward=True, any_frame=False)
            self.seeks += 1
        self._fresh = False
        self._frames = self._decode()
        self.position = None

    def _forward(self, index: int, label: str, how: _How) -> Pixels:
        """Decode forward to frame ``index`` and convert it; seeks again, to earlier keyframes, if a seek
        landed past it (an index that rounds keyframe times)."""
        assert self._frames is not None
        for frame in self._frames:
            i = self.clip.display_index(frame.pts) if frame.pts is not None else None
            self.decoded += 1
            if i is None:
                log.debug("%s: a decoded frame with timestamp %s is not in the clip's index", label, frame.pts)
                continue
            self.position = i + 1
            if i < index:
                self._skipped = (i, frame)
                continue
            if i == index:
                return self._convert(frame, how)
            return self._retry_earlier(index, i, label, how)
        self._reset()
        raise FrameDecodeError(label, f"the clip's data ends before frame {index} (of {self.clip.frame_count})")

    def _retry_earlier(self, index: int, landed: int, label: str, how: _How) -> Pixels:
        key = self.clip.keyframe_before(index)
        earlier = self.clip.keyframe_before(key - 1) if key > 0 else -1
        if earlier < 0 or landed <= 0:
            self._reset()
            raise FrameDecodeError(label, f"cannot reach frame {index}: decoding resumed at frame {landed}")
        log.debug("%s: seeking for frame %d landed at frame %d; seeking to keyframe %d", label, index, landed, earlier)
        self._flush()
        self._container.seek(self.clip.pts[earlier], stream=self._stream, backward=True, any_frame=False)
        self.seeks += 1
        self._frames = self._decode()
        self.position = None
        return self._forward(index, label, how)

    def _decode(self) -> Iterator[Any]:
        """Every frame from the demuxer's position on, in display order, then the decoder's delayed ones."""
        for packet in self._container.demux(self._stream):
            if packet.size:
                yield from self._ctx.decode(packet)
        yield from self._ctx.decode(None)

    def _convert(self, frame: Any, how: _How) -> Pixels:
        """The frame as 8-bit RGB (RGBA with alpha), upright, fitted into ``how``'s box and converted as its
        :class:`Conversion` says, C-contiguous (in the converter's reused buffer when it is free:
        :mod:`gpupipe.video.rgb`)."""
        fit, conversion = how
        turns = self.clip.rotation
        w, h = frame.width, frame.height
        upright = (h, w) if turns % 2 else (w, h)
        out = fit_size(*upright, fit)
        size = None if out == upright else (out[1], out[0]) if turns % 2 else out
        array = self._rgb.convert(frame, size, conversion)
        if turns:
            array = np.ascontiguousarray(np.rot90(array, turns))
        return Pixels(array)

    def _reset(self) -> None:
        """Forget the position after an error: the next frame seeks."""
        self._frames = None
        self._skipped = None
        self.position = None
        self._flush()

    def _flush(self) -> None:
        """Drop the decoder's buffered frames (before a seek, after an error)."""
        try:
            self._ctx.flush_buffers()
        except Exception:
            log.debug("flushing %s's decoder failed", self.clip.path, exc_info=True)

    def close(self) -> None:
        self._frames = None
        self._skipped = None
        self._rgb.close()
        try:
            self._container.close()
        except Exception:
            log.debug("closing %s failed", self.clip.path, exc_info=True)
