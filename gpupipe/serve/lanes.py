"""Lanes: the service's pipelines (one per GPU, or the CPU's), and which lane serves a frame.

A frame always goes to the same lane (:func:`route`: a stable hash of its real path), so each
frame is cached, and counted against a byte budget, once on the box.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

from ..pipeline import FramePipeline

__all__ = ["MAX_VIEWS", "Lane", "route"]

log = logging.getLogger("gpupipe.serve")

MAX_VIEWS = 256  # output settings kept per lane


class Lane:
    """One pipeline of the service (a GPU's, or the CPU's) and its views for other output settings.

    A *view* is a pipeline of the same class on the same encoder and cache with other
    ``output``/``size``/``quality``: the cache keys carry the settings, so views share one budget.
    At most :data:`MAX_VIEWS` views are kept (the least recently used is dropped; its entries stay cached).
    """

    def __init__(self, name: str, pipeline: FramePipeline) -> None:
        self.name = name
        self.pipeline = pipeline
        self.backend: str = pipeline.encoder.backend
        self.batch_size: int = max(1, int(pipeline.encoder.config.batch_size))
        self._views: OrderedDict[tuple, FramePipeline] = OrderedDict()
        self._lock = threading.Lock()  # views are asked for from several lookup threads

    def view(self, fmt: str | None, size: tuple[int, int] | None, quality: int | None) -> FramePipeline:
        """The pipeline for these output settings (``None``: the config's); ``ValueError`` for invalid ones."""
        spec = self.pipeline.encoder.spec(fmt, size, quality)
        if spec == self.pipeline.spec:
            return self.pipeline
        key = spec.key()
        with self._lock:
            v = self._views.get(key)
            if v is None:
                v = type(self.pipeline)(
                    self.pipeline.encoder,
                    self.pipeline.cache,
                    self.pipeline.resolver,
                    output=spec.format,
                    size=spec.size,
                    quality=spec.quality,
                    tune_allocator=False,
                )
                self._views[key] = v
                while len(self._views) > MAX_VIEWS:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(key)
            return v

    def device_memory(self) -> dict[str, int]:
        """The backend's device and pinned memory figures in bytes; ``{}`` on the CPU or where it reports none."""
        try:
            return dict(self.pipeline.encoder.device_memory())
        except Exception:
            log.debug("device memory report failed", exc_info=True)
            return {}

    def backend_stats(self) -> dict[str, Any]:
        """The backend's counters (jobs, fallbacks, staging figures); ``{}`` where it reports none."""
        try:
            return dict(self.pipeline.encoder.counters())
        except Exception:
            log.debug("backend stats failed", exc_info=True)
            return {}


def route(real_path: str, n: int) -> int:
    """The lane of a frame: a stable hash (BLAKE2b) of its real path, modulo the lane count ``n``."""
    if n == 1:
        return 0
    h = hashlib.blake2b(real_path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "big") % n
