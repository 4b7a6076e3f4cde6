"""Cache keys: what names a frame's content, and that content under given output settings.

A :class:`SourceKey` names what a frame source holds: for a file its resolved path and the
:class:`FileIdentity` its bytes were seen under, for in-memory data a digest of the bytes. A
:class:`FrameKey` is the pipeline's cache key: a source key and the output settings the URI is
made under. Both are frozen, hashable and compared field by field; nothing indexes them by
position.

Two derived names:

- the *schedule identity* (:attr:`SourceKey.schedule_id`, :attr:`FrameKey.schedule_id`): the key
  without the file identity, so that a frame declared in a schedule still matches its requests
  after its file is rewritten in place;
- the *ETag* (:meth:`FrameKey.etag`): a hash of the named fields, independent of ``repr`` and of
  the order the fields are declared in; it never shows a path or stat field in clear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

__all__ = ["FileIdentity", "FrameKey", "SourceKey"]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What says a file's bytes are unchanged since they were seen.

    The size and modification time catch an ordinary rewrite; the inode change time catches a
    rewrite that keeps the size and restores the modification time (``os.utime``); the device and
    inode catch a file replaced by a rename.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """The identity in a ``stat`` (or ``fstat``) result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class SourceKey:
    """The content a frame source holds.

    ``kind`` names the source type (``"path"`` or ``"data"``; another source type picks its own
    word). ``name`` is where the content is: the resolved path for a file, the hex BLAKE2b-128
    digest of the bytes for data. ``part`` says which frame of a source that holds several (a
    video's frame); ``None`` for a single image. ``identity`` is the file's :class:`FileIdentity`
    when it was looked up (``None`` for data, and for a path that could not be stat'ed).
    """

    kind: str
    name: str
    part: str | None = None
    identity: FileIdentity | None = None

    @classmethod
    def for_path(cls, resolved: str, identity: FileIdentity | None) -> SourceKey:
        """The key of the file at ``resolved`` (an absolute path), seen with ``identity``."""
        return cls("path", resolved, None, identity)

    @classmethod
    def for_data(cls, digest: bytes) -> SourceKey:
        """The key of in-memory data whose BLAKE2b-128 digest is ``digest``."""
        return cls("data", digest.hex())

    @property
    def schedule_id(self) -> SourceKey:
        """This key without the file identity: where the frame is, whatever its file holds now."""
        return self if self.identity is None else SourceKey(self.kind, self.name, self.part)


@dataclass(frozen=True, slots=True)
class FrameKey:
    """The pipeline's cache key: a source's content (:class:`SourceKey`) under output settings.

    ``output`` is :meth:`gpupipe.plan.OutputSpec.key`: the output settings that change the URI, a
    tuple of strings, integers, ``None`` and ``(width, height)`` pairs owned by
    :mod:`gpupipe.plan`. This key only hashes and compares it, and puts it into :meth:`etag`.
    """

    source: SourceKey
    output: tuple[Hashable, ...]

    @property
    def schedule_id(self) -> FrameKey:
        """This key without the file identity (see :attr:`SourceKey.schedule_id`): what a schedule
        declares a frame by."""
        sid = self.source.schedule_id
        return self if sid is self.source else FrameKey(sid, self.output)

    def etag(self) -> str:
        """A weak HTTP entity tag for the URI made under this key: ``W/"<32 hex digits>"``.

        The hash covers every named field (sorted by name, so it does not depend on their order or
        on ``repr``): equal keys give equal tags, a rewritten file a new one. It shows no path and
        no stat field (inode, device, times) in clear.
        """
        text = json.dumps(_fields(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return 'W/"' + hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest() + '"'


def _fields(value: Any) -> Any:
    """``value`` as JSON-ready data: a key's fields by name, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _fields(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_fields(v) for v in value]
    if value is None or isinstance(value, (str, int)):
        return value
    raise TypeError(f"a cache key holds {type(value).__name__}, which has no stable encoding")
