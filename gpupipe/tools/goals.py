"""The GPU path's performance goals, checked against ``gpupipe bench`` results: PASS/FAIL lines.

Goals (every ratio compares figures from the same run, on the same host):

- ``base64 kernel``: the kernel's bandwidth (bytes read + written) is at least 70 % of a
  device-to-device copy's (:func:`gpupipe.gpu.bench.base64_kernel_bandwidth`), and its output
  was checked against pybase64.
- ``4k jpeg transcode`` (4K JPEG → 4K JPEG) and ``4k jpeg resize-1080p`` (4K JPEG → JPEG
  fitting 1920×1080): the GPU backend's frames/s is at least 3× the CPU path's (every core of
  the host), at no more than 1/10 of the CPU path's CPU-seconds per frame (process user + sys
  time over the timed runs, all threads).

Reported without a goal (``INFO`` lines): 4K PNG sources (DALI decodes PNG on CPU threads
inside its ``mixed`` operator), and passthrough with ``passthrough_device`` ``cpu`` and ``gpu``.

Video goals, on a run with the video section (``gpupipe bench --video``;
:mod:`gpupipe.tools.video_bench`), against today's path of extracting every frame to PNG with
``ffmpeg`` and inlining the files (``extract-png+passthrough``), measured in the same run:

- ``video 4k <codec> CPU path`` (H.264 and HEVC): the video source on the CPU backend, JPEG
  fitted to 1920×1080, takes at least :data:`VIDEO_CPU_SAVING_MIN` (5) times fewer CPU-seconds per
  frame (the line also gives the figure at the clip's own size);
- ``video 4k h264 GPU path``, on an H100 or H200 (:data:`VIDEO_GPU_DEVICES`; another GPU gets an
  ``INFO`` line): 4K H.264 to fitted JPEG URIs in order at >= :data:`VIDEO_GPU_FPS_MIN` (300)
  frames/s, at <= :data:`VIDEO_GPU_CPU_MS_MAX` (5) CPU-ms per frame, and >=
  :data:`VIDEO_GPU_VS_EXTRACT_MIN` (20) times the extraction path's frames/s;
- ``video in-order contract``: on every clip, the CPU video source at the clip's size
  (``video-cpu-source``: one pipeline ``get`` per frame, the timeline declared) costs at most
  :data:`VIDEO_INORDER_MAX` (1.5) times the CPU-seconds per frame of a plain PyAV loop that
  decodes, JPEG-encodes and base64-encodes the same frames in order (``pyav-loop``), with no seek.

Run ``python -m gpupipe.tools.goals [BENCH_JSON] [--kernel KERNEL_JSON]``. It prints one line per
goal, ``PASS: <goal>: <figures>``, ``FAIL: ...``, ``SKIP: ...`` (no GPU, or no results given for
it) or ``INFO: ...``, then a summary line. Exit status: 0 when every goal was checked and
passed; 1 when a goal failed (or was not measured on a host with a usable GPU, or an input file
cannot be read); 3 when none failed but some were skipped (e.g. no GPU: the CPU-only smoke);
2 is argparse's usage error. This module needs no GPU and imports no device library.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_COST_MAX",
    "EXIT_FAIL",
    "EXIT_PASS",
    "EXIT_SKIP",
    "GOAL_CELLS",
    "GOAL_MATRIX",
    "INFO_CELLS",
    "KERNEL_MIN_RATIO",
    "PASSTHROUGH_CELLS",
    "SPEEDUP_MIN",
    "VIDEO_CPU_SAVING_MIN",
    "VIDEO_GPU_CPU_MS_MAX",
    "VIDEO_GPU_DEVICES",
    "VIDEO_GPU_FPS_MIN",
    "VIDEO_GPU_VS_EXTRACT_MIN",
    "VIDEO_INORDER_MAX",
    "GoalLine",
    "check_goals",
    "check_kernel",
    "check_video_goals",
    "exit_status",
    "main",
]

KERNEL_MIN_RATIO = 0.70
"""Least base64-kernel bandwidth as a fraction of a device-to-device copy's."""
SPEEDUP_MIN = 3.0
"""Least GPU frames/s over the CPU path's (all cores) for the goal workloads."""
CPU_COST_MAX = 0.10
"""Most GPU CPU-seconds per frame as a fraction of the CPU path's for the goal workloads."""

