"""The GPU modules' device branch, run without a GPU on the fake CuPy of ``tests/fake_cupy.py``.

``DeviceLayer(config, device_id=0)``, ``Base64Kernel`` and the staging pool run their real code;
CuPy underneath is a host-memory stand-in whose ``RawModule`` compiles and runs the kernel's own
CUDA source on the host. This checks the glue (buffer layout and offsets, the kernel's arguments,
one upload and one download per batch, the pool limit, out-of-memory handling, the staging
estimates against the allocations actually made), where the kernel comes from on a host without
NVRTC (the prebuilt fatbin), which device every CUDA call runs on, the pinned-memory bound, and a
kernel fault that kills the context. It says nothing about asynchrony or speed:
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
from gpupipe.cpu import CpuBackend
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.frames import read_frame

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
    """The fake device on a stock host: a driver, but no NVRTC and no CUDA headers."""
    return fake_cupy.install(monkeypatch, kernel_dir, nvrtc=False)


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
        state = fake_cupy.install(mp, kernel_dir, nvrtc=False)
        from gpupipe.gpu.base64_kernel import CHUNKS_PER_THREAD, THREADS, encode_device

        datas = [d for d, _ in items]
        mimes = [m for _, m in items]
        out, layout = encode_device(datas, mimes)
        for i, (d, m) in enumerate(zip(datas, mimes)):
            s, n = layout.span(i)
            assert out[s : s + n].tobytes() == f"data:{m};base64,".encode() + base64.b64encode(d)
        tiles = -(-layout.total_chunks // (THREADS * CHUNKS_PER_THREAD))
        assert state.launches == [(max(1, min(132 * 8, tiles)), THREADS)]


def test_kernel_refuses_misaligned_or_short_buffers(fake):
    from gpupipe.base64_batch import batch_layout
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

    cfg = replace(Config(), batch_size=64, passthrough_device="gpu")
    backend = GpuBackend(cfg, ops=_layer(monkeypatch, cfg), workers=1)
    try:
        frames = [read_frame(d) for d in [png_bytes, jpeg_bytes, rgba_png_bytes, *_frames(12)]]
        jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
        got = backend.run(jobs)
        assert got == CpuBackend(1).run(jobs)
        assert [kind for kind, _ in fake.copies] == ["H2D", "D2H"]  # one batch: one upload, one download
        assert len(fake.launches) == 1
        assert fake.module_loads == [("path", "sass_90")]  # the prebuilt fatbin's sm_90 code, no NVRTC
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
    cfg = replace(Config(), batch_size=8, staging=StagingConfig(max_bytes=budget, pinned_bytes=64 << 20), passthrough_device="gpu")
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
    cfg = replace(Config(), batch_size=8, passthrough_device="gpu")  # the 2 GiB staging budget believes all 9 fit
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


def test_device_memory_in_info_and_counters_on_the_fake_device(fake, monkeypatch, png_bytes, jpeg_bytes):
    """``device_memory()``: the device's total/used (``cudaMemGetInfo``, which counts DALI's and
    nvImageCodec's memory too), the staging and default CuPy pools, and the pinned buffers; in
    ``info()``; made on the configured device; and no CUDA call once the device is lost."""
    from gpupipe.gpu.backend import GpuBackend

    cfg = replace(Config(), batch_size=4, passthrough_device="gpu")
    backend = GpuBackend(cfg, ops=_layer(monkeypatch, cfg), workers=1)
    try:
        before = backend.device_memory()
        assert before["device_total_bytes"] == fake.device.capacity and before["pinned_staging_bytes"] == 0
        assert before["staging_pool_limit_bytes"] == cfg.staging.max_bytes
        assert before["pinned_staging_limit_bytes"] == cfg.staging.pinned_bytes
        jobs = [plan_job(i, read_frame(d), OutputSpec("passthrough")) for i, d in enumerate([png_bytes, jpeg_bytes])]
        backend.run(jobs)
        after = backend.device_memory()
        assert after["pinned_staging_bytes"] > 0 and after["pinned_staging_peak_bytes"] >= after["pinned_staging_bytes"]
        assert after["device_used_bytes"] >= after["staging_pool_held_bytes"] >= after["staging_pool_used_bytes"] >= 0
        assert ("memGetInfo", 0) in fake.calls
        assert backend.info()["device_memory"].keys() == after.keys()
        backend._lose_device(RuntimeError("CUDA error 700"))
        n = len(fake.calls)
        assert backend.device_memory() == {} and len(fake.calls) == n
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


@pytest.fixture
def fake_ctk(monkeypatch, kernel_dir):
    """The fake device with NVRTC and the CUDA headers present, as the gpu extra's wheels provide
    (CuPy's own elementwise kernels, e.g. ``fill``, are compiled with them)."""
    return fake_cupy.install(monkeypatch, kernel_dir, nvrtc=True, headers=True)


def test_bandwidth_benchmark_code_runs_and_verifies(fake_ctk):
    """The kernel bandwidth benchmark's code path (its figures here mean nothing: host emulation),
    including the check that catches a kernel that skips bytes."""
    fake = fake_ctk
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
    monkeypatch.setattr(
        dd,
        "build_pipeline",
        lambda b, t, device_id, resize, orient=None, decoder_args=None: real_build(b, 1, None, resize, orient, decoder_args),
    )
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
        c = backend.counters()  # DALI really ran: no batch fell back to the CPU path on an error
        assert c["dali_runs"] >= 1 and c["cpu_fallbacks"] == 0
    finally:
        backend.close()


def test_stage_benchmark_code_runs(fake, monkeypatch, png_bytes, jpeg_bytes):
    """``gpu_stage_benchmark``'s code path end to end (figures meaningless here: host emulation)."""
    _cpu_dali_and_encoder(monkeypatch)
    from gpupipe.gpu.bench import gpu_stage_benchmark

    r = gpu_stage_benchmark([png_bytes, jpeg_bytes], (160, 90), 85, repeats=1)
    assert r["frames"] == 2 and r["device"] == "fake device (host emulation)"
    assert set(r["stages_s"]) == {"upload", "base64", "download", "host_string", "decode", "resize", "encode", "jpeg_string"}
    assert all(v >= 0 for v in r["stages_s"].values()) and r["transcode_fps"] > 0 and r["passthrough_fps"] > 0
    # host CPU per stage: each stage alone, and the end-to-end transcode's phases (thread CPU)
    assert set(r["stages_cpu"]) == {"host_string", "decode", "decode+resize", "encode", "jpeg_string"}
    assert all(c["thread_cpu_s"] >= 0 and c["process_cpu_s"] >= 0 for c in r["stages_cpu"].values())
    assert {"process", "finish", "host"} <= set(r["pipeline_stages"]) and r["process_cpu_s_per_frame"] > 0
    assert r["pipeline_stages"]["process"]["calls"] == 1  # per run: one batch of 2


def test_bench_gpu_report_path(fake_ctk, monkeypatch, tmp_path):
    """``gpupipe bench --backend gpu`` end to end on small frames: the GPU columns, the kernel and
    per-stage tables and the GPU/CPU chart are produced (the figures themselves mean nothing here)."""
    _cpu_dali_and_encoder(monkeypatch)
    import gpupipe.tools.bench as bench
    import gpupipe.gpu.bench as gbench

    real_bw = gbench.base64_kernel_bandwidth
    monkeypatch.setattr(gbench, "base64_kernel_bandwidth", lambda nbytes, repeats, frames=16: real_bw(1 << 20, 1, 4))
    monkeypatch.setattr(bench, "RESOLUTIONS", {"1080p": (192, 108), "4k": (384, 216)})
    monkeypatch.setattr(__import__("tempfile"), "tempdir", str(tmp_path))
    prof = tmp_path / "prof"
    r = bench.run_bench(backend="gpu", quick=True, out=tmp_path / "results", use_ffmpeg=False, soak=False, gpu_profile=prof)
    assert all(w["gpu_fps"] > 0 and w["gpu_vs_cpu"] > 0 for w in r["workloads"])
    md = (tmp_path / "results" / "BENCH.md").read_text()
    assert "### GPU path: host CPU per stage (CPU-ms per frame)" in md and r["command"].endswith(f"--gpu-profile {prof}")
    import pstats

    dumps = sorted(prof.glob("gpu-*.prof"))
    assert sorted(s["profile"] for s in r["gpu_detail"]["stages"]) == list(map(str, dumps))
    names = {f[2] for f in pstats.Stats(str(dumps[0])).stats}  # type: ignore[attr-defined]
    assert {"transcode_begin", "transcode_encode", "transcode_strings"} <= names  # every stage thread is in the dump
    assert "### GPU base64 kernel against a device-to-device copy" in md and "yes, against pybase64" in md
    assert md.count("| 4k |") >= 9 + 6  # throughput rows and per-stage rows
    assert (tmp_path / "results" / "gpu_cpu_ratio.png").stat().st_size > 1000


# --------------------------------------------------------------------------- where the kernel comes from


def test_kernel_source_needs_no_cuda_headers(monkeypatch, kernel_dir):
    """The base64 kernel includes no CUDA header, so a device the prebuilt fatbin cannot serve gets
    it from NVRTC even where NVRTC comes without the headers (the nvidia-cuda-nvrtc wheel alone).
    Without NVRTC at all: ``test_stale_prebuilt_is_not_used``; the device layer's own code never
    compiles anything (every test on the ``fake`` fixture runs without NVRTC, where the fake
    refuses CuPy's run-time-compiled kernels as CuPy does)."""
    state = fake_cupy.install(monkeypatch, kernel_dir, cc=72, nvrtc=True, headers=False)
    from gpupipe.gpu.base64_kernel import Base64Kernel

    assert Base64Kernel().loaded_from == "nvrtc" and state.module_loads == [("code", "nvrtc")]


def _stale_package(tmp_path, monkeypatch):
    """A copy of gpupipe/gpu's kernel files whose source no longer matches the fatbin's manifest."""
    import shutil

    import gpupipe.gpu.kernel_build as kb

    d = tmp_path / "pkg"
    d.mkdir()
    for name in (kb.KERNEL_FILE, kb.FATBIN_FILE, kb.MANIFEST_FILE):
        shutil.copy(kb.HERE / name, d / name)
    (d / kb.KERNEL_FILE).write_text((kb.HERE / kb.KERNEL_FILE).read_text() + "\n// edited\n")
    monkeypatch.setattr(kb, "HERE", d)
    return d


def test_stale_prebuilt_is_not_used(fake, monkeypatch, tmp_path, caplog):
    """An edited kernel source makes the fatbin stale: it is compiled with NVRTC instead, and
    without NVRTC the GPU path says it cannot build the kernel (cuda.pathfinder's error: the gpu extra)."""
    DynamicLibNotFoundError = pytest.importorskip("cuda.pathfinder").DynamicLibNotFoundError
    _stale_package(tmp_path, monkeypatch)

    from gpupipe.gpu import gpu_status
    from gpupipe.gpu.base64_kernel import Base64Kernel

    st_ = gpu_status(0)
    assert not st_.usable and st_.code == "kernel" and "stale" in st_.reason and "NVRTC" in st_.reason
    with pytest.raises(DynamicLibNotFoundError):
        Base64Kernel()
    fake.nvrtc = True
    k = Base64Kernel()
    assert k.loaded_from == "nvrtc" and fake.module_loads[-1] == ("code", "nvrtc")
    assert "stale" in caplog.text


def test_gpu_status_says_the_kernel_cannot_be_built_exactly_when_it_cannot(monkeypatch, kernel_dir, tmp_path):
    """With a stale fatbin the kernel must come from NVRTC, looked up as CuPy looks it up on this
    machine (with or without the gpu extra's NVRTC wheel): ``gpu_status`` reports ``kernel`` as the
    missing piece exactly when building the kernel then fails."""
    pytest.importorskip("cuda.pathfinder")
    fake_cupy.install(monkeypatch, kernel_dir, nvrtc="lookup")
    _stale_package(tmp_path, monkeypatch)
    from gpupipe.gpu import gpu_status
    from gpupipe.gpu.base64_kernel import Base64Kernel

    status = gpu_status(0)
    try:
        built = Base64Kernel().loaded_from == "nvrtc"
    except Exception:
        built = False
    assert (status.code != "kernel") == built, status
    assert status.code == "kernel" or "NVRTC" in status.checks["kernel"], status


@pytest.mark.parametrize("cc,want", [(90, ("path", "sass_90")), (87, ("path", "sass_86")), (121, ("path", "sass_120")), (130, ("path", "ptx_75"))])
def test_prebuilt_fatbin_covers_every_cuda13_device(monkeypatch, kernel_dir, cc, want):
    """SASS for the device's generation, or the PTX JIT-compiled on one newer than all of them."""
    state = fake_cupy.install(monkeypatch, kernel_dir, cc=cc, nvrtc=False)
    from gpupipe.gpu.base64_kernel import Base64Kernel

    k = Base64Kernel()
    assert k.loaded_from == "prebuilt" and state.module_loads == [want]


def test_refused_fatbin_falls_back_to_nvrtc(monkeypatch, kernel_dir, caplog):
    """A device the fatbin cannot serve (CUDA_ERROR_NO_BINARY_FOR_GPU) gets the kernel from NVRTC."""
    state = fake_cupy.install(monkeypatch, kernel_dir, cc=72, nvrtc=True)
    from gpupipe.gpu.base64_kernel import Base64Kernel

    assert Base64Kernel().loaded_from == "nvrtc"
    assert "CUDA_ERROR_NO_BINARY_FOR_GPU" in caplog.text and state.module_loads == [("code", "nvrtc")]


def test_gpu_status_names_what_is_missing(monkeypatch, kernel_dir):
    from gpupipe.gpu import gpu_available, gpu_status

    def status(**kw):
        with pytest.MonkeyPatch.context() as mp:
            fake_cupy.install(mp, kernel_dir, **kw)
            return gpu_status(0)

    assert status(libcuda=False).code == "no-driver"
    assert "libcuda.so.1" in status(libcuda=False).reason
    old = status(driver=12040)
    assert old.code == "driver-too-old" and "CUDA 12.4" in old.reason and "R580" in old.reason
    assert status(devices=0).code == "no-device" and "sees no CUDA device" in status(devices=0).reason
    assert status(cc=70).code == "device-too-old"
    with pytest.MonkeyPatch.context() as mp:
        fake_cupy.install(mp, kernel_dir)
        got = gpu_available(1)
    assert got == (False, "CUDA device 1 requested but 1 device(s) present")
    with pytest.MonkeyPatch.context() as mp:
        fake_cupy.install(mp, kernel_dir)
        mp.setitem(__import__("sys").modules, "nvidia.dali", None)  # import fails as if not installed
        st_ = gpu_status(0)
    assert st_.code == "dali-missing" and "DALI is not installed" in st_.reason


def test_gpu_status_ok_with_the_prebuilt_kernel_and_no_nvrtc(monkeypatch, kernel_dir):
    """Usable on a driver-only host (no NVRTC) once DALI and nvImageCodec are installed (the gpu extra)."""
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    from gpupipe.gpu import gpu_status

    fake_cupy.install(monkeypatch, kernel_dir, nvrtc=False)
    ok = gpu_status(0)
    assert ok.usable and ok.code == "ok" and "prebuilt" in ok.checks["kernel"], ok


def test_gpu_status_without_a_driver_here():
    """On this machine (whatever it has), the reason is specific: never the CUDA runtime's
    misleading "driver version is insufficient" when there is no driver at all."""
    import ctypes

    from gpupipe.gpu import gpu_status

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        st_ = gpu_status(0)
        assert st_.code in ("no-driver", "cupy-missing") and "insufficient" not in st_.reason
    else:
        pytest.skip("this machine has an NVIDIA driver")


# --------------------------------------------------------------------------- devices, faults, pinned memory


def test_gpu_1_never_touches_device_0(monkeypatch, kernel_dir, png_bytes, jpeg_bytes):
    """With ``gpu: 1`` every CUDA call (allocations, pinned memory, copies, launches,
    synchronisations) runs on device 1, in both phases and both paths."""
    state = fake_cupy.install(monkeypatch, kernel_dir, devices=2, nvrtc=False)
    _cpu_dali_and_encoder(monkeypatch)
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import DeviceLayer

    cfg = replace(Config(), batch_size=2, gpu=1, passthrough_device="gpu")
    backend = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=1, dali_threads=1), workers=1)
    try:
        frames = [read_frame(d) for d in (png_bytes, jpeg_bytes, png_bytes, jpeg_bytes, png_bytes)]
        pjobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
        tjobs = [plan_job(i, f, OutputSpec("jpeg", (160, 160), 85)) for i, f in enumerate(frames)]
        assert backend.run(pjobs) == CpuBackend(1).run(pjobs)
        assert_transcodes_match(backend.run(tjobs), CpuBackend(1).run(tjobs))
        backend.info()
    finally:
        backend.close()
    ops = {op for op, _ in state.calls}
    assert {"hostAlloc", "malloc", "memcpyAsync", "launch", "streamSynchronize"} <= ops
    assert state.devices_touched() == {1}, sorted({c for c in state.calls if c[1] != 1})
    assert not any(op == "deviceSynchronize" for op, _ in state.calls)


