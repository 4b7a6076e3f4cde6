"""The frame service's HTTP application (aiohttp): endpoints, errors, streaming, access log.

Endpoints (all ``GET`` unless said):

- ``/v1/uri?src=PATH[&format=auto|passthrough|jpeg|png][&size=WxH][&quality=N]``: the frame's
  data URI as ``text/plain``.
- ``/v1/image?src=PATH[...]``: the encoded image bytes (``image/jpeg`` or ``image/png``) with
  ``Content-Length``, ``Cache-Control: no-cache`` and a weak ``ETag`` of the file's identity and
  the output settings; ``If-None-Match`` with that tag is answered 304 without encoding.
- ``POST /v1/schedules`` with ``{"sources": [...], "format", "size", "quality"}``: declares the
  order in which frames will be requested (``FramePipeline.schedule``), answered 201
  ``{"id": ...}``; ``DELETE /v1/schedules/{id}`` withdraws it. 501 where the pipeline has no
  ``schedule``.
- ``/metrics`` (Prometheus text) and ``/healthz``.

Frames are routed to a pipeline (one per GPU, or the CPU pipeline) by a stable hash of their
real path. A request whose frame is cached is answered at once; the others go through the
:class:`~gpupipe.serve.batcher.Batcher`. Blocking work (path checks, ``get_many``) runs on
thread pools, never on the event loop. Bodies are streamed in chunks of at most
``CHUNK`` bytes, each of which the client must take within ``serve.send_timeout`` seconds, so
a slow client holds at most about one chunk of the server's memory beyond the URI it is sent.
That URI stays alive until it is sent even if the cache evicts it meanwhile, so it is leased
(:meth:`FramePipeline.lease_many <gpupipe.FramePipeline.lease_many>`): it counts against the
pipeline's byte budget until the last byte is written or the client is gone, from the moment it
is handed out (a cached frame's at once; one its batch encodes before the encode's reservation is
released; see :meth:`FrameCache.lease_many <gpupipe.FrameCache.lease_many>` for the rest), and
encodes wait while URIs being sent fill the budget. The chunk being written (at most ``CHUNK``
bytes per connection) is outside the budget.

Errors are JSON ``{"error", "type", "src"}``: 400 bad parameters, 403 outside every root,
404 no such frame, 413 ``FrameTooLarge``, 422 ``FrameDecodeError``, 503 queue full, byte
budget full or ``FrameChanged`` (the file changed while it was read; all three with
``Retry-After``: ask again), 504 request time limit, 500 anything else (logged, never a stack
trace to the client).

A client that closes its connection before its answer is sent is counted (metrics, access log)
with status :data:`CLIENT_CLOSED` (499, "client closed request"), not as an error of the service.

Pages of other origins may read the answers as ``serve.cors_origins`` allows
(:mod:`gpupipe.serve.cors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pybase64
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..cache import Lease
from ..config import ServeConfig
from ..errors import FrameError
from ..memory import allocator_status
from ..pipeline import FramePipeline
from .batcher import Batcher
from .cors import CorsPolicy, setup_cors
from .errors import (
    BadParameter,
    RequestError,
    RequestTimeout,
    ScheduleNotFound,
    SchedulesUnsupported,
    TooManySchedules,
    retry_after_of,
    status_of,
)
from .metrics import ServiceMetrics
from .pressure import PressureMonitor
from .roots import Roots

__all__ = [
    "CHUNK",
    "CLIENT_CLOSED",
    "MAX_SCHEDULES",
    "MAX_SCHEDULE_SOURCES",
    "FrameService",
    "JsonAccessLogger",
    "Lane",
    "create_app",
]

log = logging.getLogger("gpupipe.serve")
access_log = logging.getLogger("gpupipe.serve.access")

CHUNK = 1 << 20  # bytes per streamed write; a multiple of 4 so base64 chunks decode on their own
MAX_SCHEDULE_SOURCES = 1_000_000
MAX_SCHEDULES = 1024
MAX_BODY = 64 * 1024 * 1024  # a schedule of 10^6 paths
_MAX_VIEWS = 256  # output settings kept per pipeline
_FORMATS = ("auto", "passthrough", "jpeg", "png")
_FRAME_PARAMS = {"src", "format", "size", "quality"}
SERVICE_KEY = web.AppKey("gpupipe_service", object)
_RequestKey = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
SRC_KEY: Any = _RequestKey("gpupipe_src", str) if _RequestKey else "gpupipe_src"
CACHE_STATE_KEY: Any = _RequestKey("gpupipe_cache", str) if _RequestKey else "gpupipe_cache"
CLOSED_KEY: Any = _RequestKey("gpupipe_client_closed", bool) if _RequestKey else "gpupipe_client_closed"
CLIENT_CLOSED = 499  # the status counted for a client that closed its connection mid-answer (as nginx logs it)


# --------------------------------------------------------------------------- lanes


class Lane:
    """One pipeline of the service (a GPU's, or the CPU's) and its views for other output settings.

    A *view* is a pipeline of the same class on the same encoder and cache with other
    ``output``/``size``/``quality``: the cache keys carry the settings, so views share one budget.
    """

    def __init__(self, name: str, pipeline: FramePipeline) -> None:
        self.name = name
        self.pipeline = pipeline
        self.backend: str = getattr(pipeline.encoder, "backend", "cpu")
        self.batch_size: int = max(1, int(getattr(getattr(pipeline.encoder, "config", None), "batch_size", 8)))
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
                while len(self._views) > _MAX_VIEWS:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(key)
            return v

    def backend_stats(self) -> dict[str, Any]:
        """The backend's counters (jobs, fallbacks, staging figures); ``{}`` where it reports none."""
        try:
            return dict(self.pipeline.encoder.stats())
        except Exception:
            log.debug("backend stats failed", exc_info=True)
            return {}


