"""``FrameEncoder``: sources in, data URIs out, on the GPU or the CPU.

It reads each source, probes its header, plans passthrough or transcode
(:mod:`gpupipe.plan`), and hands the jobs to a backend: :class:`~gpupipe.cpu.CpuBackend`
or the GPU backend in :mod:`gpupipe.gpu`. Batches return one result per source, a URI or the
:class:`~gpupipe.errors.FrameError` for that frame, so a bad frame never sinks the batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .backend import Backend
from .config import Config, load_config
from .cpu import CpuBackend
from .errors import BackendUnavailable, FrameError
from .frames import ClipReader, Frame, FrameSource, Header, Limits, Source, as_source, default_max_source_bytes
from .memory import allocator_status, release_large_allocations
from .plan import Job, OutputSpec, plan_job
from .video import DecoderPool
from .vocabulary import BACKENDS, OUTPUT_FORMATS, QUALITY_MAX, QUALITY_MIN, BackendName, Estimate

__all__ = ["FrameEncoder", "select_backend"]

log = logging.getLogger("gpupipe.encoder")


def select_backend(requested: str, config: Config) -> tuple[BackendName, str]:
    """``(backend, reason)`` for ``requested`` (``auto``/``gpu``/``cpu``).

    ``auto`` picks the GPU when CuPy sees a CUDA device and DALI imports, else the CPU.
    ``gpu`` raises :class:`BackendUnavailable` saying why the GPU path cannot run.
    """
    requested = requested.lower()
    if requested not in BACKENDS:
        raise ValueError(f"backend must be auto, gpu or cpu; got {requested!r}")
    if requested == "cpu":
        return "cpu", "requested"
    from .gpu import gpu_available

    ok, why = gpu_available(config.gpu or 0)
    if ok:
        return "gpu", why
    if requested == "gpu":
        raise BackendUnavailable(f"GPU backend unavailable: {why}")
    return "cpu", f"no usable GPU: {why}"


class FrameEncoder:
    """Turns frames into ``data:image/...;base64,`` URIs.

    ``config`` defaults to :func:`gpupipe.load_config()`; ``backend`` is ``"auto"`` (the GPU when
    usable, else the CPU, as in the config), ``"gpu"`` or ``"cpu"``; ``None`` (the default) takes
    the config's ``backend``. The chosen backend is
    ``.backend`` and the reason ``.backend_reason``. ``tune_allocator`` fixes glibc's mmap
    threshold (see :mod:`gpupipe.memory`), as :class:`~gpupipe.FramePipeline` does.

    Video frames (:class:`gpupipe.VideoFrame`) are decoded through :attr:`videos`, the encoder's
    pool of open decoders (``video.max_decoders``; the backend's decoder, with the CPU's as its
    fallback), frames of one clip in display order.
    """

    def __init__(self, config: Config | None = None, backend: str | None = None, *, tune_allocator: bool = True) -> None:
        self.config = config if config is not None else load_config()
        self.max_source_bytes: int = self.config.max_source_bytes or default_max_source_bytes(self.config.max_pixels)
        self.limits = Limits(self.config.max_pixels, self.max_source_bytes)
        """What a frame may declare before it is refused: the config's ``max_pixels`` and ``max_source_bytes``."""
        if tune_allocator:
            release_large_allocations()
        requested = backend if backend is not None else self.config.backend
        self.backend: BackendName
        self.backend, self.backend_reason = select_backend(requested, self.config)
        self._impl: Backend
        if self.backend == "gpu":
            from .gpu import GpuBackend

            try:
                self._impl = GpuBackend(self.config)
            except Exception as e:  # CUDA/DALI start-up failures have many types
                if requested == "gpu":
                    raise BackendUnavailable(f"GPU backend failed to start: {e}") from e
                log.warning("GPU backend failed to start (%s); using the CPU path", e)
                self.backend, self.backend_reason = "cpu", f"GPU backend failed to start: {e}"
                self._impl = CpuBackend(self.config.workers, self.config.png_decoder)
        else:
            self._impl = CpuBackend(self.config.workers, self.config.png_decoder)
        self._io = ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2), thread_name_prefix="gpupipe-read")
        self.videos = DecoderPool(self.config.video.max_decoders, self._impl.decoder_opener())
        """The pool of open video decoders (:class:`~gpupipe.video.pool.DecoderPool`)."""

    # ------------------------------------------------------------------ settings

    def spec(self, output: str | None = None, size: tuple[int, int] | None = None, quality: int | None = None) -> OutputSpec:
        """The :class:`OutputSpec` for these overrides of the config's ``output`` section."""
        o = self.config.output
        fmt = (output or o.format).lower()
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output must be auto, passthrough, jpeg or png; got {output!r}")
        q = o.jpeg_quality if quality is None else int(quality)
        if not QUALITY_MIN <= q <= QUALITY_MAX:
            raise ValueError(f"quality must be between {QUALITY_MIN} and {QUALITY_MAX}; got {quality!r}")
        sz = o.size if size is None else (int(size[0]), int(size[1]))
        if sz is not None and (sz[0] < 1 or sz[1] < 1):
            raise ValueError(f"size must be positive; got {size!r}")
        return OutputSpec(fmt, sz, q, o.png_compress_level)

    # ------------------------------------------------------------------ encoding

    def read(self, source: Source, label: str | None = None, clips: ClipReader | None = None) -> Frame | FrameError:
        """Read one source under this encoder's :attr:`limits`; its :class:`FrameError` is returned, not raised.

        ``label`` names the frame (default: :meth:`FrameSource.label <gpupipe.frames.FrameSource.label>`);
        a video frame decodes through ``clips`` (default: :attr:`videos`).
        """
        return self._read(as_source(source), label, clips if clips is not None else self.videos)

    def _read(self, src: FrameSource, label: str | None, clips: ClipReader) -> Frame | FrameError:
        try:
            return src.read(src.label() if label is None else label, self.limits, clips)
        except FrameError as e:
            return e

    def read_many(
        self, sources: Sequence[Source], labels: Sequence[str | None] | None = None, clips: ClipReader | None = None
    ) -> list[Frame | FrameError]:
        """:meth:`read` for several sources, in parallel on the encoder's I/O threads, in order.

        Sources that read together (:meth:`FrameSource.read_order <gpupipe.frames.FrameSource.read_order>`:
        a clip's frames) are read by one task, one after another in their order.
        """
        names = list(labels) if labels is not None else [None] * len(sources)
        srcs = [as_source(s) for s in sources]
        reader = clips if clips is not None else self.videos
        groups: dict[Hashable, list[tuple[int, int]]] = {}
        tasks: list[list[int]] = []
        for i, src in enumerate(srcs):
            order = src.read_order()
            if order is None:
                tasks.append([i])
            else:
                groups.setdefault(order[0], []).append((order[1], i))
        tasks += [[i for _, i in sorted(group)] for group in groups.values()]

        def run(task: list[int]) -> list[tuple[int, Frame | FrameError]]:
            return [(i, self._read(srcs[i], names[i], reader)) for i in task]

        out: list[Any] = [None] * len(srcs)
        for done in map(run, tasks) if len(tasks) <= 1 else self._io.map(run, tasks):
            for i, frame in done:
                out[i] = frame
        return out

    def encode_jobs(self, frames: Sequence[Frame | FrameError], spec: OutputSpec) -> list[Any]:
        """Plan and run already-read frames; one URI or FrameError each."""
        results: list[Any] = list(frames)
        jobs: list[Job] = []
        for i, fr in enumerate(frames):
            if isinstance(fr, FrameError):
                continue
            try:
                jobs.append(plan_job(i, fr, spec))
            except FrameError as e:
                results[i] = e
        for job, out in zip(jobs, self._impl.run(jobs)):
            results[job.index] = out
        return results

    def encode_batch(
        self,
        sources: Iterable[Source],
        output: str | None = None,
        size: tuple[int, int] | None = None,
        quality: int | None = None,
    ) -> list[str | FrameError]:
        """One result per source, in order: its URI ``str``, or the :class:`FrameError` that stopped it.

        Sources are processed in chunks of ``max(batch_size, workers)`` so that memory stays
        bounded for long lists.
        """
        spec = self.spec(output, size, quality)
        sources = list(sources)
        chunk = max(self.config.batch_size, self._impl.workers)
        out: list[str | FrameError] = []
        for start in range(0, len(sources), chunk):
            part = sources[start : start + chunk]
            out.extend(self.encode_jobs(self.read_many(part, clips=self.videos.scope(None, fit=spec.size)), spec))
        return out

    def encode(
        self,
        source: Source,
        output: str | None = None,
        size: tuple[int, int] | None = None,
        quality: int | None = None,
    ) -> str:
        """The data URI of one frame; raises its :class:`FrameError` on failure."""
        (result,) = self.encode_batch([source], output, size, quality)
        if isinstance(result, FrameError):
            raise result
        return result

    def footprint(self, source: Source, spec: OutputSpec, label: str | None = None) -> tuple[Estimate, Header]:
        """The bytes that encoding ``source`` under ``spec`` holds at once, from its header alone, and that header.

        ``(host, device)`` bytes on the GPU backend, host bytes on the CPU. Raises the frame's
        :class:`FrameError` (named ``label``, default :meth:`FrameSource.label
        <gpupipe.frames.FrameSource.label>`) when it cannot be opened, has no readable header, or is
        over ``max_pixels`` or ``max_source_bytes``.
        """
        src = as_source(source)
        header = src.header(src.label() if label is None else label, self.limits)
        est = self._impl.footprint(header, spec)
        if header.kind == "pixels":  # its clip's decoder open and counted already: not counted again
            order = src.read_order()
            kept = min(self.videos.kept_for(order[0]), header.scratch_bytes) if order is not None else 0
            est = (max(0, est[0] - kept), est[1]) if isinstance(est, tuple) else max(0, est - kept)
        return est, header

    def warm_up(self) -> float:
        """Start every stage a request can reach, so that no request pays for it; returns the seconds taken.

        Encodes small synthetic JPEG and PNG frames (results dropped, nothing cached) through each
        route of the backend: transcodes with and without a resize, two batches of ``batch_size`` of
        each kind (on the GPU: DALI's pipelines of both overlap slots, nvJPEG, nvImageCodec's encoder), PNG
        output, and passthrough (the base64 kernel with ``passthrough_device: gpu``). A long-lived
        process such as ``gpupipe serve`` calls it once before it accepts requests.
        """
        from .samples import encode_frame, make_frame

        t0 = time.perf_counter()
        pixels = make_frame(64, 48, index=1)
        frames: list[Source] = [encode_frame(pixels, "jpeg"), encode_frame(pixels, "png")]
        read = self.read_many(frames * 2 * max(1, self.config.batch_size))  # two batches of each kind: both slots
        for output, size in (("jpeg", (32, 24)), ("jpeg", None), ("png", None), ("passthrough", None)):
            for r in self.encode_jobs(read, self.spec(output, size)):
                if isinstance(r, FrameError):
                    raise r
        return time.perf_counter() - t0

    def info(self) -> dict[str, Any]:
        """What this encoder runs on, for reports: the backend and why, the backend's own details,
        and ``allocator`` (:meth:`gpupipe.memory.AllocatorStatus.as_dict`: whether the mmap-threshold
        tuning is in force, the malloc in use, and why)."""
        return {
            "backend": self.backend,
            "reason": self.backend_reason,
            **self._impl.info(),
            "allocator": allocator_status().as_dict(),
        }

    def device_memory(self) -> dict[str, int]:
        """Device and pinned memory figures in bytes by name (GPU backend: :meth:`GpuBackend.device_memory
        <gpupipe.gpu.GpuBackend.device_memory>`; ``{}`` on the CPU backend). Also in :meth:`info`."""
        return self._impl.device_memory()

    def counters(self) -> dict[str, int]:
        """The backend's counters: jobs, fallbacks and, on the GPU, staging figures and faults; and
        ``allocator_tuned``: 1 while gpupipe's mmap-threshold tuning is in force, else 0 (see :meth:`info`)."""
        return {**self._impl.counters(), "allocator_tuned": int(allocator_status().applied)}

    def close(self) -> None:
        """Release thread pools, open video decoders and device resources."""
        self.videos.close()
        self._impl.close()
        self._io.shutdown(wait=True)

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
