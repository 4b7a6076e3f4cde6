"""CORS for the frame service: which web pages may read its answers (``serve.cors_origins``).

A page that draws a URL-mode frame (``<img crossOrigin="anonymous" src=".../v1/image?...">``)
into a canvas or a WebGL texture, or ``fetch``-es the service, may read the pixels or the body
only when the answer carries ``Access-Control-Allow-Origin`` for the page's origin; otherwise
``getImageData`` throws (a "tainted canvas") or the load fails. The policy:

- ``"loopback"`` (the default): the request's ``Origin`` is reflected when it is ``null``
  (``file://`` and ``data:`` pages, and sandboxed frames) or an ``http``/``https`` origin whose host
  is ``localhost``, an address in 127.0.0.0/8 or ``[::1]``, on any port;
- ``"*"``: every origin (``Access-Control-Allow-Origin: *``);
- a tuple of origins (``https://render.example.com``, ``null``): exactly those, compared as the
  browser sends them;
- an empty tuple: no CORS headers at all (and no ``OPTIONS`` routes).

A reflected origin comes with ``Vary: Origin`` on every answer, so that caches keep answers for
different pages apart. Allowed answers expose ``ETag``, ``Retry-After`` and
``X-Gpupipe-Ignored-Params`` to the page. Preflight requests (``OPTIONS`` with
``Access-Control-Request-Method``, sent for ``If-None-Match`` or a JSON ``POST``) are answered
204 with the path's methods and the allowed request headers, which the browser may cache for
:data:`MAX_AGE` seconds. No credentials are allowed: the service has no cookies or logins.

:func:`setup_cors` installs this on an application: on every response as it is prepared (so
that streamed answers carry the headers too; a middleware would see them only once sent) and
as ``OPTIONS`` routes for the application's paths.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web

__all__ = ["ALLOW_HEADERS", "EXPOSE_HEADERS", "MAX_AGE", "CorsPolicy", "is_loopback_origin", "setup_cors"]

ALLOW_HEADERS = "Content-Type, If-None-Match"
EXPOSE_HEADERS = "ETag, Retry-After, X-Gpupipe-Ignored-Params"
MAX_AGE = 600  # seconds a browser may cache a preflight answer
_HTTP_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9.\-]+)(?::([0-9]{1,5}))?")


def is_loopback_origin(origin: str) -> bool:
    """Whether ``origin`` (an ``Origin`` header) is ``null`` or ``http(s)://`` a loopback host with an optional port:
    ``localhost``, an address in 127.0.0.0/8, or ``[::1]``, written as browsers serialise them."""
    if origin == "null":
        return True
    m = _HTTP_ORIGIN.fullmatch(origin)
    if m is None or (m.group(2) is not None and not 0 < int(m.group(2)) <= 65535):
        return False
    host = m.group(1)
    if host == "localhost":
        return True
    try:
        ip = ipaddress.IPv6Address(host[1:-1]) if host.startswith("[") else ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return ip.is_loopback


class CorsPolicy:
    """Which origins may read the service's answers: ``"loopback"``, ``"*"`` or a sequence of exact origins
    (see the module docstring); ``ValueError`` for any other string."""

    def __init__(self, origins: str | Sequence[str]) -> None:
        if isinstance(origins, str):
            if origins not in ("loopback", "*"):
                raise ValueError(f"CORS origins must be 'loopback', '*' or a list of origins, got {origins[:80]!r}")
            self.mode = origins
            self.origins: frozenset[str] = frozenset()
        else:
            self.mode = "list"
            self.origins = frozenset(origins)

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed (an empty list allows none: no CORS headers are sent)."""
        return self.mode != "list" or bool(self.origins)

    @property
    def varies(self) -> bool:
        """Whether the answer depends on the request's ``Origin`` (``Vary: Origin``)."""
        return self.enabled and self.mode != "*"

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request with this ``Origin`` header, or ``None``."""
        if self.mode == "*":
            return "*"
        if origin is None:
            return None
        if self.mode == "loopback":
            return origin if is_loopback_origin(origin) else None
        return origin if origin in self.origins else None


def _add_vary_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get(hdrs.VARY)
    if not vary:
        response.headers[hdrs.VARY] = "Origin"
    elif "origin" not in {v.strip().lower() for v in vary.split(",")} and vary.strip() != "*":
        response.headers[hdrs.VARY] = f"{vary}, Origin"


def setup_cors(app: web.Application, policy: CorsPolicy) -> None:
    """Send ``policy``'s CORS headers on every answer of ``app`` and answer preflights on each of its paths.

    Call it once the application's routes are added; with a policy that allows no origin it does nothing.
    """
    if not policy.enabled:
        return

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if policy.varies:
            _add_vary_origin(response)
        allowed = policy.allow_origin(request.headers.get(hdrs.ORIGIN))
        if allowed is not None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS

    for resource in list(app.router.resources()):
        if not isinstance(resource, web.Resource):  # a static or prefix resource: the service has none
            continue
        methods = ", ".join(sorted({route.method for route in resource}))
        resource.add_route(hdrs.METH_OPTIONS, _preflight(policy, methods))
    app.on_response_prepare.append(on_prepare)


def _preflight(policy: CorsPolicy, methods: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``OPTIONS`` handler of a path with ``methods``: 204 with ``Allow``, and for a preflight from an
    allowed origin the methods, request headers and ``Max-Age`` it grants."""

    async def preflight(request: web.Request) -> web.Response:
        headers = {hdrs.ALLOW: f"{methods}, OPTIONS"}
        if (
            hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
            and policy.allow_origin(request.headers.get(hdrs.ORIGIN)) is not None
        ):
            headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = methods
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOW_HEADERS
            headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(MAX_AGE)
        return web.Response(status=204, headers=headers)

    return preflight
