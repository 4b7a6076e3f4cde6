"""Decode a frame on the CPU: Pillow (or Pillow-SIMD) to an ``RGB`` or ``RGBA`` image, upright.

With ``png_decoder="spng"``, libspng through imagecodecs (where installed) decodes the 8-bit PNGs
where it measured faster than Pillow, to the same pixels: RGBA, and RGB (no ``tRNS``) whose first
rows use the Average or Paeth filter, as ffmpeg's PNGs do (4K, decode plus the Pillow image: RGBA
1.04-1.40x less CPU, ffmpeg's RGB 1.18x; RGB with None/Sub/Up rows, as Pillow writes at level 1,
was 0.9x, because an RGB array is copied into Pillow's 4-byte pixels, so Pillow decodes those).
libspng releases the GIL (pyspng, as fast, holds it). Every other PNG, and any PNG libspng refuses,
is decoded by Pillow, which decides what is accepted.

EXIF orientation is the one the header probe read (:attr:`Frame.orientation <gpupipe.frames.Frame.orientation>`),
applied with :meth:`PIL.Image.Image.transpose`; transparency from alpha channels or ``tRNS`` chunks
(any bit depth) becomes an alpha channel.
"""

from __future__ import annotations

import io
import logging
import warnings
from struct import error as struct_error
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from ..errors import FrameDecodeError, codec_reason
from ..frames import Frame
from ..plan import Job
from ..png_stream import PngHeader, first_filter_types, png_header
from ..vocabulary import PngDecoder

__all__ = ["ORIENTATION_TRANSPOSE", "decode_frame", "has_transparency", "png_decoder_name", "spng_available"]

log = logging.getLogger("gpupipe.cpu")

# Pillow must refuse truncated images rather than pad them with grey (this is its default).
ImageFile.LOAD_TRUNCATED_IMAGES = False

_T = Image.Transpose
# EXIF orientation -> the transpose that shows the stored pixels upright (as ImageOps.exif_transpose maps them).
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: _T.FLIP_LEFT_RIGHT,
    3: _T.ROTATE_180,
    4: _T.FLIP_TOP_BOTTOM,
    5: _T.TRANSPOSE,
    6: _T.ROTATE_270,
    7: _T.TRANSVERSE,
    8: _T.ROTATE_90,
}


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer gray → 8-bit by scaling (Pillow's ``convert`` would clip)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or arr.dtype == np.uint16:
        return Image.fromarray((arr >> 8).astype(np.uint8), "L")
    return Image.fromarray(np.clip(arr, 0, 65535).astype(np.uint32).__rshift__(8).astype(np.uint8), "L")


def _png_bit_depth(frame: Frame | None) -> int:
    """The PNG's bit depth from its IHDR (8 for anything else)."""
    if frame is None or frame.kind != "png" or len(frame.data) < 26:
        return 8
    return frame.data[24]


def _rgb16_low_bytes(frame: Frame) -> np.ndarray | None:
    """The low bytes of a 16-bit RGB PNG's samples (Pillow's ``RGB`` keeps only the high bytes).

    Decodes the PNG a second time with Pillow's little-endian 16-bit unpacker over the same
    (big-endian) data, which takes the other byte of each sample; the unfiltering is the same.
    ``None`` if Pillow's tile does not look as expected (the caller then compares high bytes).
    """
    try:
        im = Image.open(io.BytesIO(frame.data), formats=["PNG"])
        (tile,) = im.tile
        if tile[3] != "RGB;16B":
            raise ValueError(f"unexpected raw mode {tile[3]!r}")
        # Pillow's tiles are named tuples; older Pillow and Pillow-SIMD builds use plain tuples.
        im.tile = [tile._replace(args="RGB;16L") if hasattr(tile, "_replace") else (*tile[:3], "RGB;16L")]  # type: ignore[list-item]
        im.load()
        return np.asarray(im)
    except Exception as e:  # noqa: BLE001 - a Pillow whose internals differ: fall back, do not fail
        log.debug("%s: no 16-bit low bytes from Pillow (%s: %s)", frame.label, type(e).__name__, e)
        return None


def _key_transparency(img: Image.Image, frame: Frame | None) -> Image.Image | None:
    """``RGBA`` for an image whose PNG ``tRNS`` chunk names one transparent gray level or colour;
    ``None`` when it has none.

    A pixel is transparent when its *stored* sample values equal the key exactly, as libpng
    and browsers decide it: 16-bit keys are compared with all 16 bits, and 1/2/4-bit gray
    keys with the sample before Pillow scales it to 8 bits.
    """
    key = img.info.get("transparency")
    mode = img.mode
    if key is None or mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "RGB"):
        return None
    depth = _png_bit_depth(frame)
    if mode == "RGB":
        if not (isinstance(key, tuple) and len(key) == 3):
            return None
        hi = np.asarray(img)
        k = np.array(key, np.int64)
        lo = _rgb16_low_bytes(frame) if depth == 16 and frame is not None else None
        if depth == 16 and lo is not None:
            mask = np.all((hi == (k >> 8)) & (lo == (k & 0xFF)), axis=-1)
        elif depth == 16:
            mask = np.all(hi == (k >> 8), axis=-1)  # Pillow without the expected unpacker: the high bytes only
        else:
            mask = np.all(hi == k, axis=-1)
        base = img
    elif mode.startswith("I"):
        if not isinstance(key, int):
            return None
        mask = np.asarray(img) == key
        base = _to_8bit(img)
    else:
        if not isinstance(key, int):
            return None
        if mode == "L" and depth in (2, 4) and key <= (1 << depth) - 1:
            key *= 255 // ((1 << depth) - 1)  # Pillow scales the samples of 2/4-bit gray, not the key
        base = img.convert("L")
        mask = np.asarray(base) == key
    out = base.convert("RGBA")
    out.putalpha(Image.fromarray(np.where(mask, 0, 255).astype(np.uint8), "L"))
    return out


