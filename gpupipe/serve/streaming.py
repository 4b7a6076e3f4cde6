"""Sending a data URI: as text, or as the image bytes it holds, in chunks a slow client cannot stall.

Bodies are written in chunks of at most :data:`CHUNK` bytes, each of which the client must take
within ``send_timeout`` seconds, so a slow client holds at most about one chunk of the server's
memory beyond the URI being sent. Image bytes are base64-decoded chunk by chunk, never whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Literal

import pybase64
from aiohttp import web

__all__ = ["CHUNK", "Sent", "decoded_length", "image_chunks", "send", "text_chunks", "uri_parts"]

log = logging.getLogger("gpupipe.serve")

CHUNK = 1 << 20  # bytes per streamed write; a multiple of 4 so base64 chunks decode on their own

Sent = Literal["sent", "send-timeout", "closed"]
"""How sending ended: every byte written, the client took none of a chunk for ``send_timeout``
seconds (it was disconnected), or the client closed the connection first."""


def uri_parts(uri: str) -> tuple[str, int]:
    """``(mime, offset of the base64 payload)`` of a ``data:<mime>;base64,`` URI."""
    comma = uri.index(",", 0, 200)
    return uri[5 : uri.index(";", 0, comma)], comma + 1


def decoded_length(uri: str, start: int) -> int:
    """The number of bytes the base64 payload of ``uri`` from ``start`` decodes to."""
    n = len(uri) - start
    pad = 2 if uri.endswith("==") else 1 if uri.endswith("=") else 0
    return n // 4 * 3 - pad


def text_chunks(uri: str) -> Iterator[bytes]:
    """The URI itself, as ASCII, :data:`CHUNK` characters at a time."""
    for i in range(0, len(uri), CHUNK):
        yield uri[i : i + CHUNK].encode("ascii")


def image_chunks(uri: str, start: int) -> Iterator[bytes]:
    """The image bytes of the base64 payload from ``start``, decoded :data:`CHUNK` characters at a time."""
    for i in range(start, len(uri), CHUNK):
        yield pybase64.b64decode(uri[i : i + CHUNK], validate=False)


async def send(request: web.Request, resp: web.StreamResponse, chunks: Iterator[bytes], send_timeout: float) -> Sent:
    """Prepare ``resp`` and write ``chunks``; a client that takes none of a chunk for ``send_timeout``
    seconds is disconnected (``"send-timeout"``), one that closes the connection first is ``"closed"``."""
    try:
        await resp.prepare(request)
        for chunk in chunks:
            await asyncio.wait_for(resp.write(chunk), send_timeout)
        await resp.write_eof()
    except asyncio.TimeoutError:
        log.warning("client %s took no data for %g s; disconnected", request.remote, send_timeout)
        if request.transport is not None:
            request.transport.abort()
        return "send-timeout"
    except ConnectionError as e:  # aiohttp's ClientConnectionResetError is one: "Cannot write to closing transport"
        log.debug("client %s closed the connection mid-answer (%s)", request.remote, e)
        return "closed"
    return "sent"
