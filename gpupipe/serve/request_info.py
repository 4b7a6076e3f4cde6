"""What a request records about itself as it is answered, for the metrics, the access log and headers.

The handlers set these keys on the request; the middleware (metrics), the access log and the
response hooks read them. :func:`counted_status` is the status every count and log line uses.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .refs import FrameRef

__all__ = ["CACHE_STATE_KEY", "CLIENT_CLOSED", "CLOSED_KEY", "IGNORED_KEY", "REF_KEY", "SRC_KEY", "counted_status"]

_RequestKey = getattr(web, "RequestKey", None)  # aiohttp >= 3.12; plain strings before


def _key(name: str, kind: type) -> Any:
    return _RequestKey(name, kind) if _RequestKey else name


SRC_KEY: Any = _key("gpupipe_src", str)
"""The request's ``src``, as given (``None`` when it has none)."""
REF_KEY: Any = _key("gpupipe_ref", FrameRef)
"""The frame the request names (a :class:`~gpupipe.serve.refs.FrameRef`), once its parameters parsed."""
CACHE_STATE_KEY: Any = _key("gpupipe_cache", str)
"""What the cache held: ``hit``, ``miss``, ``revalidated`` (a 304), with ``,send-timeout`` appended when cut off."""
CLOSED_KEY: Any = _key("gpupipe_client_closed", bool)
"""``True`` when the client closed the connection before its answer was sent."""
IGNORED_KEY: Any = _key("gpupipe_ignored_params", tuple)
"""The query parameters the request gave that gpupipe does not reserve (sorted)."""

CLIENT_CLOSED = 499  # the status counted for a client that closed its connection mid-answer (as nginx logs it)


def counted_status(request: web.BaseRequest, resp: web.StreamResponse) -> int:
    """The status a request is counted and logged with: :data:`CLIENT_CLOSED` when the client left mid-answer."""
    return CLIENT_CLOSED if request.get(CLOSED_KEY) else resp.status
