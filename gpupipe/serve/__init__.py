"""``gpupipe serve``: one frame service per render box, shared by every renderer worker.

Renderers in any language ask it for frames over HTTP, as data URIs (``GET /v1/uri``) or as image
bytes for ``<img src>`` (``GET /v1/image``); requests from every worker are coalesced into
batches, and one byte budget per GPU holds for the whole box. The modules, one job each:

- :mod:`~gpupipe.serve.server`: the ``gpupipe serve`` command (pipelines, listening, SIGTERM);
- :mod:`~gpupipe.serve.app`: the aiohttp application (routes, middleware, hooks);
- :mod:`~gpupipe.serve.handlers`: the endpoints; :mod:`~gpupipe.serve.params`: their parameters;
- :mod:`~gpupipe.serve.service`: :class:`~gpupipe.serve.service.FrameService`, the state behind them;
- :mod:`~gpupipe.serve.lanes`: one pipeline per GPU (or the CPU's) and which serves a frame;
- :mod:`~gpupipe.serve.batcher`: coalescing requests into batches;
- :mod:`~gpupipe.serve.schedules`: the open schedules;
- :mod:`~gpupipe.serve.streaming`: sending URIs and image bytes in chunks;
- :mod:`~gpupipe.serve.etags`: ``ETag`` and ``If-None-Match``;
- :mod:`~gpupipe.serve.roots`: root confinement; :mod:`~gpupipe.serve.cors`: CORS;
- :mod:`~gpupipe.serve.errors`: HTTP errors and their statuses; :mod:`~gpupipe.serve.middleware`:
  errors as JSON, and the request counts;
- :mod:`~gpupipe.serve.request_info`: what a request records for the metrics and the access log;
- :mod:`~gpupipe.serve.metrics`, :mod:`~gpupipe.serve.access_log`, :mod:`~gpupipe.serve.pressure`
  (shedding cached entries under memory pressure);
- :mod:`~gpupipe.serve.client`: a Python client; ``clients/node/gpupipe.mjs`` is the Node client.

Importing this package needs ``aiohttp`` and ``prometheus_client`` (the ``serve`` extra), except
for :mod:`gpupipe.serve.client`, which needs nothing beyond the standard library.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FrameClient", "ServeError", "fetch_uri"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
