"""What a frame's work holds in memory while in flight, from its header alone.

The cache admits work by its estimated bytes before the work starts (see :mod:`gpupipe.cache`),
so the estimate must be known before the frame is read in full and must never under-count.
:func:`read_header` reads only a frame's header (a few KiB; never a whole file); the
``*_footprint`` functions turn a :class:`Header` and an :class:`~gpupipe.plan.OutputSpec` into
bytes. ``tests/test_footprint.py`` measures them against the resident memory that encoding
really takes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .errors import FrameDecodeError, FrameError
from .plan import OutputSpec, passes_through
from .sources import Kind, Source, check_pixels, check_source_bytes, exif_orientation, fit_size, open_frame_file, probe, sniff
from .uri import b64_len
from .vocabulary import Estimate

__all__ = ["Header", "cpu_footprint", "gpu_footprint", "header_from_bytes", "read_header"]

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
    native_rgb: bool = True
    """Whether the decoder's own image is already RGB or RGBA (no conversion copy)."""

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
    sample = 2 if depth == 16 else 1
    return Header("png", w, h, _PNG_CHANNELS.get(ctype, 4), sample, size, native_rgb=ctype in (2, 6) and sample == 1)


def _jpeg_header(data: bytes | memoryview, size: int) -> Header | None:
    pos, n = 2, len(data)
    orientation = 1
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD9, 0xDA):
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF and pos + 10 <= n:
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            comps = data[pos + 9]
            return Header("jpeg", w, h, max(3, comps), 1, size, orientation, native_rgb=comps == 3)
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
        with open_frame_file(source, label, max_bytes) as (fd, st):
            size = st.st_size
            head = os.read(fd, _PREFIX)
            header = header_from_bytes(head, size)
            if header is None and sniff(head) == "jpeg" and len(head) < size:
                head += os.read(fd, size - len(head))  # a frame header behind large APPn segments
                header = header_from_bytes(head, size)
            if header is None or header.width == 0 or header.height == 0:
                raise _no_header(label, head, max_pixels)
    check_pixels(label, header.width, header.height, max_pixels)
    return header


def _uri(encoded: int) -> int:
    return b64_len(encoded) + _URI_PREFIX


def _encoded_bound(opx: int, png: bool) -> int:
    """Bytes an encoded output of ``opx`` pixels can reach, with ``io.BytesIO``'s 1/8 growth slack:
    PNG at most 4 bytes per pixel plus zlib and chunk overhead, JPEG at most 3."""
    raw = opx * 4 + opx // 64 if png else opx * 3
    return raw + raw // 8 + 8192


def cpu_footprint(header: Header, spec: OutputSpec) -> int:
    """Host bytes that the CPU path holds at its peak for this frame (an upper bound).

    Passthrough: the source and its URI. Transcode, with everything that can be alive at once:
    the source; the decoded image (at most 4 bytes per pixel in the decoder's layout) and one
    full-size copy when it is rotated or converted to RGB/RGBA (two for 16-bit samples, whose
    NumPy scaling makes temporaries); the resize's horizontal pass and output (4 bytes per pixel,
    twice for the box-reduced intermediate); the encoded stream (:func:`_encoded_bound`; PNG
    when the target is PNG or may be, for a PNG source under ``auto``) and its URI.
    ``tests/test_footprint.py`` checks this against measured peak RSS.
    """
    src = header.source_bytes
    if passes_through(header.display_size, header.orientation, spec):
        return src + _uri(src)
    px = header.width * header.height
    ow, oh = fit_size(*header.display_size, spec.size)
    opx = ow * oh
    copy = 0 if header.native_rgb else px * 4 * header.sample_bytes
    if header.orientation != 1:
        copy = max(copy, px * 4)
    resized = 0 if (ow, oh) == header.display_size else ow * max(header.width, header.height) * 4 + 2 * opx * 4
    png = spec.format == "png" or (spec.format == "auto" and header.kind == "png")
    encoded = _encoded_bound(opx, png)
    return src + px * 4 + copy + resized + encoded + _uri(encoded)


def gpu_footprint(
    header: Header, spec: OutputSpec, *, passthrough_on_device: bool = False, png_on_device: bool = True, staging_slack: int = 0
) -> Estimate:
    """``(host, device)`` bytes of the GPU path for this frame; pinned staging counts as device.

    Passthrough on the device: host source and URI; device and pinned staging of the source and
    URI. Transcode: host source, encoded JPEG and URI; device input, decoded and resized RGB and
    the encoder's bitstream/workspace. Frames the GPU backend sends to the CPU path (PNG output,
    passthrough when not on the device, PNG sources unless ``png_on_device``) cost :func:`cpu_footprint`. ``staging_slack`` is added
    to each staged copy for the allocators' rounding.
    """
    src = header.source_bytes
    if passes_through(header.display_size, header.orientation, spec):
        if not passthrough_on_device:
            return cpu_footprint(header, spec), 0
        uri = _uri(src)
        return src + uri, 2 * (src + uri + staging_slack)
    if spec.format == "png" or (
        header.kind == "png" and (not png_on_device or (spec.format == "auto" and header.channels in (2, 4)))
    ):
        return cpu_footprint(header, spec), 0
    ow, oh = fit_size(*header.display_size, spec.size)
    opx = ow * oh
    encoded = _encoded_bound(opx, False)
    resized = 0 if (ow, oh) == header.display_size else opx * 3
    device = src + staging_slack + header.width * header.height * 3 + resized + opx * 3 // 2 + 4096
    return src + encoded + _uri(encoded), device
