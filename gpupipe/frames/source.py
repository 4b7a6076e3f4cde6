"""The frame-source contract: what a source gives the pipeline.

A :class:`FrameSource` is one frame the pipeline can cache, size up and read:

- :meth:`~FrameSource.key`: its :class:`~gpupipe.frames.keys.SourceKey`, naming its content (the
  cache key, with the output settings);
- :meth:`~FrameSource.header`: its :class:`~gpupipe.frames.headers.Header`, read cheaply (a file's
  first bytes), from which its work's memory is estimated before it is admitted;
- :meth:`~FrameSource.read`: its :class:`Frame`: the encoded bytes with the same header, or, for
  a source that decodes itself (a video's frame, :class:`~gpupipe.frames.video.VideoFrame`), the
  decoded :class:`Pixels`; such a source decodes through the :class:`ClipReader` it is lent (the
  encoder's pool of open decoders), and says in :meth:`~FrameSource.read_order` which reads
  belong together (frames of one clip, read in display order by one task).

Files (:class:`~gpupipe.frames.read.PathSource`) and in-memory data
(:class:`~gpupipe.frames.read.DataSource`) implement it; :func:`~gpupipe.frames.read.as_source`
turns what callers pass (a path, bytes, or a source) into one. A new kind of source (a video's
frames, :mod:`gpupipe.frames.video`) is one more subclass, in its own module: the pipeline, the
encoder and the cache only talk to this contract.

It is a nominal base class (not a structural ``Protocol``) so that telling a source from a
path or bytes at run time is a plain ``isinstance``, never a probe of attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from ..vocabulary import SourceKind
from .clip import Clip
from .headers import Header
from .keys import FileIdentity, SourceKey

__all__ = ["ClipReader", "Frame", "FrameSource", "Limits", "Pixels", "default_max_source_bytes"]


@dataclass(frozen=True)
class Limits:
    """What a source may declare before it is refused with :class:`~gpupipe.errors.FrameTooLarge`:
    ``max_pixels`` declared pixels and ``max_bytes`` encoded bytes (``None``: no limit)."""

    max_pixels: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, eq=False)
class Pixels:
    """A decoded picture, upright (any rotation applied), as the encoders take it.

    ``array`` is ``height × width × 3`` (RGB) or ``× 4`` (RGBA, straight alpha) 8-bit samples,
    C-contiguous: a NumPy array on the host, or, with ``on_device``, a CUDA array (CuPy; DLPack)
    on the GPU that decoded it.
    """

    array: Any
    on_device: bool = False


class ClipReader(Protocol):
    """Decodes a clip's frames for the sources that decode themselves: the pool of open decoders an
    encoder lends its reads (:class:`gpupipe.video.pool.DecoderPool`)."""

    def decode(self, clip: Clip, index: int, label: str) -> Pixels:
        """Frame ``index`` (display order) of ``clip``; raises the frame's :class:`~gpupipe.errors.FrameError` (named ``label``)."""
        ...


