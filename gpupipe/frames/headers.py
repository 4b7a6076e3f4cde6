"""The one PNG/JPEG header parser: format, size, channels, EXIF orientation and transparency.

:func:`parse_header` reads what a frame's header declares without decoding pixels, from the
whole frame, and :func:`parse_prefix` from its first bytes: both give the same :class:`Header`, so
the header that sizes a frame's work (:mod:`gpupipe.footprint`) is the header of the frame that
is then read. The format is sniffed from magic bytes, never from a file name.

The rules, as decoders and browsers apply them:

- **PNG**: ``IHDR`` gives the size, bit depth and colour type. Every chunk before the first
  ``IDAT`` must lie inside the data with a correct CRC (Pillow and libpng refuse a bad CRC there);
  a ``tRNS`` chunk or an alpha colour type means the frame may have alpha; an ``eXIf`` chunk
  before ``IDAT`` gives the EXIF orientation (one after the pixel data is ignored, as in the PNG
  specification, 3rd edition, Chromium and Safari).
- **JPEG**: segments are walked up to the first scan (``SOS``). The first frame header (``SOF``)
  gives the size and, at offset 9 from its marker's ``0xFF``, the component count (1 gray,
  3 YCbCr, 4 CMYK/YCCK); the first ``APP1 Exif`` segment with an orientation gives it; Huffman
  tables (``DHT``) are checked as libjpeg checks them.
- **EXIF orientation** is read as Chromium reads it: first IFD only, tag 0x0112 as a SHORT with a
  count of 1 and a value of 1–8; anything malformed means 1. It never fails a frame.

A declared size over ``max_pixels`` fails with :class:`~gpupipe.errors.FrameTooLarge` as soon as
it is read, before anything else is checked. Error reasons name what is wrong (a byte offset, a
registered PNG chunk type, a size) but never quote the data.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import FrameDecodeError, FrameTooLarge
from ..vocabulary import MIME, Kind, SourceKind

__all__ = [
    "PNG_IEND",
    "PNG_SIGNATURE",
    "Header",
    "check_pixels",
    "exif_orientation",
    "parse_header",
    "parse_prefix",
    "sniff",
    "tiff_orientation",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"

Bytes = bytes | memoryview


@dataclass(frozen=True)
class Header:
    """What a frame's header declares.

    ``kind``: ``"png"`` or ``"jpeg"`` for an encoded frame; ``"pixels"`` for a frame its source
    decodes itself (a video's frame, :mod:`gpupipe.frames.video`): its ``channels`` are 3 (RGB) or
    4 (RGBA), ``sample_bytes`` 1, ``source_bytes`` the decoded picture's bytes, ``orientation`` 1
    (the picture comes upright), and ``scratch_bytes`` what decoding it holds besides the picture.
    ``width``/``height``: the stored size. ``channels``: the channels the image stores, as Pillow
    opens it (PNG gray 1, gray+alpha 2, RGB 3, RGBA 4, palette 1; JPEG components: 1, 3 or 4).
    ``sample_bytes``: bytes per sample (2 for 16-bit PNG, else 1). ``source_bytes``: the encoded
    frame's size. ``orientation``: the EXIF orientation (1–8; 1 when absent or unusable).
    ``may_have_alpha``: the PNG's colour type or a ``tRNS`` chunk allows transparency (whether
    any pixel is actually non-opaque needs decoding); never for JPEG.
    """

    kind: SourceKind
    width: int
    height: int
    channels: int
    sample_bytes: int
    source_bytes: int
    orientation: int = 1
    may_have_alpha: bool = False
    scratch_bytes: int = 0

    @property
    def encoded(self) -> bool:
        """Whether the frame is an encoded image (PNG or JPEG), not decoded pixels."""
        return self.kind != "pixels"

    @property
    def mime(self) -> str:
        """The encoded frame's MIME type, ``image/png`` or ``image/jpeg``; ``ValueError`` for decoded pixels."""
        if self.kind == "pixels":
            raise ValueError("decoded pixels have no MIME type: they are encoded first")
        return MIME[self.kind]

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` once EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height

    @property
    def native_rgb(self) -> bool:
        """Whether the decoder's own image is already 8-bit RGB or RGBA (no conversion copy)."""
        if self.sample_bytes != 1:
            return False
        return self.channels == 3 or (self.channels == 4 and self.kind != "jpeg")


class _Short(Exception):
    """The prefix parsed ends before the header does: more bytes are needed."""


def sniff(data: Bytes) -> Kind | None:
    """``"png"``, ``"jpeg"`` or ``None`` from the magic bytes."""
    head = bytes(data[:8])
    if head == PNG_SIGNATURE:
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def check_pixels(label: str, width: int, height: int, max_pixels: int | None) -> None:
    """Raise :class:`FrameTooLarge` if ``width``×``height`` exceeds ``max_pixels`` (``None``: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise FrameTooLarge(label, f"{width}x{height} = {width * height} pixels exceeds max_pixels = {max_pixels}")


def parse_header(label: str, data: Bytes, max_pixels: int | None = None) -> Header:
    """The :class:`Header` of the whole frame ``data`` (named ``label`` in errors).

    Raises :class:`FrameDecodeError` for an empty, unrecognised, truncated or corrupt header (a
    bad CRC in a PNG chunk before the pixel data, a malformed JPEG Huffman table) and
    :class:`FrameTooLarge` as soon as the declared size exceeds ``max_pixels`` (if given).
    """
    header = _parse(label, data, len(data), max_pixels)
    assert header is not None  # the whole frame is never short of its own header
    return header


def parse_prefix(label: str, prefix: Bytes, total: int, max_pixels: int | None = None) -> Header | None:
    """The :class:`Header` of a frame of ``total`` bytes from its first bytes, ``prefix``; ``None``
    when the header runs past them (read more and ask again).

    A header the prefix holds is exactly the one :func:`parse_header` gives for the whole frame,
    and the errors are the same: the walk over the header is the same, only stopping where the
    prefix ends. ``total`` is the header's ``source_bytes``.
    """
    return _parse(label, prefix, max(total, len(prefix)), max_pixels)


def _parse(label: str, data: Bytes, size: int, max_pixels: int | None) -> Header | None:
    if size == 0:
        raise FrameDecodeError(label, "empty frame (0 bytes)")
    complete = len(data) >= size
    kind = sniff(data)
    if kind is None:
        head = bytes(data[:8])
        if not complete and len(head) < 8 and (PNG_SIGNATURE.startswith(head) or b"\xff\xd8\xff".startswith(head[:3])):
            return None  # a prefix too short to tell
        raise FrameDecodeError(label, "not a PNG or JPEG file (unrecognised signature)")
    try:
        if kind == "png":
            return _png(label, data, size, max_pixels, complete)
        return _jpeg(label, data, size, max_pixels, complete)
    except _Short:
        return None


# --------------------------------------------------------------------------- PNG

# Chunk types of the PNG specification (3rd edition) and APNG: named in error reasons; any other
# type is file content, and is called "an unregistered chunk".
_PNG_CHUNK_TYPES = frozenset(
    b"IHDR PLTE IDAT IEND tRNS cHRM gAMA iCCP sBIT sRGB cICP mDCV cLLI tEXt zTXt iTXt bKGD hIST pHYs sPLT eXIf tIME "
    b"acTL fcTL fdAT".split()
)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> stored channels (an unknown type: 4, the most)


def _chunk_name(ctype: bytes) -> str:
    """``the 'iCCP' chunk`` for a registered chunk type, ``an unregistered chunk`` for any other bytes."""
    return f"the {ctype.decode('ascii')!r} chunk" if ctype in _PNG_CHUNK_TYPES else "an unregistered chunk"


def _png(label: str, data: Bytes, size: int, max_pixels: int | None, complete: bool) -> Header:
    n = len(data)
    if n < 33 or bytes(data[12:16]) != b"IHDR":
        if not complete and n < 33 and bytes(data[12:16]) == b"IHDR"[: max(0, n - 12)]:
            raise _Short
        raise FrameDecodeError(label, "truncated PNG: no complete IHDR header")
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise FrameDecodeError(label, f"PNG declares an empty image ({width}x{height})")
    check_pixels(label, width, height, max_pixels)  # the size guard comes first, even over a bad CRC
    alpha = ctype in (4, 6)
    orientation = 1
    # Walk the chunks before the first IDAT (cheap: headers only): tRNS, eXIf, and each CRC.
    pos = 8
    while True:
        if pos + 8 > n:
            if not complete:
                raise _Short
            break
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunk = bytes(data[pos + 4 : pos + 8])
        if chunk in (b"IDAT", b"IEND"):
            break
        end = pos + 8 + length
        if end + 4 > n:
            if not complete:
                raise _Short
            raise FrameDecodeError(label, f"truncated PNG: {_chunk_name(chunk)} runs past the end of the data")
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            raise FrameDecodeError(label, f"corrupt PNG: bad CRC in {_chunk_name(chunk)}")
        if chunk == b"tRNS":
            alpha = True
        elif chunk == b"eXIf" and orientation == 1:
            orientation = tiff_orientation(bytes(data[pos + 8 : end]))
        pos = end + 4
    channels = _PNG_CHANNELS.get(ctype, 4)
    return Header("png", width, height, channels, 2 if depth == 16 else 1, size, orientation, alpha)


# --------------------------------------------------------------------------- JPEG

_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
"""Frame-header markers: baseline, extended, progressive, lossless; Huffman or arithmetic coding."""


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


def _jpeg(label: str, data: Bytes, size: int, max_pixels: int | None, complete: bool) -> Header:  # noqa: PLR0912 - one branch per marker kind
    # Walk the header segments up to the first scan (SOS). Past SOF, anything unexpected just ends
    # the walk (decoders tolerate it). A prefix that ends inside the walk is _Short.
    pos, n = 2, len(data)
    orientation = 1
    sof: tuple[int, int, int] | None = None  # width, height, components
    while True:
        if pos + 4 > n:
            if not complete:
                raise _Short
            break
        if data[pos] != 0xFF:
            if sof is not None:
                break
            raise FrameDecodeError(label, f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            if sof is not None:
                break
            raise FrameDecodeError(label, f"corrupt JPEG: bad segment length at byte {pos}")
        end = pos + 2 + length
        if end > n and not complete:
            raise _Short
        if marker == 0xE1 and orientation == 1:
            orientation = exif_orientation(bytes(data[pos + 4 : end]))
        if marker == 0xC4 and end <= n and not _dht_ok(bytes(data[pos + 4 : end])):
            raise FrameDecodeError(label, f"corrupt JPEG: bad Huffman table at byte {pos}")
        if marker in _SOF and sof is None:
            # FF Cn Lh Ll P Yh Yl Xh Xl Nf: the component count Nf is at pos + 9.
            if pos + 10 > n:
                if not complete:
                    raise _Short
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if width == 0 or height == 0:
                raise FrameDecodeError(label, f"JPEG declares an empty image ({width}x{height})")
            check_pixels(label, width, height, max_pixels)
            sof = (width, height, data[pos + 9])
        pos = end
    if sof is None:
        raise FrameDecodeError(label, "truncated or corrupt JPEG: no frame header (SOF) found")
    width, height, components = sof
    return Header("jpeg", width, height, components, 1, size, orientation)


# --------------------------------------------------------------------------- EXIF


def tiff_orientation(tiff: bytes) -> int:
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
    return tiff_orientation(seg[6:])