Cell = tuple[str, str, str]  # (resolution, source kind, workload) as in bench.json's rows
GOAL_CELLS: tuple[Cell, ...] = (("4k", "jpeg", "transcode"), ("4k", "jpeg", "resize-1080p"))
"""Rows held to the speed and CPU-cost goals."""
INFO_CELLS: tuple[Cell, ...] = (("4k", "png", "transcode"), ("4k", "png", "resize-1080p"))
"""Rows reported without a goal: PNG is decoded on CPU threads by DALI."""
PASSTHROUGH_CELLS: tuple[Cell, ...] = (("4k", "jpeg", "passthrough"), ("4k", "png", "passthrough"))
"""Passthrough rows, reported with both ``passthrough_device`` values where the setting exists."""
GOAL_MATRIX: tuple[Cell, ...] = GOAL_CELLS + INFO_CELLS + PASSTHROUGH_CELLS
"""The rows ``gpupipe bench --goals`` measures, goal rows first."""

VIDEO_CPU_SAVING_MIN = 5.0
"""Least ratio of the extraction path's CPU-s per 4K frame to the CPU video source's (fitted JPEG)."""
VIDEO_GPU_FPS_MIN = 300.0
"""Least frames/s of 4K H.264 to fitted JPEG URIs on the GPU, in order."""
VIDEO_GPU_CPU_MS_MAX = 5.0
"""Most CPU-milliseconds per frame of that GPU path."""
VIDEO_GPU_VS_EXTRACT_MIN = 20.0
"""Least ratio of that GPU path's frames/s to the extraction path's on the same machine."""
VIDEO_INORDER_MAX = 1.5
"""Most ratio of the CPU video source's CPU-s per frame, in order, to a plain PyAV loop's on the same clip."""
VIDEO_GPU_DEVICES = ("H100", "H200")
"""The devices the GPU video goal is set for (matched in the device's name)."""
_EXTRACT = "extract-png+passthrough"

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 3


@dataclass(frozen=True)
class GoalLine:
    """One checked (or skipped, or informational) goal: ``status`` is PASS, FAIL, SKIP or INFO."""

    status: str
    goal: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status}: {self.goal}: {self.detail}"


def _name(cell: Cell) -> str:
    return " ".join(cell)


def _row(bench: dict[str, Any], cell: Cell) -> dict[str, Any] | None:
    for w in bench.get("workloads", []):
        if (w.get("resolution"), w.get("source"), w.get("workload")) == cell:
            return w
    return None


def _ms(seconds: Any) -> str:
    return f"{seconds * 1e3:.1f}" if isinstance(seconds, (int, float)) else "?"


def _cpu_figures(w: dict[str, Any], cores: Any) -> str:
    return f"CPU path ({cores} cores) {w['cpu_fps']:.1f} f/s at {_ms(w.get('cpu_cpu_s_per_frame'))} CPU-ms/frame"


def _gpu_skip_reason(bench: dict[str, Any]) -> str | None:
    """Why the results hold no GPU figures at all, or ``None`` when the GPU backend ran."""
    gpu = bench.get("gpu") or {}
    if not gpu.get("usable"):
        return f"no GPU ({gpu.get('reason', 'not recorded')})"
    if "gpu" not in bench.get("backends", ["gpu"]):
        return "GPU backend not run (benchmark run with --backend cpu)"
    return None


def check_kernel(k: dict[str, Any] | None, source: str = "kernel step") -> GoalLine:
    """The base64 kernel goal from :func:`~gpupipe.gpu.bench.base64_kernel_bandwidth`'s result ``k``."""
    goal = f"base64 kernel ({source})"
    if not k:
        return GoalLine("SKIP", goal, "not measured (no kernel results given)")
    try:
        ratio, kg, cg = float(k["ratio"]), float(k["kernel_gbps"]), float(k["copy_gbps"])
    except (KeyError, TypeError, ValueError) as e:
        return GoalLine("FAIL", goal, f"kernel results lack {e}")
    detail = (
        f"{kg:.0f} GB/s = {ratio:.0%} of device copy {cg:.0f} GB/s over {float(k.get('nbytes', 0)) / 1e6:.0f} MB "
        f"(goal >= {KERNEL_MIN_RATIO:.0%})"
    )
    if not k.get("verified"):
        return GoalLine("FAIL", goal, detail + "; output NOT checked against pybase64")
    return GoalLine("PASS" if ratio >= KERNEL_MIN_RATIO else "FAIL", goal, detail)


