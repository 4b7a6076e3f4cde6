"""The GPU modules' device branch, run without a GPU on the fake CuPy of ``tests/fake_cupy.py``.

``DeviceLayer(config, device_id=0)``, ``Base64Kernel`` and the staging pool run their real code;
CuPy underneath is a host-memory stand-in whose ``RawModule`` compiles and runs the kernel's own
CUDA source on the host. This checks the glue (buffer layout and offsets, the kernel's arguments,
one upload and one download per batch, the pool limit, out-of-memory handling, the staging
estimates against the allocations actually made). It says nothing about asynchrony or speed:
``tests/test_gpu.py`` covers the real device.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from gpupipe.config import Config, StagingConfig
from gpupipe.cpu_backend import CpuBackend
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.sources import read_frame

import fake_cupy
import host_kernel
from uri_pixels import assert_transcodes_match

MIMES = ["image/png", "image/jpeg"]


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    if host_kernel.host_cxx() is None:
        pytest.skip("no host C++ compiler for the emulated kernel")
    return tmp_path_factory.mktemp("fake-cupy")


@pytest.fixture
def fake(monkeypatch, kernel_dir):
    return fake_cupy.install(monkeypatch, kernel_dir)


def _frames(n: int, seed: int = 0) -> list[bytes]:
    """Small noisy PNGs and JPEGs of varied sizes (so every length remainder shows up)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = int(rng.integers(8, 90)), int(rng.integers(8, 60))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        b = io.BytesIO()
        img.save(b, "PNG" if i % 2 == 0 else "JPEG", **({} if i % 2 == 0 else {"quality": 80}))
        out.append(b.getvalue())
    return out


def _layer(monkeypatch, config: Config):
    """The real DeviceLayer on the fake device (nvImageCodec's GPU encoder is not needed for passthrough)."""
    import gpupipe.gpu.device as device

    monkeypatch.setattr(device, "JpegEncoder", lambda *a, **k: None)
    return device.DeviceLayer(config, device_id=0, dali_threads=1)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=400), st.sampled_from(MIMES)), min_size=1, max_size=10))
