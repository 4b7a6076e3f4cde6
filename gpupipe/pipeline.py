"""``FramePipeline``: the cache in front of the encoder, as a renderer uses it.

``get(source)`` returns a frame's URI from the cache, or encodes it once (concurrent
requests for the same frame share one encode) and caches it within the byte budget.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from .admission import Estimate
from .cache import CacheStats, FrameCache
from .config import Config, load_config
from .encoder import FrameEncoder
from .errors import FrameDecodeError, FrameError
from .footprint import Header
from .memory import release_large_allocations
from .plan import OutputSpec
from .sources import Frame, Source, key_digest, source_key, source_label

__all__ = ["FramePipeline", "open_pipeline"]

Resolver = Callable[[Source], "str | None"]


class FramePipeline:
    """Serve frame URIs through a :class:`FrameCache`.

    ``resolver(source)``, if given, is asked first: a ``str`` it returns is the answer and the
    cache is not touched; ``None`` falls through to the cache. Output settings (``output``,
    ``size``, ``quality``) default to the encoder's config and are part of every cache key.

    Every encode is admitted by the cache before it starts, with the bytes it will hold
    estimated from the frame's header (:meth:`FrameEncoder.footprint`): cached entries and work
    in flight together stay within ``cache.max_bytes`` however many threads ask at once.
    ``tune_allocator`` fixes glibc's mmap threshold so that evicted URIs return their memory to
    the OS (see :mod:`gpupipe.memory`).
    """

    def __init__(
        self,
        encoder: FrameEncoder,
        cache: FrameCache,
        resolver: Resolver | None = None,
        *,
        output: str | None = None,
        size: tuple[int, int] | None = None,
        quality: int | None = None,
        tune_allocator: bool = True,
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self.resolver = resolver
        self.spec: OutputSpec = encoder.spec(output, size, quality)
        if tune_allocator:
            release_large_allocations()

    def key(self, source: Source) -> tuple:
        """The cache key of ``source`` under this pipeline's output settings."""
        return (*source_key(source), *self.spec.key())

    def _lookup(self, sources: Sequence[Source]) -> list[Any]:
        """Cached, joined or freshly encoded results for ``sources`` (a URI or an exception each)."""
        keys = [self.key(s) for s in sources]
        by_key: dict[tuple, Source] = {}
        for k, s in zip(keys, sources):
            by_key.setdefault(k, s)
        headers: dict[tuple, Header] = {}

        def label(k: tuple) -> str:
            return source_label(by_key[k], key_digest(k))

        def estimate(k: tuple) -> Estimate:
            est, headers[k] = self.encoder.footprint(by_key[k], self.spec, label(k))
            return est

        def load(ks: list[tuple]) -> list[Any]:
            frames = self.encoder.read_many([by_key[k] for k in ks], [key_digest(k) for k in ks])
            checked = [_check_unchanged(fr, headers.get(k)) for k, fr in zip(ks, frames)]
            return self.encoder.encode_jobs(checked, self.spec)

        return self.cache.get_or_load_many(keys, load, estimate=estimate, label=label)

    def get(self, source: Source) -> str:
        """The URI of ``source``; raises its :class:`FrameError` (nothing is cached then)."""
        if self.resolver is not None:
            hit = self.resolver(source)
            if hit is not None:
                return hit
        (result,) = self._lookup([source])
        if isinstance(result, BaseException):
            raise result
        return result

    def get_many(self, sources: Sequence[Source]) -> list[str | FrameError]:
        """URIs for several sources, encoding the misses together in batches that fit the budget.

        One result per source, in order: a URI or that frame's :class:`FrameError`. Frames
        that other requests are encoding already are waited for, not encoded again.
        """
        results: list[Any] = [None] * len(sources)
        todo: list[int] = []
        for i, src in enumerate(sources):
            if self.resolver is not None and (hit := self.resolver(src)) is not None:
                results[i] = hit
            else:
                todo.append(i)
        for i, r in zip(todo, self._lookup([sources[i] for i in todo])):
            if isinstance(r, BaseException) and not isinstance(r, FrameError):
                raise r
            results[i] = r
        return results

    def stats(self) -> CacheStats:
        """The cache's statistics."""
        return self.cache.stats()

    def close(self) -> None:
        """Close the encoder."""
        self.encoder.close()

    def __enter__(self) -> "FramePipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pipeline(
    config_path: str | os.PathLike[str] | None = None,
    gpu: int | None = None,
    *,
    backend: str = "auto",
    resolver: Resolver | None = None,
    config: Config | None = None,
) -> FramePipeline:
    """A ready :class:`FramePipeline`: config loaded for ``gpu``, encoder and cache built from it."""
    cfg = config if config is not None else load_config(config_path, gpu)
    encoder = FrameEncoder(cfg, backend=backend)
    cache: FrameCache = FrameCache(cfg.cache.max_entries, cfg.cache.max_bytes, admission_timeout=cfg.cache.admission_timeout)
    return FramePipeline(encoder, cache, resolver)


def _check_unchanged(frame: Frame | FrameError, header: Header | None) -> Frame | FrameError:
    """``frame``, or its error when it is larger than the header its budget was estimated from
    (the file changed between the two reads)."""
    if isinstance(frame, FrameError) or header is None:
        return frame
    if len(frame.data) > header.source_bytes or frame.width * frame.height > header.width * header.height:
        return FrameDecodeError(frame.label, "changed while being read: it is larger than the header it was admitted by")
    return frame
