"""Resize a decoded frame on the CPU (Pillow's Lanczos filter)."""

from __future__ import annotations

from PIL import Image

__all__ = ["resize_image"]


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to ``size`` with Lanczos (box-reduced first for large factors)."""
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
