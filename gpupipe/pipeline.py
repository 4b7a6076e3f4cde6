"""``FramePipeline``: the cache in front of the encoder, as a renderer uses it.

``get(source)`` returns a frame's URI from the cache, or encodes it once (concurrent
requests for the same frame share one encode) and caches it within the byte budget.
``schedule(sources)`` declares the order in which frames will be requested: the cache then
evicts by next use and encodes ahead in batches (see :mod:`gpupipe.schedule`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from .cache import CacheStats, FrameCache, Lease
from .config import Config, load_config
from .encoder import FrameEncoder
from .errors import FrameChanged, FrameError
from .frames import Frame, FrameKey, FrameSource, Header, Source, as_source
from .memory import release_large_allocations, trim_free_memory
from .plan import OutputSpec
from .schedule import ReadAhead, Schedule, SchedulePolicy, Scheduler
from .vocabulary import Estimate

__all__ = ["FramePipeline", "open_pipeline", "schedule_ident"]

log = logging.getLogger("gpupipe.pipeline")


def schedule_ident(key: FrameKey) -> FrameKey:
    """The schedule id of a pipeline cache key: :attr:`FrameKey.schedule_id <gpupipe.frames.FrameKey.schedule_id>`,
    the key without the file's identity, so that a frame declared before it was rewritten still matches its requests."""
    return key.schedule_id


Resolver = Callable[[Source], "str | None"]


