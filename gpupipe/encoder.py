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
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .admission import Estimate
from .backend import Backend
from .config import Config, load_config
from .cpu import CpuBackend
from .errors import BackendUnavailable, FrameError
from .footprint import Header, read_header
from .memory import allocator_status, release_large_allocations
from .plan import Job, OutputSpec, plan_job
from .sources import Frame, Source, default_max_source_bytes, read_frame, source_label
from .vocabulary import BACKENDS, OUTPUT_FORMATS

__all__ = ["FrameEncoder", "select_backend"]

log = logging.getLogger("gpupipe.encoder")


def select_backend(requested: str, config: Config) -> tuple[str, str]:
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

    ``config`` defaults to :func:`gpupipe.load_config()`; ``backend`` is ``"auto"``, ``"gpu"``
    or ``"cpu"`` (``"auto"`` defers to the config's ``backend``). The chosen backend is
    ``.backend`` and the reason ``.backend_reason``. ``tune_allocator`` fixes glibc's mmap
    threshold (see :mod:`gpupipe.memory`), as :class:`~gpupipe.FramePipeline` does.
    """

    def __init__(self, config: Config | None = None, backend: str = "auto", *, tune_allocator: bool = True) -> None:
        self.config = config if config is not None else load_config()
        self.max_source_bytes: int = self.config.max_source_bytes or default_max_source_bytes(self.config.max_pixels)
        if tune_allocator:
            release_large_allocations()
        requested = backend if backend != "auto" else self.config.backend
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
                self._impl = CpuBackend(self.config.workers)
        else:
            self._impl = CpuBackend(self.config.workers)
        self._io = ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2), thread_name_prefix="gpupipe-read")

    # ------------------------------------------------------------------ settings

    def spec(self, output: str | None = None, size: tuple[int, int] | None = None, quality: int | None = None) -> OutputSpec:
        """The :class:`OutputSpec` for these overrides of the config's ``output`` section."""
        o = self.config.output
        fmt = (output or o.format).lower()
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output must be auto, passthrough, jpeg or png; got {output!r}")
        q = o.jpeg_quality if quality is None else int(quality)
        if not 1 <= q <= 100:
            raise ValueError(f"quality must be between 1 and 100; got {quality!r}")
        sz = o.size if size is None else (int(size[0]), int(size[1]))
        if sz is not None and (sz[0] < 1 or sz[1] < 1):
            raise ValueError(f"size must be positive; got {size!r}")
        return OutputSpec(fmt, sz, q, o.png_compress_level)

    # ------------------------------------------------------------------ encoding

    def read(self, source: Source, digest: bytes | None = None) -> Frame | FrameError:
        """Read and probe one source under this encoder's ``max_pixels``; its :class:`FrameError` is returned, not raised.

        ``digest``: the key digest of in-memory data, when the caller has it (see :func:`~gpupipe.sources.source_label`).
        """
        try:
            return read_frame(source, self.config.max_pixels, digest=digest, max_bytes=self.max_source_bytes)
        except FrameError as e:
            return e

    def read_many(self, sources: Sequence[Source], digests: Sequence[bytes | None] | None = None) -> list[Frame | FrameError]:
        """:meth:`read` for several sources, in parallel on the encoder's I/O threads, in order."""
        ds = list(digests) if digests is not None else [None] * len(sources)
        if len(sources) <= 1:
            return [self.read(s, d) for s, d in zip(sources, ds)]
        return list(self._io.map(self.read, sources, ds))

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
            out.extend(self.encode_jobs(self.read_many(part), spec))
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
        :class:`FrameError` (named ``label``, default :func:`~gpupipe.sources.source_label`) when
        it cannot be opened, has no readable header, or is over ``max_pixels`` or ``max_source_bytes``.
        """
        name = label if label is not None else source_label(source)
        header = read_header(source, name, max_pixels=self.config.max_pixels, max_bytes=self.max_source_bytes)
        return self._impl.footprint(header, spec), header

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

    def stats(self) -> dict[str, int]:
        """The backend's counters: jobs, fallbacks and, on the GPU, staging figures and faults; and
        ``allocator_tuned``: 1 while gpupipe's mmap-threshold tuning is in force, else 0 (see :meth:`info`)."""
        return {**self._impl.stats(), "allocator_tuned": int(allocator_status().applied)}

    def close(self) -> None:
        """Release thread pools and device resources."""
        self._impl.close()
        self._io.shutdown(wait=True)

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
