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
    "GoalLine",
    "check_goals",
    "check_kernel",
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


def check_goals(bench: dict[str, Any] | None, kernel: dict[str, Any] | None = None) -> list[GoalLine]:
    """PASS/FAIL/SKIP/INFO lines for ``bench`` (a ``bench.json`` dict) and ``kernel`` (a kernel-step result).

    Either may be ``None``. The kernel goal is checked on ``kernel`` and on ``bench``'s
    ``gpu_detail.base64_kernel`` where present; the workload goals only when ``bench`` is given.
    """
    lines: list[GoalLine] = []
    if kernel is not None:
        lines.append(check_kernel(kernel, "kernel step"))
    if bench is None:
        if kernel is None:
            lines.append(GoalLine("SKIP", "all goals", "no results given"))
        return lines
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
    return lines


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
