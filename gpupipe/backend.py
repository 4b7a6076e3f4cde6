"""The backend contract: what :class:`~gpupipe.FrameEncoder` needs from the CPU and GPU paths.

Both :class:`~gpupipe.cpu.CpuBackend` and :class:`~gpupipe.gpu.backend.GpuBackend`
implement it; the encoder reads, probes and plans frames, then hands the same
:class:`~gpupipe.plan.Job` list to whichever backend runs.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .errors import FrameError
from .frames import Header
from .plan import Job, OutputSpec
from .video.decoder import DecoderOpener
from .vocabulary import BackendName, Estimate

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A way to turn planned jobs into data URIs.

    ``name`` is ``"cpu"`` or ``"gpu"``; ``workers`` is how many frames it works on at once on the
    host (the encoder sizes its chunks by it).
    """

    name: BackendName
    workers: int

    def run(self, jobs: list[Job]) -> list[str | FrameError]:
        """Each job's URI, or its :class:`~gpupipe.errors.FrameError`, in order."""
        ...

    def footprint(self, header: Header, spec: OutputSpec) -> Estimate:
        """Bytes (host, or ``(host, device)``) that a frame with ``header`` holds at once under ``spec``."""
        ...

    def info(self) -> dict[str, Any]:
        """What it runs on, for ``gpupipe info`` and reports."""
        ...

    def decoder_opener(self) -> DecoderOpener:
        """How it opens a video decoder for a clip (the GPU's falls back to the CPU's for what it cannot decode)."""
        ...

    def counters(self) -> dict[str, int]:
        """Its counters (jobs, fallbacks, staging figures)."""
        ...

    def device_memory(self) -> dict[str, int]:
        """Device and pinned memory figures in bytes, by name (``{}`` on the CPU backend)."""
        ...

    def close(self) -> None:
        """Release threads and device resources."""
        ...
