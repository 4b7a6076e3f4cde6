"""Entity tags of frame answers: a weak ``ETag`` per cache key, and ``If-None-Match`` against it.

The cache key names the frame file's identity (path, size, modification time, ...) and the output
settings, so the tag changes whenever the answer would; a matching ``If-None-Match`` is answered
304 without encoding. Tags are weak (``W/"..."``): a key encoded again after an eviction means the
same picture, not necessarily the same bytes (a GPU batch may fall back to the CPU path).
"""

from __future__ import annotations

from ..frames import FrameKey

__all__ = ["etag_matches", "etag_of"]


def etag_of(key: FrameKey) -> str:
    """The weak ``ETag`` of the answer for the cache key ``key`` (:meth:`FrameKey.etag <gpupipe.frames.FrameKey.etag>`:
    a digest of its named fields, no stat field in clear)."""
    return key.etag()


def etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison of an ``If-None-Match`` header with ``etag`` (RFC 9110 13.1.2); ``*`` matches any."""
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
