"""The CPU path: Pillow (or Pillow-SIMD) decode, resize and encode, pybase64 into the URI.

Also the fallback on machines without a usable GPU: it takes the same :class:`~gpupipe.plan.Job`
list as the GPU backend and returns the same URIs (passthrough byte-identical; transcodes
within codec tolerance). Frames run on a thread pool sized to the cores: Pillow's codecs and
the URI builder release the GIL.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from struct import error as struct_error
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from .errors import FrameDecodeError, FrameError
from .footprint import Header, cpu_footprint
from .plan import Job, OutputSpec
from .sources import Frame
from .uri import build_uri
from .vocabulary import MIME

__all__ = [
    "CpuBackend",
    "StageTimes",
    "decode_frame",
    "encode_image",
    "pillow_flavour",
    "resize_image",
    "run_job",
    "run_job_guarded",
]

log = logging.getLogger("gpupipe.cpu")

# Pillow must refuse truncated images rather than pad them with grey (this is its default).
ImageFile.LOAD_TRUNCATED_IMAGES = False

_T = Image.Transpose
# EXIF orientation -> the transpose that shows the stored pixels upright (as ImageOps.exif_transpose maps them).
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: _T.FLIP_LEFT_RIGHT,
    3: _T.ROTATE_180,
    4: _T.FLIP_TOP_BOTTOM,
    5: _T.TRANSPOSE,
    6: _T.ROTATE_270,
    7: _T.TRANSVERSE,
    8: _T.ROTATE_90,
}


def pillow_flavour() -> str:
    """``"Pillow-SIMD <ver>"`` or ``"Pillow <ver>"``: which one is installed."""
    ver = Image.__version__
    return f"Pillow-SIMD {ver}" if ".post" in ver or "simd" in ver.lower() else f"Pillow {ver}"


class StageTimes(dict):
    """Per-stage seconds for one frame: ``decode``, ``resize``, ``encode``, ``uri``."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer gray → 8-bit by scaling (Pillow's ``convert`` would clip)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or arr.dtype == np.uint16:
        return Image.fromarray((arr >> 8).astype(np.uint8), "L")
    return Image.fromarray(np.clip(arr, 0, 65535).astype(np.uint32).__rshift__(8).astype(np.uint8), "L")


def _png_bit_depth(frame: Frame | None) -> int:
    """The PNG's bit depth from its IHDR (8 for anything else)."""
    if frame is None or frame.kind != "png" or len(frame.data) < 26:
        return 8
    return frame.data[24]


def _rgb16_low_bytes(frame: Frame) -> np.ndarray | None:
    """The low bytes of a 16-bit RGB PNG's samples (Pillow's ``RGB`` keeps only the high bytes).

    Decodes the PNG a second time with Pillow's little-endian 16-bit unpacker over the same
    (big-endian) data, which takes the other byte of each sample; the unfiltering is the same.
    ``None`` if Pillow's tile does not look as expected (the caller then compares high bytes).
    """
    try:
        im = Image.open(io.BytesIO(frame.data), formats=["PNG"])
        (tile,) = im.tile
        if tile[3] != "RGB;16B":
            raise ValueError(f"unexpected raw mode {tile[3]!r}")
        # Pillow's tiles are named tuples; older Pillow and Pillow-SIMD builds use plain tuples.
        im.tile = [tile._replace(args="RGB;16L") if hasattr(tile, "_replace") else (*tile[:3], "RGB;16L")]  # type: ignore[list-item]
        im.load()
        return np.asarray(im)
    except Exception as e:  # noqa: BLE001 - a Pillow whose internals differ: fall back, do not fail
        log.debug("%s: no 16-bit low bytes from Pillow (%s: %s)", frame.label, type(e).__name__, e)
        return None