def test_base64_kernel_through_its_cupy_glue(kernel_dir, items):
    with pytest.MonkeyPatch.context() as mp:
        state = fake_cupy.install(mp, kernel_dir)
        from gpupipe.gpu.base64_kernel import THREADS, encode_device

        datas = [d for d, _ in items]
        mimes = [m for _, m in items]
        out, layout = encode_device(datas, mimes)
        for i, (d, m) in enumerate(zip(datas, mimes)):
            s, n = layout.span(i)
            assert out[s : s + n].tobytes() == f"data:{m};base64,".encode() + base64.b64encode(d)
        items_ = layout.total_chunks + layout.n
        assert state.launches == [(min(132 * 8, -(-items_ // THREADS)), THREADS)]


def test_kernel_refuses_misaligned_or_short_buffers(fake):
    from gpupipe.b64 import batch_layout
    from gpupipe.gpu.base64_kernel import get_kernel

    layout = batch_layout(["image/png"], [100])
    k = get_kernel()
    d_in = fake_cupy.empty(256, np.uint8)
    with pytest.raises(ValueError, match="aligned"):
        k.encode(d_in[1:], layout)
    with pytest.raises(ValueError, match="too small"):
        k.encode(d_in[:10], layout)
    assert fake.launches == []


def test_device_layer_passthrough_matches_cpu_one_copy_each_way(fake, monkeypatch, png_bytes, jpeg_bytes, rgba_png_bytes):
    from gpupipe.gpu.backend import GpuBackend

    cfg = replace(Config(), batch_size=64)
    backend = GpuBackend(cfg, ops=_layer(monkeypatch, cfg), workers=1)
    try:
        frames = [read_frame(d) for d in [png_bytes, jpeg_bytes, rgba_png_bytes, *_frames(12)]]
        jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
        got = backend.run(jobs)
        assert got == CpuBackend(1).run(jobs)
        assert [kind for kind, _ in fake.copies] == ["H2D", "D2H"]  # one batch: one upload, one download
        assert len(fake.launches) == 1
        info = backend.info()
        assert info["device"] == "fake device (host emulation)" and info["pool_limit_bytes"] == cfg.staging.max_bytes
        assert info["staging"]["oom_retries"] == 0 and info["staging"]["inflight_bytes"] == 0
        assert backend.ops.pool.used_bytes() == 0  # the batch's device buffers are freed with it
    finally:
        backend.close()


def test_staging_estimate_covers_the_pool_allocations(fake, monkeypatch):
    """With the pool limit equal to the planning budget, planned batches never hit the limit:
    ``passthrough_cost`` covers what the device branch allocates (pool rounding included)."""
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import passthrough_cost

    frames = [read_frame(d) for d in _frames(20, seed=5)]
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    budget = sum(passthrough_cost(j) for j in jobs[:3])  # about three frames per batch
    cfg = replace(Config(), batch_size=8, staging=StagingConfig(max_bytes=budget, pinned_bytes=64 << 20))
    layer = _layer(monkeypatch, cfg)
    backend = GpuBackend(cfg, ops=layer, workers=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no CPU fallback may happen
            got = backend.run(jobs)
        assert got == CpuBackend(1).run(jobs)
        st_ = backend.staging_stats()
        assert st_["oom_retries"] == 0 and st_["cpu_fallbacks"] == 0 and st_["splits"] > 0
        assert 0 < layer.pool.peak_used <= budget
        assert st_["peak_inflight_bytes"] <= budget
    finally:
        backend.close()


def test_device_out_of_memory_halves_the_batch_then_falls_back(fake, monkeypatch):
    """A device smaller than the staging budget: the real pool raises out-of-memory, the batch is
    halved and retried, cached blocks are released, and a frame that never fits goes to the CPU."""
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import passthrough_cost
    from gpupipe.gpu.staging import GpuFallbackWarning

    small = _frames(8, seed=9)
    rng = np.random.default_rng(1)
    big_img = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    b = io.BytesIO()
    big_img.save(b, "PNG")
    frames = [read_frame(d) for d in [*small[:4], b.getvalue(), *small[4:]]]
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    costs = [passthrough_cost(j) for j in jobs]
    fake.device.capacity = 2 * max(c for i, c in enumerate(costs) if i != 4)  # ~2 small frames; never the big one
    assert costs[4] > fake.device.capacity
    cfg = replace(Config(), batch_size=8)  # the 2 GiB staging budget believes all 9 fit
    layer = _layer(monkeypatch, cfg)
    backend = GpuBackend(cfg, ops=layer, workers=1)
    try:
        with pytest.warns(GpuFallbackWarning, match=frames[4].label):
            got = backend.run(jobs)
        assert got == CpuBackend(1).run(jobs)
        st_ = backend.staging_stats()
        assert st_["oom_retries"] >= 2 and st_["cpu_fallbacks"] == 1
        assert layer.pool.freed_all >= 1  # release() ran after the out-of-memory errors
        assert fake.device.peak <= fake.device.capacity
    finally:
        backend.close()


def test_device_layer_info_release_close(fake, monkeypatch):
    cfg = Config()
    layer = _layer(monkeypatch, cfg)
    d = layer.info()
    assert d["device_id"] == 0 and d["cupy"].startswith("fake") and d["cuda_runtime"] == 13000
    assert d["pool_used_bytes"] == 0 and d["pinned_limit"] == cfg.staging.pinned_bytes
    layer.release()
    assert layer.pool.freed_all == 1
    layer.close()
    assert layer.pinned.nbytes == 0


def test_bandwidth_benchmark_code_runs_and_verifies(fake):
    """The kernel bandwidth benchmark's code path (its figures here mean nothing: host emulation),
    including the check that catches a kernel that skips bytes."""
    from gpupipe.gpu.bench import base64_kernel_bandwidth

    r = base64_kernel_bandwidth(64 << 10, repeats=2, frames=4)
    assert r["verified"] == 1.0 and r["frames"] == 4 and r["kernel_gbps"] > 0 and r["copy_gbps"] > 0
    assert len(fake.launches) == 3  # warm-up + 2 timed

    import gpupipe.gpu.base64_kernel as bk

    real = bk.Base64Kernel.encode

    def lazy(self, d_in, layout, d_table=None, d_out=None, stream=None):  # a kernel that writes nothing
        return d_out

    bk.Base64Kernel.encode = lazy
    try:
        with pytest.raises(AssertionError, match="differs from pybase64"):
            base64_kernel_bandwidth(64 << 10, repeats=1, frames=2)
    finally:
        bk.Base64Kernel.encode = real


def _cpu_dali_and_encoder(monkeypatch) -> None:
    """DALI's and nvImageCodec's CPU backends under the device branch (their GPU backends need a GPU)."""
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    import gpupipe.gpu.dali_decode as dd
    import gpupipe.gpu.device as device
    import gpupipe.gpu.jpeg_encode as je

    real_build, real_enc = dd.build_pipeline, je.JpegEncoder
    monkeypatch.setattr(dd, "build_pipeline", lambda b, t, device_id, resize: real_build(b, 1, None, resize))
    monkeypatch.setattr(je, "JpegEncoder", lambda device_id=None, **k: real_enc(None))
    monkeypatch.setattr(device, "JpegEncoder", lambda device_id=None, **k: real_enc(None))


def test_device_layer_transcode_branch(fake, monkeypatch, png_bytes, jpeg_bytes):
    """The device branch of the transcode path (DALI and the encoder on their CPU backends)."""
    _cpu_dali_and_encoder(monkeypatch)
    from gpupipe.errors import FrameDecodeError
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import DeviceLayer

    cfg = replace(Config(), batch_size=4)
    backend = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=0, dali_threads=1), workers=1)
    try:
        bad = jpeg_bytes[:600] + bytes(4000) + jpeg_bytes[4600:]
        frames = [read_frame(d) for d in (png_bytes, jpeg_bytes, bad)]
        jobs = [plan_job(i, f, OutputSpec("jpeg", (160, 160), 85)) for i, f in enumerate(frames)]
        got = backend.run(jobs)
        assert_transcodes_match(got, CpuBackend(1).run(jobs))
        assert isinstance(got[2], FrameDecodeError) and got[2].frame == frames[2].label
    finally:
        backend.close()


def test_stage_benchmark_code_runs(fake, monkeypatch, png_bytes, jpeg_bytes):
    """``gpu_stage_benchmark``'s code path end to end (figures meaningless here: host emulation)."""
    _cpu_dali_and_encoder(monkeypatch)
    from gpupipe.gpu.bench import gpu_stage_benchmark

    r = gpu_stage_benchmark([png_bytes, jpeg_bytes], (160, 90), 85, repeats=1)
    assert r["frames"] == 2 and r["device"] == "fake device (host emulation)"
    assert set(r["stages_s"]) == {"upload", "base64", "download", "host_string", "decode", "resize", "encode"}
    assert all(v >= 0 for v in r["stages_s"].values()) and r["transcode_fps"] > 0 and r["passthrough_fps"] > 0


def test_bench_gpu_report_path(fake, monkeypatch, tmp_path):
    """``gpupipe bench --backend gpu`` end to end on small frames: the GPU columns, the kernel and
    per-stage tables and the GPU/CPU chart are produced (the figures themselves mean nothing here)."""
    _cpu_dali_and_encoder(monkeypatch)
    import gpupipe.bench as bench
    import gpupipe.gpu.bench as gbench

    real_bw = gbench.base64_kernel_bandwidth
    monkeypatch.setattr(gbench, "base64_kernel_bandwidth", lambda nbytes, repeats, frames=16: real_bw(1 << 20, 1, 4))
    monkeypatch.setattr(bench, "RESOLUTIONS", {"1080p": (192, 108), "4k": (384, 216)})
    monkeypatch.setattr(__import__("tempfile"), "tempdir", str(tmp_path))
    r = bench.run_bench(backend="gpu", quick=True, out=tmp_path / "results", use_ffmpeg=False, soak=False)
    assert all(w["gpu_fps"] > 0 and w["gpu_vs_cpu"] > 0 for w in r["workloads"])
    md = (tmp_path / "results" / "BENCH.md").read_text()
    assert "### GPU base64 kernel against a device-to-device copy" in md and "yes, against pybase64" in md
    assert md.count("| 4k |") >= 9 + 6  # throughput rows and per-stage rows
    assert (tmp_path / "results" / "gpu_cpu_ratio.png").stat().st_size > 1000