def test_kernel_fault_contains_the_device_for_the_rest_of_the_process(fake, monkeypatch, caplog):
    """An illegal address in the kernel (reported, as on a GPU, at the next synchronisation, as
    CuPy's CUDARuntimeError 700): every frame still gets its URI, one warning, and no CUDA call
    is made again."""
    from gpupipe.gpu.backend import GpuBackend, GpuDeviceLostWarning

    cfg = replace(Config(), batch_size=4, passthrough_device="gpu")
    backend = GpuBackend(cfg, ops=_layer(monkeypatch, cfg), workers=1)
    frames = [read_frame(d) for d in _frames(10, seed=3)]
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    try:
        assert backend.run(jobs[:4]) == CpuBackend(1).run(jobs[:4])  # healthy
        fake.arm_fault(700)
        with pytest.warns(GpuDeviceLostWarning, match="cudaErrorIllegalAddress") as rec:
            assert backend.run(jobs) == CpuBackend(1).run(jobs)
        assert len(rec) == 1 and "sticky CUDA error" in str(rec[0].message)
        calls = len(fake.calls)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert backend.run(jobs) == CpuBackend(1).run(jobs)
        assert len(fake.calls) == calls  # nothing touched the dead context
        info = backend.info()
        assert info["device_lost"].startswith("CUDARuntimeError: cudaErrorIllegalAddress") and info["counters"]["device_lost"] == 1
        assert "sticky CUDA error" not in caplog.text  # the warning is the one report, not also a log record
    finally:
        backend.close()  # closing after the loss does not raise


