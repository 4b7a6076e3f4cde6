"""GPU backend logic without a GPU: staging split, OOM shrink-and-retry, CPU fallback, routing,
overlap of two-phase batches, containment of a lost device, the pinned budget, backend
selection, and the data path run end to end on CPU stand-ins (NumPy twin, DALI cpu, nvImageCodec
CPU encoder). Device errors are the libraries' real exception types and messages."""

from __future__ import annotations

import io
import logging
import re
import threading
import warnings
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpupipe.config import Config, StagingConfig
from gpupipe.cpu import CpuBackend, run_job
from gpupipe.encoder import select_backend
from gpupipe.errors import BackendUnavailable, FrameDecodeError
from gpupipe.gpu.staging import GpuFallbackWarning, PinnedBuffers, StagedRunner, StagingBudget, plan_batches
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.frames import read_frame
from uri_pixels import assert_transcodes_match


# --------------------------------------------------------------------------- a substituted device layer


def cupy_oom(size: int = 1 << 20) -> BaseException:
    """The error CuPy's pool raises when it cannot allocate (the real type; it constructs without a GPU)."""
    cupy = pytest.importorskip("cupy")
    return cupy.cuda.memory.OutOfMemoryError(size, 0, 0)


def dali_error(inner: str) -> RuntimeError:
    """A DALI pipeline failure as ``Pipeline.run`` raises it (the wrapper text is DALI 2.4's, seen on
    its CPU backend); ``inner`` is the C++ exception's text."""
    return RuntimeError(
        "Critical error in pipeline:\nCritical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.image`,\n"
        "which was used in the pipeline definition with the following traceback:\n\n"
        '  File "gpupipe/gpu/dali_decode.py", line 80, in frames_pipeline\n'
        "    img = fn.decoders.image(enc, device=decoder_device, **kwargs)\n\n"
        f"encountered:\n\n{inner}\nCurrent pipeline object is no longer valid.\nCurrent pipeline object is no longer valid."
    )


class FakeOps:
    """A device layer whose 'device' has ``capacity`` bytes: batches costing more raise ``oom()``
    (default: CuPy's ``OutOfMemoryError``)."""

    def __init__(self, capacity: int, cost: int = 100, fail_always: set[str] | None = None, oom=None) -> None:
        self.capacity = capacity
        self.cost = cost
        self.fail_always = fail_always or set()
        self.calls: list[list[str]] = []
        self.released = 0
        self.closed = False
        self.oom = oom or cupy_oom

    def _process(self, jobs):
        self.calls.append([j.frame.label for j in jobs])
        if len(jobs) * self.cost > self.capacity or any(j.frame.label in self.fail_always for j in jobs):
            raise self.oom()
        return [run_job(j) for j in jobs]

    passthrough = transcode = _process

    def passthrough_cost(self, job):
        return self.cost

    passthrough_host_cost = transcode_cost = passthrough_cost

    def is_oom(self, exc):
        from gpupipe.gpu.faults import is_oom_error

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


def _backend(ops, staging_bytes=10_000, batch=8, passthrough_device="gpu", png_device="gpu", **kw):
    from gpupipe.gpu.backend import GpuBackend

    cfg = replace(
        Config(),
        batch_size=batch,
        staging=StagingConfig(max_bytes=staging_bytes, pinned_bytes=1 << 20),
        passthrough_device=passthrough_device,
        png_device=png_device,
    )
    return GpuBackend(cfg, ops=ops, workers=2, **kw)


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


