"""``gpupipe bench``: throughput and per-stage timings of the CPU (and GPU) path.

The matrix: 1080p and 4K; PNG and JPEG sources; three workloads (``passthrough``: the
source as a URI; ``transcode``: decode and re-encode as JPEG at the same size; ``resize``:
decode, scale to fit 1280×720, encode JPEG). Each workload runs on

- ``cpu``: the CPU path at its best (all cores, pybase64, Pillow or Pillow-SIMD, single-pass URIs),
- ``stdlib``: the naive baseline a renderer starts from (one thread, Pillow, ``base64.b64encode``,
  ``prefix + b64.decode()``),
- ``gpu``: the GPU path, where a usable CUDA device is present,

all in the same run, so the ratios compare like with like. Timings are wall-clock medians
of repeated runs after a warm-up run. Also measured: per-stage medians (read, decode,
resize, encode, URI), URI assembly throughput beside a plain memory copy of the same size,
a 4K memory soak (peak RSS against the budget) and cache hit ratios against Belady's optimum.
Results go to ``<out>/bench.json``, ``<out>/BENCH.md`` and PNG charts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .config import Config, MiB, load_config
from .cpu_backend import StageTimes, pillow_flavour, transcode
from .encoder import FrameEncoder
from .plan import OutputSpec, plan_job
from .sources import read_frame
from .uri import URI_METHOD, base64_impl, build_uri

__all__ = ["run_bench", "WORKLOADS", "stdlib_uri", "median_time", "uri_assembly_bench"]

WORKLOADS: dict[str, OutputSpec] = {
    "passthrough": OutputSpec("passthrough"),
    "transcode": OutputSpec("jpeg", None, 90),  # PNG for sources with alpha (see workload_spec)
    "resize": OutputSpec("auto", (1280, 720), 90),
}


def workload_spec(workload: str, kind: str) -> OutputSpec:
    """The output settings of ``workload`` for sources of ``kind``: frames with alpha re-encode as PNG."""
    spec = WORKLOADS[workload]
    if kind == "png-alpha" and spec.format == "jpeg":
        return replace(spec, format="png")
    return spec


RESOLUTIONS = {"1080p": (1920, 1080), "4k": (3840, 2160)}
FFMPEG_GRAIN = 12  # ffmpeg noise strength: 4K PNG ~14 MB, JPEG ~2.1 MB, like camera footage


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs; and all times."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def stdlib_uri(path: Path, spec: OutputSpec) -> str:
    """The naive baseline: Pillow + ``base64.b64encode`` + ``prefix + b64.decode()``, one thread."""
    data = Path(path).read_bytes()
    if spec.format == "passthrough":
        mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        return f"data:{mime};base64," + base64.b64encode(data).decode()
    img = Image.open(io.BytesIO(data))
    if spec.size is not None:
        img.thumbnail(spec.size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if img.mode == "RGBA":  # keep transparency, as gpupipe does
        img.save(buf, "PNG", compress_level=spec.png_compress_level)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    img.convert("RGB").save(buf, "JPEG", quality=spec.quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def stage_times(path: Path, spec: OutputSpec, repeats: int) -> dict[str, float]:
    """Median seconds per stage for one frame on one CPU thread.

    Stages: ``read`` (file + header probe), ``decode``, ``resize``, ``encode``, ``base64``
    (pybase64 alone, for reference) and ``uri`` (the fused single-pass base64 + assembly that
    the CPU path really runs).
    """
    import pybase64

    samples: dict[str, list[float]] = {}
    clock = time.perf_counter
    for i in range(repeats + 1):
        t = clock()
        frame = read_frame(path)
        read = clock() - t
        job = plan_job(0, frame, spec)
        times = StageTimes(read=read)
        if job.passthrough:
            mime, data = frame.mime, memoryview(frame.data)
        else:
            mime, data = transcode(job, times)
        t = clock()
        pybase64.b64encode(data)
        times["base64"] = clock() - t
        t = clock()
        build_uri(mime, data)
        times["uri"] = clock() - t
        if i == 0:
            continue  # warm-up
        for k, v in times.items():
            samples.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in samples.items()}


def uri_assembly_bench(data: bytes, repeats: int) -> dict[str, float]:
    """GB/s (URI bytes written per second) of URI builders beside a plain copy of the same size."""
    import pybase64

    out_len = len(build_uri("image/png", data))
    src = np.frombuffer(os.urandom(out_len), np.uint8)
    dst = np.empty_like(src)
    builders: dict[str, Callable[[], Any]] = {
        "gpupipe build_uri": lambda: build_uri("image/png", data),
        "pybase64 + concat": lambda: "data:image/png;base64," + pybase64.b64encode(data).decode(),
        "stdlib base64 + concat": lambda: "data:image/png;base64," + base64.b64encode(data).decode(),
        "memcpy into reused buffer": lambda: np.copyto(dst, src),
        "copy into fresh bytes": lambda: src.tobytes(),
    }
    res: dict[str, float] = {"uri_bytes": out_len}
    for name, fn in builders.items():
        med, _ = median_time(fn, repeats, warmup=2)
        res[name] = out_len / med / 1e9
    return res


def _frames(root: Path, use_ffmpeg: bool, count: int, resolutions: Sequence[str]) -> tuple[dict[tuple[str, str], list[Path]], str]:
    """Frames per (resolution, kind): ffmpeg's (with grain) where ffmpeg is and wanted, else synthetic."""
    from .ffmpeg_frames import frames_or_synthetic

    clips: dict[tuple[str, str], list[Path]] = {}
    origin = ""
    for res in resolutions:
        w, h = RESOLUTIONS[res]
        for kind in ("png", "jpeg", "png-alpha"):
            clips[(res, kind)], origin = frames_or_synthetic(
                root / "frames", w, h, count, kind, grain=FFMPEG_GRAIN, prefer_ffmpeg=use_ffmpeg
            )
    if origin.startswith("synthetic"):
        return clips, "synthetic frames (gpupipe.samples)"
    return clips, f"ffmpeg testsrc2 frames with grain {FFMPEG_GRAIN} ({origin})"