@dataclass(frozen=True)
class Frame:
    """A frame read from a source, with its header: encoded bytes, or decoded pixels.

    ``label`` names it in errors; ``header`` is what its header declares; ``identity`` is the
    file's :class:`~gpupipe.frames.keys.FileIdentity` that it was read under (``None`` for
    in-memory data): compare it with the ``identity`` of the source's key. Exactly one of:

    - ``data``: the encoded PNG or JPEG (``header`` is
      :func:`~gpupipe.frames.headers.parse_header` of it); ``pixels`` is ``None``;
    - ``pixels``: the decoded :class:`Pixels` of a source that decodes itself (``header.kind`` is
      ``"pixels"``); ``data`` is empty.
    """

    label: str
    data: bytes
    header: Header
    identity: FileIdentity | None = None
    pixels: Pixels | None = None

    @property
    def kind(self) -> SourceKind:
        """``"png"``, ``"jpeg"``, or ``"pixels"`` for a decoded frame."""
        return self.header.kind

    @property
    def width(self) -> int:
        """The stored width."""
        return self.header.width

    @property
    def height(self) -> int:
        """The stored height."""
        return self.header.height

    @property
    def orientation(self) -> int:
        """The EXIF orientation (1–8; 1 when absent or unusable)."""
        return self.header.orientation

    @property
    def may_have_alpha(self) -> bool:
        """Whether the header allows transparency (see :class:`~gpupipe.frames.headers.Header`)."""
        return self.header.may_have_alpha

    @property
    def mime(self) -> str:
        """The encoded frame's MIME type, ``image/png`` or ``image/jpeg`` (``ValueError`` for pixels)."""
        return self.header.mime

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` once EXIF orientation is applied."""
        return self.header.display_size


class FrameSource(ABC):
    """One frame the pipeline can key, name, size up and read (see the module docstring).

    Every method is safe to call from several threads. ``header`` and ``read`` raise the frame's
    :class:`~gpupipe.errors.FrameError` (named ``label``); for unchanged content, the header
    ``read`` returns equals the one ``header`` returned.
    """

    __slots__ = ()

    @abstractmethod
    def key(self) -> SourceKey:
        """The key of its content now (may ``stat`` a file or hash data: called once per request)."""

    @abstractmethod
    def label(self, key: SourceKey | None = None) -> str:
        """Its short human name for errors and logs. ``key``, its own :meth:`key` when the caller
        has it, lets the name come from the key (in-memory data is then named by its digest)."""

    @abstractmethod
    def header(self, label: str, limits: Limits) -> Header:
        """What its header declares, reading no more than the header needs."""

    @abstractmethod
    def read(self, label: str, limits: Limits, clips: ClipReader | None = None) -> Frame:
        """Its encoded bytes and their header, or its decoded pixels. A source that decodes itself
        does it through ``clips`` (and refuses to read without one: ``ValueError``)."""

    def read_order(self) -> tuple[Hashable, int] | None:
        """``(group, position)`` for reads that belong together: sources of one group are read one
        after another by one task, in position order (a clip's frames in display order, so that
        its decoder decodes forward); ``None`` (the default): read on its own."""
        return None

    def memo(self) -> Hashable | None:
        """A name that stands for this source without any I/O, equal for sources with equal keys
        (a path's text; ``bytes`` themselves), by which a schedule remembers what it already
        keyed; ``None`` (the default): not remembered."""
        return None


def default_max_source_bytes(max_pixels: int) -> int:
    """The largest encoded frame (in bytes) worth reading for a frame of at most ``max_pixels`` pixels.

    The rule: the largest PNG such a frame can be, plus room for metadata. A PNG is largest
    when its pixels are 16-bit RGBA (8 bytes a pixel) stored uncompressed, in the shape with the
    most rows (one pixel wide: one filter byte per pixel), so its raw image data is at most
    ``9 * max_pixels`` bytes. Stored deflate blocks add 5 bytes per block (counted per 16 KiB:
    zlib's stored blocks hold 16–64 KiB) plus the zlib header and checksum (6 bytes); IDAT chunks
    of at least 8 KiB (libpng writes 8 KiB; smaller ones are an encoder's choice we need not
    accept) add 12 bytes per chunk; the signature, IHDR and IEND add 45 bytes. On top of that,
    16 MiB are allowed for ancillary chunks (ICC profiles, text, EXIF). A JPEG of the same pixels
    is smaller: even uniform noise at quality 100 without chroma subsampling takes about 4.1 bytes
    a pixel with libjpeg-turbo. For the default ``max_pixels`` (8192²) this is about 621 MB.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    raw = 9 * max_pixels
    deflated = raw + 5 * -(-raw // 16384) + 6
    idat = deflated + 12 * -(-deflated // 8192)
    return 8 + 25 + idat + 12 + 16 * 1024 * 1024
