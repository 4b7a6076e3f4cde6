"""GPU backend logic without a GPU: staging split, OOM shrink-and-retry, CPU fallback, routing,
backend selection, and the data path run end to end on CPU stand-ins (NumPy twin, DALI cpu,
nvImageCodec CPU encoder)."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpupipe.config import Config, StagingConfig
from gpupipe.cpu_backend import CpuBackend, run_job
from gpupipe.encoder import select_backend
from gpupipe.errors import BackendUnavailable, FrameDecodeError
from gpupipe.gpu.staging import GpuFallbackWarning, PinnedBuffers, StagedRunner, StagingBudget, plan_batches
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.sources import read_frame
from uri_pixels import assert_transcodes_match


# --------------------------------------------------------------------------- a substituted device layer


class FakeOps:
    """A device layer whose 'device' has ``capacity`` bytes: batches costing more raise an OOM error."""

    def __init__(self, capacity: int, cost: int = 100, fail_always: set[str] | None = None) -> None:
        self.capacity = capacity
        self.cost = cost
        self.fail_always = fail_always or set()
        self.calls: list[list[str]] = []
        self.released = 0
        self.closed = False

    def _process(self, jobs):
        self.calls.append([j.frame.label for j in jobs])
        if len(jobs) * self.cost > self.capacity or any(j.frame.label in self.fail_always for j in jobs):
            raise RuntimeError("cudaErrorMemoryAllocation: out of memory")
        return [run_job(j) for j in jobs]

    passthrough = transcode = _process

    def passthrough_cost(self, job):
        return self.cost

    passthrough_host_cost = transcode_cost = passthrough_cost

    def is_oom(self, exc):
        from gpupipe.gpu.dali_decode import is_oom_error

        return is_oom_error(exc)

    def release(self):
        self.released += 1

    def info(self):
        return {"device": "fake"}

    def close(self):
        self.closed = True


def _frames(png_bytes, jpeg_bytes, n):
    return [read_frame(png_bytes if i % 2 else jpeg_bytes) for i in range(n)]


def _labelled(datas):
    """Frames with distinct labels (the fake device fails frames by label)."""
    return [replace(read_frame(d), label=f"frame{i}") for i, d in enumerate(datas)]


def _backend(ops, staging_bytes=10_000, batch=8):
    from gpupipe.gpu.backend import GpuBackend

    cfg = replace(Config(), batch_size=batch, staging=StagingConfig(max_bytes=staging_bytes, pinned_bytes=1 << 20))
    return GpuBackend(cfg, ops=ops, workers=2)


# --------------------------------------------------------------------------- planning


def test_plan_batches_respects_budget_count_and_order():
    assert plan_batches([10] * 7, 30, 8) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_batches([10] * 7, 1000, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_batches([5, 50, 5, 5], 20, 8) == [[0], [1], [2, 3]]  # the oversize job alone
    assert plan_batches([1, 1, 1], 100, 8, host_costs=[6, 6, 6], host_max_bytes=12) == [[0, 1], [2]]
    assert plan_batches([], 10, 2) == []


def test_budget_accounting_and_peak():
    b = StagingBudget(1000)
    with b.reserve(300):
        with b.reserve(200):
            assert b.inflight_bytes == 500
    s = b.stats()
    assert s.inflight_bytes == 0 and s.peak_inflight_bytes == 500 and s.batches == 2


# --------------------------------------------------------------------------- runner


def test_split_when_over_budget(png_bytes, jpeg_bytes):
    ops = FakeOps(capacity=10_000, cost=100)
    be = _backend(ops, staging_bytes=250)  # 2 jobs per batch fit the budget
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(_frames(png_bytes, jpeg_bytes, 5))]
    out = be.run(jobs)
    assert [len(c) for c in ops.calls] == [2, 2, 1]
    assert out == CpuBackend(1).run(jobs)
    st = be.staging_stats()
    assert st["splits"] >= 1 and st["oom_retries"] == 0 and st["cpu_fallbacks"] == 0
    assert st["inflight_bytes"] == 0 and 0 < st["peak_inflight_bytes"] <= 250
    be.close()
    assert ops.closed


def test_oom_shrinks_batch_and_retries(png_bytes, jpeg_bytes):
    ops = FakeOps(capacity=300, cost=100)  # the device holds 3 jobs; the budget claims 8 fit
    be = _backend(ops, staging_bytes=10_000)
    jobs = [plan_job(i, f, OutputSpec("jpeg", (64, 64))) for i, f in enumerate(_frames(png_bytes, jpeg_bytes, 8))]
    out = be.run(jobs)
    assert all(isinstance(u, str) for u in out)
    assert out == CpuBackend(1).run(jobs)  # same URIs, in order
    sizes = [len(c) for c in ops.calls]
    assert sizes[0] == 8 and max(sizes[1:]) <= 4 and sum(s for s in sizes if s <= 3) == 8
    assert ops.released >= 1
    st = be.staging_stats()
    assert st["oom_retries"] >= 1 and st["cpu_fallbacks"] == 0


def test_last_resort_cpu_fallback_with_warning(png_bytes, jpeg_bytes):
    frames = _labelled([png_bytes, jpeg_bytes, png_bytes, jpeg_bytes])
    ops = FakeOps(capacity=10_000, cost=100, fail_always={"frame2"})
    be = _backend(ops)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    with pytest.warns(GpuFallbackWarning, match="frame2"):
        out = be.run(jobs)
    assert out == CpuBackend(1).run(jobs)  # no frame lost, all identical
    assert be.staging_stats()["cpu_fallbacks"] == 1


def test_frame_over_whole_budget_goes_to_cpu(png_bytes):
    ops = FakeOps(capacity=10_000, cost=500)
    be = _backend(ops, staging_bytes=400)
    jobs = [plan_job(0, read_frame(png_bytes), OutputSpec("passthrough"))]
    with pytest.warns(GpuFallbackWarning, match="over the budget"):
        out = be.run(jobs)
    assert ops.calls == [] and out == CpuBackend(1).run(jobs)


def test_unexpected_device_error_still_returns_every_frame(png_bytes, jpeg_bytes):
    class Broken(FakeOps):
        def _process(self, jobs):
            raise RuntimeError("illegal address")

        passthrough = transcode = _process

    be = _backend(Broken(10_000))
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(_frames(png_bytes, jpeg_bytes, 3))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GpuFallbackWarning)
        out = be.run(jobs)
    assert out == CpuBackend(1).run(jobs)


def test_runner_errors_from_process_are_kept_per_frame(png_bytes):
    budget = StagingBudget(1000)
    runner = StagedRunner(budget, max_batch=4, is_oom=lambda e: False)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(_labelled([png_bytes] * 3))]
    err = FrameDecodeError("frame1", "bad")
    out = runner.run(jobs, lambda js: [err if j.frame.label == "frame1" else "ok" for j in js], lambda j: 1)
    assert out == ["ok", err, "ok"]


# --------------------------------------------------------------------------- routing


def test_png_and_alpha_frames_go_to_the_cpu_path(png_bytes, jpeg_bytes, rgba_png_bytes):
    from gpupipe.gpu.backend import routes_to_cpu

    ops = FakeOps(capacity=10_000)
    be = _backend(ops)
    jobs = [
        plan_job(0, read_frame(rgba_png_bytes), OutputSpec("auto", (100, 100))),  # may have alpha -> auto
        plan_job(1, read_frame(jpeg_bytes), OutputSpec("png", (100, 100))),
        plan_job(2, read_frame(jpeg_bytes), OutputSpec("auto", (100, 100))),  # -> jpeg, on the device
        plan_job(3, read_frame(png_bytes), OutputSpec("passthrough")),
    ]
    assert [routes_to_cpu(j) for j in jobs] == [True, True, False, False]
    out = be.run(jobs)
    assert out[0].startswith("data:image/png;base64,") and out[1].startswith("data:image/png;base64,")
    assert out[2].startswith("data:image/jpeg;base64,")
    assert sorted(len(c) for c in ops.calls) == [1, 1]  # only jobs 2 and 3 reached the device
    assert out == CpuBackend(1).run(jobs)


# --------------------------------------------------------------------------- pinned buffers


def test_pinned_buffers_reused_grown_and_bounded():
    allocs = []

    def alloc(n):
        allocs.append(n)
        return np.zeros(n, np.uint8)

    p = PinnedBuffers(limit=4096, alloc=alloc)
    a = p.get("in", 100)
    b = p.get("in", 120)
    assert a.base is b.base or np.shares_memory(a, b)  # same buffer reused
    assert allocs == [128]
    p.get("in", 1000)
    assert allocs == [128, 1024]
    p.get("out", 2000)
    big = p.get("out", 5000)  # over the limit: pageable, not kept
    assert big.nbytes == 5000 and p.unpinned_requests == 1 and p.nbytes <= 4096


# --------------------------------------------------------------------------- selection


def test_select_backend_without_gpu(monkeypatch):
    import gpupipe.gpu as g

    monkeypatch.setattr(g, "gpu_available", lambda device=0: (False, "no CUDA device usable: test"))
    cfg = Config()
    assert select_backend("cpu", cfg) == ("cpu", "requested")
    b, why = select_backend("auto", cfg)
    assert b == "cpu" and "test" in why
    with pytest.raises(BackendUnavailable, match="test"):
        select_backend("gpu", cfg)


def test_select_backend_with_gpu(monkeypatch):
    import gpupipe.gpu as g

    monkeypatch.setattr(g, "gpu_available", lambda device=0: (True, f"CUDA device {device} of 1"))
    assert select_backend("auto", Config()) == ("gpu", "CUDA device 0 of 1")
    assert select_backend("gpu", replace(Config(), gpu=0))[0] == "gpu"


def test_gpu_available_reports_why_here():
    from gpupipe.gpu import gpu_available

    ok, why = gpu_available(0)
    assert isinstance(ok, bool) and why


def test_importing_gpupipe_does_not_import_cupy_or_dali():
    import subprocess
    import sys

    code = "import sys, gpupipe, gpupipe.gpu, gpupipe.b64; print(any(m.startswith(('cupy', 'nvidia')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --------------------------------------------------------------------------- nvImageCodec CPU-only


def test_nvimgcodec_cpu_encode_round_trip(rgb_frame):
    pytest.importorskip("nvidia.nvimgcodec")
    from gpupipe.gpu.jpeg_encode import JpegEncoder

    enc = JpegEncoder(None)
    jpg = bytes(enc.encode_one(rgb_frame, 90))
    assert jpg[:2] == b"\xff\xd8"
    back = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB")).astype(np.int16)
    assert back.shape == rgb_frame.shape
    assert np.abs(back - rgb_frame).mean() < 6
    low = enc.encode([rgb_frame], 20)[0]
    assert len(memoryview(low)) < len(jpg)  # quality reaches the encoder


# --------------------------------------------------------------------------- the data path on CPU stand-ins


@pytest.fixture(scope="module")
def host_backend():
    pytest.importorskip("nvidia.dali")
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import DeviceLayer

    cfg = replace(Config(), batch_size=4)
    be = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=None, dali_threads=1), workers=2)
    yield be
    be.close()


def test_stand_in_passthrough_byte_identical_to_cpu(host_backend, png_bytes, jpeg_bytes, rgba_png_bytes):
    frames = [read_frame(d) for d in (png_bytes, jpeg_bytes, rgba_png_bytes, b"\x89PNG\r\n\x1a\n" + png_bytes[8:])]
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    assert host_backend.run(jobs) == CpuBackend(1).run(jobs)


def test_stand_in_transcode_close_to_cpu_and_same_errors(host_backend, png_bytes, jpeg_bytes):
    i = png_bytes.find(b"IDAT")
    bad = png_bytes[: i + 100] + bytes(b ^ 0x5A for b in png_bytes[i + 100 : i + 400]) + png_bytes[i + 400 :]
    frames = [read_frame(d) for d in (png_bytes, bad, jpeg_bytes, png_bytes, jpeg_bytes)]
    spec = OutputSpec("jpeg", (160, 160), quality=85)
    jobs = [plan_job(k, f, spec) for k, f in enumerate(frames)]
    gpu = host_backend.run(jobs)
    assert_transcodes_match(gpu, CpuBackend(1).run(jobs), shape=(90, 160, 3))
    assert isinstance(gpu[1], FrameDecodeError) and gpu[1].frame == frames[1].label


def test_stand_in_accepts_and_refuses_what_the_cpu_path_does(host_backend, png_bytes, jpeg_bytes):
    """A PNG missing only IEND decodes in Pillow but not in nvImageCodec: the CPU path's verdict wins."""
    no_iend = png_bytes[:-12]
    short_jpeg = jpeg_bytes[: len(jpeg_bytes) // 2]
    frames = [read_frame(d) for d in (no_iend, short_jpeg, jpeg_bytes)]
    jobs = [plan_job(k, f, OutputSpec("jpeg", (100, 100))) for k, f in enumerate(frames)]
    gpu = host_backend.run(jobs)
    cpu = CpuBackend(1).run(jobs)
    assert [type(x) for x in gpu] == [type(x) for x in cpu]
    assert isinstance(gpu[0], str) and isinstance(gpu[1], FrameDecodeError)


# --------------------------------------------------------------------------- library APIs the GPU modules call

_GPU_SOURCES = sorted((Path(__file__).resolve().parents[1] / "gpupipe" / "gpu").glob("*.py"))
_ATTR_CHAIN = re.compile(r"\b(cp|cupyx|nv|dali_backend|rt)\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")


def test_gpu_modules_call_only_what_the_installed_libraries_have():
    """CI cannot run the device code, but the libraries are installed: every ``cp.…``, ``cupyx.…``,
    ``nv.…`` (nvImageCodec), ``rt.…`` (CUDA runtime) and DALI backend name the GPU modules use must
    exist in them, so a misspelt or removed API fails here rather than on the first GPU run."""
    cp = pytest.importorskip("cupy")
    cupyx = pytest.importorskip("cupyx")
    nv = pytest.importorskip("nvidia.nvimgcodec")
    dali_backend = pytest.importorskip("nvidia.dali.backend")
    roots = {"cp": cp, "cupyx": cupyx, "nv": nv, "dali_backend": dali_backend, "rt": cp.cuda.runtime}
    seen, missing = set(), []
    for src in _GPU_SOURCES:
        for root, chain in _ATTR_CHAIN.findall(src.read_text()):
            seen.add(f"{root}.{chain}")
            obj = roots[root]
            for part in chain.split("."):
                if not hasattr(obj, part):
                    missing.append(f"{src.name}: {root}.{chain} (no {part!r})")
                    break
                obj = getattr(obj, part)
    assert len(seen) > 20, sorted(seen)  # the pattern still finds the calls
    assert not missing, missing