def _normalise_mode(img: Image.Image, frame: Frame | None = None) -> Image.Image:
    """Any decoded mode → ``RGB``, or ``RGBA`` when the image carries alpha.

    Alpha comes from an alpha channel, a palette's ``tRNS`` entries, or the one transparent
    gray level or colour of a gray or truecolour PNG's ``tRNS`` chunk (any bit depth).
    """
    mode = img.mode
    keyed = _key_transparency(img, frame)
    if keyed is not None:
        return keyed
    if mode in ("RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return _to_8bit(img).convert("RGB")
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("LA", "La", "PA", "RGBa"):
        return img.convert("RGBA")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, F ...


def _load_spng() -> Any:
    try:
        import imagecodecs

        return imagecodecs.spng_decode if imagecodecs.SPNG.available else None
    except Exception as e:  # noqa: BLE001 - ImportError, or a build without libspng
        log.debug("imagecodecs' libspng not usable (%s: %s)", type(e).__name__, e)
        return None


_SPNG: Any = _load_spng()


def spng_available() -> bool:
    """Whether ``png_decoder: spng`` has libspng (imagecodecs) to use; without it Pillow decodes."""
    return _SPNG is not None


def png_decoder_name(choice: PngDecoder) -> str:
    """What decodes PNG sources on the CPU path under ``png_decoder: choice``, in words."""
    if choice == "spng" and _SPNG is not None:
        return "libspng (imagecodecs) for 8-bit RGBA and Average/Paeth-filtered RGB; Pillow for the rest"
    if choice == "spng":
        return "Pillow (png_decoder spng, but imagecodecs is not installed)"
    return "Pillow"


def _spng_pays(data: bytes | memoryview, h: PngHeader, has_trns: bool) -> bool:
    """8-bit, not interlaced, and RGBA, or RGB without a ``tRNS`` key whose first rows use Average or Paeth."""
    if h.bit_depth != 8 or h.interlace:
        return False
    if h.color_type == 6:
        return True
    return h.color_type == 2 and not has_trns and any(f in (3, 4) for f in first_filter_types(data, h))


def _spng_image(frame: Frame) -> Image.Image | None:
    """The PNG decoded by libspng when it is one that libspng decodes faster (module docstring) and
    libspng accepts it; else ``None``."""
    found = png_header(frame.data)
    if found is None or not _spng_pays(frame.data, *found):
        return None
    h = found[0]
    if Image.MAX_IMAGE_PIXELS is not None and h.width * h.height > Image.MAX_IMAGE_PIXELS:
        return None  # Pillow's decompression-bomb verdict stays Pillow's
    try:
        arr = _SPNG(frame.data)
    except Exception as e:  # noqa: BLE001 - imagecodecs.SpngError and friends: Pillow decides
        log.debug("%s: libspng refused it (%s); decoding with Pillow", frame.label, type(e).__name__)
        return None
    if arr.shape != (h.height, h.width, h.channels):
        return None
    return Image.fromarray(arr, "RGBA" if h.channels == 4 else "RGB")


def decode_frame(job: Job, png_decoder: PngDecoder = "pillow") -> Image.Image:
    """Decode a job's frame to an ``RGB`` or ``RGBA`` image with EXIF orientation applied.

    The orientation is the one the header probe read (:attr:`Frame.orientation
    <gpupipe.frames.Frame.orientation>`), applied with :meth:`PIL.Image.Image.transpose`; the
    EXIF data is not parsed again, so malformed metadata can never fail a frame (an unusable
    orientation was already read as 1, as browsers read it). For JPEG sources being scaled
    down, the DCT-domain draft mode decodes at a reduced scale that is still at least the
    output size. Decoded pixels (a video's frame) are wrapped as they are. ``png_decoder="spng"``:
    see the module docstring. Raises :class:`FrameDecodeError`.
    """
    frame = job.frame
    if frame.pixels is not None:
        if frame.pixels.on_device:
            raise FrameDecodeError(
                frame.label, "the frame's pixels are on the GPU: the GPU backend copies them to the host first"
            )
        return Image.fromarray(frame.pixels.array)  # uint8 H×W×3 is RGB, H×W×4 RGBA
    if png_decoder == "spng" and frame.kind == "png" and _SPNG is not None:
        img_spng = _spng_image(frame)
        if img_spng is not None:
            method = ORIENTATION_TRANSPOSE.get(frame.orientation)
            return img_spng if method is None else img_spng.transpose(method)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(frame.data), formats=[frame.kind.upper()])
            if frame.kind == "jpeg" and job.needs_resize:
                w, h = job.out_size
                if frame.orientation in (5, 6, 7, 8):
                    w, h = h, w
                img.draft("RGB", (w, h))
            img.load()
            img = _normalise_mode(img, frame)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning, struct_error) as e:
        raise FrameDecodeError(frame.label, f"cannot decode {frame.kind.upper()}: {codec_reason(e)}") from None
    method = ORIENTATION_TRANSPOSE.get(frame.orientation)
    return img if method is None else img.transpose(method)


def has_transparency(img: Image.Image) -> bool:
    """True if an ``RGBA`` image has any pixel with alpha below 255."""
    if img.mode != "RGBA":
        return False
    lo, _hi = img.getchannel("A").getextrema()
    return isinstance(lo, (int, float)) and lo < 255