class FramePipeline:
    """Serve frame URIs through a :class:`FrameCache`.

    ``resolver(source)``, if given, is asked first: a ``str`` it returns is the answer and the
    cache is not touched; ``None`` falls through to the cache. Output settings (``output``,
    ``size``, ``quality``) default to the encoder's config and are part of every cache key.

    Every encode is admitted by the cache before it starts, with the bytes it will hold
    estimated from the frame's header (:meth:`FrameEncoder.footprint`): cached entries and work
    in flight together stay within ``cache.max_bytes`` however many threads ask at once. The
    state of the video decoders its loads open is kept in the same budget while they stay open
    (see :mod:`gpupipe.video.pool`).
    ``tune_allocator`` fixes glibc's mmap threshold so that evicted URIs return their memory to
    the OS; where that tuning is in force, each load ends with a rate-limited
    :func:`~gpupipe.memory.trim_free_memory` (see :mod:`gpupipe.memory`).

    Schedules (:meth:`schedule`) rank frames for eviction when the cache's policy is a
    :class:`~gpupipe.schedule.SchedulePolicy`, as every :class:`FrameCache` has unless it is given
    another policy; with any other policy (e.g. :class:`~gpupipe.cache.LruPolicy`) they still
    track cursors and statistics and read ahead, but only into free room, and :meth:`schedule`
    logs a warning once per pipeline.
    ``read_ahead`` (positions; default: the config's ``schedule.read_ahead``) is how far ahead of
    each schedule's cursor frames are encoded in the background.
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
        read_ahead: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self.resolver = resolver
        self.spec: OutputSpec = encoder.spec(output, size, quality)
        self.read_ahead = _read_ahead(encoder.config.schedule.read_ahead if read_ahead is None else read_ahead)
        policy = cache.policy
        if isinstance(policy, SchedulePolicy):
            sched = policy.scheduler
            if sched.ident is None:
                sched.ident = schedule_ident
        else:
            sched = Scheduler(schedule_ident)
        self.scheduler: Scheduler = sched
        self._opened: list[Schedule] = []
        self._warned_policy = False
        self._loading = 0  # request-led encodes under way; read-ahead waits for none
        self._idle = threading.Condition()
        if tune_allocator:
            release_large_allocations()

    def key(self, source: Source) -> FrameKey:
        """The cache key of ``source`` under this pipeline's output settings."""
        return FrameKey(as_source(source).key(), self.spec.key())

    def _keyed(self, sources: Sequence[Source]) -> tuple[list[FrameKey], list[FrameSource]]:
        """Each source as a :class:`~gpupipe.frames.FrameSource`, and its cache key."""
        srcs = [as_source(s) for s in sources]
        output = self.spec.key()
        return [FrameKey(s.key(), output) for s in srcs], srcs

    def _loaders(
        self, keys: Sequence[FrameKey], sources: Sequence[FrameSource]
    ) -> tuple[Callable[[FrameKey], str], Callable[[FrameKey], Estimate], Callable[[list[FrameKey]], list[Any]]]:
        """``(label, estimate, load)`` for the cache, over these keys and their sources."""
        by_key: dict[FrameKey, FrameSource] = {}
        for k, s in zip(keys, sources):
            by_key.setdefault(k, s)
        headers: dict[FrameKey, Header] = {}

        def label(k: FrameKey) -> str:
            return by_key[k].label(k.source)

        def estimate(k: FrameKey) -> Estimate:
            est, headers[k] = self.encoder.footprint(by_key[k], self.spec, label(k))
            return est

        def load(ks: list[FrameKey]) -> list[Any]:
            videos = self.encoder.videos.scope(self.cache, fit=self.spec.size)  # decoders opened here count in the budget
            try:
                frames = self.encoder.read_many([by_key[k] for k in ks], [label(k) for k in ks], videos)
                checked = [_check_unchanged(fr, headers.get(k)) for k, fr in zip(ks, frames)]
                return self.encoder.encode_jobs(checked, self.spec)
            finally:
                videos.settle()

        return label, estimate, load

    def _lookup(self, sources: Sequence[Source], hold: bool = False) -> list[Any]:
        """Cached, joined or freshly encoded results for ``sources`` (a URI, a :class:`Lease` on it with
        ``hold``, or an exception each); each request is first shown to the open schedules, and
        counted in those it matched."""
        keys, srcs = self._keyed(sources)
        matched = [self.scheduler.observe(k.schedule_id) for k in keys] if self.scheduler.active else None
        label, estimate, load_keys = self._loaders(keys, srcs)
        led: set[FrameKey] = set()

        def load(ks: list[FrameKey]) -> list[Any]:
            led.update(ks)
            with self._idle:
                self._loading += 1
            try:
                return load_keys(ks)
            finally:
                with self._idle:
                    self._loading -= 1
                    self._idle.notify_all()
                trim_free_memory()

        get = self.cache.lease_many if hold else self.cache.get_or_load_many
        results = get(keys, load, estimate=estimate, label=label)
        if matched is not None:
            for k, m in zip(keys, matched):
                if m:
                    self.scheduler.count(m, hit=k not in led)
                    led.discard(k)  # a second request for it in this call did not encode it again
        return results

    def _wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no request is encoding; whether none is."""
        with self._idle:
            if self._loading:
                self._idle.wait(timeout)
            return not self._loading

    def schedule(self, sources: Iterable[Source], *, read_ahead: int | None = None) -> Schedule:
        """Declare the order in which ``sources`` will be requested (through :meth:`get` / :meth:`get_many`).

        Any iterable of sources (paths or bytes, as :meth:`get` takes them): loops, repeats and
        several interleaved videos included, up to millions of positions. Returns the
        :class:`~gpupipe.schedule.Schedule`; close it (or use it as a context manager) to
        withdraw it. While it is open, requests move its cursor, the cache evicts by next use
        over every open schedule, and up to ``read_ahead`` positions (default: this pipeline's)
        ahead of its cursor are encoded in the background in batches of the config's
        ``batch_size``. Paths are identified by their resolved path (stat'ed once per distinct
        path here), data by its content, both under this pipeline's output settings.
        """
        horizon = self.read_ahead if read_ahead is None else _read_ahead(read_ahead)
        if not isinstance(self.cache.policy, SchedulePolicy) and not self._warned_policy:
            self._warned_policy = True
            log.warning(
                "schedule declared, but the cache's policy (%s) does not evict by schedule: "
                "read-ahead fills free room only; use the default FrameCache policy (SchedulePolicy)",
                type(self.cache.policy).__name__,
            )
        memo: dict[tuple[type, Hashable], FrameKey] = {}
        output = self.spec.key()

        def item(raw: Source) -> tuple[FrameKey, Source]:
            src = as_source(raw)
            m = src.memo()
            mk = (type(src), m)
            sid = memo.get(mk) if m is not None else None
            if sid is None:
                sid = FrameKey(src.key(), output).schedule_id
                if m is not None:
                    memo[mk] = sid
            return sid, raw

        sched = self.scheduler.open(map(item, sources), with_sources=True)
        self._opened = [s for s in self._opened if not s.closed] + [sched]
        if horizon:
            ReadAhead(sched, self._fetcher(sched), horizon, self.encoder.config.batch_size, idle=self._wait_idle).start()
        return sched

    def _fetcher(self, sched: Schedule) -> Callable[[list[Any]], list[str]]:
        """Read-ahead's loader for ``sched``: encodes sources ahead of requests through :meth:`FrameCache.prefetch_many`."""

        def fetch(sources: list[Any]) -> list[str]:
            keys, srcs = self._keyed(sources)
            _, estimate, load = self._loaders(keys, srcs)
            try:
                return list(self.cache.prefetch_many(keys, load, estimate=estimate, outcome=sched.prefetch_outcome))
            finally:
                trim_free_memory()

        return fetch

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

    def lease_many(self, sources: Sequence[Source]) -> list[Lease | FrameError]:
        """:meth:`get_many`, each URI handed out as a :class:`~gpupipe.cache.Lease` (``lease.value``) that
        keeps counting against the byte budget, cached or not, until it is released.

        For a caller that keeps URIs alive for a while after getting them (the frame service sends
        them to slow clients): the lease is taken as each URI is found or made, so its bytes never
        leave the budget in between. Release every lease (``with lease:`` or ``release()``).
        """
        results: list[Any] = [None] * len(sources)
        todo: list[int] = []
        for i, src in enumerate(sources):
            if self.resolver is not None and (hit := self.resolver(src)) is not None:
                results[i] = Lease.detached(hit)
            else:
                todo.append(i)
        for i, r in zip(todo, self._lookup([sources[i] for i in todo], hold=True)):
            if isinstance(r, BaseException) and not isinstance(r, FrameError):
                for other in results:
                    if isinstance(other, Lease):
                        other.release()
                raise r
            results[i] = r
        return results

    def stats(self) -> CacheStats:
        """The cache's statistics."""
        return self.cache.stats()

    def close(self) -> None:
        """Close the schedules opened here (their read-ahead stops), then the encoder."""
        for s in self._opened:
            s.close()
        self._opened = []
        self.encoder.close()

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pipeline(
    config_path: str | os.PathLike[str] | None = None,
    gpu: int | None = None,
    *,
    backend: str | None = None,
    resolver: Resolver | None = None,
    config: Config | None = None,
) -> FramePipeline:
    """A ready :class:`FramePipeline`: config loaded for ``gpu``, encoder and cache built from it
    (the cache's default policy: LRU until a schedule is declared, then by next use). ``backend``:
    ``"auto"``, ``"gpu"`` or ``"cpu"``; ``None`` takes the config's."""
    cfg = config if config is not None else load_config(config_path, gpu)
    encoder = FrameEncoder(cfg, backend=backend)
    cache: FrameCache = FrameCache(cfg.cache.max_entries, cfg.cache.max_bytes, admission_timeout=cfg.cache.admission_timeout)
    return FramePipeline(encoder, cache, resolver)


def _read_ahead(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"read_ahead must be a non-negative integer (positions), got {n!r}")
    return n


def _check_unchanged(frame: Frame | FrameError, header: Header | None) -> Frame | FrameError:
    """``frame``, or :class:`~gpupipe.errors.FrameChanged` when its header is not the one its work
    was estimated from: one parser reads both, so they differ only when the file changed between
    the two reads."""
    if isinstance(frame, FrameError) or header is None or frame.header == header:
        return frame
    return FrameChanged(frame.label, "changed while being read: its header is not the one it was admitted by")
