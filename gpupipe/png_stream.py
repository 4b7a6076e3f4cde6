"""A PNG's image stream for decoders outside Pillow: its IHDR, its IDAT data as raw deflate, and
which PNGs the device decoder (:mod:`gpupipe.gpu.png_decode`) handles.

PNG's IDAT chunks, concatenated, form one zlib stream (RFC 1950): a 2-byte header, raw deflate
(RFC 1951), a 4-byte Adler-32. nvCOMP inflates raw deflate, so :func:`png_stream` strips the
header and the checksum (the device path does not verify the Adler-32; chunk CRCs are not
checked either: a PNG whose inflate fails goes to the CPU path, which decides).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["PngHeader", "PngStream", "device_decodable", "first_filter_types", "png_header", "png_stream"]

_SIG = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass(frozen=True)
class PngHeader:
    """IHDR fields, and the filtered image's layout (non-interlaced): ``height`` rows of one
    filter-type byte then ``row_bytes`` bytes; ``bpp`` is the filters' byte distance (at least 1)."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int

    @property
    def channels(self) -> int:
        return _CHANNELS[self.color_type]

    @property
    def row_bytes(self) -> int:
        return (self.width * self.channels * self.bit_depth + 7) // 8

    @property
    def bpp(self) -> int:
        return max(1, self.channels * self.bit_depth // 8)

    @property
    def filtered_size(self) -> int:
        """Bytes of the inflated stream of a non-interlaced image."""
        return self.height * (1 + self.row_bytes)


@dataclass(frozen=True)
class PngStream:
    """A PNG's header, its image data as raw deflate, and whether it has ``tRNS`` / ``PLTE`` chunks."""

    header: PngHeader
    deflate: bytes
    has_trns: bool
    has_plte: bool


def _ihdr(body: memoryview) -> PngHeader:
    if len(body) != 13:
        raise ValueError("IHDR of the wrong length")
    w, h, depth, ctype, _comp, _filt, inter = struct.unpack(">IIBBBBB", body)
    if ctype not in _CHANNELS or w == 0 or h == 0:
        raise ValueError("IHDR names no valid image")
    return PngHeader(w, h, depth, ctype, inter)


def png_stream(data: bytes | memoryview) -> PngStream:
    """Parse the chunks of a PNG file; ``ValueError`` (naming what is wrong, not the content) when
    it is not a PNG this can read: a bad signature, a truncated chunk, no IHDR or IDAT, or a zlib
    header that is not plain deflate (CM 8, no preset dictionary, FCHECK right)."""
    buf = memoryview(data)
    if bytes(buf[:8]) != _SIG:
        raise ValueError("not a PNG signature")
    pos, header, idat, trns, plte = 8, None, [], False, False
    while pos + 8 <= len(buf):
        (length,) = struct.unpack(">I", buf[pos : pos + 4])
        tag = bytes(buf[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > len(buf):
            raise ValueError(f"chunk {tag!r} truncated")
        body = buf[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            header = _ihdr(body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"tRNS":
            trns = True
        elif tag == b"PLTE":
            plte = True
        elif tag == b"IEND":
            break
        pos = end
    if header is None or not idat:
        raise ValueError("no IHDR or no IDAT chunk")
    z = b"".join(idat)
    if len(z) < 6:
        raise ValueError("zlib stream too short")
    cmf, flg = z[0], z[1]
    if cmf & 0x0F != 8 or (cmf << 8 | flg) % 31 or flg & 0x20:
        raise ValueError("zlib header is not plain deflate")
    return PngStream(header, z[2:-4], trns, plte)


def png_header(data: bytes | memoryview) -> tuple[PngHeader, bool] | None:
    """The IHDR and whether a ``tRNS`` chunk precedes the first IDAT (where PNG puts it), reading
    the chunk headers only (no copy of the image data); ``None`` when that cannot be read."""
    buf = memoryview(data)
    if bytes(buf[:8]) != _SIG or len(buf) < 33 or bytes(buf[12:16]) != b"IHDR":
        return None
    try:
        header = _ihdr(buf[16:29])
    except ValueError:
        return None
    pos, trns = 33, False
    while pos + 8 <= len(buf):
        (length,) = struct.unpack(">I", buf[pos : pos + 4])
        tag = bytes(buf[pos + 4 : pos + 8])
        if tag in (b"IDAT", b"IEND"):
            break
        trns = trns or tag == b"tRNS"
        pos += 12 + length
    return header, trns


def first_filter_types(data: bytes | memoryview, header: PngHeader, rows: int = 4) -> bytes:
    """The filter-type bytes of the first ``rows`` rows of a non-interlaced PNG (fewer when the
    image data ends first; empty when it cannot be read), inflating only those rows (across as
    many IDAT chunks as they span: encoders such as ffmpeg write small ones)."""
    buf = memoryview(data)
    want = min(rows, header.height) * (1 + header.row_bytes)
    z = zlib.decompressobj()
    head = b""
    pos = 8
    while pos + 8 <= len(buf) and len(head) < want:
        (length,) = struct.unpack(">I", buf[pos : pos + 4])
        if bytes(buf[pos + 4 : pos + 8]) == b"IDAT":
            try:
                head += z.decompress(bytes(buf[pos + 8 : pos + 8 + length]), want - len(head))
            except zlib.error:
                return b""
        pos += 12 + length
    return head[:: 1 + header.row_bytes]


def device_decodable(h: PngHeader, has_trns: bool = False) -> bool:
    """Whether the device decoder gives exactly the CPU path's pixels for such a PNG: 8-bit RGB
    (without a ``tRNS`` colour key) or RGBA, not interlaced. Everything else goes to the CPU path."""
    return h.bit_depth == 8 and h.interlace == 0 and (h.color_type == 6 or (h.color_type == 2 and not has_trns))