@pytest.mark.parametrize(
    "oom",
    [
        cupy_oom,
        lambda: dali_error("Can't allocate 132710400 bytes on device 0."),  # DALI's CUDABadAlloc(size)
        lambda: dali_error("CUDA allocation failed"),  # DALI's CUDABadAlloc()
        lambda: dali_error("Can't allocate 16777216 bytes on host."),  # DALI's pinned staging
    ],
    ids=["cupy", "dali-device", "dali-bare", "dali-host"],
)
def test_oom_shrinks_batch_and_retries(png_bytes, jpeg_bytes, oom):
    ops = FakeOps(capacity=300, cost=100, oom=oom)  # the device holds 3 jobs; the budget claims 8 fit
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
    be = _backend(ops, passthrough_device="gpu")
    jobs = [
        plan_job(0, read_frame(rgba_png_bytes), OutputSpec("auto", (100, 100))),  # may have alpha -> auto
        plan_job(1, read_frame(jpeg_bytes), OutputSpec("png", (100, 100))),
        plan_job(2, read_frame(jpeg_bytes), OutputSpec("auto", (100, 100))),  # -> jpeg, on the device
        plan_job(3, read_frame(png_bytes), OutputSpec("passthrough")),
    ]
    assert [routes_to_cpu(j) for j in jobs] == [True, True, False, False]
    assert [be.route(j) for j in jobs] == ["cpu", "cpu", "transcode", "passthrough"]
    out = be.run(jobs)
    assert out[0].startswith("data:image/png;base64,") and out[1].startswith("data:image/png;base64,")
    assert out[2].startswith("data:image/jpeg;base64,")
    assert sorted(len(c) for c in ops.calls) == [1, 1]  # only jobs 2 and 3 reached the device
    assert out == CpuBackend(1).run(jobs)


def test_png_sources_go_to_the_cpu_path_by_default(png_bytes, jpeg_bytes):
    """``png_device: cpu`` (the default): a PNG source is transcoded on the CPU path (DALI would decode it on
    its CPU threads into buffers outside the byte budget), and costs what the CPU path holds; JPEG still
    goes to the device, and PNG passthrough follows ``passthrough_device``."""
    from gpupipe.footprint import cpu_footprint
    from gpupipe.frames import parse_header

    assert Config().png_device == "cpu"
    ops = FakeOps(capacity=10_000)
    be = _backend(ops, png_device="cpu")
    frames = _labelled([png_bytes, jpeg_bytes, png_bytes])
    spec = OutputSpec("jpeg", (64, 64))
    jobs = [plan_job(0, frames[0], spec), plan_job(1, frames[1], spec), plan_job(2, frames[2], OutputSpec("passthrough"))]
    assert [be.route(j) for j in jobs] == ["cpu", "transcode", "passthrough"]
    assert be.run(jobs) == CpuBackend(1).run(jobs)
    assert sorted(ops.calls) == [["frame1"], ["frame2"]]
    header = parse_header("png", png_bytes)
    assert be.footprint(header, spec) == (cpu_footprint(header, spec), 0)
    assert "png_device: cpu" in be.info()["png_sources"]
    gpu = _backend(FakeOps(capacity=10_000), png_device="gpu")
    assert gpu.route(jobs[0]) == "transcode" and gpu.footprint(header, spec)[1] > 0


# --------------------------------------------------------------------------- pinned buffers


class _PinnedPool:
    """Pinned memory as CuPy's ``PinnedMemoryPool`` holds it: a freed block stays held until
    ``free_all_blocks``. ``held`` counts the bytes held (in use or cached)."""

    def __init__(self):
        self.held = self.peak = 0
        self.cached = 0

    def alloc(self, n):
        self.held += n
        self.peak = max(self.peak, self.held)
        arr = np.zeros(n, np.uint8)
        weakref.finalize(arr, self._freed, n)
        return arr

    def _freed(self, n):
        self.cached += n

    def release(self):
        self.held -= self.cached
        self.cached = 0


def test_pinned_buffers_reused_grown_and_bounded():
    pool = _PinnedPool()
    p = PinnedBuffers(limit=1 << 20, alloc=pool.alloc, release=pool.release)
    a = p.get("in", 100)
    b = p.get("in", 120)
    assert np.shares_memory(a, b) and a.nbytes == 100 and b.nbytes == 120  # reused, exact views
    del a, b
    p.get("in", 70_000)  # grows: the old block is freed before the new one is allocated
    assert p.nbytes == 2 * PinnedBuffers.GRANULE and pool.held == p.nbytes
    p.get("out", 600_000)
    big = p.get("out", 2 << 20)  # over the limit: pageable, not kept
    assert big.nbytes == 2 << 20 and p.unpinned_requests == 1 and p.nbytes <= 1 << 20


