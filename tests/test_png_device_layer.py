"""The device layer's ``png_decoder: nvcomp`` route on CPU stand-ins (DALI's CPU backend, nvImageCodec's
CPU encoder) with a stand-in for the nvCOMP decoder that decodes with the NumPy twin, and refuses
what the real one refuses (returns ``None``): the frames it decodes and those it leaves (to DALI or,
when refused, to the CPU path) give the CPU path's results."""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nvidia.dali")
pytest.importorskip("nvidia.nvimgcodec")

from corpus import write_png
from uri_pixels import assert_transcodes_match

from gpupipe.config import Config
from gpupipe.cpu import CpuBackend
from gpupipe.frames import read_frame
from gpupipe.gpu.device import DeviceLayer, nvcomp_transcode_cost, transcode_cost
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.png_stream import device_decodable, png_stream
from gpupipe.png_unfilter import unfilter
from gpupipe.samples import make_frame


class TwinPngDecoder:
    """``NvcompPngDecoder``'s contract with zlib + the NumPy twin in place of nvCOMP + the kernel."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def decode(self, datas: Sequence[bytes | memoryview]) -> list[np.ndarray | None]:
        self.calls.append(len(datas))
        out: list[np.ndarray | None] = []
        for d in datas:
            try:
                s = png_stream(d)
                if not device_decodable(s.header, s.has_trns):
                    raise ValueError("not for the device")
                h = s.header
                rows = unfilter(np.frombuffer(zlib.decompress(s.deflate, -15), np.uint8), h.height, h.row_bytes, h.bpp)
                out.append(rows.reshape(h.height, h.width, h.channels))
            except (ValueError, zlib.error):
                out.append(None)
        return out


def _write(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_nvcomp_route_matches_the_cpu_path(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path, "rgb.png", _png(make_frame(96, 64, 0))),
        _write(tmp_path, "rgba.png", _png(make_frame(96, 64, 1, alpha=True))),
        _write(tmp_path, "interlaced.png", write_png(make_frame(96, 64, 2), interlace=True)),  # left to DALI
        _write(tmp_path, "gray.png", _png(make_frame(96, 64, 3)[..., 0])),  # left to DALI
    ]
    jobs = [plan_job(i, read_frame(p), OutputSpec("jpeg", None, 90)) for i, p in enumerate(paths)]
    layer = DeviceLayer(replace(Config(), png_decoder="nvcomp"), device_id=None, dali_threads=1)
    twin = TwinPngDecoder()
    layer.png = twin  # type: ignore[assignment]
    try:
        got = layer.transcode(jobs)
    finally:
        layer.close()
    assert twin.calls == [2]  # the interlaced and the gray PNG went to DALI
    assert_transcodes_match(got, CpuBackend(1).run(jobs), shape=(64, 96, 3))


def test_frames_the_device_decoder_refuses_get_the_cpu_paths_result(tmp_path: Path) -> None:
    good = _png(make_frame(64, 48, 0))
    bad_filter = bytearray(write_png(make_frame(64, 48, 0)))  # a row filter type of 7: twin and kernel refuse it
    s = png_stream(bytes(bad_filter))
    raw = bytearray(zlib.decompress(s.deflate, -15))
    raw[0] = 7
    z = zlib.compress(bytes(raw))
    start = bytes(bad_filter).index(b"IDAT") - 4
    n = int.from_bytes(bad_filter[start : start + 4], "big")
    chunk = len(z).to_bytes(4, "big") + b"IDAT" + z + zlib.crc32(b"IDAT" + z).to_bytes(4, "big")
    damaged = bytes(bad_filter[:start]) + chunk + bytes(bad_filter[start + 12 + n :])
    paths = [_write(tmp_path, "good.png", good), _write(tmp_path, "bad_filter.png", damaged)]
    jobs = [plan_job(i, read_frame(p), OutputSpec("jpeg", None, 90)) for i, p in enumerate(paths)]
    layer = DeviceLayer(replace(Config(), png_decoder="nvcomp"), device_id=None, dali_threads=1)
    layer.png = TwinPngDecoder()  # type: ignore[assignment]
    try:
        got = layer.transcode(jobs)
    finally:
        layer.close()
    assert_transcodes_match(got, CpuBackend(1).run(jobs), shape=(48, 64, 3))


def test_nvcomp_cost_counts_the_decoders_buffers(tmp_path: Path) -> None:
    p = _write(tmp_path, "f.png", _png(make_frame(64, 48, 0, alpha=True)))
    job = plan_job(0, read_frame(p), OutputSpec("jpeg", None, 90))
    assert nvcomp_transcode_cost(job) >= transcode_cost(job) + 48 * (1 + 4 * 64) + 7 * 64 * 48
