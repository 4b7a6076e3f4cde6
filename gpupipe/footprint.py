"""What a frame's work holds in memory while in flight, from its header alone.

The cache admits work by its estimated bytes before the work starts (see :mod:`gpupipe.cache`),
so the estimate must be known before the frame is read in full and must never under-count.
:func:`read_header` reads only a frame's header (a few KiB; never a whole file); the
``*_footprint`` functions turn a :class:`Header` and an :class:`~gpupipe.plan.OutputSpec` into
bytes. ``tests/test_footprint.py`` measures them against the resident memory that encoding
really takes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .cache import Estimate
from .errors import FrameDecodeError, FrameError
from .plan import OutputSpec, passes_through
from .sources import Kind, Source, check_pixels, check_source_bytes, exif_orientation, fit_size, open_frame_file, probe, sniff
from .uri import b64_len

__all__ = ["Header", "read_header", "header_from_bytes", "cpu_footprint", "gpu_footprint"]

_PREFIX = 64 * 1024  # PNG's IHDR is at byte 8; JPEG's SOF follows the APPn segments
_URI_PREFIX = 32  # len("data:image/jpeg;base64,") rounded up


@dataclass(frozen=True)
class Header:
    """What a frame's header declares: format, stored size, channels and bytes per sample as
    decoded, EXIF orientation (when it is in the prefix read), and the encoded size."""

    kind: Kind
    width: int
    height: int
    channels: int
    sample_bytes: int
    source_bytes: int
    orientation: int = 1

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` once EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type -> channels as decoded (palette -> RGBA)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png_header(data: bytes, size: int) -> Header | None:
    if len(data) < 29 or data[12:16] != b"IHDR":
        return None
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return Header("png", w, h, _PNG_CHANNELS.get(ctype, 4), 2 if depth == 16 else 1, size)


def _jpeg_header(data: bytes | memoryview, size: int) -> Header | None:
    pos, n = 2, len(data)
    orientation = 1
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD9, 0xDA):
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF and pos + 10 <= n:
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return Header("jpeg", w, h, max(3, data[pos + 9]), 1, size, orientation)
        if length < 2:
            return None
        if marker == 0xE1 and orientation == 1:
            orientation = exif_orientation(bytes(data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return None


def header_from_bytes(data: bytes | memoryview, size: int | None = None) -> Header | None:
    """The :class:`Header` in ``data`` (a frame, or a prefix of one whose full size is ``size``),
    or ``None`` when it is not there."""
    total = len(data) if size is None else size
    kind = sniff(data)
    if kind == "png":
        return _png_header(bytes(data[:64]), total)
    if kind == "jpeg":
        return _jpeg_header(data, total)
    return None


def _no_header(label: str, data: bytes, max_pixels: int | None) -> FrameError:
    """The error that reading the whole frame would give for a header that cannot be parsed."""
    try:
        probe(label, data, max_pixels)
    except FrameError as e:
        return e
    return FrameDecodeError(label, "no image header found")


def read_header(source: Source, label: str, *, max_pixels: int | None = None, max_bytes: int | None = None) -> Header:
    """The header of ``source`` from its first bytes (a JPEG's frame header may need more).

    Raises the :class:`~gpupipe.errors.FrameError` that reading the frame would: paths are
    opened the way :func:`~gpupipe.sources.read_frame` opens them (regular files only, never
    blocking, at most ``max_bytes``), and a frame declaring more than ``max_pixels`` fails with
    :class:`~gpupipe.errors.FrameTooLarge`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B")
        check_source_bytes(label, view.nbytes, max_bytes)
        header = header_from_bytes(view)
        if header is None or header.width == 0 or header.height == 0:
            raise _no_header(label, bytes(view[:_PREFIX]) if sniff(view) == "png" else bytes(view), max_pixels)
    else:
        with open_frame_file(source, label, max_bytes) as (f, size):
            head = f.read(_PREFIX)
            header = header_from_bytes(head, size)
            if header is None and sniff(head) == "jpeg" and len(head) < size:
                head += f.read(size - len(head))  # a frame header behind large APPn segments
                header = header_from_bytes(head, size)
            if header is None or header.width == 0 or header.height == 0:
                raise _no_header(label, head, max_pixels)
    check_pixels(label, header.width, header.height, max_pixels)
    return header


def _uri(encoded: int) -> int:
    return b64_len(encoded) + _URI_PREFIX


def cpu_footprint(header: Header, spec: OutputSpec) -> int:
    """Host bytes that the CPU path holds at its peak for this frame (an upper bound).

    Passthrough: the source and its URI. Transcode, stage by stage, with everything that can be
    alive at once counted: the source; Pillow's decoded image (4 bytes per pixel for colour,
    Pillow's internal layout) plus one full-size copy for orientation or mode conversion and the
    16-bit path's NumPy temporaries; the resize (its reduced intermediate and the output, 4 bytes
    per output pixel each, plus the horizontal pass); the encoded stream (bounded by 4 bytes per
    output pixel plus the encoder's buffer slack) and the URI.
    """
    src = header.source_bytes
    if passes_through(header.display_size, header.orientation, spec):
        return src + _uri(src)
    px = header.width * header.height
    ow, oh = fit_size(*header.display_size, spec.size)
    opx = ow * oh
    decoded = px * 4 * (2 if header.sample_bytes == 1 else 3)
    resized = 0 if (ow, oh) == header.display_size else px * 4 + 2 * opx * 4
    encoded = opx * 4 + opx // 2 + 8192
    return src + decoded + resized + encoded + _uri(encoded)


def gpu_footprint(header: Header, spec: OutputSpec, *, passthrough_on_device: bool = False) -> Estimate:
    """``(host, device)`` bytes of the GPU path for this frame; pinned staging counts as device.

    Passthrough on the device: host source and URI; device and pinned staging of the source and
    URI. Transcode: host source, encoded JPEG and URI; device input, decoded and resized RGB and
    the encoder's bitstream/workspace. Frames the GPU backend sends to the CPU path (PNG output,
    or passthrough when not on the device) cost :func:`cpu_footprint`.
    """
    src = header.source_bytes
    if passes_through(header.display_size, header.orientation, spec):
        if not passthrough_on_device:
            return cpu_footprint(header, spec), 0
        uri = _uri(src)
        return src + uri, 2 * (src + uri) + uri
    if spec.format == "png" or (spec.format == "auto" and header.channels in (2, 4) and header.kind == "png"):
        return cpu_footprint(header, spec), 0
    ow, oh = fit_size(*header.display_size, spec.size)
    opx = ow * oh
    encoded = opx * 3 + opx // 2 + 8192
    resized = 0 if (ow, oh) == header.display_size else opx * 3
    device = src + header.width * header.height * 3 + resized + opx * 3 // 2 + 4096
    return src + encoded + _uri(encoded), device
