"""What a frame's work holds in memory while in flight, from its header alone.

The cache admits work by its estimated bytes before the work starts (see :mod:`gpupipe.cache`),
so the estimate must be known before the frame is read in full and must never under-count. A
frame source reads its :class:`~gpupipe.frames.headers.Header` cheaply
(:meth:`FrameSource.header <gpupipe.frames.source.FrameSource.header>`); the ``*_footprint``
functions here turn a header and an :class:`~gpupipe.plan.OutputSpec` into bytes, and parse
nothing. ``tests/test_footprint.py`` measures them against the resident memory that encoding
really takes.
"""

from __future__ import annotations

from .frames.headers import Header
from .plan import OutputSpec, fit_size, passes_through
from .uri import b64_len
from .vocabulary import Estimate

__all__ = ["cpu_footprint", "gpu_footprint"]

_URI_PREFIX = 32  # len("data:image/jpeg;base64,") rounded up


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
    the source (for decoded pixels, the picture, plus the ``scratch_bytes`` its decoding holds:
    see :func:`~gpupipe.frames.video.VideoFrame.header`); the decoded image (at most 4 bytes per pixel in the decoder's layout) and one
    full-size copy when it is rotated or converted to RGB/RGBA (two for 16-bit samples, whose
    NumPy scaling makes temporaries); the resize's horizontal pass and output (4 bytes per pixel,
    twice for the box-reduced intermediate); the encoded stream (:func:`_encoded_bound`; PNG
    when the target is PNG or may be, for a PNG source under ``auto``) and its URI.
    ``tests/test_footprint.py`` checks this against measured peak RSS.
    """
    src = header.source_bytes
    if passes_through(header.display_size, header.orientation, spec, encoded=header.encoded):
        return src + _uri(src)
    px = header.width * header.height
    ow, oh = fit_size(*header.display_size, spec.size)
    opx = ow * oh
    copy = 0 if header.native_rgb else px * 4 * header.sample_bytes
    if header.orientation != 1:
        copy = max(copy, px * 4)
    resized = 0 if (ow, oh) == header.display_size else ow * max(header.width, header.height) * 4 + 2 * opx * 4
    png = spec.format == "png" or (
        header.kind == "png" if header.encoded else header.may_have_alpha and spec.format in ("auto", "passthrough")
    )
    encoded = _encoded_bound(opx, png)
    return src + header.scratch_bytes + px * 4 + copy + resized + encoded + _uri(encoded)


def gpu_footprint(
    header: Header, spec: OutputSpec, *, passthrough_on_device: bool = False, png_on_device: bool = True, staging_slack: int = 0
) -> Estimate:
    """``(host, device)`` bytes of the GPU path for this frame; pinned staging counts as device.

    Passthrough on the device: host source and URI; device and pinned staging of the source and
    URI. Transcode: host source, encoded JPEG and URI; device input, decoded and resized RGB and
    the encoder's bitstream/workspace. Frames the GPU backend sends to the CPU path (PNG output,
    ``auto`` for a PNG that may have alpha, passthrough when not on the device, PNG sources unless
    ``png_on_device``: the routes of :meth:`GpuBackend.route <gpupipe.gpu.backend.GpuBackend.route>`)
    cost :func:`cpu_footprint`. ``staging_slack`` is added to each staged copy for the allocators' rounding.
    """
    src = header.source_bytes
    if not header.encoded:  # decoded pixels are encoded on the CPU path (see GpuBackend.route)
        return cpu_footprint(header, spec), 0
    if passes_through(header.display_size, header.orientation, spec):
        if not passthrough_on_device:
            return cpu_footprint(header, spec), 0
        uri = _uri(src)
        return src + uri, 2 * (src + uri + staging_slack)
    if spec.format == "png" or (
        header.kind == "png" and (not png_on_device or (spec.format == "auto" and header.may_have_alpha))
    ):
        return cpu_footprint(header, spec), 0
    ow, oh = fit_size(*header.display_size, spec.size)
    opx = ow * oh
    encoded = _encoded_bound(opx, False)
    resized = 0 if (ow, oh) == header.display_size else opx * 3
    device = src + staging_slack + header.width * header.height * 3 + resized + opx * 3 // 2 + 4096
    return src + encoded + _uri(encoded), device
