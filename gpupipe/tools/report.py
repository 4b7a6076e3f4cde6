"""The benchmark report: a markdown table and PNG charts from ``bench.json``-style results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..vocabulary import MiB

__all__ = ["markdown_report", "write_report"]


def _fmt(x: Any, nd: int = 1) -> str:
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) else str(x)


_GPU_STAGES = ("upload", "decode", "resize", "encode", "base64", "download", "host_string")


def _gpu_sections(g: dict[str, Any]) -> list[str]:
    """The GPU kernel bandwidth and per-stage tables."""
    k = g["base64_kernel"]
    lines = [
        "",
        "### GPU base64 kernel against a device-to-device copy (CUDA events, median)",
        "",
        "Bandwidth counts bytes read plus bytes written for both; target ratio ≥ 0.70.",
        "",
        "| input MB | frames | kernel GB/s | kernel input GB/s | device copy GB/s | kernel / copy | output checked |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {k['nbytes'] / 1e6:.0f} | {k['frames']:.0f} | {k['kernel_gbps']:.1f} | {k['kernel_input_gbps']:.1f} | "
        f"{k['copy_gbps']:.1f} | {k['ratio']:.2f} | {'yes, against pybase64' if k.get('verified') else 'no'} |",
        "",
        "### GPU per-stage time (ms per frame, median over the batch)",
        "",
        "upload, base64, download and host string are the passthrough data path over the source bytes; "
        "decode, resize and encode are DALI and nvImageCodec on the transcode path.",
        "",
        "| resolution | source | workload | frames | "
        + " | ".join(s.replace("_", " ") for s in _GPU_STAGES)
        + " | transcode f/s | passthrough f/s |",
        "|---|---|---|---:|" + "---:|" * (len(_GPU_STAGES) + 2),
    ]
    for s in g["stages"]:
        n = max(1, int(s["frames"]))
        per = [_fmt(s["stages_s"].get(name, 0.0) * 1e3 / n, 2) for name in _GPU_STAGES]
        lines.append(
            f"| {s['resolution']} | {s['source']} | {s['workload']} | {n} | "
            + " | ".join(per)
            + f" | {s['transcode_fps']:.1f} | {s['passthrough_fps']:.1f} |"
        )
    if any("stages_cpu" in s for s in g["stages"]):
        lines += _gpu_cpu_table(g["stages"])
    return lines


_CPU_STAGES = ("decode", "decode+resize", "encode", "jpeg_string", "host_string")
_PIPE_STAGES = ("process", "finish", "host", "host_string")


def _gpu_cpu_table(stages: list[dict[str, Any]]) -> list[str]:
    """Where the GPU path's host CPU goes: each stage alone, and the end-to-end transcode's phases."""
    lines = [
        "",
        "### GPU path: host CPU per stage (CPU-ms per frame)",
        "",
        "Each stage alone: CPU of the whole process while it ran (DALI's threads included). End to end "
        "(the transcode through the GPU backend): thread CPU of each phase (process = DALI decode, "
        "finish = nvImageCodec encode, host = the strings phase, of which host string = the string "
        "threads' share), and the process's CPU per frame.",
        "",
        "| resolution | source | workload | "
        + " | ".join(f"{x.replace('_', ' ')} alone" for x in _CPU_STAGES)
        + " | "
        + " | ".join(x.replace("_", " ") for x in _PIPE_STAGES)
        + " | process CPU-ms/frame |",
        "|---|---|---|" + "---:|" * (len(_CPU_STAGES) + len(_PIPE_STAGES) + 1),
    ]
    for s in stages:
        if "stages_cpu" not in s:
            continue
        n = max(1, int(s["frames"]))
        alone = [_fmt(s["stages_cpu"][x]["process_cpu_s"] * 1e3 / n, 2) if x in s["stages_cpu"] else "" for x in _CPU_STAGES]
        pipe = s.get("pipeline_stages", {})
        phases = [_fmt(pipe[x]["cpu_s"] * 1e3 / n, 2) if x in pipe else "" for x in _PIPE_STAGES]
        lines.append(
            f"| {s['resolution']} | {s['source']} | {s['workload']} | "
            + " | ".join(alone + phases)
            + f" | {_fmt(s.get('process_cpu_s_per_frame', 0.0) * 1e3, 2)} |"
        )
    return lines


_LABELS = {"stdlib": "stdlib 1 thread", "cpu": "CPU path all cores", "gpu": "GPU"}


def _backends(r: dict[str, Any]) -> list[str]:
    """The backends whose figures the rows carry, in table order."""
    wl = r["workloads"]
    return [b for b in ("stdlib", "cpu", "gpu") if wl and f"{b}_fps" in wl[0]]


def _ms(x: Any) -> str:
    return _fmt(x * 1e3, 1) if isinstance(x, (int, float)) else "—"


def _ratio(x: Any, nd: int = 2) -> str:
    return f"{x:.{nd}f}×" if isinstance(x, (int, float)) else "—"


def _throughput_section(r: dict[str, Any], backends: list[str]) -> list[str]:
    cores = r["machine"]["cores"]
    head = ["resolution", "source", "workload", "MB/frame"] + [
        {"stdlib": "stdlib 1 thread", "cpu": f"CPU path {cores} cores", "gpu": "GPU"}[b] for b in backends
    ]
    if "stdlib" in backends:
        head.append("CPU / stdlib")
    if "gpu" in backends:
        head.append("GPU / CPU")
    lines = [
        "",
        "### Throughput (frames/s, median)",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|---|" + "---:|" * (len(head) - 3),
    ]
    for w in r["workloads"]:
        cells = [w["resolution"], w["source"], w["workload"], f"{w['source_mb']:.1f}"] + [
            f"{w[f'{b}_fps']:.1f}" for b in backends
        ]
        if "stdlib" in backends:
            cells.append(_ratio(w.get("cpu_vs_stdlib")))
        if "gpu" in backends:
            cells.append(_ratio(w.get("gpu_vs_cpu")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cpu_cost_section(r: dict[str, Any], backends: list[str]) -> list[str]:
    head = ["resolution", "source", "workload"]
    for b in backends:
        head += [f"{_LABELS[b]}: CPU-ms/frame", "cores busy"]
    if "gpu" in backends:
        head.append("GPU / CPU CPU-s per frame")
    lines = [
        "",
        "### Host CPU cost (CPU-ms per frame: process user + sys, all threads, median over the timed runs)",
        "",
        "Measured over the same runs as the throughput. *cores busy*: CPU seconds over wall seconds per run (median).",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|---|" + "---:|" * (len(head) - 3),
    ]
    for w in r["workloads"]:
        cells = [w["resolution"], w["source"], w["workload"]]
        for b in backends:
            cells += [_ms(w.get(f"{b}_cpu_s_per_frame")), _fmt(w.get(f"{b}_cores_busy", "—"), 1)]
        if "gpu" in backends:
            cells.append(_ratio(w.get("gpu_cpu_s_vs_cpu"), 3))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _passthrough_section(r: dict[str, Any]) -> list[str]:
    rows = [w for w in r["workloads"] if w.get("gpu_passthrough")]
    if not rows:
        return []
    setting = r.get("gpu", {}).get("passthrough_device")
    lines = [
        "",
        "### GPU backend passthrough, `passthrough_device: cpu` and `gpu` (f/s; CPU-ms per frame)",
        "",
        f"The config's own setting: `{setting}`."
        if setting
        else "This gpupipe has no `passthrough_device` setting: the GPU backend ran passthrough through the base64 kernel.",
        "",
        "| resolution | source | MB/frame | CPU path f/s | CPU path CPU-ms/frame | GPU, pt=cpu f/s | CPU-ms/frame | GPU, pt=gpu f/s | CPU-ms/frame |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in rows:
        pt = w["gpu_passthrough"]
        cells = [w["resolution"], w["source"], f"{w['source_mb']:.1f}", f"{w['cpu_fps']:.1f}", _ms(w.get("cpu_cpu_s_per_frame"))]
        for dev in ("cpu", "gpu"):
            m = pt.get(dev)
            cells += [f"{m['fps']:.1f}", _ms(m["cpu_s_per_frame"])] if m else ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_VIDEO_PATHS = {
    "extract-png": "ffmpeg extracts PNG files (alone)",
    "extract-png+passthrough": "(a) extract PNG, then passthrough URIs",
    "extract-png+fitted": "(a) extract PNG, then gpupipe JPEG fitted 1920x1080",
    "extract-jpeg": "ffmpeg extracts JPEG q2 files (alone)",
    "extract-png-default": "ffmpeg extracts PNG files at its default compression (alone)",
    "extract-png-default+passthrough": "extract PNG at ffmpeg's default compression, then passthrough URIs",
    "extract-jpeg+passthrough": "extract JPEG q2, then passthrough URIs (renderer, opaque sources)",
    "video-cpu-fitted": "(b) video source, CPU, JPEG fitted 1920x1080",
    "video-cpu-source": "(b) video source, CPU, JPEG at the clip's size",
    "video-gpu-fitted": "(c) video source, GPU, JPEG fitted 1920x1080",
    "video-gpu-source": "(c) video source, GPU, JPEG at the clip's size",
    "pyav-loop": "plain PyAV loop: decode, JPEG, base64 at the clip's size (the in-order yardstick)",
}


def _video_section(v: dict[str, Any]) -> list[str]:
    """The video section: each clip's paths, frames/s and CPU cost against extraction to PNG."""
    gpu = v.get("gpu") or {}
    lines = [
        "",
        f"### Frames from video ({v['frames']} frames per clip, in order; {v['repeats']} timed render(s) after a warm-up, medians)",
        "",
        f"FFmpeg: {v.get('ffmpeg', '?')}. Each render: a fresh cache ({v['budget_mib']:.0f} MiB), the clip's frames "
        "declared as a schedule, one `get` per frame. Extraction runs once per clip; an extraction path's figures "
        "add it to the median pass over its files. CPU-ms: process user + sys, all threads, plus the ffmpeg child's.",
        "GPU: " + (f"ran ({gpu.get('device') or '?'})." if gpu.get("ran") else f"not run: {gpu.get('reason', '?')}."),
    ]
    lines += [f"Note: {n}" for n in v.get("notes", [])]
    if v.get("stopped_early"):
        lines.append(f"**Stopped early**: {v['stopped_early']}.")
    lines += [
        "",
        "| clip | MB (clip / PNG per frame) | path | frames/s | CPU-ms per frame | CPU-s vs extract PNG + passthrough | frames/s vs it | seeks / decoded per render |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in v.get("rows", []):
        clip = f"{row['resolution']} {row['codec']}"
        sizes = f"{row['clip_mb']:.1f} / {row.get('png_mb', 0.0):.1f}"
        for name, m in row["paths"].items():
            dec = f"{m['seeks']:g} / {m['decoded']:g}" if "decoded" in m and name.startswith("video") else ""
            if m.get("decoder"):
                dec += f" ({m['decoder']})"
            if m.get("cpu_vs_pyav_loop"):
                dec += f"; CPU {m['cpu_vs_pyav_loop']:.2f}x the plain loop's"
            lines.append(
                f"| {clip} | {sizes} | {_VIDEO_PATHS.get(name, name)} | {m['fps']:.1f} | {_ms(m.get('cpu_s_per_frame'))} | "
                f"{_ratio(m.get('cpu_s_vs_extract_png'), 1)} | {_ratio(m.get('fps_vs_extract_png'), 1)} | {dec} |"
            )
            clip = sizes = ""
    return lines


def _goals_section(r: dict[str, Any]) -> list[str]:
    from .goals import check_goals, summary

    checked = check_goals(r)
    return (
        ["", "### GPU goals (`python -m gpupipe.tools.goals bench.json`)", "", "```"]
        + [str(x) for x in checked]
        + [summary(checked), "```"]
    )


def markdown_report(r: dict[str, Any]) -> str:
    """The results as markdown: machine, throughput and CPU-cost tables, stages, URI assembly, soak, hit ratios, goals."""
    m = r["machine"]
    backends = _backends(r)
    gpu = "gpu" in backends
    distinct = r.get("distinct_frames", r["frames_per_workload"])
    batch = f"{r['frames_per_workload']} per workload" + (
        f" ({distinct} distinct, repeated)" if distinct != r["frames_per_workload"] else ""
    )
    image = "image" in r.get("sections", ["image"])
    lines = [
        f"Run {r['when']}: `{r['command']}` in {r.get('seconds', 0):.0f} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; {m['pillow']}; "
        f"{m['base64']}; URI builder: {m['uri_builder']}.",
        f"Frames: {r['frames']}" + (f", {batch}; {r['repeats']} timed repeat(s) after a warm-up, medians." if image else "."),
        f"GPU: {'used' if gpu or (r.get('video') or {}).get('gpu', {}).get('ran') else 'not run'} ({r['gpu']['reason']}).",
    ]
    if r.get("stopped_early"):
        lines.append(f"**Stopped early**: {r['stopped_early']}.")
    if not image:
        if "video" in r:
            lines += _video_section(r["video"])
        return "\n".join(lines + _goals_section(r)) + "\n"
    lines += _throughput_section(r, backends)
    lines += _cpu_cost_section(r, backends)
    lines += _passthrough_section(r)
    if r.get("stages"):
        lines += [
            "",
            "### CPU per-stage time (ms per frame, one thread, median)",
            "",
            "| resolution | source | workload | read | decode | resize | encode | base64 alone | URI (base64 + assembly, fused) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in r["stages"]:
            lines.append(
                f"| {s['resolution']} | {s['source']} | {s['workload']} | "
                + " | ".join(_fmt(s.get(k, 0.0) * 1e3) for k in ("read", "decode", "resize", "encode", "base64", "uri"))
                + " |"
            )
    if "uri_assembly" in r:
        u = r["uri_assembly"]
        lines += [
            "",
            f"### URI assembly ({u['uri_bytes'] / 1e6:.1f} MB URI from a 4K PNG; GB/s of URI written, median)",
            "",
            "| method | GB/s |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.2f} |" for k, v in u.items() if k != "uri_bytes"]
    if "gpu_detail" in r:
        lines += _gpu_sections(r["gpu_detail"])
    if "video" in r:
        lines += _video_section(r["video"])
    if r.get("goals") or gpu or "video" in r:
        lines += _goals_section(r)
    if "soak" in r:
        s = r["soak"]
        c = s["cache"]
        lines += [
            "",
            f"### Memory soak ({s['resolution']}, {s['backend']} backend)",
            "",
            f"{s['requests']} requests over {s['unique_frames']} distinct frames, {s['threads']} threads, budget {s['budget_bytes'] / MiB:.0f} MiB, in {s['seconds']:.1f} s."
            + (f" Allocator: {s['allocator']}." if "allocator" in s else ""),
            "",
            "Base RSS: after the device probe (its own cost apart: imports and a CUDA context where a GPU is usable) and one warm request.",
            "",
            "| device probe | base RSS | peak RSS | target (budget × 1.15 + base) | within target | cache bytes at end | hit ratio | evictions | invariant violations |",
            "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
            f"| {s.get('probe_rss', 0) / MiB:.0f} MiB | {s['base_rss'] / MiB:.0f} MiB | {s['peak_rss'] / MiB:.0f} MiB | {s['target_rss'] / MiB:.0f} MiB | {'yes' if s['ok'] else '**no**'} | "
            f"{c['bytes'] / MiB:.0f} MiB | {c['hit_ratio']:.1%} | {c['evictions']} | {s['invariant_violations']} |",
        ]
    if r.get("hit_ratio"):
        rows = r["hit_ratio"]
        cols = list(rows[0].keys())
        lines += [
            "",
            "### Cache hit ratio: LRU against Belady's optimum (same trace, same budget)",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
        ]
        for row in rows:
            lines.append(
                "| " + " | ".join(_fmt(row[c_], 3) if isinstance(row[c_], float) else str(row[c_]) for c_ in cols) + " |"
            )
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write and close one chart; its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(r: dict[str, Any], out: Path) -> list[Path]:  # noqa: PLR0915 - one section per table of the report
    """Write ``BENCH.md`` and the charts into ``out``; returns the paths written."""
    out = Path(out)
    written = [out / "BENCH.md"]
    written[0].write_text(markdown_report(r))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    wl = r["workloads"]
    labels = [f"{w['resolution']}\n{w['source']}\n{w['workload']}" for w in wl]
    backends = _backends(r)
    names = {"stdlib": "stdlib, 1 thread", "cpu": f"CPU path, {r['machine']['cores']} cores", "gpu": "GPU path"}
    import numpy as np

    x = np.arange(len(wl))
    width = 0.8 / max(1, len(backends))
    for key, ylabel, title, fname, scale in (
        ("fps", "frames/s (median, log scale)", "Throughput per workload", "throughput.png", 1.0),
        (
            "cpu_s_per_frame",
            "CPU-ms per frame (process user + sys, median, log scale)",
            "Host CPU cost per frame",
            "cpu_cost.png",
            1e3,
        ),
    ):
        if not wl:
            break
        fig, ax = plt.subplots(figsize=(max(8, len(wl) * 0.9), 4.5))
        for i, b in enumerate(backends):
            ax.bar(x + i * width - 0.4 + width / 2, [w.get(f"{b}_{key}", 0.0) * scale for w in wl], width, label=names[b])
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        written.append(_save(fig, out / fname))

    st = r["stages"]
    if st:
        fig, ax = plt.subplots(figsize=(max(8, len(st) * 0.9), 4.5))
        bottom = np.zeros(len(st))
        for k in ("read", "decode", "resize", "encode", "uri"):
            vals = np.array([s.get(k, 0.0) * 1e3 for s in st])
            ax.bar(np.arange(len(st)), vals, 0.7, bottom=bottom, label=k)
            bottom += vals
        ax.set_xticks(np.arange(len(st)), [f"{s['resolution']}\n{s['source']}\n{s['workload']}" for s in st], fontsize=7)
        ax.set_ylabel("ms per frame (one CPU thread, median)")
        ax.set_title("CPU path: per-stage time")
        ax.legend()
        written.append(_save(fig, out / "stages.png"))

    if "gpu" in backends and wl:
        fig, ax = plt.subplots(figsize=(max(8, len(wl) * 0.9), 4))
        ax.bar(
            x - 0.2,
            [w["gpu_vs_cpu"] for w in wl],
            0.4,
            label="GPU / CPU path frames/s (goal ≥ 3: 4K JPEG transcode, resize-1080p)",
        )
        ax.bar(x + 0.2, [w["gpu_cpu_s_vs_cpu"] for w in wl], 0.4, label="GPU / CPU path CPU-s per frame (goal ≤ 0.1: same rows)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel("ratio (log scale)")
        ax.set_title("GPU path vs CPU path on every core (same run)")
        ax.legend(fontsize=8)
        written.append(_save(fig, out / "gpu_cpu_ratio.png"))

    if "soak" in r:
        s = r["soak"]
        t = [p[0] for p in s["samples"]]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(t, [p[1] / MiB for p in s["samples"]], label="process RSS")
        if any(p[2] for p in s["samples"]):
            ax.plot(t, [p[2] / MiB for p in s["samples"]], label="GPU memory used")
        ax.axhline(s["target_rss"] / MiB, color="r", ls="--", label="target: budget × 1.15 + base")
        ax.axhline((s["budget_bytes"] + s["base_rss"]) / MiB, color="g", ls=":", label="budget + base")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB")
        ax.set_title(f"Memory soak: {s['resolution']}, {s['requests']} requests, {s['threads']} threads")
        ax.legend(loc="lower right")
        written.append(_save(fig, out / "soak_rss.png"))

    if r.get("hit_ratio"):
        try:
            from .traces import plot_hit_ratios

            p = out / "hit_ratio.png"
            plot_hit_ratios(r["hit_ratio"], p)
            written.append(p)
        except (ImportError, TypeError, KeyError):
            pass
    return written
