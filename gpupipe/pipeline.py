"""``FramePipeline``: the cache in front of the encoder, as a renderer uses it.

``get(source)`` returns a frame's URI from the cache, or encodes it once (concurrent
requests for the same frame share one encode) and caches it within the byte budget.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from .cache import CacheStats, FrameCache
from .config import Config, load_config
from .encoder import FrameEncoder, materialize
from .errors import FrameError
from .memory import release_large_allocations
from .plan import OutputSpec
from .sources import Source, key_digest, source_key

__all__ = ["FramePipeline", "open_pipeline"]

Resolver = Callable[[Source], "str | None"]


def _source_size(source: Source) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source).nbytes
    try:
        return os.stat(source).st_size
    except OSError:
        return 0


class FramePipeline:
    """Serve frame URIs through a :class:`FrameCache`.

    ``resolver(source)``, if given, is asked first: a ``str`` it returns is the answer and the
    cache is not touched; ``None`` falls through to the cache. Output settings (``output``,
    ``size``, ``quality``) default to the encoder's config and are part of every cache key.
    ``tune_allocator`` fixes glibc's mmap threshold so that evicted URIs return their memory
    to the OS (see :mod:`gpupipe.memory`: without it a 4K soak's peak RSS overshot budget × 1.15 + base).
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

    def _encode(self, sources: Sequence[Source], keys: Sequence[tuple]) -> list[Any]:
        """Read and encode ``sources`` (whose cache keys are ``keys``) with their in-flight bytes
        reserved in the cache's budget."""
        budget = sum(self.encoder.inflight_estimate(_source_size(s)) for s in sources)
        # In-memory data was hashed for its key; its error label reuses that digest.
        digests = [key_digest(k) for k in keys]
        with self.cache.reserve(budget):
            return self.encoder.encode_jobs(self.encoder.read_many(sources, digests), self.spec)

    def _load(self, source: Source, key: tuple) -> Callable[[], Any]:
        def load() -> Any:
            (result,) = self._encode([source], [key])
            if isinstance(result, FrameError):
                raise result
            return result

        return load

    def get(self, source: Source) -> str:
        """The URI of ``source``; raises its :class:`FrameError` (nothing is cached then)."""
        if self.resolver is not None:
            hit = self.resolver(source)
            if hit is not None:
                return hit
        key = self.key(source)
        return materialize(self.cache.get_or_load(key, self._load(source, key)))

    def get_many(self, sources: Sequence[Source]) -> list[str | FrameError]:
        """URIs for several sources, encoding the misses together as one batch (GPU-friendly).

        One result per source, in order: a URI or that frame's :class:`FrameError`.
        """
        results: list[Any] = [None] * len(sources)
        missing: dict[tuple, list[int]] = {}
        for i, src in enumerate(sources):
            if self.resolver is not None and (hit := self.resolver(src)) is not None:
                results[i] = hit
                continue
            k = self.key(src)
            v = self.cache.get(k)
            if v is not None:
                results[i] = materialize(v)
            else:
                missing.setdefault(k, []).append(i)
        if missing:
            keys = list(missing)
            outs = self._encode([sources[missing[k][0]] for k in keys], keys)
            for k, out in zip(keys, outs):
                if not isinstance(out, FrameError):
                    self.cache.put(k, out)
                    out = materialize(out)
                for i in missing[k]:
                    results[i] = out
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
    cache: FrameCache = FrameCache(cfg.cache.max_entries, cfg.cache.max_bytes)
    return FramePipeline(encoder, cache, resolver)
