"""``python -m gpupipe.tools.session_goals OUT``: one PASS/FAIL/NOT RUN line per GPU goal of issue 18,
then the goal lines of the issue 15 and 17 GPU rows, from what ``scripts/gpu_session.sh`` left in ``OUT``.

Issue 18's goals, each read from its step's files:

* 4K JPEG transcode >= 500 f/s on an H100/H200 (``bench-gpu/bench.json``, the GPU row);
* 4K JPEG resize to 1080p at <= 0.1x the CPU path's CPU-s per frame (same file);
* the hardware JPEG decoder measured at ``hw_decoder_load`` 0, 0.65, 1 (``hwdec.json``: every
  setting encoded every frame, a choice made);
* 4K PNG transcode on a GPU host >= 2x the CPU path's f/s at <= 0.5x its CPU-s per frame
  (``bench-gpu/bench.json``, the GPU row's route for PNG sources);
* 4K RGBA PNG encode 3x faster at <= 1.3x the bytes, identical pixels (the ``png`` step's own
  goal lines, ``png-goals.txt``, copied as they are);
* base64 kernel >= 70 % of a device copy (``base64-kernel.json``);
* serving: ``/healthz`` only after warm-up, so no start-up tail: the GPU backend's p99 under
  ``serve_load`` at most the CPU backend's in the same run (``serve-load-gpu.json``,
  ``serve-load-cpu.json``), and device memory in ``gpupipe info`` (``info.json``);
* the whole call within 8 minutes (``--elapsed``).

Then the lines of ``goals.txt``, ``kernel-goal.txt`` and ``video-goals.txt`` (issues 15 and 17),
as the goal checker printed them. A goal whose files are missing is ``NOT RUN`` (so is any goal
on a machine that is not an H100/H200, for the speed goals set for those). Exit status: 0 every
issue-18 goal passed, 1 one failed, 3 none failed but some were not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .goals import EXIT_FAIL, EXIT_PASS, EXIT_SKIP, GoalLine

__all__ = ["SESSION_SECONDS", "check_session", "main"]

SESSION_SECONDS = 480
"""Issue 18: every step in one device call of at most 8 minutes."""
JPEG_FPS_GOAL = 500.0
RESIZE_CPU_RATIO = 0.1
PNG_FPS_RATIO, PNG_CPU_RATIO = 2.0, 0.5
KERNEL_RATIO = 0.70
DEVICES = ("H100", "H200")


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _row(bench: dict[str, Any] | None, res: str, kind: str, wl: str) -> dict[str, Any] | None:
    for w in (bench or {}).get("workloads", []):
        if (w.get("resolution"), w.get("source"), w.get("workload")) == (res, kind, wl):
            return w
    return None


def _device(bench: dict[str, Any] | None) -> str:
    g = (bench or {}).get("machine", {})
    return str(g.get("gpu") or (bench or {}).get("gpu", {}).get("reason") or "")


def _not_run(goal: str, why: str) -> GoalLine:
    return GoalLine("NOT RUN", goal, why)


def _jpeg(bench: dict[str, Any] | None) -> list[GoalLine]:
    fps_goal = f"#18 4k jpeg transcode >= {JPEG_FPS_GOAL:g} f/s (H100/H200)"
    cpu_goal = f"#18 4k jpeg resize-1080p <= {RESIZE_CPU_RATIO:g}x the CPU path's CPU-s/frame"
    out = []
    w = _row(bench, "4k", "jpeg", "transcode")
    if w is None or "gpu_fps" not in w:
        out.append(_not_run(fps_goal, "no GPU row in bench-gpu/bench.json"))
    elif not any(d in _device(bench) for d in DEVICES):
        out.append(_not_run(fps_goal, f"not an H100/H200 ({_device(bench) or 'device unknown'}): GPU {w['gpu_fps']:.1f} f/s"))
    else:
        ok = w["gpu_fps"] >= JPEG_FPS_GOAL
        out.append(GoalLine("PASS" if ok else "FAIL", fps_goal, f"GPU {w['gpu_fps']:.1f} f/s"))
    r = _row(bench, "4k", "jpeg", "resize-1080p")
    if r is None or not r.get("gpu_cpu_s_per_frame") or not r.get("cpu_cpu_s_per_frame"):
        out.append(_not_run(cpu_goal, "no GPU and CPU rows in bench-gpu/bench.json"))
    else:
        ratio = r["gpu_cpu_s_per_frame"] / r["cpu_cpu_s_per_frame"]
        out.append(
            GoalLine(
                "PASS" if ratio <= RESIZE_CPU_RATIO else "FAIL",
                cpu_goal,
                f"GPU {r['gpu_cpu_s_per_frame'] * 1e3:.1f} CPU-ms/frame = {ratio:.3f}x the CPU path's {r['cpu_cpu_s_per_frame'] * 1e3:.1f}",
            )
        )
    return out


def _png(bench: dict[str, Any] | None) -> GoalLine:
    goal = f"#18 4k png transcode on a GPU host >= {PNG_FPS_RATIO:g}x the CPU path's f/s at <= {PNG_CPU_RATIO:g}x its CPU-s/frame"
    w = _row(bench, "4k", "png", "transcode")
    if w is None or "gpu_fps" not in w or not w.get("cpu_fps") or not w.get("cpu_cpu_s_per_frame"):
        return _not_run(goal, "no GPU and CPU rows in bench-gpu/bench.json")
    speed = w["gpu_fps"] / w["cpu_fps"]
    cost = (w.get("gpu_cpu_s_per_frame") or float("inf")) / w["cpu_cpu_s_per_frame"]
    ok = speed >= PNG_FPS_RATIO and cost <= PNG_CPU_RATIO
    return GoalLine("PASS" if ok else "FAIL", goal, f"{speed:.2f}x f/s, {cost:.3f}x CPU-s/frame")


def _hwdec(d: dict[str, Any] | None) -> GoalLine:
    goal = "#18 hardware JPEG decoder measured at hw_decoder_load 0, 0.65, 1 (4k, 1080p)"
    if not d or not d.get("gpu"):
        return _not_run(goal, "no hwdec.json from a GPU")
    loads = {r["hw_decoder_load"] for r in d["rows"]}
    ok = {0.0, 0.65, 1.0} <= loads and all(r["all_encoded"] for r in d["rows"])
    return GoalLine(
        "PASS" if ok else "FAIL",
        goal,
        f"chosen: {d['choice']['setting']} (worst resolution at {d['choice']['worst_share']:.0%} of its best)",
    )


def _kernel(k: dict[str, Any] | None) -> GoalLine:
    goal = f"#18 base64 kernel >= {KERNEL_RATIO:.0%} of a device copy"
    if not k or "ratio" not in k:
        return _not_run(goal, "no base64-kernel.json")
    return GoalLine(
        "PASS" if k["ratio"] >= KERNEL_RATIO else "FAIL",
        goal,
        f"{k['ratio']:.0%} ({k['kernel_gbps']:.0f} / {k['copy_gbps']:.0f} GB/s)",
    )


def _serve(gpu: dict[str, Any] | None, cpu: dict[str, Any] | None, info: dict[str, Any] | None) -> list[GoalLine]:
    tail_goal = "#18 serve on the GPU: no start-up tail (GPU backend p99 <= CPU backend p99, serve_load)"
    mem_goal = "#18 device memory in gpupipe info"
    out = []
    if not gpu or not cpu or "p99_ms" not in gpu or "p99_ms" not in cpu:
        out.append(_not_run(tail_goal, "no serve-load-gpu.json and serve-load-cpu.json"))
    else:
        ok = gpu["p99_ms"] <= cpu["p99_ms"] and not gpu.get("errors")
        out.append(
            GoalLine(
                "PASS" if ok else "FAIL",
                tail_goal,
                f"GPU p99 {gpu['p99_ms']} ms (p50 {gpu.get('p50_ms')}), CPU p99 {cpu['p99_ms']} ms, GPU errors {gpu.get('errors', '?')}",
            )
        )
    detail = ((info or {}).get("backends", {}).get("gpu", {}) or {}).get("detail") or {}
    mem = detail.get("device_memory") or {}
    if not info:
        out.append(_not_run(mem_goal, "no info.json"))
    elif not detail:
        out.append(_not_run(mem_goal, "no usable GPU in info.json"))
    else:
        ok = "device_total_bytes" in mem and "staging_pool_used_bytes" in mem and "pinned_staging_bytes" in mem
        out.append(GoalLine("PASS" if ok else "FAIL", mem_goal, ", ".join(f"{k} {v}" for k, v in sorted(mem.items())) or "none"))
    return out


def _copied(path: Path, goal: str) -> list[GoalLine]:
    """The goal lines of another checker's output, as printed (``STATUS: goal: detail``)."""
    try:
        text = path.read_text()
    except OSError:
        return [_not_run(goal, f"no {path.name}")]
    lines = []
    for ln in text.splitlines():
        status, sep, rest = ln.partition(": ")
        if sep and status in ("PASS", "FAIL", "SKIP", "INFO", "NOT RUN"):
            name, _, detail = rest.partition(": ")
            lines.append(GoalLine(status, name, detail))
    return lines or [_not_run(goal, f"no goal lines in {path.name}")]


