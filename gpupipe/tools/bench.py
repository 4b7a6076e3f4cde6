"""``gpupipe bench``: throughput, host CPU cost and per-stage timings of the CPU (and GPU) path.

The matrix: 1080p and 4K; PNG and JPEG sources; workloads ``passthrough`` (the source as a
URI), ``transcode`` (decode and re-encode as JPEG at the same size), ``resize`` (decode, scale
to fit 1280×720, encode JPEG) and, for 4K PNG and JPEG, ``resize-1080p`` (fit 1920×1080; not in
the quick matrix).
Each cell runs on

- ``cpu``: the CPU path at its best (every usable core, pybase64, Pillow or Pillow-SIMD, single-pass URIs),
- ``stdlib``: the naive baseline a renderer starts from (one thread, Pillow, ``base64.b64encode``,
  ``prefix + b64.decode()``),
- ``gpu``: the GPU path, where a usable CUDA device is present; passthrough cells run it with
  both ``passthrough_device`` values where the config has that setting,

all in the same run, so the ratios compare like with like. For every backend and cell: frames/s
(frames over the median wall-clock time of repeated runs after a warm-up run) and CPU-seconds
per frame (the process's user + sys CPU time, all threads, over the same timed runs; median
over the runs, divided by the frames). GPU rows add both ratios against the CPU path.

Also measured (not with ``goals``): per-stage medians (read, decode, resize, encode, URI), URI
assembly throughput beside a plain memory copy of the same size, a 4K memory soak (peak RSS
against the budget), cache hit ratios against Belady's optimum, the schedule-aware cache's hit
ratios (:func:`gpupipe.tools.traces.schedule_table`) and the ``get()`` latency of a steady
scheduled render with and without read-ahead (:func:`schedule_latency`; also
``python -m gpupipe.tools.bench schedule-latency``). ``goals=True`` measures only
the rows the GPU goals need (:data:`gpupipe.tools.goals.GOAL_MATRIX`) plus the GPU kernel and
stage tables. Results go to ``<out>/bench.json`` (rewritten after every row, so a run stopped
early keeps what it measured), ``<out>/BENCH.md`` and PNG charts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from PIL import Image

from ..cache import FrameCache
from ..config import Config, MiB, load_config
from ..cpu import StageTimes, pillow_flavour, transcode
from ..encoder import FrameEncoder
from ..frames import read_frame
from ..plan import OutputSpec, plan_job
from ..uri import URI_METHOD, base64_impl, build_uri
from ..vocabulary import RESOLUTIONS, parse_wxh

__all__ = [
    "KINDS",
    "WORKLOADS",
    "RunTimes",
    "full_matrix",
    "main",
    "measure",
    "median_time",
    "percentile_ms",
    "run_bench",
    "schedule_latency",
    "stdlib_uri",
    "timed_runs",
    "uri_assembly_bench",
    "usable_cores",
]

WORKLOADS: dict[str, OutputSpec] = {
    "passthrough": OutputSpec("passthrough"),
    "transcode": OutputSpec("jpeg", None, 90),  # PNG for sources with alpha (see workload_spec)
    "resize": OutputSpec("auto", (1280, 720), 90),
    "resize-1080p": OutputSpec("jpeg", (1920, 1080), 90),
}
KINDS = ("png", "jpeg", "png-alpha")


def workload_spec(workload: str, kind: str) -> OutputSpec:
    """The output settings of ``workload`` for sources of ``kind``: frames with alpha re-encode as PNG."""
    spec = WORKLOADS[workload]
    if kind == "png-alpha" and spec.format == "jpeg":
        return replace(spec, format="png")
    return spec


FFMPEG_GRAIN = 12  # ffmpeg noise strength: 4K PNG ~14 MB, JPEG ~2.1 MB, like camera footage


Cell = tuple[str, str, str]  # (resolution, source kind, workload)


def full_matrix(quick: bool = False) -> list[Cell]:
    """The cells of the benchmark: each resolution × source kind × workload; ``resize-1080p`` for
    4K PNG/JPEG only, and not in the ``quick`` matrix (``--goals`` measures it)."""
    cells: list[Cell] = []
    for res in RESOLUTIONS:
        for kind in KINDS:
            for wl in ("passthrough", "transcode", "resize"):
                cells.append((res, kind, wl))
            if res == "4k" and kind in ("png", "jpeg") and not quick:
                cells.append((res, kind, "resize-1080p"))
    return cells


@dataclass(frozen=True)
class RunTimes:
    """Wall-clock and process CPU seconds of each timed run (same runs, same order)."""

    wall: list[float]
    cpu: list[float]


def timed_runs(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> RunTimes:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Each timed run records wall-clock seconds (``time.perf_counter``) and the process's CPU
    seconds (``time.process_time``: user + sys of every thread of this process, so pools,
    DALI's worker threads and driver threads count too).
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return RunTimes(wall, cpu)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs; and all times."""
    r = timed_runs(fn, repeats, warmup)
    return statistics.median(r.wall), r.wall


