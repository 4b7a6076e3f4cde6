"""The device PNG decoder (png_decoder: nvcomp; gpupipe/gpu/png_decode.py): nvCOMP inflate + the
un-filter kernel give Pillow's pixels, hand what they cannot decode to the CPU path, and the GPU
backend's transcodes with it match the CPU path's. Marked ``gpu``: skipped without a device."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from corpus import build_corpus, write_png
from PIL import Image
from uri_pixels import assert_transcodes_match

from gpupipe.config import Config
from gpupipe.cpu import CpuBackend
from gpupipe.frames import read_frame
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.samples import make_frame

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _require_gpu_and_nvcomp() -> None:
    from gpupipe.gpu import gpu_available
    from gpupipe.gpu.png_decode import nvcomp_available

    ok, why = gpu_available(0)
    if not ok:
        pytest.skip(f"GPU path unavailable: {why}")
    if not nvcomp_available():
        pytest.skip("nvCOMP's Python module (nvidia-nvcomp-cu13) does not import")


def _decoder():
    import cupy as cp

    from gpupipe.gpu.png_decode import NvcompPngDecoder

    return NvcompPngDecoder(0, cp.cuda.Stream(non_blocking=True))


def _png(pixels: np.ndarray, level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def test_nvcomp_decode_equals_pillow_in_one_batch() -> None:
    import cupy as cp

    frames = [make_frame(320, 240, i, alpha=i % 2 == 1) for i in range(4)] + [make_frame(1920, 1080, 9, alpha=True)]
    datas = [_png(f, level) for f, level in zip(frames, [0, 1, 6, 9, 1])]
    got = _decoder().decode(datas)
    for f, g in zip(frames, got):
        assert g is not None
        assert np.array_equal(cp.asnumpy(g), f)


def _truncated_idat(png: bytes) -> bytes:
    """``png`` with its IDAT data cut to half (chunk CRC recomputed): a deflate stream that ends early."""
    import zlib

    start = png.index(b"IDAT") - 4
    n = int.from_bytes(png[start : start + 4], "big")
    body = png[start + 8 : start + 8 + n // 2]
    chunk = len(body).to_bytes(4, "big") + b"IDAT" + body + zlib.crc32(b"IDAT" + body).to_bytes(4, "big")
    return png[:start] + chunk + png[start + 12 + n :]


def test_nvcomp_leaves_other_pngs_to_the_cpu_path() -> None:
    rgb = make_frame(64, 48, 0)
    datas = [
        write_png(rgb, interlace=True),  # interlaced
        write_png(rgb.astype(np.uint16) * 257),  # 16-bit
        _png(rgb[..., 0], 6),  # gray
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,  # damaged
        _truncated_idat(_png(make_frame(64, 48, 1), 6)),  # inflates short
        _png(rgb, 6),
    ]
    got = _decoder().decode(datas)
    assert [g is None for g in got] == [True, True, True, True, True, False]


def test_nvcomp_corpus_matches_pillow_or_goes_to_the_cpu(tmp_path: Path) -> None:
    import cupy as cp

    items = [it for it in build_corpus(tmp_path) if it.path.suffix == ".png" and it.path.is_file()]
    datas = [it.path.read_bytes() for it in items]
    got = _decoder().decode(datas)
    for it, d, g in zip(items, datas, got):
        if g is None:
            continue
        ref = np.asarray(Image.open(io.BytesIO(d)).convert("RGBA" if g.shape[2] == 4 else "RGB"))
        assert np.array_equal(cp.asnumpy(g), ref), it.name


def test_gpu_backend_png_transcodes_with_nvcomp_match_the_cpu_path(tmp_path: Path) -> None:
    from gpupipe.gpu import GpuBackend

    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}.png"
        p.write_bytes(_png(make_frame(640, 360, i, alpha=i == 2), 1))
        paths.append(p)
    spec = OutputSpec("jpeg", None, 90)
    jobs = [plan_job(i, read_frame(p), spec) for i, p in enumerate(paths)]
    cfg = replace(Config(), png_device="gpu", png_decoder="nvcomp")
    gpu = GpuBackend(cfg)
    try:
        got = gpu.run(jobs)
        assert gpu.info()["png_decoder_device"].startswith("nvCOMP")
    finally:
        gpu.close()
    assert_transcodes_match(got, CpuBackend(1).run(jobs), shape=(360, 640, 3))