def _workload_goal(bench: dict[str, Any], cell: Cell, cores: Any, skip: str | None) -> GoalLine:
    goal = _name(cell) + f" (GPU >= {SPEEDUP_MIN:g}x CPU path f/s at <= {CPU_COST_MAX:g}x its CPU-s/frame)"
    w = _row(bench, cell)
    if skip is not None:
        tail = f"; {_cpu_figures(w, cores)}" if w and "cpu_fps" in w else ""
        return GoalLine("SKIP", goal, skip + tail)
    if w is None:
        return GoalLine("FAIL", goal, "not measured: no such row in the results (run stopped early or left out of the matrix)")
    if "gpu_fps" not in w or "cpu_fps" not in w:
        return GoalLine("FAIL", goal, "not measured: the row lacks the GPU or CPU path figures")
    g_cost, c_cost = w.get("gpu_cpu_s_per_frame"), w.get("cpu_cpu_s_per_frame")
    if not isinstance(g_cost, (int, float)) or not isinstance(c_cost, (int, float)) or c_cost <= 0:
        return GoalLine("FAIL", goal, "not measured: CPU-seconds per frame missing from the row")
    speed = w["gpu_fps"] / w["cpu_fps"]
    cost = g_cost / c_cost
    fast, cheap = speed >= SPEEDUP_MIN, cost <= CPU_COST_MAX
    detail = (
        f"GPU {w['gpu_fps']:.1f} f/s vs {_cpu_figures(w, cores)}: {speed:.2f}x ({'ok' if fast else 'TOO SLOW'}); "
        f"GPU {_ms(g_cost)} CPU-ms/frame = {cost:.3f}x the CPU path's ({'ok' if cheap else 'TOO MUCH CPU'})"
    )
    return GoalLine("PASS" if fast and cheap else "FAIL", goal, detail)


def _info(bench: dict[str, Any], cell: Cell, cores: Any, skip: str | None) -> GoalLine:
    w = _row(bench, cell)
    goal = _name(cell) + " (no goal)"
    if w is None or "cpu_fps" not in w:
        return GoalLine("INFO", goal, "not measured")
    parts = [_cpu_figures(w, cores)]
    if skip is None and "gpu_fps" in w:
        extra = " (DALI decodes PNG on CPU threads)" if cell[1].startswith("png") and cell[2] != "passthrough" else ""
        parts.insert(0, f"GPU {w['gpu_fps']:.1f} f/s at {_ms(w.get('gpu_cpu_s_per_frame'))} CPU-ms/frame{extra}")
        if w.get("gpu_cpu_s_vs_cpu") is not None:
            parts.append(f"ratios {w['gpu_vs_cpu']:.2f}x f/s, {w['gpu_cpu_s_vs_cpu']:.3f}x CPU-s/frame")
    elif skip is not None:
        parts.append(skip)
    pt = w.get("gpu_passthrough")
    if skip is None and pt:
        for dev in ("cpu", "gpu"):
            m = pt.get(dev)
            if m:
                parts.append(f"passthrough_device={dev}: {m['fps']:.1f} f/s at {_ms(m['cpu_s_per_frame'])} CPU-ms/frame")
        if pt.get("note"):
            parts.append(pt["note"])
    return GoalLine("INFO", goal, "; ".join(parts))


def _video_row(video: dict[str, Any], res: str, codec: str) -> dict[str, Any] | None:
    return next((r for r in video.get("rows", []) if (r.get("resolution"), r.get("codec")) == (res, codec)), None)


def _path_figures(name: str, m: dict[str, Any]) -> str:
    return f"{name} {m['fps']:.1f} f/s at {_ms(m.get('cpu_s_per_frame'))} CPU-ms/frame"


def _video_cpu_goal(video: dict[str, Any], codec: str) -> GoalLine:
    goal = f"video 4k {codec} CPU path (fitted JPEG: >= {VIDEO_CPU_SAVING_MIN:g}x fewer CPU-s/frame than extract-to-PNG + passthrough)"
    row = _video_row(video, "4k", codec)
    if row is None:
        missing = [n for n in video.get("notes", []) if n.startswith(f"{codec}:")]
        if missing:
            return GoalLine("SKIP", goal, missing[0])
        return GoalLine("FAIL", goal, "not measured: no 4K row for this codec (run stopped early?)")
    paths = row.get("paths", {})
    base, m = paths.get(_EXTRACT), paths.get("video-cpu-fitted")
    if not base or not m or not m.get("cpu_s_per_frame") or not base.get("cpu_s_per_frame"):
        return GoalLine("FAIL", goal, "not measured: the row lacks the extraction path or the CPU video path")
    ratio = base["cpu_s_per_frame"] / m["cpu_s_per_frame"]
    detail = f"{_path_figures('video source', m)} vs {_path_figures('extract-to-PNG + passthrough', base)}: {ratio:.1f}x fewer"
    z6 = paths.get("extract-png-default+passthrough")
    if z6 and z6.get("cpu_s_per_frame"):
        detail += (
            f"; against PNG at ffmpeg's default compression ({_ms(z6['cpu_s_per_frame'])} CPU-ms/frame, not the renderer's "
            f"setting) {z6['cpu_s_per_frame'] / m['cpu_s_per_frame']:.1f}x fewer"
        )
    src = paths.get("video-cpu-source")
    if src and src.get("cpu_s_per_frame"):
        detail += f"; at the clip's size {_ms(src['cpu_s_per_frame'])} CPU-ms/frame, {base['cpu_s_per_frame'] / src['cpu_s_per_frame']:.1f}x fewer"
    return GoalLine("PASS" if ratio >= VIDEO_CPU_SAVING_MIN else "FAIL", goal, detail)