def test_pinned_memory_never_exceeds_its_setting_across_growing_batches():
    """Batches that keep growing (input and output buffers, two slots) never make the pinned
    memory actually held (in use plus cached in the pool) exceed ``staging.pinned_bytes``."""
    limit = 4 << 20
    pool = _PinnedPool()
    p = PinnedBuffers(limit=limit, alloc=pool.alloc, release=pool.release)
    rng = np.random.default_rng(0)
    size = 10_000
    for k in range(60):
        size = int(size * rng.uniform(1.0, 1.3))
        slot = k % 2
        n_in, n_out = size, size * 4 // 3
        if 2 * (n_in + n_out) > limit:  # the runner plans each slot's batch within half the limit
            size, n_in, n_out = 10_000, 10_000, 13_333
        a = p.get(f"in{slot}", n_in)
        b = p.get(f"out{slot}", n_out)
        assert a.nbytes == n_in and b.nbytes == n_out
        del a, b
        assert pool.held <= limit and p.nbytes <= limit
    assert pool.peak <= limit and p.peak_nbytes <= limit and p.unpinned_requests == 0


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


def test_backend_choice_here_follows_gpu_status():
    """On this machine, whatever it has: ``gpu_available`` is ``gpu_status``'s verdict and reason, the
    reason names a documented code's missing piece, and backend selection follows it: ``auto`` takes
    the GPU exactly when it is usable (else the CPU, saying why), ``gpu`` refuses with that reason."""
    from gpupipe.gpu import GpuStatus, gpu_available, gpu_status

    st = gpu_status(0)
    codes = set(re.findall(r"``([a-z-]+)``", GpuStatus.__doc__ or "")) - {"code", "checks"}
    assert st.code in codes and st.usable == (st.code == "ok") and st.reason, st
    assert gpu_available(0) == (st.usable, st.reason)
    chosen, why = select_backend("auto", Config())
    if st.usable:
        assert (chosen, why) == ("gpu", st.reason)
        assert select_backend("gpu", Config())[0] == "gpu"
    else:
        assert chosen == "cpu" and why == f"no usable GPU: {st.reason}"
        with pytest.raises(BackendUnavailable, match=re.escape(st.reason)):
            select_backend("gpu", Config())


def test_importing_gpupipe_does_not_import_cupy_or_dali():
    import subprocess
    import sys

    code = "import sys, gpupipe, gpupipe.gpu, gpupipe.base64_batch; print(any(m.startswith(('cupy', 'nvidia')) for m in sys.modules))"
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



def test_stand_in_passthrough_byte_identical_to_cpu(host_gpu_backend, png_bytes, jpeg_bytes, rgba_png_bytes):
    frames = [read_frame(d) for d in (png_bytes, jpeg_bytes, rgba_png_bytes, b"\x89PNG\r\n\x1a\n" + png_bytes[8:])]
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    assert host_gpu_backend.run(jobs) == CpuBackend(1).run(jobs)


def test_stand_in_transcode_close_to_cpu_and_same_errors(host_gpu_backend, png_bytes, jpeg_bytes):
    i = png_bytes.find(b"IDAT")
    bad = png_bytes[: i + 100] + bytes(b ^ 0x5A for b in png_bytes[i + 100 : i + 400]) + png_bytes[i + 400 :]
    frames = [read_frame(d) for d in (png_bytes, bad, jpeg_bytes, png_bytes, jpeg_bytes)]
    spec = OutputSpec("jpeg", (160, 160), quality=85)
    jobs = [plan_job(k, f, spec) for k, f in enumerate(frames)]
    gpu = host_gpu_backend.run(jobs)
    assert_transcodes_match(gpu, CpuBackend(1).run(jobs), shape=(90, 160, 3))
    assert isinstance(gpu[1], FrameDecodeError) and gpu[1].frame == frames[1].label