def measure(fn: Callable[[], Any], frames: int, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Throughput and host CPU cost of ``fn`` (which encodes ``frames`` frames per call).

    ``fps``: frames over the median wall time; ``cpu_s_per_frame``: the median CPU seconds of
    a run over ``frames``; ``cores_busy``: the median of CPU over wall seconds per run (how many
    cores the path keeps busy); ``times`` / ``cpu_times``: every run's seconds.
    """
    r = timed_runs(fn, repeats, warmup)
    return {
        "fps": frames / statistics.median(r.wall),
        "cpu_s_per_frame": statistics.median(r.cpu) / frames,
        "cores_busy": statistics.median(c / w for c, w in zip(r.cpu, r.wall) if w > 0),
        "times": r.wall,
        "cpu_times": r.cpu,
    }


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
        "copy into fresh bytes": src.tobytes,
    }
    res: dict[str, float] = {"uri_bytes": out_len}
    for name, fn in builders.items():
        med, _ = median_time(fn, repeats, warmup=2)
        res[name] = out_len / med / 1e9
    return res


def _frames(
    root: Path, use_ffmpeg: bool, count: int, wanted: Sequence[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[Path]], str]:
    """``count`` frames per wanted (resolution, kind): ffmpeg's (with grain) where ffmpeg is and wanted, else synthetic."""
    from .ffmpeg_frames import frames_or_synthetic

    clips: dict[tuple[str, str], list[Path]] = {}
    origin = ""
    for res, kind in wanted:
        w, h = RESOLUTIONS[res]
        clips[(res, kind)], origin = frames_or_synthetic(
            root / "frames",
            w,
            h,
            count,
            cast("Literal['png', 'jpeg', 'png-alpha']", kind),
            grain=FFMPEG_GRAIN,
            prefer_ffmpeg=use_ffmpeg,
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
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pillow": pillow_flavour(),
        "base64": base64_impl(),
        "uri_builder": URI_METHOD,
    }


def _bench_row(
    cell: tuple[str, str, str],
    paths: list[Path],
    spec: OutputSpec,
    backends: list[str],
    encoders: dict[str, FrameEncoder],
    repeats: int,
) -> dict[str, Any]:
    """One matrix row: each backend's figures for ``paths`` under ``spec``, and the ratios between them."""
    res, kind, wl = cell
    row: dict[str, Any] = {
        "resolution": res,
        "source": kind,
        "workload": wl,
        "frames": len(paths),
        "distinct_frames": len(set(paths)),
        "source_mb": round(sum(p.stat().st_size for p in paths) / len(paths) / 1e6, 2),
    }
    for b in backends:
        fn = _stdlib_fn(paths, spec) if b == "stdlib" else _encode_fn(encoders[b], paths, spec)
        _put(row, b, measure(fn, len(paths), repeats))
    if "stdlib" in backends:
        row["cpu_vs_stdlib"] = row["cpu_fps"] / row["stdlib_fps"]
    if "gpu" in backends:
        row["gpu_vs_cpu"] = row["gpu_fps"] / row["cpu_fps"]
        row["gpu_cpu_s_vs_cpu"] = row["gpu_cpu_s_per_frame"] / row["cpu_cpu_s_per_frame"]
    return row


def _cache_sections(quick: bool, work: Path, encoder: FrameEncoder) -> dict[str, Any]:
    """Cache hit ratios (LRU, schedule-aware, optimum) on the standard traces, and get() latency with read-ahead."""
    from .traces import hit_ratio_table, schedule_table, standard_traces

    scale = 0.1 if quick else 1.0
    lat_frames = _latency_frames(work, 16 if quick else 48, (640, 360) if quick else (1280, 720))
    return {
        "hit_ratio": hit_ratio_table(quick=quick),
        "schedule_hit_ratio": schedule_table(
            {**standard_traces(scale=scale), **standard_traces(scale=scale, resolution="1080p")}
        ),
        "schedule_latency": schedule_latency(lat_frames, encoder),
    }


def run_bench(  # noqa: PLR0912, PLR0915 - the report's sections in order; each section is its own function
    backend: str = "all",
    quick: bool = False,
    out: Path = Path("results"),
    repeats: int | None = None,
    use_ffmpeg: bool = True,
    soak: bool = True,
    console: Any = None,
    config: Config | None = None,
    goals: bool = False,
    max_seconds: float | None = None,
    video: bool = False,
    gpu_profile: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark matrix and write JSON, markdown and charts under ``out``; returns the results.

    ``backend``: ``cpu`` (CPU path and stdlib baseline), ``gpu`` or ``all`` (add the GPU path
    where a device is usable). ``goals``: only the rows of :data:`gpupipe.tools.goals.GOAL_MATRIX`
    (4K JPEG and PNG, no stdlib baseline, no stage/URI/soak/hit-ratio sections), 8 distinct
    frames in batches of 32 (``quick``: 2 in batches of 4), 7 timed repeats; check them with
    ``python -m gpupipe.tools.goals <out>/bench.json``. ``video``: only the video section
    (:mod:`gpupipe.tools.video_bench`: clips against extraction to PNG; ``quick``: 6 frames per
    clip); the full run (neither ``quick`` nor ``goals``) ends with it too. ``max_seconds``: start
    no new row or GPU detail section after this many seconds (the report says where it stopped).
    ``gpu_profile``: a folder for cProfile dumps of the GPU detail rows' end-to-end transcodes.
    """
    from ..gpu import gpu_available

    say = console.print if console is not None else print
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config or load_config()
    if video:
        cells: list[Cell] = []
        repeats = repeats or (1 if quick else 2)
        distinct = per_batch = 0
    elif goals:
        from .goals import GOAL_MATRIX

        cells = list(GOAL_MATRIX)
        repeats = repeats or (1 if quick else 7)
        distinct, per_batch = (2, 4) if quick else (8, 32)
    else:
        cells = full_matrix(quick)
        repeats = repeats or (1 if quick else 3)
        distinct = per_batch = 2 if quick else 6
    work = Path(tempfile.gettempdir()) / "gpupipe-bench"
    t_start = time.perf_counter()

    def out_of_time() -> bool:
        return max_seconds is not None and time.perf_counter() - t_start > max_seconds

    clips, frames_note = _frames(work, use_ffmpeg, distinct, list(dict.fromkeys((r, k) for r, k, _ in cells)))
    if video:
        frames_note = "video clips only (see the video section)"
    gpu_ok, gpu_why = gpu_available(cfg.gpu or 0)
    backends = ["cpu"] if goals or video else ["cpu", "stdlib"]
    if backend in ("gpu", "all") and gpu_ok:
        backends.append("gpu")
    if backend == "gpu" and not gpu_ok:
        say(f"[yellow]GPU path not run: {gpu_why}[/yellow]" if console else f"GPU path not run: {gpu_why}")
    cores = usable_cores()
    pt_setting = getattr(cfg, "passthrough_device", None)
    flags = (
        (" --goals" if goals else "")
        + (" --video" if video else "")
        + (" --quick" if quick else "")
        + (f" --max-seconds {max_seconds:g}" if max_seconds else "")
        + (f" --gpu-profile {gpu_profile}" if gpu_profile else "")
    )
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": f"gpupipe bench --backend {backend}{flags}",
        "machine": _machine(),
        "frames": frames_note,
        "frames_per_workload": per_batch,
        "distinct_frames": distinct,
        "repeats": repeats,
        "goals": goals,
        "sections": ["video"] if video else ["image", "video"] if not (quick or goals) else ["image"],
        "backends": backends,
        # PNG sources: the GPU rows measure DALI's route (png_device: gpu), whatever the config's default.
        "gpu": {"usable": gpu_ok, "reason": gpu_why, "passthrough_device": pt_setting, "png_device": "gpu"},
        "workloads": [],
        "stages": [],
    }

    def save() -> None:
        (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))

    run_cfg = replace(cfg, workers=cores, batch_size=max(1, per_batch))
    encoders = {} if video else {"cpu": FrameEncoder(run_cfg, backend="cpu")}
    if "gpu" in backends and not video:
        encoders["gpu"] = FrameEncoder(replace(run_cfg, png_device="gpu"), backend="gpu")
    try:
        for res, kind, wl in cells:
            if out_of_time():
                results["stopped_early"] = f"time limit of {max_seconds:g} s reached before {res} {kind} {wl}"
                say(results["stopped_early"])
                break
            paths = (clips[(res, kind)] * -(-per_batch // distinct))[:per_batch]
            spec = workload_spec(wl, kind)
            row = _bench_row((res, kind, wl), paths, spec, backends, encoders, repeats)
            if wl == "passthrough" and "gpu" in backends:
                row["gpu_passthrough"] = _passthrough_both_ways(row, encoders, run_cfg, pt_setting, paths, spec, repeats)
            results["workloads"].append(row)
            save()
            if not goals:
                st = stage_times(paths[0], spec, max(1, repeats))
                results["stages"].append({"resolution": res, "source": kind, "workload": wl, "backend": "cpu", **st})
            say(
                f"{res:5} {kind:9} {wl:12} "
                + "  ".join(f"{b} {row[f'{b}_fps']:7.1f} f/s {row[f'{b}_cpu_s_per_frame'] * 1e3:7.1f} CPU-ms/f" for b in backends)
            )
        image = not (goals or video)  # the image sections beside the matrix
        if image:
            big = clips[("4k", "png")][0].read_bytes()
            results["uri_assembly"] = uri_assembly_bench(big, 3 if quick else 9)
        if "gpu" in backends and cells and not out_of_time():
            stage_cells = [c for c in cells if c[2] != "passthrough"]
            results["gpu_detail"] = _gpu_detail(clips, stage_cells, per_batch, repeats, quick, out_of_time, gpu_profile)
            save()
        if image:
            results.update(_cache_sections(quick, work, encoders["cpu"]))
            save()
            if soak:
                results["soak"] = _soak(encoders.get("gpu") or encoders["cpu"], clips, quick, work)
        if "video" in results["sections"]:
            if out_of_time():
                results["stopped_early"] = f"time limit of {max_seconds:g} s reached before the video section"
            else:
                _video_section(results, cfg, quick, repeats if video else None, use_ffmpeg, work, say, out_of_time, save)
    finally:
        for e in encoders.values():
            e.close()
    results["seconds"] = time.perf_counter() - t_start
    save()
    from .report import write_report

    written = write_report(results, out)
    say(f"wrote {out / 'bench.json'}" + "".join(f", {p}" for p in written) + f" in {results['seconds']:.0f} s")
    return results


def _video_section(
    results: dict[str, Any],
    cfg: Config,
    quick: bool,
    repeats: int | None,
    use_ffmpeg: bool,
    work: Path,
    say: Callable[[str], None],
    out_of_time: Callable[[], bool],
    save: Callable[[], None],
) -> None:
    """Run :func:`~gpupipe.tools.video_bench.run_video_bench` on its own encoders (the GPU one where the
    run has the GPU backend) into ``results["video"]``, saving after each clip."""
    from ..gpu import gpu_status
    from .video_bench import VIDEO_BATCH, VideoBenchSettings, run_video_bench

    gpu = "gpu" in results["backends"]
    vcfg = replace(cfg, workers=usable_cores(), batch_size=VIDEO_BATCH)
    encoders = {"cpu": FrameEncoder(vcfg, backend="cpu")}
    if gpu:
        encoders["gpu"] = FrameEncoder(vcfg, backend="gpu")
    reason = results["gpu"]["reason"] if results["gpu"]["usable"] else f"no GPU ({results['gpu']['reason']})"
    if results["gpu"]["usable"] and not gpu:
        reason = "GPU backend not run (--backend cpu)"

    def keep(section: dict[str, Any]) -> None:
        results["video"] = section
        save()

    try:
        keep(
            run_video_bench(
                encoders,
                VideoBenchSettings.for_run(quick, repeats, use_ffmpeg),
                work / "video",
                gpu_reason=reason,
                gpu_device=gpu_status(cfg.gpu or 0).checks.get("device") if gpu else None,
                say=say,
                out_of_time=out_of_time,
                on_row=keep,
            )
        )
    finally:
        for e in encoders.values():
            e.close()


def _stdlib_fn(paths: list[Path], spec: OutputSpec) -> Callable[[], Any]:
    return lambda: [stdlib_uri(p, spec) for p in paths]


def _encode_fn(enc: FrameEncoder, paths: list[Path], spec: OutputSpec) -> Callable[[], Any]:
    return lambda: _check(enc.encode_batch(paths, spec.format, spec.size, spec.quality))


def _put(row: dict[str, Any], backend: str, m: dict[str, Any]) -> None:
    """Store :func:`measure`'s figures in ``row`` as ``<backend>_fps``, ``<backend>_cpu_s_per_frame`` ..."""
    for k, v in m.items():
        row[f"{backend}_{k}"] = v


def _passthrough_both_ways(
    row: dict[str, Any],
    encoders: dict[str, FrameEncoder],
    run_cfg: Config,
    setting: str | None,
    paths: list[Path],
    spec: OutputSpec,
    repeats: int,
) -> dict[str, Any]:
    """The GPU backend's passthrough with ``passthrough_device`` ``cpu`` and ``gpu``.

    The row's ``gpu_*`` figures are the config's own setting; each other value runs on its own
    GPU encoder (made on first use, kept in ``encoders``). Where the config has no such setting,
    only the row's GPU run is recorded, with a note.
    """
    mine = {k: row[f"gpu_{k}"] for k in ("fps", "cpu_s_per_frame", "cores_busy", "times", "cpu_times")}
    if setting is None:
        return {
            "gpu": mine,
            "note": "this gpupipe has no passthrough_device setting; the GPU backend ran passthrough through the base64 kernel",
        }
    both: dict[str, Any] = {"setting": setting}
    for dev in ("cpu", "gpu"):
        if dev == setting:
            both[dev] = mine
            continue
        key = f"gpu-passthrough-{dev}"
        if key not in encoders:
            encoders[key] = FrameEncoder(replace(run_cfg, passthrough_device=dev), backend="gpu")
        both[dev] = measure(_encode_fn(encoders[key], paths, spec), len(paths), repeats)
    return both


def _check(results: list) -> list:
    from ..errors import FrameError

    bad = [r for r in results if isinstance(r, FrameError)]
    if bad:
        raise RuntimeError(f"benchmark frame failed: {bad[0]}")
    return results


def _gpu_detail(
    clips: dict[tuple[str, str], list[Path]],
    cells: Sequence[Cell],
    per_batch: int,
    repeats: int,
    quick: bool,
    out_of_time: Callable[[], bool],
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """The kernel bandwidth and the GPU per-stage table for ``cells`` (batches of ``per_batch`` frames);
    with ``profile_dir``, a cProfile dump of each row's end-to-end transcode there
    (``gpu-<resolution>-<source>-<workload>.prof``)."""
    from ..gpu.bench import base64_kernel_bandwidth, gpu_stage_benchmark

    detail: dict[str, Any] = {"base64_kernel": base64_kernel_bandwidth(64 * MiB, 5 if quick else 20), "stages": []}
    for res, kind, wl in cells:
        if out_of_time():
            detail["stopped_early"] = f"time limit reached before the stage benchmark of {res} {kind} {wl}"
            break
        spec = workload_spec(wl, kind)
        paths = clips[(res, kind)]
        data = [p.read_bytes() for p in (paths * -(-per_batch // len(paths)))[:per_batch]]
        prof = profile_dir / f"gpu-{res}-{kind}-{wl}.prof" if profile_dir is not None else None
        if prof is not None:
            prof.parent.mkdir(parents=True, exist_ok=True)
        st = gpu_stage_benchmark(data, spec.size, spec.quality, max(2, repeats), profile=prof)
        detail["stages"].append({"resolution": res, "source": kind, "workload": wl, **st})
    return detail


def _soak(encoder: FrameEncoder, clips: dict[tuple[str, str], list[Path]], quick: bool, work: Path) -> dict[str, Any]:
    from ..memory import allocator_tuning
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
    d["allocator"] = allocator_tuning()
    return d


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``seconds``, in milliseconds."""
    return float(np.percentile(np.asarray(seconds, dtype=np.float64), q)) * 1e3 if seconds else float("nan")


def _latency_frames(work: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` distinct synthetic PNG frames of ``size`` (a moving scene), written once under ``work``."""
    from ..samples import make_frame

    d = work / f"latency-{size[0]}x{size[1]}"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        p = d / f"frame_{i:05d}.png"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            Image.fromarray(make_frame(size[0], size[1], index=i, seed=3)).save(tmp, "PNG", compress_level=1)
            os.replace(tmp, p)
        out.append(p)
    return out


def schedule_latency(  # noqa: PLR0915 - one measurement per row of the latency table
    frames: Sequence[Path],
    encoder: FrameEncoder,
    *,
    output: str = "jpeg",
    size: tuple[int, int] | None = None,
    read_ahead: int = 16,
    load: float = 0.8,
    budget_bytes: int = 256 * MiB,
    max_entries: int = 256,
    hit_samples: int = 200,
) -> dict[str, Any]:
    """``get()`` latency of a steady render of ``frames`` (each once, in order), with and without read-ahead.

    First the encoder's throughput on these frames is measured (``encode_batch`` of up to
    ``2 * batch_size`` of them, after one warm-up frame), and the latency of a cache hit
    (``hit_samples`` ``get()`` calls of cached frames), once with the machine otherwise idle
    (``hit``) and once while another thread keeps the encoder as busy as read-ahead will
    (batches of ``batch_size`` at ``load`` times its throughput: ``hit_busy``, what a hit costs
    when encodes share the cores). Then one renderer thread declares the frames as a schedule
    and requests them at ``load`` times that throughput (a render the encoder can keep up
    with), on a fresh cache of ``budget_bytes`` / ``max_entries`` with a
    :class:`~gpupipe.schedule.SchedulePolicy`: once with ``read_ahead=0`` (every request encodes)
    and once with ``read_ahead``. Returns p50/p99 milliseconds of each (``steady_*``: without the
    first ``read_ahead`` requests, before read-ahead has had time to run ahead), the cache and
    schedule counters of each render, ``read_ahead_p50_vs_hit`` (the goal: at most 2) and
    ``read_ahead_p50_vs_hit_busy``.
    """
    from ..pipeline import FramePipeline

    frames = list(frames)
    if not frames:
        raise ValueError("schedule_latency needs at least one frame")
    spec = encoder.spec(output, size)
    encoder.encode_batch(frames[:1], spec.format, spec.size, spec.quality)
    sample = frames[: max(1, min(len(frames), 2 * encoder.config.batch_size))]
    t = time.perf_counter()
    encoder.encode_batch(sample, spec.format, spec.size, spec.quality)
    fps = len(sample) / (time.perf_counter() - t)
    rate = fps * load

    def new_pipe(ra: int) -> FramePipeline:
        cache: Any = FrameCache(max_entries, budget_bytes)
        return FramePipeline(
            encoder, cache, output=spec.format, size=spec.size, quality=spec.quality, read_ahead=ra, tune_allocator=False
        )

    hit_pipe = new_pipe(0)
    cached = frames[: min(len(frames), 8)]
    for f in cached:
        hit_pipe.get(f)

    def hits(paced: bool) -> list[float]:
        lat = []
        start = time.perf_counter()
        for i in range(hit_samples):
            if paced and (delay := start + i / rate - time.perf_counter()) > 0:
                time.sleep(delay)
            f = cached[i % len(cached)]
            t = time.perf_counter()
            hit_pipe.get(f)
            lat.append(time.perf_counter() - t)
        return lat

    hit_lat = hits(False)
    stop = threading.Event()

    def busy() -> None:
        n = encoder.config.batch_size
        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            batch = [frames[(i + j) % len(frames)] for j in range(n)]
            encoder.encode_batch(batch, spec.format, spec.size, spec.quality)
            i += n
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                stop.wait(delay)

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        busy_lat = hits(True)
    finally:
        stop.set()
        worker.join()
    out: dict[str, Any] = {
        "frames": len(frames),
        "source": str(frames[0].parent),
        "output": spec.format,
        "size": spec.size,
        "backend": encoder.backend,
        "batch_size": encoder.config.batch_size,
        "encoder_fps": fps,
        "load": load,
        "request_fps": rate,
        "budget_bytes": budget_bytes,
        "hit": {"p50_ms": percentile_ms(hit_lat, 50), "p99_ms": percentile_ms(hit_lat, 99), "requests": len(hit_lat)},
        "hit_busy": {"p50_ms": percentile_ms(busy_lat, 50), "p99_ms": percentile_ms(busy_lat, 99), "requests": len(busy_lat)},
    }
    for name, ra in (("no_read_ahead", 0), ("read_ahead", read_ahead)):
        pipe = new_pipe(ra)
        lat = []
        with pipe.schedule(frames) as sched:
            start = time.perf_counter() + 1.0 / rate
            for i, f in enumerate(frames):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t = time.perf_counter()
                pipe.get(f)
                lat.append(time.perf_counter() - t)
        st = sched.stats()
        cs = pipe.stats()
        steady = lat[read_ahead:] or lat  # past the start, where read-ahead has not yet had time to run ahead
        out[name] = {
            "read_ahead": ra,
            "p50_ms": percentile_ms(lat, 50),
            "p99_ms": percentile_ms(lat, 99),
            "max_ms": max(lat) * 1e3,
            "steady_p50_ms": percentile_ms(steady, 50),
            "steady_p99_ms": percentile_ms(steady, 99),
            "hits": st.hits,
            "misses": st.misses,
            "prefetched": st.prefetched,
            "prefetch_used": st.prefetch_used,
            "wasted": st.wasted,
            "loads": cs.loads,
            "peak_bytes": cs.peak_bytes,
        }
    out["read_ahead_p50_vs_hit"] = out["read_ahead"]["p50_ms"] / out["hit"]["p50_ms"]
    out["read_ahead_p50_vs_hit_busy"] = out["read_ahead"]["p50_ms"] / out["hit_busy"]["p50_ms"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gpupipe.tools.bench``: parse ``argv`` (default: the command line), run, return the exit status."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m gpupipe.tools.bench", description="Benchmarks that `gpupipe bench` also runs, one at a time."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("schedule-latency", help="get() latency of a steady scheduled render, with and without read-ahead")
    lat.add_argument("--frames", type=int, default=48)
    lat.add_argument("--size", default="1280x720", help="source frame size WxH (synthetic PNG frames)")
    lat.add_argument("--output", default="jpeg", help="auto | passthrough | jpeg | png")
    lat.add_argument("--read-ahead", type=int, default=16)
    lat.add_argument("--load", type=float, default=0.8, help="request rate as a fraction of the measured encoder throughput")
    lat.add_argument("--backend", default="cpu")
    lat.add_argument("--json", help="write the result as JSON here")
    a = ap.parse_args(argv)
    w, h = parse_wxh(a.size)
    frames = _latency_frames(Path(tempfile.gettempdir()) / "gpupipe-bench", a.frames, (w, h))
    with FrameEncoder(load_config(), backend=a.backend) as enc:
        r = schedule_latency(frames, enc, output=a.output, read_ahead=a.read_ahead, load=a.load)
    print(
        f"{r['frames']} frames {w}x{h} PNG -> {r['output']} on {r['backend']} (batch {r['batch_size']}): "
        f"encoder {r['encoder_fps']:.1f} frames/s, requests at {r['request_fps']:.1f}/s"
    )
    print(
        "| get() | p50 ms | p99 ms | steady p50 / p99 ms | hits | misses | prefetched (used, wasted) |\n|---|---|---|---|---|---|---|"
    )
    print(f"| cache hit | {r['hit']['p50_ms']:.3f} | {r['hit']['p99_ms']:.3f} | | | | |")
    print(f"| cache hit, encoder busy | {r['hit_busy']['p50_ms']:.3f} | {r['hit_busy']['p99_ms']:.3f} | | | | |")
    for name in ("no_read_ahead", "read_ahead"):
        x = r[name]
        print(
            f"| scheduled, read_ahead={x['read_ahead']} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | {x['steady_p50_ms']:.3f} / {x['steady_p99_ms']:.3f} "
            f"| {x['hits']} | {x['misses']} | {x['prefetched']} ({x['prefetch_used']}, {x['wasted']}) |"
        )
    print(
        f"read-ahead p50 / hit p50: {r['read_ahead_p50_vs_hit']:.2f} (idle), {r['read_ahead_p50_vs_hit_busy']:.2f} (encoder busy)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
