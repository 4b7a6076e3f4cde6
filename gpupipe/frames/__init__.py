"""Frame sources: what a frame is, where its bytes come from, what its header says, and its cache key.

- :mod:`~gpupipe.frames.source`: the contract, :class:`FrameSource` (its key, its header, its
  bytes), the :class:`Frame` it reads, and the :class:`Limits` it is read under;
- :mod:`~gpupipe.frames.read`: the sources for files (:class:`PathSource`) and in-memory data
  (:class:`DataSource`), :func:`as_source`, :func:`read_frame`, :func:`read_header`;
- :mod:`~gpupipe.frames.video`: a video clip's frame (:class:`VideoFrame`), read as decoded pixels;
- :mod:`~gpupipe.frames.clip`: what a clip holds (:class:`Clip`), probed from its container;
- :mod:`~gpupipe.frames.headers`: the one PNG/JPEG header parser and :class:`Header`;
- :mod:`~gpupipe.frames.keys`: :class:`SourceKey`, :class:`FrameKey`, :class:`FileIdentity`;
- :mod:`~gpupipe.frames.files`: reading regular files safely (also for config files).
"""

from __future__ import annotations

from .clip import Clip, probe_clip
from .headers import Header, parse_header, sniff
from .keys import FileIdentity, FrameKey, SourceKey
from .read import DataSource, PathSource, Source, as_source, check_complete, read_frame, read_header, source_label
from .source import ClipReader, Frame, FrameSource, Limits, Pixels, default_max_source_bytes
from .video import VideoFrame

__all__ = [
    "Clip",
    "ClipReader",
    "DataSource",
    "FileIdentity",
    "Frame",
    "FrameKey",
    "FrameSource",
    "Header",
    "Limits",
    "PathSource",
    "Pixels",
    "Source",
    "SourceKey",
    "VideoFrame",
    "as_source",
    "check_complete",
    "default_max_source_bytes",
    "parse_header",
    "probe_clip",
    "read_frame",
    "read_header",
    "sniff",
    "source_label",
]
