"""Tests that need a CUDA device (CuPy + DALI + nvImageCodec). Skipped cleanly elsewhere: every test
is marked ``gpu``, and tests/conftest.py skips ``gpu`` tests when ``gpupipe.gpu.gpu_available()`` is
False, giving its reason. Run on a GPU host with ``PYTHONPATH=. python3 -m pytest -m gpu``."""

from __future__ import annotations

import base64
import io
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from gpupipe.base64_batch import encode_batch, uris_from_buffer
from gpupipe.config import Config, StagingConfig
from gpupipe.cpu import CpuBackend
from gpupipe.errors import FrameError
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.frames import read_frame
from uri_pixels import assert_transcodes_match

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _require_gpu():
    """Belt and braces beside the conftest hook: never touch CUDA without a usable device."""
    from gpupipe.gpu import gpu_available

    ok, why = gpu_available(0)
    if not ok:
        pytest.skip(f"GPU path unavailable: {why}")


def _corrupt_png(png: bytes) -> bytes:
    i = png.find(b"IDAT")
    return png[: i + 100] + bytes(b ^ 0x5A for b in png[i + 100 : i + 400]) + png[i + 400 :]


# --------------------------------------------------------------------------- base64 kernel


def test_kernel_loads_from_the_prebuilt_fatbin():
    """On a CUDA 13 driver the shipped fatbin loads (no NVRTC involved)."""
    from gpupipe.gpu.base64_kernel import get_kernel

    assert get_kernel().loaded_from == "prebuilt"


@pytest.mark.parametrize("seed", range(6))
def test_kernel_byte_identical_to_twin_and_stdlib(seed):
    from gpupipe.gpu.base64_kernel import encode_device

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    lengths = [int(x) for x in rng.integers(0, 5000, n)]
    lengths[: min(n, 6)] = [0, 1, 2, 3, 47, 49][: min(n, 6)]
    datas = [rng.integers(0, 256, k, dtype=np.uint8).tobytes() for k in lengths]
    mimes = [("image/png", "image/jpeg")[int(x)] for x in rng.integers(0, 2, n)]
    dev, lay = encode_device(datas, mimes)
    host, lay2 = encode_batch(datas, mimes)
    assert lay.out_size == lay2.out_size
    got = uris_from_buffer(dev, lay)
    assert got == uris_from_buffer(host, lay2)
    assert got == [f"data:{m};base64," + base64.b64encode(d).decode() for d, m in zip(datas, mimes)]


def test_kernel_large_frames_and_every_remainder():
    from gpupipe.gpu.base64_kernel import encode_device

    rng = np.random.default_rng(1)
    datas = [rng.integers(0, 256, 3 * (1 << 20) + r, dtype=np.uint8).tobytes() for r in (0, 1, 2)]
    datas += [os.urandom(48 * k + r) for k in (1, 7) for r in range(48)]
    mimes = ["image/jpeg"] * len(datas)
    dev, lay = encode_device(datas, mimes)
    host, _ = encode_batch(datas, mimes)
    for i in range(lay.n):
        s, n = lay.span(i)
        assert bytes(dev[s : s + n]) == bytes(host[s : s + n])


def test_kernel_bandwidth_measurement_runs():
    from gpupipe.gpu.bench import base64_kernel_bandwidth

    r = base64_kernel_bandwidth(16 << 20, 3)
    assert r["kernel_gbps"] > 0 and r["copy_gbps"] > 0 and r["ratio"] > 0


# --------------------------------------------------------------------------- DALI mixed


def test_dali_mixed_pipeline_outputs_on_device(png_bytes, jpeg_bytes, rgb_frame):
    import cupy as cp

    from gpupipe.gpu.dali_decode import DaliDecoder

    d = DaliDecoder(0, max_batch=4, num_threads=2)
    jobs = [plan_job(i, read_frame(b), OutputSpec("jpeg")) for i, b in enumerate([png_bytes, jpeg_bytes, png_bytes])]

    def consume(js, images):
        assert all(hasattr(im, "__cuda_array_interface__") for im in images)
        return [cp.asnumpy(cp.asarray(im)) for im in images]

    outs = d.decode(jobs, consume)
    d.close()
    assert np.array_equal(outs[0], rgb_frame) and np.array_equal(outs[2], rgb_frame)
    ref = np.asarray(Image.open(io.BytesIO(jpeg_bytes)).convert("RGB")).astype(np.int16)
    assert np.abs(outs[1].astype(np.int16) - ref).mean() < 1.5  # nvJPEG vs libjpeg-turbo


