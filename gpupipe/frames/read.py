"""Frames from files and from memory: the two :class:`~gpupipe.frames.source.FrameSource` types,
and reading and probing any source.

- :class:`PathSource`: a frame file (``str`` or ``os.PathLike``), read through
  :mod:`gpupipe.frames.files` (regular files only, never blocking, never past ``max_bytes``,
  refused if it keeps changing while read); keyed by its resolved path and
  :class:`~gpupipe.frames.keys.FileIdentity`, so a rewritten or replaced file is never served
  stale.
- :class:`DataSource`: encoded bytes in memory (``bytes``, ``bytearray``, ``memoryview``); keyed
  by the 128-bit BLAKE2b of its bytes, and named, until that digest is at hand, by a cheap
  fingerprint that never hashes a large frame whole.

:func:`as_source` turns what callers pass into a source; :func:`read_frame` and
:func:`read_header` read one. Headers are parsed by :mod:`gpupipe.frames.headers`, for the whole
frame and for its first bytes alike, so a frame's header and the header its work was sized by
agree. Errors are the frame's :class:`~gpupipe.errors.FrameError`, named by its label; they
never quote the data read or the file's stat fields.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..errors import FrameChanged, FrameDecodeError, FrameError, FrameNotFound, FrameNotRegularFile, FrameTooLarge
from .files import FileRefused, open_regular, read_regular, read_upto
from .headers import PNG_IEND, Header, parse_header, parse_prefix
from .keys import FileIdentity, SourceKey
from .source import ClipReader, Frame, FrameSource, Limits

__all__ = [
    "DataSource",
    "PathSource",
    "Source",
    "as_source",
    "check_complete",
    "read_frame",
    "read_header",
    "source_label",
]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, FrameSource]
"""What the encoder and the pipeline take as a frame: a path, encoded bytes, or a :class:`FrameSource`."""

Data = bytes | bytearray | memoryview

_PREFIX = 64 * 1024  # a header read starts with this much: PNG's IHDR is at byte 8, JPEG's SOF follows the APPn segments


def as_source(source: Source) -> FrameSource:
    """``source`` as a :class:`FrameSource`: a path becomes a :class:`PathSource`, bytes a
    :class:`DataSource`, a source is itself. Raises ``TypeError`` for anything else."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return DataSource(source)
    if isinstance(source, (str, os.PathLike)):
        return PathSource(source)
    raise TypeError(f"a frame source is a path, encoded bytes or a FrameSource, not {type(source).__name__}")


@dataclass(frozen=True, eq=False, slots=True)
class PathSource(FrameSource):
    """A frame file. Its label is the path as given; its key, the resolved path and the file's
    :class:`~gpupipe.frames.keys.FileIdentity` (``None`` when it cannot be stat'ed)."""

    path: str | os.PathLike[str]

    def key(self) -> SourceKey:
        p = Path(self.path)
        try:
            st = os.stat(p)
        except (OSError, ValueError):
            return SourceKey.for_path(os.path.abspath(p), None)
        return SourceKey.for_path(str(p.resolve()), FileIdentity.of(st))

    def label(self, key: SourceKey | None = None) -> str:
        return os.fspath(self.path)

    def memo(self) -> str:
        return os.fspath(self.path)

    def header(self, label: str, limits: Limits) -> Header:
        """The header from the file's first 64 KiB, reading on (doubling) while it runs past them."""
        try:
            with open_regular(self.path, limits.max_bytes) as (fd, st):
                size = st.st_size
                head = read_upto(fd, min(size, _PREFIX))
                while (header := parse_prefix(label, head, size, limits.max_pixels)) is None:
                    more = read_upto(fd, min(size - len(head), len(head)))
                    if not more:  # shorter than its size said (it changed): what it holds decides
                        return parse_header(label, head, limits.max_pixels)
                    head += more
                return header
        except FileRefused as e:
            raise _file_error(label, e, limits.max_bytes) from None

    def read(self, label: str, limits: Limits, clips: ClipReader | None = None) -> Frame:
        try:
            data, identity = read_regular(self.path, limits.max_bytes)
        except FileRefused as e:
            raise _file_error(label, e, limits.max_bytes) from None
        return Frame(label, data, parse_header(label, data, limits.max_pixels), identity)


@dataclass(frozen=True, eq=False, slots=True)
class DataSource(FrameSource):
    """An encoded frame in memory. Its key is the BLAKE2b-128 digest of its bytes; its label is
    ``bytes:<digest prefix>`` given its key, else ``bytes:<length>B:<fingerprint>``."""

    data: Data

    def key(self) -> SourceKey:
        return SourceKey.for_data(_digest(self.data))

    def label(self, key: SourceKey | None = None) -> str:
        if key is not None:
            return f"bytes:{key.name[:12]}"
        return f"bytes:{_fingerprint(self.data)}"

    def memo(self) -> bytes | None:
        return self.data if isinstance(self.data, bytes) else None

    def header(self, label: str, limits: Limits) -> Header:
        view = memoryview(self.data).cast("B")
        _check_bytes(label, view.nbytes, limits.max_bytes)
        return parse_header(label, view, limits.max_pixels)

    def read(self, label: str, limits: Limits, clips: ClipReader | None = None) -> Frame:
        _check_bytes(label, memoryview(self.data).nbytes, limits.max_bytes)
        data = bytes(self.data)
        return Frame(label, data, parse_header(label, data, limits.max_pixels))


