"""The endpoints' handlers: each reads its request, asks the :class:`~gpupipe.serve.service.FrameService`
(the application's :data:`SERVICE_KEY`), and writes the response.

Errors are raised (:mod:`gpupipe.serve.errors`, :mod:`gpupipe.errors`) and turned into JSON answers
by :mod:`gpupipe.serve.middleware`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..memory import allocator_status
from .errors import BadParameter
from .params import (
    IGNORED_HEADER,
    FrameQuery,
    frame_params,
    ignored_header_value,
    ignored_params,
    parse_query,
    schedule_sources,
)
from .request_info import CACHE_STATE_KEY, CLOSED_KEY, IGNORED_KEY, REF_KEY, SRC_KEY
from .service import CacheState, FrameAnswer, FrameService
from .streaming import decoded_length, image_chunks, send, text_chunks, uri_parts

__all__ = [
    "SERVICE_KEY",
    "handle_health",
    "handle_image",
    "handle_metrics",
    "handle_schedule_create",
    "handle_schedule_delete",
    "handle_uri",
    "report_ignored_params",
    "service_of",
]

SERVICE_KEY = web.AppKey("gpupipe_service", FrameService)
_SCHEDULE_FIELDS = ("sources", "format", "size", "quality")


def service_of(request: web.Request) -> FrameService:
    """The service behind the request's application."""
    return request.app[SERVICE_KEY]


async def report_ignored_params(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: name the request's ignored query parameters in :data:`IGNORED_HEADER`, on every answer."""
    ignored = request.get(IGNORED_KEY)
    if ignored:
        response.headers[IGNORED_HEADER] = ignored_header_value(ignored)


# --------------------------------------------------------------------------- frames


async def _frame(request: web.Request) -> tuple[FrameService, FrameAnswer]:
    svc = service_of(request)
    request[IGNORED_KEY] = ignored_params(request.query)
    request[SRC_KEY] = request.query.get("src")
    q: FrameQuery = parse_query(request.query)
    request[REF_KEY] = q.ref

    def on_lookup(state: CacheState) -> None:
        request[CACHE_STATE_KEY] = state

    answer = await svc.frame(q.ref, q.params, if_none_match=request.headers.get("If-None-Match"), on_lookup=on_lookup)
    return svc, answer


async def _send(request: web.Request, svc: FrameService, resp: web.StreamResponse, chunks: Iterator[bytes]) -> web.StreamResponse:
    """Send ``chunks``, counting a send timeout and marking a client that left (:data:`CLOSED_KEY`)."""
    sent = await send(request, resp, chunks, svc.serve.send_timeout)
    if sent == "send-timeout":
        svc.metrics.send_timeouts.inc()
        request[CACHE_STATE_KEY] = f"{request.get(CACHE_STATE_KEY, '-')},send-timeout"
    elif sent == "closed":
        request[CLOSED_KEY] = True
    return resp


async def handle_uri(request: web.Request) -> web.StreamResponse:
    """``GET /v1/uri``: the data URI as text/plain."""
    svc, answer = await _frame(request)
    headers = {"Cache-Control": "no-cache", "ETag": answer.etag}
    if answer.lease is None:
        return web.Response(status=304, headers=headers)
    with answer.lease as lease:
        uri = lease.value
        resp = web.StreamResponse(headers=headers)
        resp.content_type = "text/plain"
        resp.charset = "us-ascii"
        resp.content_length = len(uri)
        return await _send(request, svc, resp, text_chunks(uri))


async def handle_image(request: web.Request) -> web.StreamResponse:
    """``GET /v1/image``: the encoded image bytes, for ``<img src>``."""
    svc, answer = await _frame(request)
    headers = {"Cache-Control": "no-cache", "ETag": answer.etag}
    if answer.lease is None:
        return web.Response(status=304, headers=headers)
    with answer.lease as lease:
        uri = lease.value
        mime, start = uri_parts(uri)
        resp = web.StreamResponse(headers=headers)
        resp.content_type = mime
        resp.content_length = decoded_length(uri, start)
        return await _send(request, svc, resp, image_chunks(uri, start))


# --------------------------------------------------------------------------- schedules


async def handle_schedule_create(request: web.Request) -> web.Response:
    """``POST /v1/schedules``: declare the order in which frames will be requested.

    ``sources`` are frame paths and video frames (``{"src", "frame"}`` or ``{"src", "t"}``). Answers
    201 ``{"id", "sources": how many were given, "missing": [the ``src`` of sources under no root, each
    once, at most 100], "missing_count"}``; the missing ones are left out of the schedule.
    """
    svc = service_of(request)
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter('the body must be a JSON object: {"sources": [paths...], "format", "size", "quality"}') from None
    if not isinstance(body, dict):
        raise BadParameter('the body must be a JSON object with a "sources" list')
    unknown = sorted(set(body) - set(_SCHEDULE_FIELDS))
    if unknown:
        raise BadParameter(f"unknown field {str(unknown[0])[:40]!r} (known: {', '.join(_SCHEDULE_FIELDS)})")
    sources = schedule_sources(body.get("sources"))
    opened = await svc.open_schedule(sources, frame_params(body.get))
    return web.json_response(
        {"id": opened.id, "sources": opened.sources, "missing": list(opened.missing), "missing_count": opened.missing_count},
        status=201,
    )


async def handle_schedule_delete(request: web.Request) -> web.Response:
    """``DELETE /v1/schedules/{id}``: withdraw a schedule."""
    sid = request.match_info["id"]
    await service_of(request).close_schedule(sid)
    return web.json_response({"id": sid, "closed": True})


# --------------------------------------------------------------------------- operations


async def handle_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition."""
    svc = service_of(request)
    body = await asyncio.get_running_loop().run_in_executor(svc.lookup_pool, generate_latest, svc.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def handle_health(request: web.Request) -> web.Response:
    """``GET /healthz``: ``{"status": "ok", "pipelines": [...], "queue_depth": n, "schedules": n,
    "memory_pressure": bool, "allocator": the allocator tuning's state}``. The service listens only
    once every pipeline is warmed up, so an answer means no request pays start-up."""
    svc = service_of(request)
    return web.json_response(
        {
            "status": "stopping" if svc.closed else "ok",
            "pipelines": [{"name": lane.name, "backend": lane.backend} for lane in svc.lanes],
            "queue_depth": svc.batcher.depth,
            "schedules": svc.schedule_count,
            "memory_pressure": bool(svc.pressure and svc.pressure.pressure),
            "allocator": allocator_status().reason,
        }
    )
