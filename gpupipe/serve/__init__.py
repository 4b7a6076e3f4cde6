"""``gpupipe serve``: one frame service per render box, shared by every renderer worker.

Renderers in any language ask it for frames over HTTP, as data URIs (``GET /v1/uri``) or as image
bytes for ``<img src>`` (``GET /v1/image``); requests from every worker are coalesced into
batches, and one byte budget per GPU holds for the whole box. :mod:`gpupipe.serve.app` has the
endpoints, :mod:`gpupipe.serve.server` the command, :mod:`gpupipe.serve.client` a Python client;
``clients/node/gpupipe.mjs`` is the Node client.

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
