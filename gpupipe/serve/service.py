"""The frame service: its lanes, roots, batcher, thread pools, schedules and metrics, behind the endpoints.

A frame request (a :class:`~gpupipe.serve.refs.FrameRef`: a frame file, or a video clip's frame by
index or time) is confined to the roots and routed to its lane (:func:`~gpupipe.serve.lanes.route`,
by the file's real path: every frame of a clip goes to one lane, and its one open decoder).
A request whose frame is cached is answered at once; the others go through the
:class:`~gpupipe.serve.batcher.Batcher`. Blocking work (path checks, ``lease_many``) runs on
thread pools, never on the event loop. Every URI handed out is leased
(:meth:`FramePipeline.lease_many <gpupipe.FramePipeline.lease_many>`): it counts against its
pipeline's byte budget from the moment it is handed out (a cached frame's at once; one its batch
encodes before the encode's reservation is released; see :meth:`FrameCache.lease_many
<gpupipe.FrameCache.lease_many>` for the rest) until the caller releases the lease, even if the
cache evicts it meanwhile, and encodes wait while leased URIs fill the budget.

This module knows nothing of HTTP: :mod:`gpupipe.serve.handlers` turns its answers and errors
into responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from ..cache import Lease
from ..config import ServeConfig
from ..errors import FrameError
from ..frames import Source
from ..pipeline import FramePipeline
from .batcher import Batcher
from .errors import BadParameter, RequestError, RequestTimeout
from .etags import etag_matches, etag_of
from .lanes import Lane, route
from .metrics import ServiceMetrics
from .params import FrameParams
from .pressure import PressureMonitor
from .refs import FrameRef, explain_clip, refuse_image
from .roots import Roots
from .schedules import OpenedSchedule, OpenSchedules

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # aiohttp depends on async-timeout before Python 3.11
    from async_timeout import timeout

__all__ = ["CacheState", "FrameAnswer", "FrameService"]

log = logging.getLogger("gpupipe.serve")

CacheState = Literal["hit", "miss", "revalidated"]
"""What a frame request found: its URI cached, not cached (it was loaded), or the client's copy current."""


@dataclass(frozen=True)
class FrameAnswer:
    """A frame request's answer: its ``etag``, what it found in the cache, and a ``lease`` on the URI
    (``None`` when ``revalidated``: the client's ``If-None-Match`` matched, nothing is sent).
    The holder releases the lease once the URI is sent (``with answer.lease: ...``)."""

    etag: str
    cache: CacheState
    lease: Lease | None


@dataclass
class _Resolved:
    lane: Lane
    view: FramePipeline
    real: str
    source: Source  # what the pipeline is asked for: ``real``, or a VideoFrame of it
    etag: str
    value: Lease | FrameError | None = None  # a lease on the URI (or its error) when the frame was cached