def test_dali_mixed_resize_and_bad_frame(png_bytes, jpeg_bytes):
    import cupy as cp

    from gpupipe.errors import FrameDecodeError
    from gpupipe.gpu.dali_decode import DaliDecoder
    from gpupipe.plan import fit_size

    d = DaliDecoder(0, max_batch=4, num_threads=2)
    datas = [png_bytes, _corrupt_png(png_bytes), jpeg_bytes]
    jobs = [plan_job(i, read_frame(b), OutputSpec("jpeg", (100, 100))) for i, b in enumerate(datas)]
    outs = d.decode(jobs, lambda js, ims: [cp.asnumpy(cp.asarray(im)).shape for im in ims])
    d.close()
    w, h = fit_size(320, 180, (100, 100))
    assert outs[0] == outs[2] == (h, w, 3)
    assert isinstance(outs[1], FrameDecodeError)


# --------------------------------------------------------------------------- nvImageCodec on the GPU


def test_nvimgcodec_gpu_encode_from_device(rgb_frame):
    import cupy as cp

    from gpupipe.gpu.jpeg_encode import JpegEncoder

    enc = JpegEncoder(0)
    dev = cp.asarray(rgb_frame)
    jpg = bytes(enc.encode_one(dev, 90))
    assert jpg[:2] == b"\xff\xd8"
    back = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB")).astype(np.int16)
    assert back.shape == rgb_frame.shape and np.abs(back - rgb_frame).mean() < 6


# --------------------------------------------------------------------------- GPU vs CPU


@pytest.fixture(scope="module")
def gpu_backend():
    from gpupipe.gpu.backend import GpuBackend

    be = GpuBackend(replace(Config(), batch_size=4, gpu=0, passthrough_device="gpu", png_device="gpu"))
    yield be
    assert be.device_lost is None
    be.close()


def test_passthrough_byte_identical(gpu_backend, png_bytes, jpeg_bytes, rgba_png_bytes):
    frames = [read_frame(b) for b in (png_bytes, jpeg_bytes, rgba_png_bytes, jpeg_bytes, png_bytes, png_bytes)]
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    assert gpu_backend.run(jobs) == CpuBackend(2).run(jobs)


