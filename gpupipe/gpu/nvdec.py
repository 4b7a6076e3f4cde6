"""The GPU video decoder: NVDEC through NVIDIA's PyNvVideoCodec, with the CPU decoder as its fallback.

:class:`NvdecDecoder` is a :class:`~gpupipe.video.decoder.VideoDecoder`: PyNvVideoCodec's
``SimpleDecoder`` demuxes the clip (its own FFmpeg), decodes on NVDEC into device memory and
converts to interleaved RGB there (``OutputColorType.RGB``); each frame is handed out as a CuPy
array taken over DLPack and copied once (the decoder reuses its surfaces), so it stays on the
device for the JPEG encode. It follows the shared seek rule
(:func:`~gpupipe.video.decoder.must_seek`): forward requests read the next frames
(``get_batch_frames``), others ``seek_to_index`` first (the decoder restarts at the keyframe
before the frame).

:class:`NvdecOpener` opens one per clip, and falls back to the CPU decoder
(:class:`~gpupipe.video.pyav_decoder.PyavDecoder`) for what NVDEC cannot do, counted by reason
(:meth:`NvdecOpener.counters`) and logged once per clip, never an error:

- known before opening (:func:`nvdec_refusal`): codecs NVDEC lacks (ProRes, ...), clips with
  alpha (NVDEC drops the alpha plane), more than 8 bits for VP9/AV1 and 4:2:2/4:4:4 sampling where
  NVDEC does not decode them, sizes past NVDEC's limits;
- asked for a :class:`~gpupipe.video.decoder.Conversion` other than the default (a forced
  matrix, point-sampled chroma): PyNvVideoCodec converts to RGB with the stream's own matrix and
  its own chroma filter and takes no override, so the clip falls back (reason ``conversion``);
- found when opening or decoding the first frame: PyNvVideoCodec's ``PyNvVCExceptionUnsupported``,
  or an error that says the GPU does not support the codec, size or macroblock count
  ("Codec not supported on this GPU", "Resolution not supported on this GPU", "MBCount not
  supported", "Video is too large") or that the stream is not seekable. Once a clip has fallen
  back, its frames come from the CPU decoder until its decoder is closed.

Why PyNvVideoCodec and not DALI's ``fn.readers.video`` / ``fn.experimental.decoders.video``:
random access by index (``seek_to_index``) and sequential batches from one open decoder per clip
match the pool's model (a renderer's schedule: mostly forward, sometimes back), it hands frames
out one at a time without a pipeline's batch and prefetch queue (whose buffers stay outside the
cache's budget), and it exposes typed "unsupported" errors to fall back on. DALI's reader is built
for training epochs over file lists. Which one is faster has not been measured: no GPU was lent
when this was written. **Unverified on a GPU**: the tests run it against a stand-in that fails as
PyNvVideoCodec's documentation and sources say it fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import FrameDecodeError, codec_reason
from ..frames.clip import Clip
from ..frames.source import Pixels
from ..video.decoder import DEFAULT_CONVERSION, Conversion, VideoDecoder, must_seek
from ..video.pyav_decoder import PyavDecoder

__all__ = ["NVDEC_CODECS", "NvdecDecoder", "NvdecOpener", "NvdecRefused", "nvdec_refusal"]

log = logging.getLogger("gpupipe.gpu.nvdec")

NVDEC_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "mjpeg"})
"""FFmpeg codec names NVDEC decodes (PyNvVideoCodec's ``FFmpeg2NvCodecId``)."""

_MAX_SIDE = {"mpeg4": 2032, "mpeg1video": 4080, "mpeg2video": 4080, "vc1": 2048, "mjpeg": 16384}
"""Largest width or height NVDEC takes per codec where it is below 8192 (NVIDIA's NVDEC support
matrix; MPEG-4 Part 2 was refused at 4K on an H200: "Video is too large")."""

_REFUSED_WORDS = ("not supported", "too large", "unsupported", "not seekable")


class NvdecRefused(Exception):
    """NVDEC will not decode a clip; ``reason`` says why (the fallback's counter name)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def nvdec_refusal(clip: Clip) -> str | None:
    """Why NVDEC cannot decode ``clip``, known from its probe; ``None`` when it may."""
    if clip.codec not in NVDEC_CODECS:
        return "codec"
    if clip.alpha:
        return "alpha"
    if "422" in clip.pix_fmt or ("444" in clip.pix_fmt and clip.codec not in ("hevc", "h264", "av1")):
        return "chroma"
    if clip.bit_depth > 8 and clip.codec in ("h264", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "mjpeg", "vp8"):
        return "bit_depth"
    if max(clip.width, clip.height) > _MAX_SIDE.get(clip.codec, 8192):
        return "size"
    return None


def is_refusal(nvc: Any, exc: BaseException) -> bool:
    """Whether ``exc`` from PyNvVideoCodec says NVDEC does not support the clip (not a broken file)."""
    if isinstance(exc, nvc.PyNvVCExceptionUnsupported):
        return True
    text = str(exc).lower()
    return any(w in text for w in _REFUSED_WORDS)


class NvdecDecoder:
    """Frames of ``clip`` decoded by NVDEC on GPU ``gpu`` (see the module docstring).

    ``nvc`` is the ``PyNvVideoCodec`` module and ``to_device`` turns one of its decoded frames
    (DLPack) into an owned device array (default: ``cupy.from_dlpack(frame).copy()``); tests pass
    stand-ins. Raises :class:`NvdecRefused` when NVDEC refuses the clip, and the clip's
    :class:`~gpupipe.errors.FrameDecodeError` for other failures.
    """

    def __init__(self, clip: Clip, gpu: int, nvc: Any, to_device: Callable[[Any], Any] | None = None) -> None:
        self.clip = clip
        self.position: int | None = None
        self.seeks = 0
        self.decoded = 0
        self._nvc = nvc
        self._to_device = to_device or _cupy_copy
        try:
            self._dec = nvc.SimpleDecoder(
                clip.path, gpu_id=gpu, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB
            )
            count = len(self._dec)
        except Exception as e:  # noqa: BLE001 - PyNvVideoCodec raises its own types and plain Exception
            if is_refusal(nvc, e):
                raise NvdecRefused("refused", codec_reason(e)) from None
            raise FrameDecodeError(clip.path, f"NVDEC cannot open the clip: {codec_reason(e)}") from None
        if count and count != clip.frame_count:  # its index and ours disagree: frame numbers would not match
            raise NvdecRefused("frame_count", f"NVDEC counts {count} frames, the probe {clip.frame_count}")

    def frame(
        self, index: int, label: str, fit: tuple[int, int] | None = None, conversion: Conversion = DEFAULT_CONVERSION
    ) -> Pixels:
        """See :meth:`VideoDecoder.frame <gpupipe.video.decoder.VideoDecoder.frame>`; the frame comes at the
        clip's size, whatever ``fit`` (the device fits it in the encode step). Raises
        :class:`NvdecRefused` (``conversion``) for any conversion but the default (module docstring)."""
        if conversion != DEFAULT_CONVERSION:
            raise NvdecRefused("conversion", f"NVDEC converts with the stream's matrix only; asked {conversion}")
        try:
            if self.position is None or must_seek(self.clip, self.position, index):
                self._dec.seek_to_index(index)
                self.seeks += 1
                batch = self._dec.get_batch_frames(1)
            else:
                batch = self._dec.get_batch_frames(index - self.position + 1)
        except Exception as e:  # noqa: BLE001 - PyNvVideoCodec raises its own types and plain Exception
            self.position = None
            if is_refusal(self._nvc, e):
                raise NvdecRefused("refused", codec_reason(e)) from None
            raise FrameDecodeError(label, f"NVDEC cannot decode frame {index}: {codec_reason(e)}") from None
        if not batch:
            self.position = None
            raise FrameDecodeError(label, f"NVDEC returned no frame for frame {index}")
        self.decoded += len(batch)
        self.position = index + 1
        array = _to_rgb8(self._to_device(batch[-1]))
        if self.clip.rotation:
            import cupy

            array = cupy.ascontiguousarray(cupy.rot90(array, self.clip.rotation))
        return Pixels(array, on_device=True)

    def close(self) -> None:
        self._dec = None


class _Fallback:
    """A clip's decoder that starts on NVDEC and moves to the CPU decoder, for good, when NVDEC refuses it."""

    def __init__(self, clip: Clip, opener: NvdecOpener, nvdec: VideoDecoder | None) -> None:
        self.clip = clip
        self._opener = opener
        self._impl: VideoDecoder = nvdec if nvdec is not None else PyavDecoder(clip)
        self.on_gpu = nvdec is not None

    @property
    def position(self) -> int | None:
        return self._impl.position

    @property
    def seeks(self) -> int:
        return self._impl.seeks

    @property
    def decoded(self) -> int:
        return self._impl.decoded

    def frame(
        self, index: int, label: str, fit: tuple[int, int] | None = None, conversion: Conversion = DEFAULT_CONVERSION
    ) -> Pixels:
        try:
            return self._impl.frame(index, label, fit, conversion)
        except NvdecRefused as e:
            self._impl.close()
            self._opener.fell_back(self.clip, e.reason, str(e))
            self._impl = PyavDecoder(self.clip)
            self.on_gpu = False
            return self._impl.frame(index, label, fit, conversion)

    def close(self) -> None:
        self._impl.close()


class NvdecOpener:
    """Opens a decoder per clip for the GPU backend: NVDEC when it can, else the CPU's (see the module docstring).

    ``nvc`` is the ``PyNvVideoCodec`` module, or ``None`` when it is not installed (every clip then
    goes to the CPU decoder, counted as ``no_pynvvideocodec``); ``usable()`` says whether the device
    may still be used (not after a sticky CUDA error). Thread-safe.
    """

    def __init__(
        self,
        gpu: int,
        nvc: Any | None,
        to_device: Callable[[Any], Any] | None = None,
        usable: Callable[[], bool] | None = None,
    ) -> None:
        self.gpu = gpu
        self._nvc = nvc
        self._usable = usable
        self._to_device = to_device
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._logged: set[str] = set()
        self.opened_on_gpu = 0

    def __call__(self, clip: Clip) -> VideoDecoder:
        if self._nvc is None:
            self.fell_back(clip, "no_pynvvideocodec", "PyNvVideoCodec is not installed")
            return PyavDecoder(clip)
        if self._usable is not None and not self._usable():
            self.fell_back(clip, "device_lost", "the GPU was given up after a sticky CUDA error")
            return PyavDecoder(clip)
        reason = nvdec_refusal(clip)
        if reason is not None:
            self.fell_back(clip, reason, f"{clip.codec} {clip.pix_fmt} {clip.width}x{clip.height}")
            return PyavDecoder(clip)
        try:
            nvdec = NvdecDecoder(clip, self.gpu, self._nvc, self._to_device)
        except NvdecRefused as e:
            self.fell_back(clip, e.reason, str(e))
            return PyavDecoder(clip)
        with self._lock:
            self.opened_on_gpu += 1
        return _Fallback(clip, self, nvdec)

    def fell_back(self, clip: Clip, reason: str, detail: str) -> None:
        """Count a clip sent to the CPU decoder, and log it once per clip."""
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            first = clip.path not in self._logged
            self._logged.add(clip.path)
        if first:
            log.info("decoding %s on the CPU: NVDEC cannot (%s)", clip.path, detail)

    def counters(self) -> dict[str, int]:
        """``nvdec_opened`` and ``nvdec_fallback_<reason>`` for each reason met so far."""
        with self._lock:
            return {"nvdec_opened": self.opened_on_gpu, **{f"nvdec_fallback_{k}": v for k, v in self._counts.items()}}


def load_pynvvideocodec() -> Any | None:
    """The ``PyNvVideoCodec`` module, or ``None`` when it is not installed or does not import."""
    try:
        import PyNvVideoCodec
    except Exception:  # noqa: BLE001 - missing, or a broken CUDA install
        return None
    return PyNvVideoCodec


def _cupy_copy(frame: Any) -> Any:
    import cupy

    return cupy.from_dlpack(frame).copy()


def _to_rgb8(array: Any) -> Any:
    """A decoded RGB frame as 8-bit samples (PyNvVideoCodec may hand 16-bit samples out for 10-bit streams)."""
    if array.dtype.itemsize == 2:
        return (array >> 8).astype("uint8")
    return array