def _digest(data: Data) -> bytes:
    """The 128-bit BLAKE2b of in-memory frame data: its cache key (and, when a caller has it, its label)."""
    return hashlib.blake2b(data, digest_size=16).digest()


_FINGERPRINT_SPAN = 2048  # bytes taken from each of the start, the middle and the end


def _fingerprint(data: Data) -> str:
    """A short, cheap name for in-memory data: ``<length>B:<8 hex>``, hashing at most 6 KiB.

    The hash covers the length and 2 KiB each from the start, the middle and the end, so the
    cost does not grow with the frame (a 4K frame is never hashed whole just to be named).
    Equal data always gets the same name; different frames almost always get different ones.
    """
    mv = memoryview(data)
    if mv.format != "B" or mv.ndim != 1 or not mv.c_contiguous:
        mv = memoryview(mv.tobytes())  # an exotic view: copy it to bytes once
    n = mv.nbytes
    h = hashlib.blake2b(n.to_bytes(8, "little"), digest_size=4)
    span = _FINGERPRINT_SPAN
    if n <= 3 * span:
        h.update(mv)
    else:
        mid = n // 2 - span // 2
        h.update(mv[:span])
        h.update(mv[mid : mid + span])
        h.update(mv[n - span :])
    return f"{n}B:{h.hexdigest()}"


def _check_bytes(label: str, nbytes: int, max_bytes: int | None) -> None:
    """Raise :class:`FrameTooLarge` if an encoded frame of ``nbytes`` exceeds ``max_bytes`` (``None``: no limit)."""
    if max_bytes is not None and nbytes > max_bytes:
        raise FrameTooLarge(label, f"{nbytes} bytes exceeds max_source_bytes = {max_bytes}")


def _file_error(label: str, e: FileRefused, max_bytes: int | None) -> FrameError:
    """The frame's error for a frame file that was not read."""
    if e.problem == "missing":
        return FrameNotFound(label, "no such file")
    if e.problem == "no_device":
        return FrameNotRegularFile(label, "cannot be read as a frame file (no such device or address: a socket?)")
    if e.problem == "not_regular":
        return FrameNotRegularFile(label, f"is {e.what}, not a regular file")
    if e.problem == "too_large":
        return FrameTooLarge(label, f"{e.size} bytes exceeds max_source_bytes = {max_bytes}")
    if e.problem == "changed":
        return FrameChanged(label, "changed while being read, twice in a row (is it still being written?)")
    cause = e.cause
    return FrameNotFound(label, f"cannot read: {(cause.strerror if isinstance(cause, OSError) else None) or cause}")


def source_label(source: Source) -> str:
    """A short human name for ``source``: its path, or a ``bytes:`` name for in-memory data (see :class:`DataSource`)."""
    return as_source(source).label()


def read_frame(source: Source, max_pixels: int | None = None, *, max_bytes: int | None = None, label: str | None = None) -> Frame:
    """Read ``source`` and parse its header (``label``: its name in errors, default :meth:`FrameSource.label`).

    A path is read only if it is a regular file (symlinks followed); a FIFO, device, socket or
    directory is refused at once, without reading. A file (or in-memory data) of more than
    ``max_bytes`` bytes is refused before it is read, and at most ``max_bytes + 1`` bytes are
    read even if the file grows meanwhile (see
    :func:`~gpupipe.frames.source.default_max_source_bytes`). A file whose identity changes while
    it is read, or that does not hold as many bytes as its size said, is read once more and then
    refused.

    Raises :class:`FrameNotFound` (missing or unreadable file; :class:`FrameNotRegularFile` for
    what is not a regular file), :class:`FrameDecodeError` (empty, unrecognised or truncated
    header; its subclass :class:`FrameChanged` for a file that kept changing while read) or
    :class:`FrameTooLarge` (more than ``max_bytes`` bytes, or more than ``max_pixels`` declared
    pixels).
    """
    src = as_source(source)
    return src.read(src.label() if label is None else label, Limits(max_pixels, max_bytes))


def read_header(
    source: Source, label: str | None = None, *, max_pixels: int | None = None, max_bytes: int | None = None
) -> Header:
    """The header of ``source``, reading no more than it needs (a file's first 64 KiB, unless the
    header runs past them); raises the :class:`FrameError` that :func:`read_frame` would for it."""
    src = as_source(source)
    return src.header(src.label() if label is None else label, Limits(max_pixels, max_bytes))


def check_complete(frame: Frame) -> None:
    """Raise :class:`FrameDecodeError` if the encoded stream visibly stops early.

    Used before passthrough, where no decoder looks at the data: a PNG must end with its
    ``IEND`` chunk and a JPEG with an end-of-image marker in its last KiB.
    """
    if frame.kind == "png":
        if not frame.data.endswith(PNG_IEND):
            raise FrameDecodeError(frame.label, "truncated PNG: no IEND chunk at the end")
    elif b"\xff\xd9" not in frame.data[-1024:]:
        raise FrameDecodeError(frame.label, "truncated JPEG: no end-of-image marker")