def test_transcode_within_tolerance_and_same_errors(gpu_backend, png_bytes, jpeg_bytes, rgba_png_bytes):
    datas = [png_bytes, jpeg_bytes, _corrupt_png(png_bytes), rgba_png_bytes, jpeg_bytes[: len(jpeg_bytes) // 2]]
    frames = []
    for d in datas:
        try:
            frames.append(read_frame(d))
        except FrameError as e:  # pragma: no cover - all of these have valid headers
            pytest.fail(str(e))
    for spec in (OutputSpec("jpeg", (160, 160), 85), OutputSpec("auto", (100, 100)), OutputSpec("jpeg")):
        jobs = [plan_job(i, f, spec) for i, f in enumerate(frames)]
        assert_transcodes_match(gpu_backend.run(jobs), CpuBackend(2).run(jobs))


def test_staging_pool_limit_honoured(png_bytes):
    import cupy as cp

    from gpupipe.gpu.backend import GpuBackend

    limit = 64 << 20
    cfg = replace(Config(), batch_size=8, gpu=0, passthrough_device="gpu", png_device="gpu", staging=StagingConfig(max_bytes=limit, pinned_bytes=128 << 20))
    be = GpuBackend(cfg)
    try:
        pool = be.ops.pool
        assert pool.get_limit() == limit
        with cp.cuda.using_allocator(pool.malloc):
            with pytest.raises(cp.cuda.memory.OutOfMemoryError):
                cp.empty(limit + 1, cp.uint8)
        big = os.urandom(20 << 20)  # passthrough of ~20 MB: input + URI ~47 MB per frame
        fr = read_frame(b"\x89PNG\r\n\x1a\n" + png_bytes[8:])
        fr = replace(fr, data=fr.data[:-12] + big + fr.data[-12:])  # bytes before IEND; passthrough never decodes
        jobs = [plan_job(i, fr, OutputSpec("passthrough")) for i in range(3)]
        out = be.run(jobs)
        assert out == CpuBackend(1).run(jobs)
        st = be.staging_stats()
        assert st["peak_inflight_bytes"] <= limit and st["splits"] >= 1
        assert pool.total_bytes() <= limit
        assert 0 < st["pinned_peak_bytes"] <= cfg.staging.pinned_bytes
        info = be.info()
        assert info["pool_limit_bytes"] == limit and "staging" in info and info["device"]
    finally:
        be.close()


def test_stage_benchmark_runs(png_bytes, jpeg_bytes):
    from gpupipe.gpu.bench import gpu_stage_benchmark

    r = gpu_stage_benchmark([png_bytes, jpeg_bytes], (160, 160), 85, 2)
    assert set(r["stages_s"]) == {"upload", "decode", "resize", "encode", "base64", "download", "host_string", "jpeg_string"}
    assert r["transcode_fps"] > 0 and r["passthrough_fps"] > 0
    assert {"process", "finish", "host"} <= set(r["pipeline_stages"]) and r["process_cpu_s_per_frame"] > 0


def test_device_memory_and_three_phase_transcode_on_the_device(png_bytes, jpeg_bytes):
    """On the device: the transcode runs in three phases (decode | encode | strings) and gives the
    URIs it gives without overlap; device memory is reported with the device's own total."""
    from dataclasses import replace

    from gpupipe.config import Config
    from gpupipe.frames import read_frame
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.plan import OutputSpec, plan_job

    cfg = replace(Config(), batch_size=2, png_device="gpu", gpu=0)
    be = GpuBackend(cfg)
    try:
        jobs = [plan_job(i, read_frame(d), OutputSpec("jpeg", (160, 160), 85)) for i, d in enumerate([jpeg_bytes, png_bytes] * 3)]
        over = be.run(jobs)
        be.overlap = False
        assert be.run(jobs) == over and all(isinstance(u, str) for u in over)
        assert be.info()["overlap_stages"] == "none" and {"process", "finish", "host"} <= set(be.clock.totals())
        mem = be.device_memory()
        assert mem["device_total_bytes"] > mem["device_used_bytes"] > 0 and mem["pinned_staging_limit_bytes"] > 0
    finally:
        be.close()


def test_bad_frames_cost_one_rebuild_each_on_the_device(png_bytes, jpeg_bytes):
    """The ``mixed`` decoder names the failing sample too: 2 bad frames in 8, 2 rebuilds."""
    import struct
    import zlib

    import cupy as cp

    from gpupipe.errors import FrameDecodeError
    from gpupipe.gpu.dali_decode import DaliDecoder

    bad = _corrupt_png(png_bytes)
    out, pos = bytearray(bad[:8]), 8
    while pos < len(bad):  # valid CRCs: only a decoder sees the damage
        (n,) = struct.unpack(">I", bad[pos : pos + 4])
        out += bad[pos : pos + 8 + n] + struct.pack(">I", zlib.crc32(bad[pos + 4 : pos + 8 + n]))
        pos += 12 + n
    bad = bytes(out)
    d = DaliDecoder(0, max_batch=8, num_threads=2)
    datas = [png_bytes, jpeg_bytes, bad, png_bytes, jpeg_bytes, png_bytes, bad, jpeg_bytes]
    jobs = [plan_job(i, read_frame(b), OutputSpec("jpeg")) for i, b in enumerate(datas)]
    outs = d.decode(jobs, lambda js, ims: [cp.asnumpy(cp.asarray(im)).shape for im in ims])
    st = d.stats()
    d.close()
    assert [isinstance(o, FrameDecodeError) for o in outs] == [k in (2, 6) for k in range(8)]
    assert st["dali_rebuilds"] <= 2


def test_passthrough_on_the_cpu_path_by_default(png_bytes, jpeg_bytes):
    from gpupipe.gpu.backend import GpuBackend

    be = GpuBackend(replace(Config(), batch_size=4, gpu=0))
    try:
        jobs = [plan_job(i, read_frame(b), OutputSpec("passthrough")) for i, b in enumerate([png_bytes, jpeg_bytes])]
        assert be.run(jobs) == CpuBackend(1).run(jobs)
        assert be.counters()["cpu_jobs"] == 2
    finally:
        be.close()


@pytest.mark.parametrize("transcode", [False, True], ids=["passthrough", "transcode"])
def test_overlap_benchmark_runs(png_bytes, jpeg_bytes, transcode):
    from gpupipe.gpu.bench import overlap_benchmark

    r = overlap_benchmark([png_bytes, jpeg_bytes] * 4, batches=6, transcode=transcode, size=(160, 160), repeats=2)
    assert r["verified"] and r["serial_s"] > 0 and r["overlapped_s"] > 0
