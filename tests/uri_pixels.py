"""Decoding a ``data:`` URI back to pixels, for tests that compare GPU and CPU transcodes."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def uri_pixels(uri: str) -> np.ndarray:
    """The RGB pixels (``int16``, so differences do not wrap) of the image in a ``data:`` URI."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")).astype(np.int16)