def route(real_path: str, n: int) -> int:
    """The lane of a frame: a stable hash (BLAKE2b) of its real path, modulo the lane count."""
    if n == 1:
        return 0
    h = hashlib.blake2b(real_path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "big") % n


# --------------------------------------------------------------------------- request parsing


@dataclass(frozen=True)
class FrameParams:
    """Validated output settings of a request (``None``: the config's)."""

    format: str | None = None
    size: tuple[int, int] | None = None
    quality: int | None = None


def _parse_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        w, h = value
    elif isinstance(value, str) and len(value) <= 16 and "x" in value.lower():
        a, _, b = value.lower().partition("x")
        if not (a.isdigit() and b.isdigit()):
            raise BadParameter(f"size must be WIDTHxHEIGHT such as 1920x1080, got {value[:40]!r}")
        w, h = int(a), int(b)
    else:
        raise BadParameter(f"size must be WIDTHxHEIGHT such as 1920x1080, got {str(value)[:40]!r}")
    if not (1 <= w <= 65535 and 1 <= h <= 65535):
        raise BadParameter(f"size must be between 1x1 and 65535x65535, got {w}x{h}")
    return (w, h)


def _parse_quality(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadParameter("quality must be an integer from 1 to 100")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 3:
            raise BadParameter(f"quality must be an integer from 1 to 100, got {value[:20]!r}")
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 100:
        raise BadParameter(f"quality must be an integer from 1 to 100, got {str(value)[:20]!r}")
    return value


def _parse_format(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in _FORMATS:
        raise BadParameter(f"format must be one of {', '.join(_FORMATS)}, got {str(value)[:40]!r}")
    return value.lower()


def frame_params(get: Callable[[str], Any]) -> FrameParams:
    """Output settings from a query (or a JSON body's fields); :class:`BadParameter` for bad ones."""
    return FrameParams(_parse_format(get("format")), _parse_size(get("size")), _parse_quality(get("quality")))


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadParameter(f"{name} is given {len(values)} times")
    return values[0] if values else None


def _query_params(request: web.Request) -> tuple[str, FrameParams]:
    unknown = sorted(set(request.query) - _FRAME_PARAMS)
    if unknown:
        raise BadParameter(f"unknown query parameter {unknown[0][:40]!r} (known: src, format, size, quality)")
    src = _one(request, "src")
    request[SRC_KEY] = src
    if not src:
        raise BadParameter("src is required: a frame path relative to a --root, or an absolute path inside one")
    return src, frame_params(lambda n: _one(request, n))


# --------------------------------------------------------------------------- the service


@dataclass
class _Resolved:
    lane: Lane
    view: FramePipeline
    real: str
    etag: str
    value: Lease | FrameError | None = None  # a lease on the URI (or its error) when the frame was cached


@dataclass
class _Schedule:
    id: str
    handles: list[tuple[Lane, Any]] = field(default_factory=list)


class FrameService:
    """The state behind the endpoints: lanes, roots, batcher, thread pools, schedules and metrics.

    ``pressure_read`` replaces the memory reader of the pressure monitor (tests); ``threshold``
    of ``0`` (``cache.pressure_available: 0``) turns shedding off.
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
        self.metrics.watch(self.lanes, self.pressure)
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self.schedules: dict[str, _Schedule] = {}
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
        loop = asyncio.get_running_loop()
        for sched in list(self.schedules.values()):
            await loop.run_in_executor(self.lookup_pool, _close_handles, sched.handles)
        self.schedules.clear()
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

    def _resolve(self, src: str, params: FrameParams) -> _Resolved:
        """Blocking: confine ``src``, pick its lane and view, tag it, and answer it at once if cached."""
        real = self.roots.resolve(src)
        lane = self.lanes[route(real, len(self.lanes))]
        try:
            view = lane.view(params.format, params.size, params.quality)
        except ValueError as e:
            raise BadParameter(str(e), src) from None
        key = view.key(real)
        etag = key.etag()
        res = _Resolved(lane, view, real, etag)
        if view.cache.peek(key) is not None:
            # Through the pipeline (not the cache directly) so that it sees every request.
            (res.value,) = view.lease_many([real])
        return res

    async def frame(
        self, request: web.Request, src: str, params: FrameParams, *, conditional: bool = False
    ) -> tuple[_Resolved, Lease | None]:
        """The frame's lane, tag and a lease on its URI (``None`` when ``conditional`` and the client's
        ``If-None-Match`` matches its tag): the URI counts against its pipeline's byte budget until the
        caller releases the lease.

        Raises the frame's :class:`FrameError`, or a :class:`RequestError`.
        """
        loop = asyncio.get_running_loop()
        try:
            async with _timeout(self.serve.request_timeout):
                res = await loop.run_in_executor(self.lookup_pool, self._resolve, src, params)
                if conditional and _etag_matches(request.headers.get("If-None-Match"), res.etag):
                    request[CACHE_STATE_KEY] = "revalidated"
                    if isinstance(res.value, Lease):
                        res.value.release()
                    return res, None
                value = res.value
                if value is not None:
                    request[CACHE_STATE_KEY] = "hit"
                    self.metrics.lookups.labels("hit").inc()
                else:
                    request[CACHE_STATE_KEY] = "miss"
                    self.metrics.lookups.labels("miss").inc()
                    lane = self.lanes.index(res.lane)
                    value = await self.batcher.submit(
                        lane, (lane, res.view.spec), res.view.lease_many, res.lane.batch_size, res.real
                    )
        except asyncio.TimeoutError:
            self.metrics.timeouts.inc()
            raise RequestTimeout(f"no answer within serve.request_timeout = {self.serve.request_timeout:g} s", src) from None
        except RequestError as e:
            if e.status == 503:
                self.metrics.queue_full.inc()
            raise
        if isinstance(value, BaseException):
            raise value
        return res, value

    # ------------------------------------------------------------------ schedules

    def _open_schedule(self, sources: list[str], params: FrameParams) -> _Schedule:
        """Blocking: confine every source, split them by lane (order kept) and schedule each part."""
        resolved: dict[str, str] = {}
        by_lane: dict[int, list[str]] = {}
        for src in sources:
            real = resolved.get(src)
            if real is None:
                real = resolved[src] = self.roots.resolve(src)
            by_lane.setdefault(route(real, len(self.lanes)), []).append(real)
        sched = _Schedule(secrets.token_hex(12))
        try:
            for i, part in sorted(by_lane.items()):
                lane = self.lanes[i]
                try:
                    view = lane.view(params.format, params.size, params.quality)
                except ValueError as e:
                    raise BadParameter(str(e)) from None
                sched.handles.append((lane, view.schedule(part)))
        except BaseException:
            _close_handles(sched.handles)
            raise
        return sched


def _close_handles(handles: list[tuple[Lane, Any]]) -> None:
    for lane, h in handles:
        try:
            h.close()
        except Exception:
            log.exception("closing a schedule on %s failed", lane.name)


def _timeout(seconds: float) -> Any:
    """``asyncio.timeout`` (Python >= 3.11) or its equivalent."""
    t = getattr(asyncio, "timeout", None)
    if t is not None:
        return t(seconds)
    return _Timeout310(seconds)


class _Timeout310:
    """A minimal ``asyncio.timeout`` for Python 3.10: cancels the task, raises ``asyncio.TimeoutError``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    async def __aenter__(self) -> _Timeout310:
        task = asyncio.current_task()
        assert task is not None

        def fire() -> None:
            self._fired = True
            task.cancel()

        self._handle = asyncio.get_running_loop().call_later(self.seconds, fire)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        return False


def _etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison of ``If-None-Match`` with ``etag`` (RFC 9110 13.1.2)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    ours = etag[2:] if etag.startswith("W/") else etag
    for part in header.split(","):
        tag = part.strip()
        if (tag[2:] if tag.startswith("W/") else tag) == ours:
            return True
    return False


# --------------------------------------------------------------------------- responses


def _error_response(err: BaseException, src: str | None = None) -> web.Response:
    status = status_of(err)
    if isinstance(err, RequestError):
        body = {"error": err.message, "type": type(err).__name__, "src": err.src if err.src is not None else src}
    elif isinstance(err, FrameError):
        body = {"error": err.reason, "type": type(err).__name__, "src": src if src is not None else err.frame}
    else:
        body = {"error": "internal error (the server logged it)", "type": "InternalError", "src": src}
    resp = web.json_response(body, status=status)
    if status == 503:
        resp.headers["Retry-After"] = str(retry_after_of(err))
    return resp


def _uri_parts(uri: str) -> tuple[str, int]:
    """``(mime, offset of the base64 payload)`` of a ``data:<mime>;base64,`` URI."""
    comma = uri.index(",", 0, 200)
    return uri[5 : uri.index(";", 0, comma)], comma + 1


def _b64_decoded_len(uri: str, start: int) -> int:
    n = len(uri) - start
    pad = 2 if uri.endswith("==") else 1 if uri.endswith("=") else 0
    return n // 4 * 3 - pad


def _text_chunks(uri: str) -> Iterator[bytes]:
    for i in range(0, len(uri), CHUNK):
        yield uri[i : i + CHUNK].encode("ascii")


def _image_chunks(uri: str, start: int) -> Iterator[bytes]:
    for i in range(start, len(uri), CHUNK):
        yield pybase64.b64decode(uri[i : i + CHUNK], validate=False)


async def _stream(
    request: web.Request, resp: web.StreamResponse, chunks: Iterator[bytes], service: FrameService
) -> web.StreamResponse:
    """Send ``chunks``; a client that takes none of a chunk for ``send_timeout`` seconds is disconnected,
    and one that closes the connection first is marked (``CLOSED_KEY``) for :func:`_status`."""
    try:
        await resp.prepare(request)
        for chunk in chunks:
            await asyncio.wait_for(resp.write(chunk), service.serve.send_timeout)
        await resp.write_eof()
    except asyncio.TimeoutError:
        service.metrics.send_timeouts.inc()
        request[CACHE_STATE_KEY] = f"{request.get(CACHE_STATE_KEY, '-')},send-timeout"
        log.warning("client %s took no data for %g s; disconnected", request.remote, service.serve.send_timeout)
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError as e:  # aiohttp's ClientConnectionResetError is one: "Cannot write to closing transport"
        request[CLOSED_KEY] = True
        log.debug("client %s closed the connection mid-answer (%s)", request.remote, e)
    return resp


# --------------------------------------------------------------------------- handlers


def _service(request: web.Request) -> FrameService:
    return request.app[SERVICE_KEY]  # type: ignore[return-value]


async def handle_uri(request: web.Request) -> web.StreamResponse:
    """``GET /v1/uri``: the data URI as text/plain."""
    svc = _service(request)
    src, params = _query_params(request)
    res, lease = await svc.frame(request, src, params, conditional=True)
    headers = {"Cache-Control": "no-cache", "ETag": res.etag}
    if lease is None:
        return web.Response(status=304, headers=headers)
    with lease:
        uri = lease.value
        resp = web.StreamResponse(headers=headers)
        resp.content_type = "text/plain"
        resp.charset = "us-ascii"
        resp.content_length = len(uri)
        return await _stream(request, resp, _text_chunks(uri), svc)


async def handle_image(request: web.Request) -> web.StreamResponse:
    """``GET /v1/image``: the encoded image bytes, for ``<img src>``."""
    svc = _service(request)
    src, params = _query_params(request)
    res, lease = await svc.frame(request, src, params, conditional=True)
    headers = {"Cache-Control": "no-cache", "ETag": res.etag}
    if lease is None:
        return web.Response(status=304, headers=headers)
    with lease:
        uri = lease.value
        mime, start = _uri_parts(uri)
        resp = web.StreamResponse(headers=headers)
        resp.content_type = mime
        resp.content_length = _b64_decoded_len(uri, start)
        return await _stream(request, resp, _image_chunks(uri, start), svc)


def _schedule_support(svc: FrameService) -> None:
    if not all(callable(getattr(lane.pipeline, "schedule", None)) for lane in svc.lanes):
        raise SchedulesUnsupported("this gpupipe has no frame schedules (FramePipeline.schedule); requests work without one")


async def handle_schedule_create(request: web.Request) -> web.Response:
    """``POST /v1/schedules``: declare the order in which frames will be requested."""
    svc = _service(request)
    _schedule_support(svc)
    if len(svc.schedules) >= MAX_SCHEDULES:
        raise TooManySchedules(f"{len(svc.schedules)} schedules are open (at most {MAX_SCHEDULES}); DELETE one first")
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter('the body must be a JSON object: {"sources": [paths...], "format", "size", "quality"}') from None
    if not isinstance(body, dict):
        raise BadParameter('the body must be a JSON object with a "sources" list')
    unknown = sorted(set(body) - {"sources", "format", "size", "quality"})
    if unknown:
        raise BadParameter(f"unknown field {str(unknown[0])[:40]!r} (known: sources, format, size, quality)")
    sources = body.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise BadParameter("sources must be a non-empty list of frame paths (strings)")
    if len(sources) > MAX_SCHEDULE_SOURCES:
        raise BadParameter(f"sources holds {len(sources)} entries; at most {MAX_SCHEDULE_SOURCES}")
    params = frame_params(body.get)
    loop = asyncio.get_running_loop()
    sched = await loop.run_in_executor(svc.lookup_pool, svc._open_schedule, sources, params)
    if svc.closed:
        await loop.run_in_executor(svc.lookup_pool, _close_handles, sched.handles)
        raise web.HTTPServiceUnavailable()
    svc.schedules[sched.id] = sched
    svc.metrics.schedules.set(len(svc.schedules))
    return web.json_response({"id": sched.id, "sources": len(sources)}, status=201)


async def handle_schedule_delete(request: web.Request) -> web.Response:
    """``DELETE /v1/schedules/{id}``: withdraw a schedule."""
    svc = _service(request)
    _schedule_support(svc)
    sid = request.match_info["id"]
    sched = svc.schedules.pop(sid, None)
    if sched is None:
        raise ScheduleNotFound(f"no open schedule has id {sid[:64]!r}")
    svc.metrics.schedules.set(len(svc.schedules))
    await asyncio.get_running_loop().run_in_executor(svc.lookup_pool, _close_handles, sched.handles)
    return web.json_response({"id": sid, "closed": True})


async def handle_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition."""
    svc = _service(request)
    body = await asyncio.get_running_loop().run_in_executor(svc.lookup_pool, generate_latest, svc.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def handle_health(request: web.Request) -> web.Response:
    """``GET /healthz``: ``{"status": "ok", "pipelines": [...], "queue_depth": n, "schedules": n,
    "memory_pressure": bool, "allocator": the allocator tuning's state}``. The service listens only
    once every pipeline is warmed up, so an answer means no request pays start-up."""
    svc = _service(request)
    return web.json_response(
        {
            "status": "stopping" if svc.closed else "ok",
            "pipelines": [{"name": lane.name, "backend": lane.backend} for lane in svc.lanes],
            "queue_depth": svc.batcher.depth,
            "schedules": len(svc.schedules),
            "memory_pressure": bool(svc.pressure and svc.pressure.pressure),
            "allocator": allocator_status().reason,
        }
    )


# --------------------------------------------------------------------------- middleware, access log


def _endpoint(request: web.Request) -> str:
    route_ = request.match_info.route
    resource = getattr(route_, "resource", None)
    return resource.canonical if resource is not None else "other"


def _status(request: web.BaseRequest, resp: web.StreamResponse) -> int:
    """The status a request is counted and logged with: :data:`CLIENT_CLOSED` when the client left mid-answer."""
    return CLIENT_CLOSED if request.get(CLOSED_KEY) else resp.status


@web.middleware
async def _errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    svc = _service(request)
    t0 = time.perf_counter()
    endpoint = _endpoint(request)
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        resp = web.json_response({"error": e.reason, "type": type(e).__name__, "src": None}, status=e.status)
        for h in ("Allow", "Retry-After"):
            if h in e.headers:
                resp.headers[h] = e.headers[h]
    except (RequestError, FrameError) as e:
        resp = _error_response(e, request.get(SRC_KEY))
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.exception("%s %s failed", request.method, request.path)
        resp = _error_response(e, request.get(SRC_KEY))
    svc.metrics.requests.labels(endpoint, str(_status(request, resp))).inc()
    svc.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
    if resp.body_length:
        svc.metrics.response_bytes.labels(endpoint).inc(resp.body_length)
    return resp


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request on the ``gpupipe.serve.access`` logger:
    ``{"method", "path", "status", "ms", "bytes", "cache", "src", "remote"}``; ``cache`` is ``hit``,
    ``miss``, ``revalidated`` (a 304) or ``-``; ``status`` is 499 for a client that closed the
    connection mid-answer, and ``bytes`` what was sent of it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            src = request.get(SRC_KEY)
            line = {
                "method": request.method,
                "path": request.path[:200],
                "status": _status(request, response),
                "ms": round(time * 1000, 2),
                "bytes": response.body_length,
                "cache": request.get(CACHE_STATE_KEY, "-"),
                "src": src[:300] if isinstance(src, str) else None,
                "remote": request.remote,
            }
            self.logger.info(json.dumps(line, ensure_ascii=True))
        except Exception:
            self.logger.debug("access log line failed", exc_info=True)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def create_app(service: FrameService) -> web.Application:
    """The aiohttp application for ``service`` (started and stopped with the app's lifecycle)."""
    app = web.Application(middlewares=[_errors_and_metrics], client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    app.router.add_get("/v1/uri", handle_uri)
    app.router.add_get("/v1/image", handle_image)
    app.router.add_post("/v1/schedules", handle_schedule_create)
    app.router.add_delete("/v1/schedules/{id}", handle_schedule_delete)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_health)
    setup_cors(app, CorsPolicy(service.serve.cors_origins))

    async def on_startup(_app: web.Application) -> None:
        await service.start()

    async def on_cleanup(_app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
