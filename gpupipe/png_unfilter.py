"""PNG un-filtering (RFC 2083 §6) as the device kernel does it: a NumPy twin of
``gpupipe/gpu/png_unfilter.cu``, which tests check against Pillow's decode.

The inflated image stream of a non-interlaced PNG is ``height`` rows of one filter-type byte
(0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) and ``row_bytes`` filtered bytes. Byte ``i`` of row
``r`` depends on byte ``i - bpp`` of the same row (Sub, Average, Paeth) and bytes ``i`` and
``i - bpp`` of row ``r - 1`` (Up, Average, Paeth). The kernel runs one CUDA block per image and
one thread per row, over bands of ``band`` rows (the block size): at step ``s`` the thread of
band row ``t`` un-filters pixel ``x = s - t`` (its ``bpp`` bytes), so that the row above has
already un-filtered pixels ``x`` and ``x - 1`` (a wavefront; ``__syncthreads`` between steps).
A band starts when the previous one has finished. This twin runs the same schedule, each step
vectorised over the band's rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["UNFILTER_BAND", "BadFilterType", "unfilter"]

UNFILTER_BAND = 1024
"""Rows per band: the kernel's block size (CUDA's maximum threads per block)."""


class BadFilterType(ValueError):
    """A row's filter-type byte is not 0-4: the PNG is damaged (the CPU path then decides)."""


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def unfilter(filtered: np.ndarray, height: int, row_bytes: int, bpp: int, band: int = UNFILTER_BAND) -> np.ndarray:
    """The un-filtered rows, ``height`` × ``row_bytes`` ``uint8``, of ``filtered`` (the inflated
    stream: ``height * (1 + row_bytes)`` bytes). Raises :class:`BadFilterType` for a filter byte over 4
    and ``ValueError`` when ``filtered`` has the wrong size."""
    src = np.asarray(filtered, np.uint8).reshape(-1)
    if src.size != height * (1 + row_bytes):
        raise ValueError(f"{src.size} inflated bytes, expected {height * (1 + row_bytes)}")
    rows2d = src.reshape(height, 1 + row_bytes)
    ftype = rows2d[:, 0].astype(np.int32)
    if (ftype > 4).any():
        raise BadFilterType(f"row {int(np.argmax(ftype > 4))} has filter type {int(ftype.max())}")
    raw = rows2d[:, 1:].astype(np.int32)
    out = np.zeros((height, row_bytes), np.int32)
    npx = (row_bytes + bpp - 1) // bpp
    for r0 in range(0, height, band):
        rows = min(band, height - r0)
        t = np.arange(rows)
        for step in range(npx + rows - 1):
            x = step - t
            act = (x >= 0) & (x < npx)
            r = r0 + t[act]
            f = ftype[r]
            for c in range(bpp):
                i = x[act] * bpp + c
                ok = i < row_bytes
                rr, ii, ff = r[ok], i[ok], f[ok]
                zero = np.zeros_like(ii)
                a = np.where(ii >= bpp, out[rr, np.maximum(ii - bpp, 0)], zero)
                b = np.where(rr > 0, out[np.maximum(rr - 1, 0), ii], zero)
                cc = np.where((rr > 0) & (ii >= bpp), out[np.maximum(rr - 1, 0), np.maximum(ii - bpp, 0)], zero)
                pred = np.select([ff == 1, ff == 2, ff == 3, ff == 4], [a, b, (a + b) >> 1, _paeth(a, b, cc)], 0)
                out[rr, ii] = (raw[rr, ii] + pred) & 0xFF
    return out.astype(np.uint8)
