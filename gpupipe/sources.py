"""Frame sources: reading a frame's bytes, sniffing its format, and probing its header.

A source is a path (``str`` or ``os.PathLike``) or the encoded bytes themselves. The format
is sniffed from magic bytes, never from a file name. Header probing reads the dimensions,
EXIF orientation and whether the frame can carry alpha without decoding pixels, so that
oversized frames are refused (:class:`~gpupipe.errors.FrameTooLarge`) before any decoder
allocates memory for them.

Reading a path never blocks and never reads without bound: only regular files are read
(a FIFO, device, socket or directory is refused from its ``stat``, before any read), a file
larger than ``max_bytes`` is refused from its size, at most ``max_bytes + 1`` bytes are ever
read, and a file that changes while it is read (its ``stat`` identity differs before and after,
or the bytes read are not its size) is read once more, then refused
(:class:`~gpupipe.errors.FrameChanged`).

Error reasons name what is wrong (a byte offset, a registered PNG chunk type, a size) but never
quote the data read or the file's stat fields; the stat fields of a changing file are logged at
debug level (logger ``gpupipe.sources``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .errors import FrameChanged, FrameDecodeError, FrameNotFound, FrameNotRegularFile, FrameTooLarge
from .vocabulary import MIME, Kind

__all__ = [
    "MIME",
    "Frame",
    "Source",
    "check_complete",
    "default_max_source_bytes",
    "file_identity",
    "fit_size",
    "key_digest",
    "key_identity",
    "probe",
    "read_frame",
    "sniff",
    "source_key",
    "source_label",
]

log = logging.getLogger("gpupipe.sources")

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class Frame:
    """An encoded frame read from a source, with what its header says.

    ``width``/``height`` are the stored dimensions; ``orientation`` is the EXIF orientation
    (1–8: a JPEG's APP1 ``Exif`` segment, or a PNG's ``eXIf`` chunk before its pixel data; 1 when
    absent or unusable); ``may_have_alpha`` is true when the PNG's colour type or a ``tRNS``
    chunk allows transparency (whether any pixel is actually non-opaque needs decoding).
    ``identity`` is the file's :func:`file_identity` that ``data`` was read under (``None`` for
    in-memory data): the same tuple that :func:`source_key` keys the path on.
    """

    label: str
    data: bytes
    kind: Kind
    width: int
    height: int
    orientation: int = 1
    may_have_alpha: bool = False
    identity: tuple | None = None

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
    """The 128-bit BLAKE2b of in-memory frame data: its cache key (and, when a caller has it, its label)."""
    return hashlib.blake2b(data, digest_size=16).digest()


_FINGERPRINT_SPAN = 2048  # bytes taken from each of the start, the middle and the end


def _fingerprint(data: bytes | bytearray | memoryview) -> str:
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


def source_label(source: Source, digest: bytes | None = None) -> str:
    """A short human name for ``source``: its path, or a ``bytes:`` name for in-memory data.

    ``digest`` is the data's key digest (:func:`key_digest` of its :func:`source_key`) when the
    caller already has it: the label is then ``bytes:<hash prefix>``, so that a cached frame and
    its errors share one name. Without it the label is ``bytes:<length>B:<fingerprint>``
    (see :func:`_fingerprint`): the data is not hashed whole only to be named.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if digest is not None:
            return f"bytes:{digest[:6].hex()}"
        return f"bytes:{_fingerprint(source)}"
    return os.fspath(source)


def file_identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``: what says a file's bytes are unchanged.

    The inode change time catches a rewrite that keeps the size and restores the modification
    time (``os.utime``), and the device and inode catch a file replaced by a rename.
    """
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def source_key(source: Source) -> tuple:
    """A cache key for ``source``'s content.

    Paths key on ``("path", resolved path, file_identity)`` (see :func:`file_identity`: a
    rewritten or replaced file is not served stale; a path that cannot be stat'ed has identity
    ``None``); data keys on ``("bytes", 128-bit BLAKE2b of its bytes)``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ("bytes", _digest(source))
    p = Path(source)
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return ("path", os.path.abspath(p), None)
    return ("path", str(p.resolve()), file_identity(st))


def key_digest(key: tuple) -> bytes | None:
    """The data digest inside a key that starts with :func:`source_key`'s tuple (``None`` for a path)."""
    return key[1] if key[0] == "bytes" else None


def key_identity(key: tuple) -> tuple | None:
    """The :func:`file_identity` inside a key that starts with :func:`source_key`'s tuple (``None`` for data,
    or for a path that could not be stat'ed); compare it with :attr:`Frame.identity`."""
    return key[2] if key[0] == "path" else None


