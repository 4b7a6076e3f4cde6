"""GPU stage timings for ``gpupipe bench`` (needs a CUDA device; called by :mod:`gpupipe.tools.bench`).

:func:`gpu_stage_benchmark` times each stage of the GPU path on a batch of encoded frames:
``upload`` (pinned host → device), ``decode`` (DALI ``mixed``), ``resize`` (DALI resize, as the
difference between the decode+resize and the decode-only pipelines), ``encode`` (nvImageCodec
JPEG from the device images), ``base64`` (the batched kernel, over the source bytes as in
passthrough), ``download`` (device → pinned host, the URIs), ``host_string`` (the ``str`` s from
their spans) and ``jpeg_string`` (the transcode's URIs from nvImageCodec's bitstreams, one thread),
each with its host CPU seconds, plus the end-to-end transcode and passthrough throughput of :class:`GpuBackend`
(passthrough through the kernel: ``passthrough_device: gpu`` where the config has that setting).
Stages on CuPy's stream are timed with CUDA events; DALI and nvImageCodec calls are
host-synchronous and are timed with the host clock. Every figure is the median of ``repeats``
runs after one warm-up run.

:func:`overlap_benchmark` measures how much one batch's device work overlaps the previous
batch's host work: the wall time of N batches with overlap off and on, beside the sum of the
stage times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..base64_batch import batch_layout, pack_batch, uris_from_buffer
from ..config import Config, StagingConfig
from ..frames import read_frame
from ..plan import Job, OutputSpec, plan_job
from ..uri import build_uri

__all__ = ["base64_kernel_bandwidth", "gpu_stage_benchmark", "overlap_benchmark"]


def _median(fn: Callable[[], Any], repeats: int, cpu: dict[str, list[float]] | None = None) -> float:
    """Median wall seconds of ``fn`` after a warm-up; with ``cpu``, also appends the medians of the
    calling thread's CPU seconds (``"thread"``) and the process's, all threads (``"process"``)."""
    fn()
    ts, th, pr = [], [], []
    for _ in range(max(1, repeats)):
        t, c, p = time.perf_counter(), time.thread_time(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t)
        th.append(time.thread_time() - c)
        pr.append(time.process_time() - p)
    if cpu is not None:
        cpu.setdefault("thread", []).append(float(np.median(th)))
        cpu.setdefault("process", []).append(float(np.median(pr)))
    return float(np.median(ts))


def _host_stage(stages_cpu: dict[str, dict[str, float]], name: str, fn: Callable[[], Any], repeats: int) -> float:
    """Time stage ``name`` (median wall seconds) and record its host CPU seconds in ``stages_cpu``."""
    cpu: dict[str, list[float]] = {}
    wall = _median(fn, repeats, cpu)
    stages_cpu[name] = {"thread_cpu_s": cpu["thread"][0], "process_cpu_s": cpu["process"][0]}
    return wall


def _event_median(fn: Callable[[], Any], stream: Any, repeats: int) -> float:
    import cupy as cp

    with stream:
        fn()
        stream.synchronize()
        ts = []
        for _ in range(max(1, repeats)):
            s, e = cp.cuda.Event(), cp.cuda.Event()
            s.record(stream)
            fn()
            e.record(stream)
            e.synchronize()
            ts.append(cp.cuda.get_elapsed_time(s, e) / 1e3)
    return float(np.median(ts))


def gpu_stage_benchmark(  # noqa: PLR0915 - one timing per stage
    frames: list[bytes],
    size: tuple[int, int] | None,
    quality: int,
    repeats: int,
    profile: str | Path | None = None,
) -> dict[str, Any]:
    """Per-stage median seconds for one batch of ``frames`` on the GPU, and frames/s end to end.

    ``size``: fit-inside output size for the transcode (``None``: keep the size). Returns
    ``{"frames": n, "stages_s": {...}, "transcode_fps": ..., "passthrough_fps": ...,
    "stage_fps": {...}, "stages_cpu": {...}, "pipeline_stages": {...}}``; stage times are for the
    whole batch. Host CPU: ``stages_cpu[stage]`` holds the calling thread's CPU seconds
    (``thread_cpu_s``, :func:`time.thread_time`) and the whole process's (``process_cpu_s``: DALI's
    worker threads included) while the stage ran alone. ``pipeline_stages``: the end-to-end
    transcode through :class:`GpuBackend`, per batch, as its :class:`StageClock` saw it
    (``process`` = DALI decode, ``finish`` = nvImageCodec encode, ``host`` = the strings phase,
    ``host_string`` = the string threads' share; wall and thread-CPU seconds), and
    ``process_cpu_s_per_frame``. ``profile``: also write a cProfile dump of those transcode runs
    there (every stage call on every thread, merged; ``pstats`` format).
    """
    import cupy as cp

    from .backend import GpuBackend
    from .base64_kernel import get_kernel
    from .dali_decode import build_pipeline
    from .device import DeviceLayer
    from .jpeg_encode import JpegEncoder
    from .staging import PinnedBuffers

    n = len(frames)
    if n == 0:
        raise ValueError("gpu_stage_benchmark needs at least one frame")
    # The end-to-end passthrough figure is the kernel's path, as the stages are; PNG sources take
    # DALI's route, as in the bench's GPU rows (whatever the config's png_device default).
    cfg = replace(Config(), batch_size=n, passthrough_device="gpu", png_device="gpu")
    spec = OutputSpec("jpeg", size, quality)
    parsed = [read_frame(f) for f in frames]
    jobs: list[Job] = [plan_job(i, fr, spec) for i, fr in enumerate(parsed)]
    stages: dict[str, float] = {}
    stream = cp.cuda.Stream(non_blocking=True)
    pinned = PinnedBuffers(1 << 40)

    # upload / base64 / download / host string, over the source bytes (the passthrough data path)
    layout = batch_layout([fr.mime for fr in parsed], [len(f) for f in frames])
    host_in = pack_batch(frames, layout, pinned.get("in", layout.in_size))
    host_out = pinned.get("out", layout.out_size)
    d_in = cp.empty(layout.in_size, cp.uint8)
    d_out = cp.empty(layout.out_size, cp.uint8)
    d_table = cp.asarray(layout.kernel_table())
    rt = cp.cuda.runtime
    stages["upload"] = _event_median(
        lambda: rt.memcpyAsync(d_in.data.ptr, host_in.ctypes.data, layout.in_size, rt.memcpyHostToDevice, stream.ptr),
        stream,
        repeats,
    )
    kern = get_kernel()
    stages["base64"] = _event_median(
        lambda: kern.encode(d_in, layout, d_table=d_table, d_out=d_out, stream=stream), stream, repeats
    )
    stages["download"] = _event_median(
        lambda: rt.memcpyAsync(host_out.ctypes.data, d_out.data.ptr, layout.out_size, rt.memcpyDeviceToHost, stream.ptr),
        stream,
        repeats,
    )
    stages_cpu: dict[str, dict[str, float]] = {}
    stages["host_string"] = _host_stage(
        stages_cpu, "host_string", lambda: uris_from_buffer(host_out, layout, check_ascii=False), repeats
    )

    # decode / resize / encode with DALI and nvImageCodec
    plain = build_pipeline(n, 8, 0, resize=False)
    sized = build_pipeline(n, 8, 0, resize=True)
    arrays = [np.frombuffer(f, np.uint8) for f in frames]

    def run_plain() -> Any:
        plain.feed_input("enc", arrays)
        return plain.run()[0]

    def run_sized() -> Any:
        sized.feed_input("enc", arrays)
        sized.feed_input("rx", [np.float32(j.out_size[0]) for j in jobs])
        sized.feed_input("ry", [np.float32(j.out_size[1]) for j in jobs])
        return sized.run()[0]

    stages["decode"] = _host_stage(stages_cpu, "decode", run_plain, repeats)
    stages["resize"] = max(0.0, _host_stage(stages_cpu, "decode+resize", run_sized, repeats) - stages["decode"])
    enc = JpegEncoder(0)
    out = run_sized() if size is not None else run_plain()
    images = [out[i] for i in range(n)]
    stages["encode"] = _host_stage(stages_cpu, "encode", lambda: enc.encode(images, quality), repeats)
    streams = enc.encode(images, quality)
    views = [memoryview(cs) for cs in streams]
    stages["jpeg_string"] = _host_stage(stages_cpu, "jpeg_string", lambda: [build_uri("image/jpeg", v) for v in views], repeats)
    streams = views = None  # type: ignore[assignment]
    images = out = plain = sized = None  # type: ignore[assignment]  # free the pipelines and their device buffers before the end-to-end runs

    backend = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=0))
    try:
        backend.run(jobs)  # warm-up
        backend.clock.clear()
        backend.clock.enable_profiling(profile is not None)
        profiled = 0
        cpu: dict[str, list[float]] = {}
        t_trans = _median(lambda: backend.run(jobs), repeats, cpu)
        runs = max(1, repeats) + 1
        pipeline = {
            k: {"calls": v["calls"] / runs, "wall_s": v["wall_s"] / runs, "cpu_s": v["cpu_s"] / runs}
            for k, v in backend.clock.totals().items()
        }
        if profile is not None:
            profiled = backend.clock.dump_profile(profile)
            backend.clock.enable_profiling(False)
        pjobs = [plan_job(i, fr, OutputSpec("passthrough")) for i, fr in enumerate(parsed)]
        t_pass = _median(lambda: backend.run(pjobs), repeats)
        info = backend.info()
    finally:
        backend.close()
    return {
        "frames": n,
        "size": list(size) if size else None,
        "quality": quality,
        "stages_s": stages,
        "stage_fps": {k: (n / v if v > 0 else None) for k, v in stages.items()},
        "transcode_fps": n / t_trans,
        "stages_cpu": stages_cpu,
        "pipeline_stages": pipeline,
        "process_cpu_s_per_frame": cpu["process"][0] / n,
        "profile": str(profile) if profile is not None and profiled else None,
        "passthrough_fps": n / t_pass,
        "device": info.get("device"),
    }


def base64_kernel_bandwidth(nbytes: int = 256 << 20, repeats: int = 20, frames: int = 16) -> dict[str, float]:
    """The base64 kernel's throughput beside a device-to-device copy of the same bytes, with CUDA events.

    ``nbytes`` of random input split into ``frames`` frames. Bandwidth counts bytes read plus
    bytes written for both (kernel: ``n + 4n/3`` plus prefixes; copy: ``2n``). Medians of
    ``repeats`` timed runs after a warm-up. Returns GB/s figures and their ratio (target: ≥ 0.7).
    """
    import cupy as cp

    from .base64_kernel import get_kernel

    per = max(1, int(nbytes) // frames)
    layout = batch_layout(["image/png"] * frames, [per] * frames)
    rng = np.random.default_rng(0)
    d_in = cp.asarray(pack_batch([rng.integers(0, 256, per, dtype=np.uint8).tobytes() for _ in range(frames)], layout))
    d_out = cp.empty(layout.out_size, cp.uint8)
    d_table = cp.asarray(layout.kernel_table())
    kern = get_kernel()
    src = cp.asarray(np.random.default_rng(1).integers(0, 256, per * frames, dtype=np.uint8))
    dst = cp.empty_like(src)
    stream = cp.cuda.Stream(non_blocking=True)

    def copy() -> None:
        dst[...] = src

    d_out.fill(0xEE)  # poisoned: the check below sees any byte the kernel failed to write
    t_kernel = _event_median(lambda: kern.encode(d_in, layout, d_table=d_table, d_out=d_out, stream=stream), stream, repeats)
    t_copy = _event_median(copy, stream, repeats)
    _check_against_pybase64(cp.asnumpy(d_in), cp.asnumpy(d_out), layout)
    kernel_bytes = int(layout.lengths.sum()) + int(layout.out_lengths.sum())
    k_gbps = kernel_bytes / t_kernel / 1e9
    c_gbps = 2 * src.nbytes / t_copy / 1e9
    return {
        "nbytes": float(per * frames),
        "frames": float(frames),
        "kernel_s": t_kernel,
        "copy_s": t_copy,
        "kernel_gbps": k_gbps,
        "copy_gbps": c_gbps,
        "ratio": k_gbps / c_gbps,
        "kernel_input_gbps": int(layout.lengths.sum()) / t_kernel / 1e9,
        "verified": 1.0,
    }


def _check_against_pybase64(host_in: np.ndarray, host_out: np.ndarray, layout: Any) -> None:
    """Raise unless every URI span of the timed output is the prefix plus pybase64's encoding of its frame."""
    import pybase64

    for i in range(layout.n):
        o, n = int(layout.in_offsets[i]), int(layout.lengths[i])
        s, m = layout.span(i)
        want = layout.prefixes[i] + pybase64.b64encode(host_in[o : o + n].tobytes())
        if host_out[s : s + m].tobytes() != want:
            raise AssertionError(f"base64 kernel output differs from pybase64 for frame {i} of the bandwidth run")


def overlap_benchmark(
    frames: list[bytes],
    batches: int = 8,
    *,
    transcode: bool = False,
    size: tuple[int, int] | None = None,
    quality: int = 90,
    device_id: int | None = 0,
    repeats: int = 3,
) -> dict[str, Any]:
    """How much of each batch's device work hides behind the previous batch's host work.

    Runs ``batches`` batches of ``frames`` through :class:`~gpupipe.gpu.backend.GpuBackend`
    (passthrough through the base64 kernel, or with ``transcode`` DALI decode (+ resize to
    ``size``) and nvImageCodec JPEG at ``quality``), once with overlap off and once on, on the
    same warmed-up backend. Returns the wall times (``serial_s``, ``overlapped_s``: medians of
    ``repeats``), the per-phase sums of the serial run (``phases_s``: ``process`` = pack, upload,
    kernel, download, or DALI decode; ``finish`` = host strings, or JPEG encode and base64) and
    their total ``stage_sum_s``, ``speedup`` (serial / overlapped) and ``overlap_fraction``
    (``1 - overlapped / stage_sum``: 0 when nothing overlaps, at most 0.5 when the two phases
    take equally long). ``verified``: both runs gave the same URIs. ``device_id=None`` runs the
    CPU stand-ins (a smoke test: its figures say nothing about a GPU).
    """
    from .backend import GpuBackend
    from .device import DeviceLayer

    n = len(frames)
    if n == 0 or batches < 1:
        raise ValueError("overlap_benchmark needs frames and at least one batch")
    parsed = [read_frame(f) for f in frames]
    spec = OutputSpec("jpeg", size, quality) if transcode else OutputSpec("passthrough")
    jobs = [plan_job(i, parsed[i % n], spec) for i in range(n * batches)]
    per_batch = sum(DeviceLayer.transcode_cost(j) if transcode else DeviceLayer.passthrough_cost(j) for j in jobs[:n])
    staging = StagingConfig(max_bytes=4 * per_batch + (64 << 20), pinned_bytes=4 * per_batch + (16 << 20))
    cfg = replace(Config(), batch_size=n, passthrough_device="gpu", staging=staging, gpu=device_id)
    backend = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=device_id))
    runner = backend._runner
    try:
        backend.run(jobs)  # warm-up: pipelines, kernel, pinned buffers
        walls: dict[bool, list[float]] = {False: [], True: []}
        outs: dict[bool, list[Any]] = {}
        serial_phases: list[dict[str, float]] = []
        for _ in range(max(1, repeats)):
            for overlap in (False, True):
                backend.overlap = overlap
                runner.clock.clear()
                t = time.perf_counter()
                outs[overlap] = backend.run(jobs)
                walls[overlap].append(time.perf_counter() - t)
                if not overlap:
                    tot = runner.clock.totals()
                    serial_phases.append({k: tot.get(k, {}).get("wall_s", 0.0) for k in ("process", "finish", "host")})
        info = backend.info()
    finally:
        backend.close()
    serial, overlapped = float(np.median(walls[False])), float(np.median(walls[True]))
    phases = {k: float(np.median([p[k] for p in serial_phases])) for k in ("process", "finish", "host")}
    stage_sum = sum(phases.values())
    return {
        "batches": batches,
        "frames_per_batch": n,
        "mode": "transcode" if transcode else "passthrough",
        "serial_s": serial,
        "overlapped_s": overlapped,
        "phases_s": phases,
        "stage_sum_s": stage_sum,
        "speedup": serial / overlapped if overlapped > 0 else None,
        "overlap_fraction": 1.0 - overlapped / stage_sum if stage_sum > 0 else None,
        "verified": outs[False] == outs[True],
        "device": info.get("device"),
    }
