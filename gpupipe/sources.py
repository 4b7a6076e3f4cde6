"""Frame sources: reading a frame's bytes, sniffing its format, and probing its header.

A source is a path (``str`` or ``os.PathLike``) or the encoded bytes themselves. The format
is sniffed from magic bytes, never from a file name. Header probing reads the dimensions,
EXIF orientation and whether the frame can carry alpha without decoding pixels, so that
oversized frames are refused (:class:`~gpupipe.errors.FrameTooLarge`) before any decoder
allocates memory for them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Literal, Union

from .errors import FrameDecodeError, FrameNotFound, FrameTooLarge

__all__ = ["Source", "Frame", "read_frame", "probe", "check_complete", "sniff", "source_label", "source_key", "key_digest", "fit_size", "MIME"]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
Kind = Literal["png", "jpeg"]
MIME: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class Frame:
    """An encoded frame read from a source, with what its header says.

    ``width``/``height`` are the stored dimensions; ``orientation`` is the EXIF orientation
    (1–8, JPEG only); ``may_have_alpha`` is true when the PNG's colour type or a ``tRNS``
    chunk allows transparency (whether any pixel is actually non-opaque needs decoding).
    """

    label: str
    data: bytes
    kind: Kind
    width: int
    height: int
    orientation: int = 1
    may_have_alpha: bool = False

    @property
    def mime(self) -> str:
        """The frame's MIME type, ``image/png`` or ``image/jpeg``."""
        return MIME[self.kind]

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` once EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def _digest(data: bytes | bytearray | memoryview) -> bytes:
    """The 128-bit BLAKE2b of in-memory frame data: its cache key, and the first 6 bytes its label."""
    return hashlib.blake2b(data, digest_size=16).digest()


def source_label(source: Source, digest: bytes | None = None) -> str:
    """A short human name for ``source``: its path, or ``bytes:<hash prefix>`` for data.

    ``digest`` is the data's key digest (:func:`key_digest` of its :func:`source_key`) when the
    caller already has it, so that a frame's bytes are hashed once, not twice.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"bytes:{(digest or _digest(source))[:6].hex()}"
    return os.fspath(source)


def source_key(source: Source) -> tuple:
    """A cache key for ``source``'s content.

    Paths key on the resolved path, size and modification time (so a rewritten file is not
    served stale); data keys on a 128-bit BLAKE2b hash of its bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ("bytes", _digest(source))
    p = Path(source)
    try:
        st = p.stat()
        return ("path", str(p.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        return ("path", os.path.abspath(p), -1, -1)


def key_digest(key: tuple) -> bytes | None:
    """The data digest inside a key that starts with :func:`source_key`'s tuple (``None`` for a path)."""
    return key[1] if key[0] == "bytes" else None


def sniff(data: bytes | memoryview) -> Kind | None:
    """``"png"``, ``"jpeg"`` or ``None`` from the magic bytes."""
    head = bytes(data[:8])
    if head == PNG_SIGNATURE:
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def fit_size(width: int, height: int, size: tuple[int, int] | None) -> tuple[int, int]:
    """Dimensions of a ``width``×``height`` image scaled down to fit inside ``size``, aspect kept.

    Never scales up; each side is at least 1 pixel.
    """
    if size is None:
        return width, height
    bw, bh = size
    if width <= bw and height <= bh:
        return width, height
    scale = min(bw / width, bh / height)
    return max(1, min(bw, round(width * scale))), max(1, min(bh, round(height * scale)))


def check_pixels(label: str, width: int, height: int, max_pixels: int | None) -> None:
    """Raise :class:`FrameTooLarge` if ``width``×``height`` exceeds ``max_pixels`` (``None``: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise FrameTooLarge(label, f"{width}x{height} = {width * height} pixels exceeds max_pixels = {max_pixels}")


def check_source_bytes(label: str, nbytes: int, max_bytes: int | None) -> None:
    """Raise :class:`FrameTooLarge` if an encoded frame of ``nbytes`` exceeds ``max_bytes`` (``None``: no limit)."""
    if max_bytes is not None and nbytes > max_bytes:
        raise FrameTooLarge(label, f"the encoded frame is {nbytes} bytes, over the limit of {max_bytes} bytes (max_source_bytes)")


_FILE_TYPES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


@contextmanager
def open_frame_file(path: str | os.PathLike[str], label: str, max_bytes: int | None = None) -> Iterator[tuple[BinaryIO, int]]:
    """Open a frame file for reading; yields the file and its size.

    Never blocks (``O_NONBLOCK``: a FIFO cannot hang the caller) and refuses at once anything
    but a regular file (FIFOs, devices, sockets, directories) with :class:`FrameNotFound`, and a
    file over ``max_bytes`` with :class:`FrameTooLarge`, before reading a byte.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FrameNotFound(label, "no such file") from None
    except IsADirectoryError:
        raise FrameNotFound(label, "is a directory, not a frame file") from None
    except OSError as e:
        raise FrameNotFound(label, f"cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = _FILE_TYPES.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise FrameNotFound(label, f"is {what}, not a regular frame file")
        check_source_bytes(label, st.st_size, max_bytes)
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size  # type: ignore[misc]


def _probe_png(label: str, data: bytes, max_pixels: int | None = None) -> tuple[int, int, int, bool]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise FrameDecodeError(label, "truncated PNG: no complete IHDR header")
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise FrameDecodeError(label, f"PNG declares an empty image ({width}x{height})")
    check_pixels(label, width, height, max_pixels)  # the size guard comes first, even over a bad CRC
    alpha = ctype in (4, 6)
    # Walk the header chunks before the first IDAT (cheap: headers only): look for tRNS and
    # check each CRC, as decoders do (Pillow and libpng refuse a bad CRC there), so that a
    # passed-through frame is never one they would reject at its header.
    pos = 8
    n = len(data)
    while pos + 8 <= n:
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        ctype_ = data[pos + 4 : pos + 8]
        if ctype_ in (b"IDAT", b"IEND"):
            break
        end = pos + 8 + length
        if end + 4 > n:
            raise FrameDecodeError(label, f"truncated PNG: {ctype_!r} chunk runs past the end of the data")
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            raise FrameDecodeError(label, f"corrupt PNG: bad CRC in the {ctype_.decode('latin-1')!r} chunk")
        if ctype_ == b"tRNS":
            alpha = True
        pos = end + 4
    return width, height, 1, alpha


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _dht_ok(seg: bytes) -> bool:
    """Whether a DHT segment's payload holds well-formed Huffman tables (libjpeg's checks)."""
    pos, n = 0, len(seg)
    while n - pos > 16:
        index = seg[pos]
        bits = seg[pos + 1 : pos + 17]
        count = sum(bits)
        pos += 17
        if count > 256 or count > n - pos or (index & 0xEF) > 3:
            return False
        code = 0
        for si, nb in enumerate(bits, start=1):  # canonical codes must not overflow their length
            code += nb
            if code >= 1 << si:
                return False
            code <<= 1
        pos += count
    return pos == n


def exif_orientation(seg: bytes) -> int:
    """Orientation tag (0x0112) from an APP1 ``Exif`` segment payload, or 1."""
    if not seg.startswith(b"Exif\x00\x00") or len(seg) < 14:
        return 1
    tiff = seg[6:]
    bo = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if bo is None:
        return 1
    try:
        (ifd,) = struct.unpack(bo + "I", tiff[4:8])
        (count,) = struct.unpack(bo + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            e = ifd + 2 + 12 * i
            tag, typ, _cnt = struct.unpack(bo + "HHI", tiff[e : e + 8])
            if tag == 0x0112 and typ == 3:
                (val,) = struct.unpack(bo + "H", tiff[e + 8 : e + 10])
                return val if 1 <= val <= 8 else 1
    except struct.error:
        return 1
    return 1


def _probe_jpeg(label: str, data: bytes, max_pixels: int | None = None) -> tuple[int, int, int, bool]:
    # Walk the header segments up to the first scan (SOS): the frame header (SOF) gives the
    # size, APP1 the EXIF orientation, and Huffman tables (DHT, usually after SOF) are checked
    # the way libjpeg checks them, so that passthrough never emits a JPEG whose header it
    # would refuse. Past SOF, anything unexpected just ends the walk (decoders tolerate it).
    pos, n = 2, len(data)
    orientation = 1
    size: tuple[int, int] | None = None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            if size is not None:
                break
            raise FrameDecodeError(label, f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            if size is not None:
                break
            raise FrameDecodeError(label, f"corrupt JPEG: bad segment length at byte {pos}")
        if marker == 0xE1 and orientation == 1:
            orientation = exif_orientation(data[pos + 4 : pos + 2 + length])
        if marker == 0xC4 and pos + 2 + length <= n and not _dht_ok(data[pos + 4 : pos + 2 + length]):
            raise FrameDecodeError(label, f"corrupt JPEG: bad Huffman table at byte {pos}")
        if marker in _SOF and size is None:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if width == 0 or height == 0:
                raise FrameDecodeError(label, f"JPEG declares an empty image ({width}x{height})")
            check_pixels(label, width, height, max_pixels)
            size = (width, height)
        pos += 2 + length
    if size is not None:
        return size[0], size[1], orientation, False
    raise FrameDecodeError(label, "truncated or corrupt JPEG: no frame header (SOF) found")


def probe(label: str, data: bytes, max_pixels: int | None = None) -> tuple[Kind, int, int, int, bool]:
    """``(kind, width, height, orientation, may_have_alpha)`` from the header of ``data``.

    Raises :class:`FrameDecodeError` for empty, unrecognised, truncated or corrupt headers
    (a bad CRC in a PNG chunk before the pixel data, a malformed JPEG Huffman table), and
    :class:`FrameTooLarge` as soon as the declared size exceeds ``max_pixels`` (if given).
    """
    if len(data) == 0:
        raise FrameDecodeError(label, "empty frame (0 bytes)")
    kind = sniff(data)
    if kind is None:
        raise FrameDecodeError(label, f"not a PNG or JPEG image (starts with {bytes(data[:8])!r})")
    if kind == "png":
        return (kind, *_probe_png(label, data, max_pixels))
    return (kind, *_probe_jpeg(label, data, max_pixels))


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


def read_frame(source: Source, max_pixels: int | None = None, *, digest: bytes | None = None) -> Frame:
    """Read ``source`` and probe its header (``digest``: see :func:`source_label`).

    Raises :class:`FrameNotFound` (missing or unreadable file), :class:`FrameDecodeError`
    (empty, unrecognised or truncated header) or :class:`FrameTooLarge` (more than
    ``max_pixels`` declared pixels).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = source_label(data, digest)
    else:
        label = os.fspath(source)
        try:
            with open(label, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FrameNotFound(label, "no such file") from None
        except IsADirectoryError:
            raise FrameNotFound(label, "is a directory, not a frame file") from None
        except OSError as e:
            raise FrameNotFound(label, f"cannot read: {e.strerror or e}") from None
    kind, w, h, orientation, alpha = probe(label, data, max_pixels)
    return Frame(label, data, kind, w, h, orientation, alpha)
