"""Frame sources: what a frame is, where its bytes come from, what its header says, and its cache key.

- :mod:`~gpupipe.frames.source`: the contract, :class:`FrameSource` (its key, its header, its
  bytes), the :class:`Frame` it reads, and the :class:`Limits` it is read under;
- :mod:`~gpupipe.frames.read`: the sources for files (:class:`PathSource`) and in-memory data
  (:class:`DataSource`), :func:`as_source`, :func:`read_frame`, :func:`read_header`;
- :mod:`~gpupipe.frames.headers`: the one PNG/JPEG header parser and :class:`Header`;
- :mod:`~gpupipe.frames.keys`: :class:`SourceKey`, :class:`FrameKey`, :class:`FileIdentity`;
- :mod:`~gpupipe.frames.files`: reading regular files safely (also for config files).
"""

from __future__ import annotations

from .headers import Header, parse_header, sniff
from .keys import FileIdentity, FrameKey, SourceKey
from .read import DataSource, PathSource, Source, as_source, check_complete, read_frame, read_header, source_label
from .source import Frame, FrameSource, Limits, default_max_source_bytes

__all__ = [
    "DataSource",
    "FileIdentity",
    "Frame",
    "FrameKey",
    "FrameSource",
    "Header",
    "Limits",
    "PathSource",
    "Source",
    "SourceKey",
    "as_source",
    "check_complete",
    "default_max_source_bytes",
    "parse_header",
    "read_frame",
    "read_header",
    "sniff",
    "source_label",
]