class FrameService:
    """The state behind the endpoints: lanes, roots, batcher, thread pools, schedules and metrics.

    ``pressure_read`` replaces the memory reader of the pressure monitor (tests); ``threshold``
    of ``0`` (``cache.pressure_available: 0``) turns shedding off. :meth:`start` and :meth:`stop`
    run on the event loop that serves the requests.
    """

    def __init__(
        self,
        lanes: Sequence[Lane],
        roots: Roots,
        serve: ServeConfig,
        *,
        pressure_threshold: int = 0,
        pressure_interval: float = 1.0,
        pressure_read: Callable[[], int | None] | None = None,
        batch_slots: int = 2,
    ) -> None:
        if not lanes:
            raise ValueError("a frame service needs at least one pipeline")
        self.lanes = list(lanes)
        self.roots = roots
        self.serve = serve
        self.metrics = ServiceMetrics()
        self.batch_pool = ThreadPoolExecutor(max(2, batch_slots * len(self.lanes)), thread_name_prefix="gpupipe-serve-batch")
        self.lookup_pool = ThreadPoolExecutor(8, thread_name_prefix="gpupipe-serve-lookup")
        self.batcher = Batcher(
            self.batch_pool,
            max_delay=serve.max_batch_delay,
            max_queue=serve.max_queue,
            slots=batch_slots,
            on_batch=self._on_batch,
        )
        self.pressure: PressureMonitor | None = None
        if pressure_threshold > 0:
            kw = {"read": pressure_read} if pressure_read is not None else {}
            self.pressure = PressureMonitor([lane.pipeline.cache for lane in self.lanes], pressure_threshold, **kw)
        self.pressure_interval = pressure_interval
        self._schedules = OpenSchedules(self.lanes, roots, self.lookup_pool)
        self.metrics.watch(self.lanes, self.pressure)
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self.metrics.schedules.set_function(lambda: len(self._schedules))
        self._pressure_task: asyncio.Task | None = None
        self.closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the batcher and the pressure monitor (on the running loop)."""
        self.batcher.start()
        if self.pressure is not None:
            self._pressure_task = asyncio.get_running_loop().create_task(self._watch_pressure(), name="gpupipe-pressure")

    async def stop(self) -> None:
        """Stop background work, close open schedules and the pipelines (after requests in flight are done)."""
        if self.closed:
            return
        self.closed = True
        if self._pressure_task is not None:
            self._pressure_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pressure_task
        await self.batcher.close()
        await self._schedules.close_all()
        self.lookup_pool.shutdown(wait=True)
        self.batch_pool.shutdown(wait=True)
        for lane in self.lanes:
            lane.pipeline.close()

    async def _watch_pressure(self) -> None:
        assert self.pressure is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self.lookup_pool, self.pressure.check)
            except Exception:
                log.exception("memory pressure check failed")
            await asyncio.sleep(self.pressure_interval)

    def _on_batch(self, lane: int, size: int, seconds: float) -> None:
        name = self.lanes[lane].name
        self.metrics.batches.labels(name).inc()
        self.metrics.batch_size.labels(name).observe(size)
        self.metrics.batch_seconds.labels(name).observe(seconds)

    # ------------------------------------------------------------------ frames

    def _resolve(self, ref: FrameRef, params: FrameParams) -> _Resolved:
        """Blocking: confine ``ref.src``, pick its lane and view, tag it, and answer it at once if cached."""
        real = self.roots.resolve(ref.src)
        refuse_image(ref, real)
        lane = self.lanes[route(real, len(self.lanes))]
        try:
            view = lane.view(params.format, params.size, params.quality)
        except ValueError as e:
            raise BadParameter(str(e), ref.src) from None
        source = ref.source(real)
        key = view.key(source)
        res = _Resolved(lane, view, real, source, etag_of(key))
        if view.cache.peek(key) is not None:
            # Through the pipeline (not the cache directly) so that it sees every request.
            (res.value,) = view.lease_many([source])
        return res

    async def frame(
        self,
        ref: FrameRef,
        params: FrameParams,
        *,
        if_none_match: str | None = None,
        on_lookup: Callable[[CacheState], None] | None = None,
    ) -> FrameAnswer:
        """The answer for the frame ``ref`` names under ``params``, within ``serve.request_timeout`` seconds.

        With ``if_none_match`` (the client's header) matching the frame's tag, nothing is leased
        or encoded (``revalidated``). ``on_lookup`` is told what the cache held as soon as that is
        known (before a miss is loaded). Raises the frame's :class:`~gpupipe.errors.FrameError`, or a
        :class:`~gpupipe.serve.errors.RequestError` (bad parameter, path refused, queue full, time limit;
        also ``frame``/``t`` beside an image, and a video clip asked for without them).
        """
        loop = asyncio.get_running_loop()
        note = on_lookup or (lambda _state: None)
        try:
            async with timeout(self.serve.request_timeout):
                res = await loop.run_in_executor(self.lookup_pool, self._resolve, ref, params)
                if etag_matches(if_none_match, res.etag):
                    note("revalidated")
                    if isinstance(res.value, Lease):
                        res.value.release()
                    return FrameAnswer(res.etag, "revalidated", None)
                value = res.value
                state: CacheState = "hit" if value is not None else "miss"
                note(state)
                self.metrics.lookups.labels(state).inc()
                if value is None:
                    lane = self.lanes.index(res.lane)
                    value = await self.batcher.submit(
                        lane, (lane, res.view.spec), res.view.lease_many, res.lane.batch_size, res.source
                    )
                if isinstance(value, FrameError) and not ref.video:
                    raise await loop.run_in_executor(self.lookup_pool, explain_clip, ref, res.real, value)
        except asyncio.TimeoutError:
            self.metrics.timeouts.inc()
            raise RequestTimeout(f"no answer within serve.request_timeout = {self.serve.request_timeout:g} s", ref.src) from None
        except RequestError as e:
            if e.status == 503:
                self.metrics.queue_full.inc()
            raise
        if isinstance(value, BaseException):
            raise value
        return FrameAnswer(res.etag, state, value)

    # ------------------------------------------------------------------ schedules

    @property
    def schedule_count(self) -> int:
        """How many schedules are open."""
        return len(self._schedules)

    async def open_schedule(self, sources: Sequence[FrameRef], params: FrameParams) -> OpenedSchedule:
        """Open a schedule of ``sources`` (see :mod:`gpupipe.serve.schedules`; missing sources are left out and reported)."""
        return await self._schedules.open(sources, params)

    async def close_schedule(self, sid: str) -> None:
        """Withdraw the open schedule ``sid`` (:class:`~gpupipe.serve.errors.ScheduleNotFound` when there is none)."""
        await self._schedules.close(sid)
