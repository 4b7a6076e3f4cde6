"""The CPU path as a backend: decode (:mod:`.decode`), resize (:mod:`.resize`) and encode (:mod:`.encode`) with
Pillow (or Pillow-SIMD), then pybase64 into the URI.

Also the fallback on machines without a usable GPU: it takes the same :class:`~gpupipe.plan.Job`
list as the GPU backend and returns the same URIs (passthrough byte-identical; transcodes
within codec tolerance). Frames run on a thread pool sized to the cores: Pillow's codecs and
the URI builder release the GIL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PIL import Image

from ..errors import FrameDecodeError, FrameError, codec_reason
from ..footprint import cpu_footprint
from ..frames import Header
from ..plan import Job, OutputSpec
from ..uri import build_uri
from ..video.decoder import DecoderOpener
from ..video.pyav_decoder import PyavDecoder
from ..vocabulary import MIME, BackendName, PngDecoder
from .decode import decode_frame, has_transparency, png_decoder_name
from .encode import encode_image, png_encoder_name
from .resize import resize_image

__all__ = ["CpuBackend", "StageTimes", "pillow_flavour", "run_job", "run_job_guarded", "transcode"]

log = logging.getLogger("gpupipe.cpu")


def pillow_flavour() -> str:
    """``"Pillow-SIMD <ver>"`` or ``"Pillow <ver>"``: which one is installed."""
    ver = Image.__version__
    return f"Pillow-SIMD {ver}" if ".post" in ver or "simd" in ver.lower() else f"Pillow {ver}"


class StageTimes(dict):
    """Per-stage seconds for one frame: ``decode``, ``resize``, ``encode``, ``uri``."""


def transcode(job: Job, times: StageTimes | None = None, png_decoder: PngDecoder = "pillow") -> tuple[str, memoryview]:
    """Decode (PNG with ``png_decoder``: :func:`~gpupipe.cpu.decode.decode_frame`), resize and encode
    one job on the CPU; ``(mime, encoded bytes)``."""
    clock = time.perf_counter
    t0 = clock()
    img = decode_frame(job, png_decoder)
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


def _run_job(job: Job, times: StageTimes | None, png_decoder: PngDecoder) -> str:
    if job.passthrough:
        t = time.perf_counter()
        uri = build_uri(job.frame.mime, job.frame.data)
        if times is not None:
            times.update(uri=time.perf_counter() - t)
        return uri
    mime, data = transcode(job, times, png_decoder)
    t = time.perf_counter()
    uri = build_uri(mime, data)
    if times is not None:
        times.update(uri=time.perf_counter() - t)
    return uri


def _unexpected(job: Job, e: BaseException) -> FrameDecodeError:
    """The frame's error for an exception that decoding, resizing or encoding it raised unexpectedly."""
    return FrameDecodeError(job.frame.label, f"cannot transcode {job.frame.kind.upper()}: {type(e).__name__}: {codec_reason(e)}")


def run_job(job: Job, times: StageTimes | None = None, png_decoder: PngDecoder = "pillow") -> str:
    """One job → its data URI, on the CPU.

    Raises the frame's :class:`FrameError`; any other exception from decoding, resizing or
    encoding it (a codec library's ``TypeError``, ``struct.error``, ...) becomes that frame's
    :class:`FrameDecodeError` naming the exception type. ``MemoryError`` propagates.
    """
    try:
        return _run_job(job, times, png_decoder)
    except (FrameError, MemoryError):
        raise
    except Exception as e:  # one frame's failure, whatever its type, stays that frame's
        raise _unexpected(job, e) from e


class CpuBackend:
    """The CPU path as a :class:`~gpupipe.backend.Backend`: jobs on a thread pool of ``workers``
    threads (default: the number of cores); PNG sources decoded with ``png_decoder`` (``nvcomp``
    is a device decoder: here it means Pillow)."""

    name: BackendName = "cpu"

    def __init__(self, workers: int | None = None, png_decoder: PngDecoder = "pillow") -> None:
        self.workers = workers or os.cpu_count() or 1
        self.png_decoder: PngDecoder = "spng" if png_decoder == "spng" else "pillow"
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
            return [run_job_guarded(j, self.png_decoder) for j in jobs]
        return list(self._executor().map(run_job_guarded, jobs, [self.png_decoder] * len(jobs)))

    def submit(self, job: Job) -> Future[str | FrameError]:
        """Run ``job`` on the pool; its future's result is the URI or the :class:`FrameError`."""
        self.jobs += 1
        return self._executor().submit(run_job_guarded, job, self.png_decoder)

    def footprint(self, header: Header, spec: OutputSpec) -> int:
        """Host bytes this path holds at once for such a frame (:func:`~gpupipe.footprint.cpu_footprint`)."""
        return cpu_footprint(header, spec)

    def info(self) -> dict[str, Any]:
        """The codec library, the PNG decoder in effect, the PNG encoder at the default level and the thread count."""
        return {
            "codec": pillow_flavour(),
            "png_decoder": png_decoder_name(self.png_decoder),
            "png_encoder": png_encoder_name(),
            "workers": self.workers,
        }

    def counters(self) -> dict[str, int]:
        """Jobs run so far."""
        return {"cpu_jobs": self.jobs}

    def device_memory(self) -> dict[str, int]:
        """No device: ``{}``."""
        return {}

    def decoder_opener(self) -> DecoderOpener:
        """FFmpeg through PyAV (:class:`~gpupipe.video.pyav_decoder.PyavDecoder`)."""
        return PyavDecoder

    def close(self) -> None:
        """Shut the thread pool down."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def run_job_guarded(job: Job, png_decoder: PngDecoder = "pillow") -> str | FrameError:
    """:func:`run_job`, with the frame's :class:`FrameError` returned instead of raised.

    Never raises for a frame: ``MemoryError`` and any other exception become the frame's
    :class:`FrameDecodeError` (naming the exception type), so one frame cannot sink a batch.
    """
    try:
        return run_job(job, png_decoder=png_decoder)
    except FrameError as e:
        return e
    except MemoryError:
        return FrameDecodeError(job.frame.label, "out of memory while decoding")
    except Exception as e:  # noqa: BLE001 - see run_job; kept here for callers' own job objects
        return _unexpected(job, e)
