"""Encode a decoded frame on the CPU: JPEG or PNG with Pillow."""

from __future__ import annotations

import io

from PIL import Image

__all__ = ["encode_image"]


def encode_image(img: Image.Image, fmt: str, quality: int, png_compress_level: int) -> memoryview:
    """Encode to ``"jpeg"`` (RGB) or ``"png"``; returns the encoded bytes (no copy)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=png_compress_level)
    return buf.getbuffer()