def check_session(out: Path, elapsed_s: float | None = None) -> tuple[list[GoalLine], list[GoalLine]]:
    """(issue 18's goal lines, the issue 15/17 lines copied from the goal checker's files)."""
    bench = _load(out / "bench-gpu" / "bench.json")
    lines = _jpeg(bench)
    lines.append(_hwdec(_load(out / "hwdec.json")))
    lines.append(_png(bench))
    lines += _copied(
        out / "png-goals.txt", "#18 4K PNG transcode on a GPU host >= 2x the CPU path at <= 0.5x its CPU-s (png step)"
    )
    lines.append(_kernel(_load(out / "base64-kernel.json")))
    lines += _serve(_load(out / "serve-load-gpu.json"), _load(out / "serve-load-cpu.json"), _load(out / "info.json"))
    call = f"#18 one device call <= {SESSION_SECONDS} s"
    if elapsed_s is None:
        lines.append(_not_run(call, "elapsed time not given"))
    else:
        lines.append(GoalLine("PASS" if elapsed_s <= SESSION_SECONDS else "FAIL", call, f"{elapsed_s:.0f} s"))
    earlier = _copied(out / "goals.txt", "#15 GPU goals (bench-gpu)") + _copied(out / "video-goals.txt", "#17 video goals")
    return lines, earlier


def main(argv: list[str] | None = None) -> int:
    """Print the lines; see the module docstring for the exit status."""
    ap = argparse.ArgumentParser(prog="python -m gpupipe.tools.session_goals", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the session's results folder ($OUT)")
    ap.add_argument("--elapsed", type=float, help="seconds the session's call took")
    a = ap.parse_args(argv)
    lines, earlier = check_session(a.out, a.elapsed)
    print("== issue 18 goals")
    for g in lines:
        print(g)
    print("== issue 15/17 GPU rows")
    for g in earlier:
        print(g)
    st = {g.status for g in lines}
    return EXIT_FAIL if "FAIL" in st else EXIT_SKIP if st - {"PASS", "INFO"} else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