def _key_transparency(img: Image.Image, frame: Frame | None) -> Image.Image | None:
    """``RGBA`` for an image whose PNG ``tRNS`` chunk names one transparent gray level or colour;
    ``None`` when it has none.

    A pixel is transparent when its *stored* sample values equal the key exactly, as libpng
    and browsers decide it: 16-bit keys are compared with all 16 bits, and 1/2/4-bit gray
    keys with the sample before Pillow scales it to 8 bits.
    """
    key = img.info.get("transparency")
    mode = img.mode
    if key is None or mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "RGB"):
        return None
    depth = _png_bit_depth(frame)
    if mode == "RGB":
        if not (isinstance(key, tuple) and len(key) == 3):
            return None
        hi = np.asarray(img)
        k = np.array(key, np.int64)
        lo = _rgb16_low_bytes(frame) if depth == 16 and frame is not None else None
        if depth == 16 and lo is not None:
            mask = np.all((hi == (k >> 8)) & (lo == (k & 0xFF)), axis=-1)
        elif depth == 16:
            mask = np.all(hi == (k >> 8), axis=-1)  # Pillow without the expected unpacker: the high bytes only
        else:
            mask = np.all(hi == k, axis=-1)
        base = img
    elif mode.startswith("I"):
        if not isinstance(key, int):
            return None
        mask = np.asarray(img) == key
        base = _to_8bit(img)
    else:
        if not isinstance(key, int):
            return None
        if mode == "L" and depth in (2, 4) and key <= (1 << depth) - 1:
            key *= 255 // ((1 << depth) - 1)  # Pillow scales the samples of 2/4-bit gray, not the key
        base = img.convert("L")
        mask = np.asarray(base) == key
    out = base.convert("RGBA")
    out.putalpha(Image.fromarray(np.where(mask, 0, 255).astype(np.uint8), "L"))
    return out


def _normalise_mode(img: Image.Image, frame: Frame | None = None) -> Image.Image:
    """Any decoded mode → ``RGB``, or ``RGBA`` when the image carries alpha.

    Alpha comes from an alpha channel, a palette's ``tRNS`` entries, or the one transparent
    gray level or colour of a gray or truecolour PNG's ``tRNS`` chunk (any bit depth).
    """
    mode = img.mode
    keyed = _key_transparency(img, frame)
    if keyed is not None:
        return keyed
    if mode in ("RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return _to_8bit(img).convert("RGB")
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("LA", "La", "PA", "RGBa"):
        return img.convert("RGBA")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, F ...


def decode_frame(job: Job) -> Image.Image:
    """Decode a job's frame to an ``RGB`` or ``RGBA`` image with EXIF orientation applied.

    The orientation is the one the header probe read (:attr:`Frame.orientation
    <gpupipe.sources.Frame.orientation>`), applied with :meth:`PIL.Image.Image.transpose`; the
    EXIF data is not parsed again, so malformed metadata can never fail a frame (an unusable
    orientation was already read as 1, as browsers read it). For JPEG sources being scaled
    down, the DCT-domain draft mode decodes at a reduced scale that is still at least the
    output size. Raises :class:`FrameDecodeError`.
    """
    frame = job.frame
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(frame.data), formats=[frame.kind.upper()])
            if frame.kind == "jpeg" and job.needs_resize:
                w, h = job.out_size
                if frame.orientation in (5, 6, 7, 8):
                    w, h = h, w
                img.draft("RGB", (w, h))
            img.load()
            img = _normalise_mode(img, frame)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning, struct_error) as e:
        raise FrameDecodeError(frame.label, f"cannot decode {frame.kind.upper()}: {e}") from None
    method = ORIENTATION_TRANSPOSE.get(frame.orientation)
    return img if method is None else img.transpose(method)


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to ``size`` with Lanczos (box-reduced first for large factors)."""
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def has_transparency(img: Image.Image) -> bool:
    """True if an ``RGBA`` image has any pixel with alpha below 255."""
    if img.mode != "RGBA":
        return False
    lo, _hi = img.getchannel("A").getextrema()
    return isinstance(lo, (int, float)) and lo < 255


def encode_image(img: Image.Image, fmt: str, quality: int, png_compress_level: int) -> memoryview:
    """Encode to ``"jpeg"`` (RGB) or ``"png"``; returns the encoded bytes (no copy)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=png_compress_level)
    return buf.getbuffer()


