"""Encode a decoded frame on the CPU: JPEG with Pillow; PNG with fpng where it is installed, else Pillow.

PNG at the default ``png_compress_level: 1`` of an ``RGB`` or ``RGBA`` image is written by `fpng
<https://pypi.org/project/fpng/>`_ (Rich Geldreich's fpng: one pass, fixed Huffman-style tables,
standard PNG that any decoder reads; measured on a 4K grainy RGBA frame: ~25x less CPU time than
zlib level 1, ~1.02x its bytes; see ``docs/bench``). Every other case, and any fpng failure, is
written by Pillow at ``png_compress_level``. The fpng call holds the GIL (about 25 ms per 4K RGBA
frame on one core), Pillow's encoder releases it.
"""

from __future__ import annotations

import io
import logging
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["FPNG_LEVEL", "encode_image", "encode_png", "png_encoder_name"]

log = logging.getLogger("gpupipe.cpu")

FPNG_LEVEL = 1
"""The ``png_compress_level`` that fpng serves (its size/speed point is zlib level 1's); other levels use Pillow."""


def _load_fpng() -> Any:
    try:
        from fpng import fpng_ext  # the package's __init__ runs fpng_init() (CPU feature detection)
    except Exception as e:  # noqa: BLE001 - ImportError, or a wheel that does not load on this CPU/OS
        log.debug("fpng not usable (%s: %s); PNG is encoded with Pillow", type(e).__name__, e)
        return None
    return fpng_ext


_FPNG: Any = _load_fpng()


def png_encoder_name(png_compress_level: int = FPNG_LEVEL) -> str:
    """Which encoder writes PNG at ``png_compress_level``: ``"fpng <ver>"`` or ``"Pillow zlib level N"``."""
    if _FPNG is not None and png_compress_level == FPNG_LEVEL:
        return f"fpng {metadata.version('fpng')} (RGB/RGBA; Pillow zlib level {FPNG_LEVEL} for other modes)"
    return f"Pillow zlib level {png_compress_level}"


def _pillow_png(img: Image.Image, png_compress_level: int) -> memoryview:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=png_compress_level)
    return buf.getbuffer()


def encode_png(img: Image.Image, png_compress_level: int = FPNG_LEVEL) -> memoryview:
    """PNG bytes of ``img``; decodes (Pillow, browsers) to exactly ``img``'s pixels, whichever encoder wrote it."""
    if _FPNG is None or png_compress_level != FPNG_LEVEL or img.mode not in ("RGB", "RGBA"):
        return _pillow_png(img, png_compress_level)
    out = _FPNG.encode_ndarray(np.asarray(img))
    if not out:  # the binding returns empty bytes when fpng fails (it does not raise)
        log.warning("fpng could not encode a %dx%d %s image; used Pillow", img.width, img.height, img.mode)
        return _pillow_png(img, png_compress_level)
    return memoryview(out)


def encode_image(img: Image.Image, fmt: str, quality: int, png_compress_level: int) -> memoryview:
    """Encode to ``"jpeg"`` (RGB) or ``"png"`` (:func:`encode_png`); returns the encoded bytes (no copy)."""
    if fmt != "jpeg":
        return encode_png(img, png_compress_level)
    buf = io.BytesIO()
    if img.mode != "RGB":
        img = img.convert("RGB")
    img.save(buf, "JPEG", quality=quality)
    return buf.getbuffer()
