"""The middleware every request passes: errors become JSON answers, and every answer is counted.

Errors are answered as JSON ``{"error", "type", "src"}`` with the status :func:`~gpupipe.serve.errors.status_of`
gives them (``Retry-After`` on a 503); an unexpected exception is logged and answered 500 without
its message or a stack trace. Every request is counted in the metrics by endpoint and
:func:`~gpupipe.serve.request_info.counted_status` (499 for a client that left mid-answer); a
request for a video clip's frame also by how it picked the frame (``frame`` or ``t``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import FrameError
from .errors import RequestError, retry_after_of, status_of
from .handlers import service_of
from .request_info import REF_KEY, SRC_KEY, counted_status

__all__ = ["error_response", "errors_and_metrics"]

log = logging.getLogger("gpupipe.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(err: BaseException, src: str | None = None) -> web.Response:
    """The JSON answer for ``err``, naming ``src`` (the request's) unless the error names its own."""
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


def _endpoint(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer errors as JSON and count every request (status, latency, bytes) by endpoint."""
    svc = service_of(request)
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
        resp = error_response(e, request.get(SRC_KEY))
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.exception("%s %s failed", request.method, request.path)
        resp = error_response(e, request.get(SRC_KEY))
    status = str(counted_status(request, resp))
    svc.metrics.requests.labels(endpoint, status).inc()
    ref = request.get(REF_KEY)
    if ref is not None and ref.video:
        svc.metrics.video_requests.labels(endpoint, "frame" if ref.frame is not None else "t", status).inc()
    svc.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
    if resp.body_length:
        svc.metrics.response_bytes.labels(endpoint).inc(resp.body_length)
    return resp