def _machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pillow": pillow_flavour(),
        "base64": base64_impl(),
        "uri_builder": URI_METHOD,
    }


def run_bench(
    backend: str = "all",
    quick: bool = False,
    out: Path = Path("results"),
    repeats: int | None = None,
    use_ffmpeg: bool = True,
    soak: bool = True,
    console: Any = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Run the benchmark matrix and write JSON, markdown and charts under ``out``; returns the results."""
    from .gpu import gpu_available

    say = console.print if console is not None else print
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config or load_config()
    repeats = repeats or (1 if quick else 3)
    count = 2 if quick else 6
    work = Path(tempfile.gettempdir()) / "gpupipe-bench"
    t_start = time.perf_counter()
    clips, frames_note = _frames(work, use_ffmpeg, count, list(RESOLUTIONS))
    gpu_ok, gpu_why = gpu_available(cfg.gpu or 0)
    backends = ["cpu", "stdlib"]
    if backend in ("gpu", "all") and gpu_ok:
        backends.append("gpu")
    if backend == "cpu":
        backends = ["cpu", "stdlib"]
    if backend == "gpu" and not gpu_ok:
        say(f"[yellow]GPU path not run: {gpu_why}[/yellow]" if console else f"GPU path not run: {gpu_why}")
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": f"gpupipe bench --backend {backend}{' --quick' if quick else ''}",
        "machine": _machine(),
        "frames": frames_note,
        "frames_per_workload": count,
        "repeats": repeats,
        "gpu": {"usable": gpu_ok, "reason": gpu_why},
        "workloads": [],
        "stages": [],
    }
    cpu_cfg = replace(cfg, workers=os.cpu_count(), batch_size=count)
    encoders = {"cpu": FrameEncoder(cpu_cfg, backend="cpu")}
    if "gpu" in backends:
        encoders["gpu"] = FrameEncoder(replace(cfg, batch_size=count), backend="gpu")
    try:
        for (res, kind), paths in clips.items():
            src_mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
            for wl in WORKLOADS:
                spec = workload_spec(wl, kind)
                row: dict[str, Any] = {"resolution": res, "source": kind, "workload": wl, "frames": len(paths), "source_mb": round(src_mb, 2)}
                for b in backends:
                    if b == "stdlib":
                        fn: Callable[[], Any] = lambda: [stdlib_uri(p, spec) for p in paths]
                    else:
                        enc = encoders[b]
                        fn = lambda enc=enc: _check(enc.encode_batch(paths, spec.format, spec.size, spec.quality))
                    med, times = median_time(fn, repeats)
                    row[f"{b}_fps"] = len(paths) / med
                    row[f"{b}_times"] = times
                row["cpu_vs_stdlib"] = row["cpu_fps"] / row["stdlib_fps"]
                if "gpu" in backends:
                    row["gpu_vs_cpu"] = row["gpu_fps"] / row["cpu_fps"]
                results["workloads"].append(row)
                st = stage_times(paths[0], spec, max(1, repeats))
                results["stages"].append({"resolution": res, "source": kind, "workload": wl, "backend": "cpu", **st})
                say(f"{res:5} {kind:4} {wl:11} " + "  ".join(f"{b} {row[f'{b}_fps']:7.1f} f/s" for b in backends))
        big = clips[("4k", "png")][0].read_bytes()
        results["uri_assembly"] = uri_assembly_bench(big, 3 if quick else 9)
        if "gpu" in backends:
            results["gpu_detail"] = _gpu_detail(clips, repeats, quick)
        from .traces import hit_ratio_table

        results["hit_ratio"] = hit_ratio_table(quick=quick)
        if soak:
            results["soak"] = _soak(encoders.get("gpu") or encoders["cpu"], clips, quick, work)
    finally:
        for e in encoders.values():
            e.close()
    results["seconds"] = time.perf_counter() - t_start
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    from .report import write_report

    written = write_report(results, out)
    say(f"wrote {out / 'bench.json'}" + "".join(f", {p}" for p in written) + f" in {results['seconds']:.0f} s")
    return results


def _check(results: list) -> list:
    from .errors import FrameError

    bad = [r for r in results if isinstance(r, FrameError)]
    if bad:
        raise RuntimeError(f"benchmark frame failed: {bad[0]}")
    return results


def _gpu_detail(clips: dict[tuple[str, str], list[Path]], repeats: int, quick: bool) -> dict[str, Any]:
    from .gpu.bench import base64_kernel_bandwidth, gpu_stage_benchmark

    detail: dict[str, Any] = {"base64_kernel": base64_kernel_bandwidth(64 * MiB, 5 if quick else 20), "stages": []}
    for (res, kind), paths in clips.items():
        data = [p.read_bytes() for p in paths]
        for wl in WORKLOADS:
            spec = workload_spec(wl, kind)
            if wl == "passthrough":
                continue
            st = gpu_stage_benchmark(data, spec.size, spec.quality, max(2, repeats))
            detail["stages"].append({"resolution": res, "source": kind, "workload": wl, **st})
    return detail


def _soak(encoder: FrameEncoder, clips: dict[tuple[str, str], list[Path]], quick: bool, work: Path) -> dict[str, Any]:
    from .soak import alias_frames, run_soak

    res = "1080p" if quick else "4k"
    budget = (128 if quick else 1500) * MiB
    requests = 600 if quick else 1000
    originals = clips[(res, "png")]
    unique = max(2 * budget // (originals[0].stat().st_size * 4 // 3), 8)
    frames = alias_frames(originals, int(unique), work / f"soak-{res}")
    r = run_soak(encoder, frames, budget_bytes=budget, requests=requests, threads=4, sample_hz=50.0)
    d = r.to_dict()
    d["resolution"] = res
    d["backend"] = encoder.backend
    return d
