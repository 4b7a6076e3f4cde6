"""Frame-by-frame comparison of two rendered videos (and of two image files): PSNR over RGB, decoded with PyAV (Pillow).

PSNR is over the 8-bit RGB frames (``rgb24``, peak 255), per frame; identical frames count as
:data:`PSNR_IDENTICAL` dB so that the figures stay finite numbers in JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PSNR_IDENTICAL", "VideoPsnr", "image_psnr", "video_psnr"]

PSNR_IDENTICAL = 100.0
"""The PSNR given to a pair of identical frames."""


@dataclass(frozen=True)
class VideoPsnr:
    """Two videos compared: their frame counts and sizes, and the PSNR of the frame pairs (the shorter's count)."""

    frames_a: int
    frames_b: int
    size_a: tuple[int, int]
    size_b: tuple[int, int]
    min_db: float
    mean_db: float

    @property
    def same_shape(self) -> bool:
        """Whether both videos have the same frame count and frame size."""
        return self.frames_a == self.frames_b and self.size_a == self.size_b


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.int32) - b.astype(np.int32)) ** 2))
    return PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10 * math.log10(255.0**2 / mse))


def image_psnr(a: Path, b: Path) -> float:
    """The RGB PSNR of two image files of the same size (an extracted frame against another's), decoded with Pillow."""
    from PIL import Image

    with Image.open(a) as ia, Image.open(b) as ib:
        x, y = np.asarray(ia.convert("RGB")), np.asarray(ib.convert("RGB"))
    if x.shape != y.shape:
        raise ValueError(f"{a.name} is {x.shape[1]}x{x.shape[0]}, {b.name} {y.shape[1]}x{y.shape[0]}")
    return _psnr(x, y)


def video_psnr(a: Path, b: Path) -> VideoPsnr:
    """Decode ``a`` and ``b`` (first video stream each) in step and compare them frame by frame (module
    docstring). Frames of different sizes, and frames past the shorter video, count in the shape only."""
    import av

    scores: list[float] = []
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        sa, sb = ca.streams.video[0], cb.streams.video[0]
        size_a = (sa.codec_context.width, sa.codec_context.height)
        size_b = (sb.codec_context.width, sb.codec_context.height)
        da, db = ca.decode(sa), cb.decode(sb)
        na = nb = 0
        while True:
            fa, fb = next(da, None), next(db, None)
            na, nb = na + (fa is not None), nb + (fb is not None)
            if fa is None or fb is None:
                break
            x, y = fa.to_ndarray(format="rgb24"), fb.to_ndarray(format="rgb24")
            if x.shape == y.shape:
                scores.append(_psnr(x, y))
        na += sum(1 for _ in da)
        nb += sum(1 for _ in db)
    return VideoPsnr(
        frames_a=na,
        frames_b=nb,
        size_a=size_a,
        size_b=size_b,
        min_db=min(scores) if scores else 0.0,
        mean_db=sum(scores) / len(scores) if scores else 0.0,
    )
