"""The access log: one JSON line per request on the ``gpupipe.serve.access`` logger."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .request_info import CACHE_STATE_KEY, REF_KEY, SRC_KEY, counted_status

__all__ = ["JsonAccessLogger", "access_log"]

access_log = logging.getLogger("gpupipe.serve.access")


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request: ``{"method", "path", "status", "ms", "bytes", "cache", "src", "frame", "t", "remote"}``.

    ``frame`` and ``t`` are the video frame the request picked in ``src`` (``null`` for a frame
    file, and for a request whose parameters did not parse).

    ``cache`` is ``hit``, ``miss``, ``revalidated`` (a 304) or ``-`` (with ``,send-timeout``
    appended for a client cut off); ``status`` is 499 for a client that closed the connection
    mid-answer, and ``bytes`` what was sent of it. ``path`` and ``src`` are cut to 200 and 300 characters.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            src = request.get(SRC_KEY)
            ref = request.get(REF_KEY)
            line = {
                "method": request.method,
                "path": request.path[:200],
                "status": counted_status(request, response),
                "ms": round(time * 1000, 2),
                "bytes": response.body_length,
                "cache": request.get(CACHE_STATE_KEY, "-"),
                "src": src[:300] if isinstance(src, str) else None,
                "frame": ref.frame if ref is not None else None,
                "t": ref.t if ref is not None else None,
                "remote": request.remote,
            }
            self.logger.info(json.dumps(line, ensure_ascii=True))
        except Exception:
            self.logger.debug("access log line failed", exc_info=True)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
