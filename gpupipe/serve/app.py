"""The frame service's HTTP application (aiohttp): its routes, middleware and hooks.

Endpoints (all ``GET`` unless said):

- ``/v1/uri?src=PATH[&format=auto|passthrough|jpeg|png][&size=WxH][&quality=N]``: the frame's
  data URI as ``text/plain``.
- ``/v1/image?src=PATH[...]``: the encoded image bytes (``image/jpeg`` or ``image/png``) with
  ``Content-Length``, ``Cache-Control: no-cache`` and a weak ``ETag`` of the file's identity and
  the output settings; ``If-None-Match`` with that tag is answered 304 without encoding.
- ``POST /v1/schedules`` with ``{"sources": [...], "format", "size", "quality"}``: declares the
  order in which frames will be requested (``FramePipeline.schedule``), answered 201
  ``{"id", "sources", "missing", "missing_count"}`` (sources under no root are left out and
  named); ``DELETE /v1/schedules/{id}`` withdraws it.
- ``/metrics`` (Prometheus text) and ``/healthz``.

Query parameters other than :data:`~gpupipe.serve.params.RESERVED_PARAMS` are ignored and named
in the ``X-Gpupipe-Ignored-Params`` header (a page's cache-buster such as ``&_=123`` is harmless).

Errors are JSON ``{"error", "type", "src"}``: 400 bad parameters (also ``t`` and ``frame``,
reserved for frames of video files), 403 outside every root, 404 no such frame, 413
``FrameTooLarge``, 422 ``FrameDecodeError``, 503 queue full, byte budget full or
``FrameChanged`` (the file changed while it was read; all three with ``Retry-After``: ask
again), 504 request time limit, 500 anything else (logged, never a stack trace to the client).
A client that closes its connection before its answer is sent is counted (metrics, access log)
with status 499 (:data:`~gpupipe.serve.request_info.CLIENT_CLOSED`), not as an error of the service.

Where each part lives: the service behind the endpoints in :mod:`~gpupipe.serve.service`, the
handlers in :mod:`~gpupipe.serve.handlers`, parameters in :mod:`~gpupipe.serve.params`, sending
in :mod:`~gpupipe.serve.streaming`, errors as JSON in :mod:`~gpupipe.serve.middleware`, the
access log in :mod:`~gpupipe.serve.access_log`, and which pages of other origins may read the
answers (``serve.cors_origins``) in :mod:`~gpupipe.serve.cors`.
"""

from __future__ import annotations

from aiohttp import web

from .cors import CorsPolicy, setup_cors
from .extract import handle_extract
from .handlers import (
    SERVICE_KEY,
    handle_health,
    handle_image,
    handle_metrics,
    handle_schedule_create,
    handle_schedule_delete,
    handle_uri,
    report_ignored_params,
)
from .middleware import errors_and_metrics
from .service import FrameService

__all__ = ["MAX_BODY", "create_app"]

MAX_BODY = 64 * 1024 * 1024  # bytes of a request body: a schedule of 10^6 paths


def create_app(service: FrameService) -> web.Application:
    """The aiohttp application for ``service`` (started and stopped with the app's lifecycle)."""
    app = web.Application(middlewares=[errors_and_metrics], client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    app.router.add_get("/v1/uri", handle_uri)
    app.router.add_get("/v1/image", handle_image)
    app.router.add_post("/v1/schedules", handle_schedule_create)
    app.router.add_delete("/v1/schedules/{id}", handle_schedule_delete)
    app.router.add_post("/v1/extract", handle_extract)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_health)
    app.on_response_prepare.append(report_ignored_params)
    setup_cors(app, CorsPolicy(service.serve.cors_origins))

    async def on_startup(_app: web.Application) -> None:
        await service.start()

    async def on_cleanup(_app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