def _video_gpu_goal(video: dict[str, Any]) -> GoalLine:
    goal = (
        f"video 4k h264 GPU path ({'/'.join(VIDEO_GPU_DEVICES)}: fitted JPEG >= {VIDEO_GPU_FPS_MIN:g} f/s in order, "
        f"<= {VIDEO_GPU_CPU_MS_MAX:g} CPU-ms/frame, >= {VIDEO_GPU_VS_EXTRACT_MIN:g}x extract-to-PNG f/s)"
    )
    gpu = video.get("gpu") or {}
    row = _video_row(video, "4k", "h264")
    paths = (row or {}).get("paths", {})
    if not gpu.get("ran"):
        cpu = paths.get("video-cpu-fitted")
        tail = f"; CPU path {_path_figures('video source', cpu)}" if cpu else ""
        return GoalLine("SKIP", goal, f"{gpu.get('reason', 'no GPU')}{tail}")
    base, m = paths.get(_EXTRACT), paths.get("video-gpu-fitted")
    if not base or not m or not m.get("fps") or not base.get("fps"):
        return GoalLine("FAIL", goal, "not measured: no 4K H.264 row with the GPU and extraction paths (run stopped early?)")
    ms = m["cpu_s_per_frame"] * 1e3
    vs = m["fps"] / base["fps"]
    fast, cheap, ahead = m["fps"] >= VIDEO_GPU_FPS_MIN, ms <= VIDEO_GPU_CPU_MS_MAX, vs >= VIDEO_GPU_VS_EXTRACT_MIN
    detail = (
        f"{m['fps']:.1f} f/s ({'ok' if fast else 'TOO SLOW'}) at {ms:.2f} CPU-ms/frame ({'ok' if cheap else 'TOO MUCH CPU'}), "
        f"{vs:.1f}x {_path_figures('extract-to-PNG + passthrough', base)} ({'ok' if ahead else 'NOT ENOUGH'}); "
        f"decoder {m.get('decoder', '?')}"
    )
    device = str(gpu.get("device") or "")
    if not any(d in device for d in VIDEO_GPU_DEVICES):
        return GoalLine(
            "INFO", goal, f"the goal is set for {'/'.join(VIDEO_GPU_DEVICES)}; this GPU is {device or 'unnamed'}: {detail}"
        )
    return GoalLine("PASS" if fast and cheap and ahead else "FAIL", goal, detail)


def _video_inorder_goal(video: dict[str, Any]) -> GoalLine:
    goal = (
        f"video in-order contract (every clip: video source at the clip's size <= {VIDEO_INORDER_MAX:g}x "
        "the CPU-s/frame of a plain PyAV decode + JPEG + base64 loop, no seek)"
    )
    parts, ok, measured = [], True, 0
    for row in video.get("rows", []):
        paths = row.get("paths", {})
        plain, src = paths.get("pyav-loop"), paths.get("video-cpu-source")
        name = f"{row.get('resolution')} {row.get('codec')}"
        if not plain or not src or not plain.get("cpu_s_per_frame") or not src.get("cpu_s_per_frame"):
            parts.append(f"{name}: not measured")
            ok = False
            continue
        measured += 1
        ratio = src["cpu_s_per_frame"] / plain["cpu_s_per_frame"]
        seeks = src.get("seeks", 0)
        good = ratio <= VIDEO_INORDER_MAX and not seeks
        ok &= good
        parts.append(
            f"{name}: {ratio:.2f}x ({_ms(src['cpu_s_per_frame'])} vs {_ms(plain['cpu_s_per_frame'])} CPU-ms/frame"
            + (f", {seeks:g} seeks" if seeks else "")
            + ("" if good else ", OVER")
            + ")"
        )
    if not measured:
        return GoalLine("FAIL", goal, "not measured: no clip row with the plain PyAV loop and the CPU video source")
    return GoalLine("PASS" if ok else "FAIL", goal, "; ".join(parts))