def test_pinned_memory_held_stays_within_its_setting(fake, monkeypatch):
    """Growing passthrough batches through the device branch: the pinned memory CuPy's pools
    actually hold (in use plus cached) never exceeds ``staging.pinned_bytes``; staging stats
    report it."""
    from gpupipe.gpu.backend import GpuBackend

    limit = 1 << 20
    cfg = replace(Config(), batch_size=4, passthrough_device="gpu", staging=StagingConfig(max_bytes=64 << 20, pinned_bytes=limit))
    backend = GpuBackend(cfg, ops=_layer(monkeypatch, cfg), workers=1)
    rng = np.random.default_rng(2)
    try:
        for size in (2_000, 5_000, 9_000, 20_000, 40_000, 70_000, 100_000, 30_000, 110_000):
            datas = []
            for _ in range(4):
                img = Image.fromarray(rng.integers(0, 256, (size // 300 + 1, 100, 3), dtype=np.uint8))
                b = io.BytesIO()
                img.save(b, "PNG", compress_level=0)
                datas.append(b.getvalue())
            jobs = [plan_job(i, read_frame(d), OutputSpec("passthrough")) for i, d in enumerate(datas)]
            assert backend.run(jobs) == CpuBackend(1).run(jobs)
            assert fake.pinned_held <= limit
        st_ = backend.staging_stats()
        assert fake.pinned_peak <= limit and 0 < st_["pinned_peak_bytes"] <= limit and st_["pinned_limit"] == limit
        assert st_["pinned_bytes"] == fake.pinned_held
    finally:
        backend.close()
    assert fake.pinned_held == 0  # closing frees it


def test_footprint_covers_one_frame_on_device_pinned_and_host(fake, monkeypatch):
    """What one passthrough frame really holds (device pool peak, pinned memory, the host URI)
    is within the backend's ``footprint``."""
    from gpupipe.frames import read_header

    from gpupipe.gpu.backend import GpuBackend

    cfg = replace(Config(), batch_size=1, passthrough_device="gpu")
    layer = _layer(monkeypatch, cfg)
    backend = GpuBackend(cfg, ops=layer, workers=1)
    data = _frames(1, seed=4)[0]
    data = data[:-12] + np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes() + data[-12:]
    job = plan_job(0, read_frame(data), OutputSpec("passthrough"))
    try:
        (uri,) = backend.run([job])
        held = layer.pool.peak_used + fake.pinned_peak + len(uri) + len(data)
        host, device = backend.footprint(read_header(data, "frame"), OutputSpec("passthrough"))
        assert held <= host + device and layer.pool.peak_used + fake.pinned_peak <= device
    finally:
        backend.close()


def test_overlap_benchmark_runs_on_the_fake_device(fake, monkeypatch):
    """``overlap_benchmark``'s code path (figures meaningless here: host emulation, no asynchrony)."""
    import gpupipe.gpu.device as device
    from gpupipe.gpu.bench import overlap_benchmark

    monkeypatch.setattr(device, "JpegEncoder", lambda *a, **k: None)  # passthrough only
    r = overlap_benchmark(_frames(4, seed=6), batches=3, device_id=0)
    assert r["batches"] == 3 and r["frames_per_batch"] == 4 and r["verified"]
    assert r["serial_s"] > 0 and r["overlapped_s"] > 0 and r["stage_sum_s"] > 0
    assert set(r["phases_s"]) == {"process", "finish", "host"}
