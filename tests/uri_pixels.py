"""Decoding a ``data:`` URI back to pixels, for tests that compare GPU and CPU transcodes."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def uri_pixels(uri: str) -> np.ndarray:
    """The RGB pixels (``int16``, so differences do not wrap) of the image in a ``data:`` URI."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")).astype(np.int16)


def assert_transcodes_match(got: list, cpu: list, *, shape: tuple[int, ...] | None = None, tol: float = 4.0) -> None:
    """GPU-path results against the CPU path's for the same jobs: the same result types, the same
    frame named in each error, the same MIME type, equal image sizes (``shape`` when given) and a
    mean absolute pixel difference under ``tol`` levels (codec and resampler tolerance)."""
    assert [type(x) for x in got] == [type(x) for x in cpu]
    for g, c in zip(got, cpu):
        if not isinstance(g, str):
            assert g.frame == c.frame
            continue
        assert g.split(",", 1)[0] == c.split(",", 1)[0]  # same MIME type
        a, b = uri_pixels(g), uri_pixels(c)
        assert a.shape == b.shape and (shape is None or a.shape == shape)
        assert np.abs(a - b).mean() < tol