def check_video_goals(bench: dict[str, Any]) -> list[GoalLine]:
    """The video goal lines (see the module docstring) for a ``bench.json`` dict with a ``video`` section; none without one."""
    video = bench.get("video")
    if not isinstance(video, dict):
        return []
    lines = [_video_cpu_goal(video, codec) for codec in ("h264", "hevc")]
    lines.append(_video_gpu_goal(video))
    lines.append(_video_inorder_goal(video))
    if video.get("stopped_early"):
        lines.append(GoalLine("INFO", "video section", f"stopped early: {video['stopped_early']}"))
    return lines


def check_goals(bench: dict[str, Any] | None, kernel: dict[str, Any] | None = None) -> list[GoalLine]:
    """PASS/FAIL/SKIP/INFO lines for ``bench`` (a ``bench.json`` dict) and ``kernel`` (a kernel-step result).

    Either may be ``None``. The kernel goal is checked on ``kernel`` and on ``bench``'s
    ``gpu_detail.base64_kernel`` where present; the workload goals only when ``bench`` is given
    and ran the image matrix (its ``sections``; a ``--video`` run has only the video section),
    the video goals (:func:`check_video_goals`) when it has a video section.
    """
    lines: list[GoalLine] = []
    if kernel is not None:
        lines.append(check_kernel(kernel, "kernel step"))
    if bench is None:
        if kernel is None:
            lines.append(GoalLine("SKIP", "all goals", "no results given"))
        return lines
    if "image" not in bench.get("sections", ["image"]):
        video = check_video_goals(bench)
        return lines + (video or [GoalLine("FAIL", "video goals", "not measured: the results have no video section")])
    skip = _gpu_skip_reason(bench)
    if skip is not None:  # the reason once; the lines below say only "no GPU"
        lines.append(GoalLine("INFO", "GPU", skip))
        skip = skip.split(" (", 1)[0]
    cores = (bench.get("machine") or {}).get("cores", "?")
    bk = (bench.get("gpu_detail") or {}).get("base64_kernel")
    if bk is not None:
        lines.append(check_kernel(bk, "in the benchmark run"))
    elif kernel is None:
        lines.append(GoalLine("SKIP", "base64 kernel", skip or "not measured in this run (see the kernel step)"))
    for cell in GOAL_CELLS:
        lines.append(_workload_goal(bench, cell, cores, skip))
    for cell in INFO_CELLS + PASSTHROUGH_CELLS:
        lines.append(_info(bench, cell, cores, skip))
    return lines + check_video_goals(bench)


def exit_status(lines: Sequence[GoalLine]) -> int:
    """:data:`EXIT_FAIL` if any line failed, else :data:`EXIT_SKIP` if any was skipped, else :data:`EXIT_PASS`."""
    statuses = {line.status for line in lines}
    if "FAIL" in statuses:
        return EXIT_FAIL
    if "SKIP" in statuses or "PASS" not in statuses:
        return EXIT_SKIP
    return EXIT_PASS


def summary(lines: Sequence[GoalLine]) -> str:
    """``goals: N passed, N failed, N skipped -> PASS|FAIL|SKIPPED``."""
    n = {s: sum(1 for line in lines if line.status == s) for s in ("PASS", "FAIL", "SKIP")}
    verdict = {EXIT_PASS: "PASS", EXIT_FAIL: "FAIL", EXIT_SKIP: "SKIPPED"}[exit_status(lines)]
    return f"goals: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped -> {verdict}"


def _load(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return json.loads(Path(path).read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the goal lines for the given result files; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m gpupipe.tools.goals", description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_json", nargs="?", type=Path, help="bench.json of `gpupipe bench --goals` (or any bench run)")
    ap.add_argument("--kernel", type=Path, help="JSON of base64_kernel_bandwidth (the session's kernel step)")
    args = ap.parse_args(argv)
    try:
        bench, kernel = _load(args.bench_json), _load(args.kernel)
    except (OSError, ValueError) as e:
        print(f"FAIL: inputs: cannot read results: {e}")
        return EXIT_FAIL
    lines = check_goals(bench, kernel)
    for line in lines:
        print(line)
    print(summary(lines))
    return exit_status(lines)


if __name__ == "__main__":
    sys.exit(main())