def default_max_source_bytes(max_pixels: int) -> int:
    """The largest encoded frame (in bytes) worth reading for a frame of at most ``max_pixels`` pixels.

    The rule: the largest PNG such a frame can be, plus room for metadata. A PNG is largest
    when its pixels are 16-bit RGBA (8 bytes a pixel) stored uncompressed, in the shape with the
    most rows (one pixel wide: one filter byte per pixel), so its raw image data is at most
    ``9 * max_pixels`` bytes. Stored deflate blocks add 5 bytes per block (counted per 16 KiB:
    zlib's stored blocks hold 16–64 KiB) plus the zlib header and checksum (6 bytes); IDAT chunks of at least 8 KiB (libpng writes 8 KiB; smaller
    ones are an encoder's choice we need not accept) add 12 bytes per chunk; the signature, IHDR
    and IEND add 45 bytes. On top of that, 16 MiB are allowed for ancillary chunks (ICC profiles,
    text, EXIF). A JPEG of the same pixels is smaller: even uniform noise at quality 100 without
    chroma subsampling takes about 4.1 bytes a pixel with libjpeg-turbo. For the default
    ``max_pixels`` (8192²) this is about 621 MB.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    raw = 9 * max_pixels
    deflated = raw + 5 * -(-raw // 16384) + 6
    idat = deflated + 12 * -(-deflated // 8192)
    return 8 + 25 + idat + 12 + 16 * 1024 * 1024


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
        raise FrameTooLarge(label, f"{nbytes} bytes exceeds max_source_bytes = {max_bytes}")


@contextmanager
def open_frame_file(
    path: str | os.PathLike[str], label: str, max_bytes: int | None = None
) -> Iterator[tuple[int, os.stat_result]]:
    """Open a frame file for reading; yields the descriptor and its ``fstat``.

    Refuses at once, before reading a byte: anything but a regular file (FIFOs, devices,
    sockets, directories: :class:`~gpupipe.errors.FrameNotRegularFile`; the path's own stat is
    checked first so a device node is never even opened, and the open never blocks, so a FIFO
    swapped in after the stat cannot hang the caller) and a file over ``max_bytes``
    (:class:`FrameTooLarge`). A missing or unreadable file is :class:`FrameNotFound`.
    """
    try:
        _refuse_special(label, os.stat(path))
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise _os_error(label, e) from None
    except ValueError as e:  # a NUL byte in the path
        raise FrameNotFound(label, f"cannot read: {e}") from None
    try:
        st = os.fstat(fd)
        _refuse_special(label, st)
        check_source_bytes(label, st.st_size, max_bytes)
        yield fd, st
    except OSError as e:
        raise _os_error(label, e) from None
    finally:
        os.close(fd)


# Chunk types of the PNG specification (3rd edition) and APNG: named in error reasons; any other
# type is file content, and is called "an unregistered chunk".
_PNG_CHUNK_TYPES = frozenset(
    b"IHDR PLTE IDAT IEND tRNS cHRM gAMA iCCP sBIT sRGB cICP mDCV cLLI tEXt zTXt iTXt bKGD hIST pHYs sPLT eXIf tIME "
    b"acTL fcTL fdAT".split()
)


def _chunk_name(ctype: bytes) -> str:
    """``the 'iCCP' chunk`` for a registered chunk type, ``an unregistered chunk`` for any other bytes."""
    return f"the {ctype.decode('ascii')!r} chunk" if ctype in _PNG_CHUNK_TYPES else "an unregistered chunk"


def _probe_png(label: str, data: bytes, max_pixels: int | None = None) -> tuple[int, int, int, bool]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise FrameDecodeError(label, "truncated PNG: no complete IHDR header")
    width, height, _depth, ctype = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise FrameDecodeError(label, f"PNG declares an empty image ({width}x{height})")
    check_pixels(label, width, height, max_pixels)  # the size guard comes first, even over a bad CRC
    alpha = ctype in (4, 6)
    orientation = 1
    # Walk the header chunks before the first IDAT (cheap: headers only): look for tRNS and
    # eXIf, and check each CRC, as decoders do (Pillow and libpng refuse a bad CRC there), so
    # that a passed-through frame is never one they would reject at its header. An eXIf chunk
    # counts only before IDAT, as in the PNG specification (3rd edition), Chromium and Safari;
    # one after the pixel data is ignored (as browsers ignore it).
    pos = 8
    n = len(data)
    while pos + 8 <= n:
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        ctype_ = data[pos + 4 : pos + 8]
        if ctype_ in (b"IDAT", b"IEND"):
            break
        end = pos + 8 + length
        if end + 4 > n:
            raise FrameDecodeError(label, f"truncated PNG: {_chunk_name(ctype_)} runs past the end of the data")
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            raise FrameDecodeError(label, f"corrupt PNG: bad CRC in {_chunk_name(ctype_)}")
        if ctype_ == b"tRNS":
            alpha = True
        elif ctype_ == b"eXIf" and orientation == 1:
            orientation = _tiff_orientation(data[pos + 8 : end])
        pos = end + 4
    return width, height, orientation, alpha


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


def _tiff_orientation(tiff: bytes) -> int:
    """The EXIF orientation (1–8) in a TIFF structure (an ``Exif`` APP1 payload after its 6-byte
    header, or a PNG ``eXIf`` chunk), read the way browsers read it; 1 when absent or unusable.

    Only the first IFD is read. The tag counts only as a SHORT with a count of 1 and a value of
    1–8 (Chromium's rule); entries are read while the tag count says so *and* the data holds
    them. Never raises: any malformed structure means orientation 1.
    """
    try:
        bo = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
        if bo is None or len(tiff) < 8:
            return 1
        (ifd,) = struct.unpack(bo + "I", tiff[4:8])
        if ifd + 2 > len(tiff):
            return 1
        (count,) = struct.unpack(bo + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            e = ifd + 2 + 12 * i
            if e + 12 > len(tiff):
                break
            tag, typ, cnt = struct.unpack(bo + "HHI", tiff[e : e + 8])
            if tag == 0x0112 and typ == 3 and cnt == 1:
                (val,) = struct.unpack(bo + "H", tiff[e + 8 : e + 10])
                return val if 1 <= val <= 8 else 1
    except Exception:  # noqa: BLE001 - metadata must never fail a frame
        return 1
    return 1


def exif_orientation(seg: bytes) -> int:
    """Orientation tag (0x0112) from an APP1 ``Exif`` segment payload, or 1 (never raises)."""
    if not seg.startswith(b"Exif\x00\x00"):
        return 1
    return _tiff_orientation(seg[6:])


def _probe_jpeg(label: str, data: bytes, max_pixels: int | None = None) -> tuple[int, int, int, bool]:  # noqa: PLR0912 - one branch per marker kind
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
        raise FrameDecodeError(label, "not a PNG or JPEG file (unrecognised signature)")
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


def _not_regular(mode: int) -> str | None:
    """What a non-regular file is (``"a FIFO"``, ...), or ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, what in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return what
    return "not a regular file"


# Non-blocking, so that a FIFO swapped in after the stat cannot block the open; no controlling tty.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)


def _os_error(label: str, e: OSError) -> FrameNotFound:
    if isinstance(e, FileNotFoundError):
        return FrameNotFound(label, "no such file")
    if e.errno == errno.ENXIO:  # open() of a socket
        return FrameNotRegularFile(label, "cannot be read as a frame file (no such device or address: a socket?)")
    return FrameNotFound(label, f"cannot read: {e.strerror or e}")


def _refuse_special(label: str, st: os.stat_result) -> None:
    what = _not_regular(st.st_mode)
    if what is not None:
        raise FrameNotRegularFile(label, f"is {what}, not a regular file")


def _read_once(label: str, max_bytes: int | None) -> tuple[bytes, tuple, tuple]:
    """One attempt: ``(data, identity before the read, identity after it)``."""
    with open_frame_file(label, label, max_bytes) as (fd, before):
        size = before.st_size
        # One byte past the size shows a file that grew; never more than max_bytes + 1 per attempt.
        limit = size + 1 if max_bytes is None else min(size, max_bytes) + 1
        chunks: list[bytes] = []
        got = 0
        while got < limit:
            b = os.read(fd, limit - got)
            if not b:
                break
            chunks.append(b)
            got += len(b)
        after = os.fstat(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return data, file_identity(before), file_identity(after)


def _read_path(label: str, max_bytes: int | None) -> tuple[bytes, tuple]:
    """A regular file's bytes and the identity they were read under; see :func:`read_frame`."""
    for _attempt in range(2):
        data, before, after = _read_once(label, max_bytes)
        if before == after and len(data) == before[2]:
            return data, before
        log.debug(
            "%s changed while being read (stat before: %s, after: %s; read %d bytes of %d)",
            label,
            before,
            after,
            len(data),
            before[2],
        )
    raise FrameChanged(label, "changed while being read, twice in a row (is it still being written?)")


def read_frame(
    source: Source,
    max_pixels: int | None = None,
    *,
    digest: bytes | None = None,
    max_bytes: int | None = None,
) -> Frame:
    """Read ``source`` and probe its header (``digest``: see :func:`source_label`).

    A path is read only if it is a regular file (symlinks followed); a FIFO, device, socket or
    directory is refused at once, without reading. A file (or in-memory data) of more than
    ``max_bytes`` bytes is refused before it is read, and at most ``max_bytes + 1`` bytes are
    read even if the file grows meanwhile (see :func:`default_max_source_bytes`). A file whose
    :func:`file_identity` changes while it is read, or that does not hold as many bytes as its
    size said, is read once more and then refused.

    Raises :class:`FrameNotFound` (missing or unreadable file;
    :class:`~gpupipe.errors.FrameNotRegularFile` for what is not a regular file),
    :class:`FrameDecodeError` (empty, unrecognised or truncated header; its subclass
    :class:`~gpupipe.errors.FrameChanged` for a file that kept changing while read) or :class:`FrameTooLarge` (more than ``max_bytes`` bytes, or more than
    ``max_pixels`` declared pixels).
    """
    identity: tuple | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = source_label(source, digest)
        check_source_bytes(label, memoryview(source).nbytes, max_bytes)
        data = bytes(source)
    else:
        label = os.fspath(source)
        data, identity = _read_path(label, max_bytes)
    kind, w, h, orientation, alpha = probe(label, data, max_pixels)
    return Frame(label, data, kind, w, h, orientation, alpha, identity)