def transcode(job: Job, times: StageTimes | None = None) -> tuple[str, memoryview]:
    """Decode, resize and encode one job on the CPU; ``(mime, encoded bytes)``."""
    clock = time.perf_counter
    t0 = clock()
    img = decode_frame(job)
    t1 = clock()
    img = resize_image(img, job.out_size)
    t2 = clock()
    fmt = job.target
    if fmt == "auto":
        fmt = "png" if has_transparency(img) else "jpeg"
    data = encode_image(img, fmt, job.quality, job.png_compress_level)
    t3 = clock()
    if times is not None:
        times.update(decode=t1 - t0, resize=t2 - t1, encode=t3 - t2)
    return MIME["png" if fmt == "png" else "jpeg"], data


def _run_job(job: Job, times: StageTimes | None) -> str:
    if job.passthrough:
        t = time.perf_counter()
        uri = build_uri(job.frame.mime, job.frame.data)
        if times is not None:
            times.update(uri=time.perf_counter() - t)
        return uri
    mime, data = transcode(job, times)
    t = time.perf_counter()
    uri = build_uri(mime, data)
    if times is not None:
        times.update(uri=time.perf_counter() - t)
    return uri


def _unexpected(job: Job, e: BaseException) -> FrameDecodeError:
    """The frame's error for an exception that decoding, resizing or encoding it raised unexpectedly."""
    return FrameDecodeError(job.frame.label, f"cannot transcode {job.frame.kind.upper()}: {type(e).__name__}: {e}")


def run_job(job: Job, times: StageTimes | None = None) -> str:
    """One job → its data URI, on the CPU.

    Raises the frame's :class:`FrameError`; any other exception from decoding, resizing or
    encoding it (a codec library's ``TypeError``, ``struct.error``, ...) becomes that frame's
    :class:`FrameDecodeError` naming the exception type. ``MemoryError`` propagates.
    """
    try:
        return _run_job(job, times)
    except (FrameError, MemoryError):
        raise
    except Exception as e:  # one frame's failure, whatever its type, stays that frame's
        raise _unexpected(job, e) from e


class CpuBackend:
    """The CPU path as a :class:`~gpupipe.backend.Backend`: jobs on a thread pool of ``workers``
    threads (default: the number of cores)."""

    name = "cpu"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.jobs = 0

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gpupipe-cpu")
            return self._pool

    def run(self, jobs: list[Job]) -> list[str | FrameError]:
        """Each job's URI, or its :class:`FrameError`, in order."""
        self.jobs += len(jobs)
        if len(jobs) <= 1 or self.workers == 1:
            return [run_job_guarded(j) for j in jobs]
        return list(self._executor().map(run_job_guarded, jobs))

    def submit(self, job: Job) -> Future[str | FrameError]:
        """Run ``job`` on the pool; its future's result is the URI or the :class:`FrameError`."""
        self.jobs += 1
        return self._executor().submit(run_job_guarded, job)

    def footprint(self, header: Header, spec: OutputSpec) -> int:
        """Host bytes this path holds at once for such a frame (:func:`~gpupipe.footprint.cpu_footprint`)."""
        return cpu_footprint(header, spec)

    def info(self) -> dict[str, Any]:
        """The codec library and the thread count."""
        return {"codec": pillow_flavour(), "workers": self.workers}

    def stats(self) -> dict[str, int]:
        """Jobs run so far."""
        return {"cpu_jobs": self.jobs}

    def close(self) -> None:
        """Shut the thread pool down."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def run_job_guarded(job: Job) -> str | FrameError:
    """:func:`run_job`, with the frame's :class:`FrameError` returned instead of raised.

    Never raises for a frame: ``MemoryError`` and any other exception become the frame's
    :class:`FrameDecodeError` (naming the exception type), so one frame cannot sink a batch.
    """
    try:
        return run_job(job)
    except FrameError as e:
        return e
    except MemoryError:
        return FrameDecodeError(job.frame.label, "out of memory while decoding")
    except Exception as e:  # noqa: BLE001 - see run_job; kept here for callers' own job objects
        return _unexpected(job, e)
