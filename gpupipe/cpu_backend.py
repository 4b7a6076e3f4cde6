"""The CPU path: Pillow (or Pillow-SIMD) decode, resize and encode, pybase64 into the URI.

Also the fallback on machines without a usable GPU: it takes the same :class:`~gpupipe.plan.Job`
list as the GPU backend and returns the same URIs (passthrough byte-identical; transcodes
within codec tolerance). Frames run on a thread pool sized to the cores: Pillow's codecs and
the URI builder release the GIL.
"""

from __future__ import annotations

import io
import os
from struct import error as struct_error
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import FrameDecodeError, FrameError
from .plan import Job
from .uri import build_uri

__all__ = ["CpuBackend", "run_job", "run_job_guarded", "decode_frame", "resize_image", "encode_image", "pillow_flavour", "StageTimes"]

# Pillow must refuse truncated images rather than pad them with grey (this is its default).
ImageFile.LOAD_TRUNCATED_IMAGES = False


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


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Any decoded mode → ``RGB``, or ``RGBA`` when the image carries alpha."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return _to_8bit(img).convert("RGB")
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("LA", "La", "PA", "RGBa"):
        return img.convert("RGBA")
    if mode == "L" and "transparency" in img.info:
        return img.convert("RGBA")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, F ...


def decode_frame(job: Job) -> Image.Image:
    """Decode a job's frame to an ``RGB`` or ``RGBA`` image with EXIF orientation applied.

    For JPEG sources being scaled down, the DCT-domain draft mode decodes at a reduced scale
    that is still at least the output size. Raises :class:`FrameDecodeError`.
    """
    frame = job.frame
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(frame.data), formats=[frame.kind.upper()])
            if frame.kind == "jpeg" and job.needs_resize:
                w, h = job.out_size
                if frame.orientation in (5, 6, 7, 8):
                    w, h = h, w
                img.draft("RGB", (w, h))
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning, struct_error) as e:
        raise FrameDecodeError(frame.label, f"cannot decode {frame.kind.upper()}: {e}") from None
    if frame.orientation != 1:
        img = ImageOps.exif_transpose(img)
    return _normalise_mode(img)


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to ``size`` with Lanczos (box-reduced first for large factors)."""
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def has_transparency(img: Image.Image) -> bool:
    """True if an ``RGBA`` image has any pixel with alpha below 255."""
    return img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255


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
    return ("image/png" if fmt == "png" else "image/jpeg"), data


def run_job(job: Job, times: StageTimes | None = None) -> str:
    """One job → its data URI, on the CPU."""
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


class CpuBackend:
    """Runs jobs on a thread pool of ``workers`` threads (default: the number of cores)."""

    name = "cpu"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gpupipe-cpu")
        return self._pool

    def run(self, jobs: list[Job]) -> list[str | FrameError]:
        """Each job's URI, or its :class:`FrameError`, in order."""
        if not jobs:
            return []
        if len(jobs) == 1 or self.workers == 1:
            return [run_job_guarded(j) for j in jobs]
        return list(self._executor().map(run_job_guarded, jobs))

    def close(self) -> None:
        """Shut the thread pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def run_job_guarded(job: Job) -> str | FrameError:
    """:func:`run_job`, with the frame's :class:`FrameError` returned instead of raised (also for MemoryError)."""
    try:
        return run_job(job)
    except FrameError as e:
        return e
    except MemoryError:
        return FrameDecodeError(job.frame.label, "out of memory while decoding")