def test_stand_in_accepts_and_refuses_what_the_cpu_path_does(host_gpu_backend, png_bytes, jpeg_bytes):
    """A PNG missing only IEND decodes in Pillow but not in nvImageCodec: the CPU path's verdict wins."""
    no_iend = png_bytes[:-12]
    short_jpeg = jpeg_bytes[: len(jpeg_bytes) // 2]
    frames = [read_frame(d) for d in (no_iend, short_jpeg, jpeg_bytes)]
    jobs = [plan_job(k, f, OutputSpec("jpeg", (100, 100))) for k, f in enumerate(frames)]
    gpu = host_gpu_backend.run(jobs)
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


# --------------------------------------------------------------------------- passthrough routing


def test_passthrough_runs_on_the_cpu_path_by_default(png_bytes, jpeg_bytes):
    """``passthrough_device: cpu`` (the default) keeps passthrough off the device; transcodes still go there."""
    ops = FakeOps(capacity=10_000)
    be = _backend(ops, passthrough_device="cpu")
    frames = _labelled([png_bytes, jpeg_bytes, png_bytes])
    jobs = [plan_job(0, frames[0], OutputSpec("passthrough")), plan_job(1, frames[1], OutputSpec("passthrough")),
            plan_job(2, frames[2], OutputSpec("jpeg", (64, 64)))]
    assert Config().passthrough_device == "cpu"
    assert [be.route(j) for j in jobs] == ["cpu", "cpu", "transcode"]
    out = be.run(jobs)
    assert ops.calls == [["frame2"]]
    assert out == CpuBackend(1).run(jobs)
    assert be.counters()["cpu_jobs"] == 2


@pytest.mark.parametrize("value,want", [("gpu", "gpu"), ("CPU", "cpu")])
def test_passthrough_device_config_key(tmp_path, value, want):
    from gpupipe.config import load_config

    f = tmp_path / "c.yaml"
    f.write_text(f"defaults:\n  passthrough_device: {value}\n")
    assert load_config(f).passthrough_device == want


def test_passthrough_device_config_key_rejects_other_values(tmp_path):
    from gpupipe.config import load_config
    from gpupipe.errors import ConfigError

    f = tmp_path / "c.yaml"
    f.write_text("defaults:\n  passthrough_device: tpu\n")
    with pytest.raises(ConfigError, match="passthrough_device"):
        load_config(f)


def test_footprint_counts_device_and_pinned_staging():
    from gpupipe.footprint import cpu_footprint
    from gpupipe.frames import Header
    from gpupipe.plan import OutputSpec
    from gpupipe.uri import b64_len

    n = 1 << 20
    header = Header("png", 640, 360, 3, 1, n)
    passthrough, resize = OutputSpec("passthrough"), OutputSpec("jpeg", (320, 180))
    host = n + b64_len(n) + 32
    gpu = _backend(FakeOps(10_000), passthrough_device="gpu")
    cpu = _backend(FakeOps(10_000), passthrough_device="cpu")
    rounding = 2 * PinnedBuffers.GRANULE + 4096
    # host strings; device buffers and pinned copies, each with the allocators' rounding
    assert gpu.footprint(header, passthrough) == (host, 2 * (host + rounding))
    assert cpu.footprint(header, passthrough) == (cpu_footprint(header, passthrough), 0) == (host, 0)
    _, device = cpu.footprint(header, resize)  # transcodes stay on the device: the upload, decoded and resized RGB
    assert device >= n + rounding + 640 * 360 * 3 + 320 * 180 * 3


# --------------------------------------------------------------------------- a lost device


def _sticky(status=700):
    cupy = pytest.importorskip("cupy")
    return cupy.cuda.runtime.CUDARuntimeError(status)


@pytest.mark.parametrize(
    "error",
    [
        lambda: _sticky(700),  # cudaErrorIllegalAddress, as CuPy raises it
        lambda: _sticky(719),  # cudaErrorLaunchFailure
        lambda: dali_error("CUDA runtime API error cudaErrorIllegalAddress (700):\nan illegal memory access was encountered"),
        lambda: dali_error("CUDA driver API error CUDA_ERROR_LAUNCH_FAILED (719):\nunspecified launch failure"),
        lambda: RuntimeError("nvImageCodec: CUDA Runtime failure: '#700'"),
    ],
    ids=["cupy-700", "cupy-719", "dali-runtime", "dali-driver", "nvimgcodec"],
)
def test_sticky_error_switches_to_the_cpu_path_for_good(png_bytes, jpeg_bytes, caplog, error):
    from gpupipe.gpu.backend import GpuDeviceLostWarning

    class Dying(FakeOps):
        def _process(self, jobs):
            self.calls.append([j.frame.label for j in jobs])
            raise error()

        passthrough = transcode = _process

    ops = Dying(10_000)
    be = _backend(ops, batch=2)
    frames = _labelled([png_bytes, jpeg_bytes] * 3)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    tjobs = [plan_job(i, f, OutputSpec("jpeg", (64, 64))) for i, f in enumerate(frames)]
    with pytest.warns(GpuDeviceLostWarning) as rec:
        out = be.run(jobs + tjobs)
    assert len(rec) == 1 and len(ops.calls) == 1  # one warning; the device was not tried again
    assert out == CpuBackend(1).run(jobs + tjobs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning
        assert be.run(jobs[:2]) == CpuBackend(1).run(jobs[:2])
    assert len(ops.calls) == 1
    assert be.device_lost and be.counters()["device_lost"] == 1 and be.counters()["cpu_fallbacks"] == 0
    info = be.info()
    assert info["device_lost"] == be.device_lost and "device lost" in info["mode"]
    assert "sticky CUDA error" in str(rec[0].message)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the warning is the one report
    be.close()


def test_sticky_error_keeps_finished_batches(png_bytes, jpeg_bytes):
    """Batches finished before the fault keep their device results; the rest go to the CPU path."""

    class DiesSecond(FakeOps):
        def _process(self, jobs):
            self.calls.append([j.frame.label for j in jobs])
            if len(self.calls) == 2:
                raise _sticky(700)
            return [f"device:{j.frame.label}" for j in jobs]

        passthrough = transcode = _process

    ops = DiesSecond(10_000)
    be = _backend(ops, batch=2)
    frames = _labelled([png_bytes, jpeg_bytes] * 3)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = be.run(jobs)
    assert out[:2] == ["device:frame0", "device:frame1"]
    assert out[2:] == CpuBackend(1).run(jobs[2:])


def test_sticky_and_oom_are_told_apart():
    from gpupipe.gpu.faults import is_oom_error, is_sticky_error

    assert is_sticky_error(_sticky(700)) and not is_oom_error(_sticky(700))
    assert not is_sticky_error(_sticky(2)) and is_oom_error(_sticky(2))  # cudaErrorMemoryAllocation
    assert is_oom_error(cupy_oom()) and not is_sticky_error(cupy_oom())
    assert not is_sticky_error(_sticky(1))  # cudaErrorInvalidValue: a bug, not a dead context
    assert not is_oom_error(dali_error("Failed to decode sample #3 : ")) and not is_sticky_error(dali_error("Failed to decode sample #3 : "))
    wrapped = RuntimeError("batch failed")
    wrapped.__cause__ = _sticky(719)
    assert is_sticky_error(wrapped)


# --------------------------------------------------------------------------- overlap


class TwoPhaseOps(FakeOps):
    """Two-phase batches; ``finish`` of batch k waits (bounded) until batch k+1's ``process`` has
    started, so the run completes promptly only if the two overlap."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.events: list[tuple[str, int, int]] = []
        self.started: dict[int, threading.Event] = {}
        self.n = 0
        self.lock = threading.Lock()
        self.waited_ok: list[bool] = []

    def _begin(self, jobs, slot):
        with self.lock:
            k = self.n
            self.n += 1
            self.events.append(("begin", k, slot))
            self.started.setdefault(k, threading.Event()).set()
        return (k, slot, [run_job(j) for j in jobs])

    def _end(self, handle):
        k, slot, out = handle
        nxt = self.started.setdefault(k + 1, threading.Event())
        self.waited_ok.append(nxt.wait(timeout=5))
        with self.lock:
            self.events.append(("end", k, slot))
        return out

    passthrough_begin = transcode_begin = _begin
    passthrough_end = transcode_end = _end


def test_overlapped_batches_alternate_slots_and_never_reuse_one_early(png_bytes, jpeg_bytes):
    ops = TwoPhaseOps(10_000)
    be = _backend(ops, batch=2)
    frames = _labelled([png_bytes, jpeg_bytes] * 5)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(frames)]
    ops.started[5] = threading.Event()
    ops.started[5].set()  # there is no batch 5: the last finish need not wait
    out = be.run(jobs)
    assert out == CpuBackend(1).run(jobs)
    ev = ops.events
    begins = [(k, s) for e, k, s in ev if e == "begin"]
    assert [s for _, s in begins] == [0, 1, 0, 1, 0]
    assert len(ops.waited_ok) == 5 and all(ops.waited_ok)  # every finish saw the next batch start: overlap
    for k in range(2, 5):  # batch k reuses batch k-2's slot only after batch k-2 finished
        assert ev.index(("end", k - 2, k % 2)) < ev.index(("begin", k, k % 2))
    be.close()


def test_no_overlap_runs_each_batch_to_the_end_first(png_bytes):
    ops = TwoPhaseOps(10_000)
    be = _backend(ops, batch=1, overlap=False)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(_labelled([png_bytes] * 3))]
    ops.started = {k: threading.Event() for k in range(4)}
    for e in ops.started.values():
        e.set()  # finish need not wait here
    assert be.run(jobs) == CpuBackend(1).run(jobs)
    assert [e for e, _, _ in ops.events] == ["begin", "end"] * 3


def test_overlap_failure_in_finish_is_retried_smaller(png_bytes, jpeg_bytes):
    """An out-of-memory error raised by the host phase (e.g. nvImageCodec) halves that batch too."""

    class FinishOom(TwoPhaseOps):
        def _end(self, handle):
            k, slot, out = handle
            if len(out) > 1:
                raise cupy_oom()
            return out

        passthrough_end = transcode_end = _end

    ops = FinishOom(10_000)
    be = _backend(ops, batch=4)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(_labelled([png_bytes, jpeg_bytes] * 2))]
    assert be.run(jobs) == CpuBackend(1).run(jobs)
    assert be.staging_stats()["oom_retries"] >= 1


def test_sticky_error_in_the_overlapped_host_phase(png_bytes, jpeg_bytes):
    """nvImageCodec reporting a dead context from the host phase, with the next batch in flight:
    the device is given up once, every frame still gets its CPU-path result."""
    from gpupipe.gpu.backend import GpuDeviceLostWarning

    class FinishDies(TwoPhaseOps):
        def _end(self, handle):
            k, slot, out = handle
            if k == 1:
                raise RuntimeError("nvImageCodec: CUDA Runtime failure: '#719'")
            return out

        passthrough_end = transcode_end = _end

    ops = FinishDies(10_000)
    be = _backend(ops, batch=2)
    jobs = [plan_job(i, f, OutputSpec("passthrough")) for i, f in enumerate(_labelled([png_bytes, jpeg_bytes] * 4))]
    with pytest.warns(GpuDeviceLostWarning):
        assert be.run(jobs) == CpuBackend(1).run(jobs)
    n = ops.n
    assert be.run(jobs) == CpuBackend(1).run(jobs) and ops.n == n
    st = be.staging_stats()
    assert st["inflight_bytes"] == 0  # every reservation was given back
    be.close()


def test_overlap_benchmark_smoke_on_cpu_stand_ins(png_bytes, jpeg_bytes):
    """``overlap_benchmark`` with DALI's and nvImageCodec's CPU backends (``device_id=None``):
    its code path only; the figures say nothing about a GPU."""
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    from gpupipe.gpu.bench import overlap_benchmark

    r = overlap_benchmark([png_bytes, jpeg_bytes], batches=3, transcode=True, size=(96, 96), device_id=None, repeats=1)
    assert r["mode"] == "transcode" and r["verified"] and r["serial_s"] > 0 and r["overlapped_s"] > 0
    assert r["phases_s"]["process"] > 0 and r["phases_s"]["finish"] > 0
