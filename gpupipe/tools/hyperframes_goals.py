"""The end-to-end benchmark's goals, checked on ``hyperframes_bench.json``, and its markdown report.

Goals (every ratio compares renders of the same run, on the same host):

- ``output parity`` (one line per quality and cache state): the video rendered with gpupipe has the same
  frame count and size as the one rendered with ffmpeg, and every frame's RGB PSNR against it is at least
  ``psnr_min_db`` (:data:`PSNR_MIN_DB` unless ``--psnr-min`` says otherwise); in a cold render the front
  extracted the clips itself (its ``GPUPIPE_FFMPEG_LOG`` lines), none falling back to ffmpeg. The renderer's own
  repeatability (its cold against its warm render, same extracted frames) is an ``INFO`` line next to it,
  and so is the fitted render's PSNR (Chromium scales fitted frames from another size: not a parity check).
- ``extraction speed``, on an H100 or H200 (:data:`EXTRACT_GPU_DEVICES`): the extraction stage (the CLI's
  ``video_extract`` stage of a cold render) is at least :data:`EXTRACT_SPEEDUP_MIN` (20) times faster with
  gpupipe than with ffmpeg. ``SKIP`` without such a device (the CPU figure is an ``INFO`` line).
- ``fitted frames``, for draft renders of a 3840x2160 composition that shows its clips at 1920x1080 with
  ``GPUPIPE_EXTRACT_FIT=1920x1080``: the warm fitted render takes at least :data:`FIT_SAVING_MIN` (20 %)
  less wall time and less peak RSS of the process tree than the warm render with ffmpeg's frames (warm:
  both read their frames from the cache, so the line measures what fitting saves in the render itself).
  ``SKIP`` for other compositions (the figures as ``INFO``).
"""

from __future__ import annotations

from typing import Any

from .goals import EXIT_FAIL, EXIT_PASS, EXIT_SKIP, GoalLine

__all__ = [
    "EXTRACT_GPU_DEVICES",
    "EXTRACT_PSNR_MIN_DB",
    "EXTRACT_SPEEDUP_MIN",
    "FIT_SAVING_MIN",
    "PSNR_MIN_DB",
    "check_goals",
    "exit_status",
    "markdown_report",
]

PSNR_MIN_DB = 35.0
"""Least per-frame RGB PSNR of a render with gpupipe against the same render with ffmpeg.

Below the extraction's own bar (:data:`EXTRACT_PSNR_MIN_DB`) because the render adds its own noise:
two renders of the same 320x240 draft composition from the same extracted files differed by up to
39.6 dB per frame (min; mean 66.5), and the front's frames (FFmpeg 8.1 in PyAV) against Debian's
ffmpeg 5.1's (45 dB apart: the two swscale versions) gave renders 38.3 dB apart (min; mean 39.5)
after Chromium's scaling and x264's draft encode (2-core machine, 2026-12-04)."""
EXTRACT_PSNR_MIN_DB = 40.0
"""Least per-frame RGB PSNR of a frame file the front extracted against the same file extracted by
the renderer's ffmpeg (issue 19's parity bar; identical pixels when both run the same FFmpeg)."""
EXTRACT_SPEEDUP_MIN = 20.0
"""Least ratio of ffmpeg's extraction stage time to gpupipe's on an H100/H200."""
EXTRACT_GPU_DEVICES = ("H100", "H200")
FIT_SAVING_MIN = 0.20
"""Least fraction of wall time and peak RSS that fitted frames save in a 4K draft render."""
_FIT_COMPOSITION, _FIT_SIZE = [3840, 2160], [1920, 1080]


def _runs(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["mode"], r["quality"], r["cache"]): r for r in results.get("runs", []) if "error" not in r}


def _parity(results: dict[str, Any]) -> list[GoalLine]:
    least = float(results.get("psnr_min_db", PSNR_MIN_DB))
    lines = []
    for c in results.get("comparisons", []):
        detail = (
            f"{c['b']} against {c['a']}: {c['frames_b']} vs {c['frames_a']} frames, "
            f"{c['size_b'][0]}x{c['size_b'][1]} vs {c['size_a'][0]}x{c['size_a'][1]}, PSNR min {c['min_db']:.1f} / mean {c['mean_db']:.1f} dB"
        )
        same = c["frames_a"] == c["frames_b"] and list(c["size_a"]) == list(c["size_b"])
        if c["mode"] == "gpupipe":
            ok = same and c["min_db"] >= least
            front = _runs(results).get(("gpupipe", c["quality"], c["cache"]), {}).get("front") or {}
            detail += (
                f"; the front extracted {front.get('extractions', 0)} clip windows ({front.get('frames', 0)} frames), "
                f"{front.get('fell_back', 0)} fell back to ffmpeg"
            )
            if c["cache"] == "cold" and (not front.get("extractions") or front.get("fell_back")):
                ok = False
                detail += " (a cold render must be extracted by gpupipe, none falling back)"
            lines.append(
                GoalLine(
                    "PASS" if ok else "FAIL",
                    f"output parity {c['quality']} {c['cache']}",
                    detail + f" (goal: same shape, min >= {least:g} dB)",
                )
            )
        elif c["mode"] == "ffmpeg":
            lines.append(GoalLine("INFO", f"renderer repeatability {c['quality']}", detail))
        else:
            lines.append(GoalLine("INFO", f"fitted render against ffmpeg {c['quality']} {c['cache']}", detail))
    if not any(line.goal.startswith("output parity") for line in lines):
        why = "; ".join(results.get("skipped", [])) or "no render with gpupipe succeeded"
        lines.insert(0, GoalLine("SKIP", "output parity", why))
    return lines


def _extraction(results: dict[str, Any]) -> list[GoalLine]:
    runs = _runs(results)
    gpu = results.get("machine", {}).get("gpu", {})
    device = str(gpu.get("device") or "")
    on_goal_gpu = bool(gpu.get("usable")) and any(d in device for d in EXTRACT_GPU_DEVICES)
    lines = []
    for quality in ("draft", "standard"):
        ref, ours = runs.get(("ffmpeg", quality, "cold")), runs.get(("gpupipe", quality, "cold"))
        if not ref or not ours or not ref.get("extract_s") or not ours.get("extract_s"):
            continue
        ratio = ref["extract_s"] / ours["extract_s"]
        detail = f"cold {quality}: ffmpeg {ref['extract_s']:.2f} s, gpupipe {ours['extract_s']:.2f} s = {ratio:.2f}x (goal >= {EXTRACT_SPEEDUP_MIN:g}x on {'/'.join(EXTRACT_GPU_DEVICES)})"
        if on_goal_gpu:
            lines.append(
                GoalLine("PASS" if ratio >= EXTRACT_SPEEDUP_MIN else "FAIL", f"extraction speed {quality}", f"{device}: {detail}")
            )
        else:
            lines.append(GoalLine("INFO", f"extraction speed {quality} (CPU)", detail))
    if not on_goal_gpu:
        why = (
            f"no GPU ({gpu.get('reason', 'not recorded')})"
            if not gpu.get("usable")
            else f"device {device} is not an {'/'.join(EXTRACT_GPU_DEVICES)}"
        )
        lines.insert(0, GoalLine("SKIP", "extraction speed", why))
    elif not lines:
        lines.append(
            GoalLine("FAIL", "extraction speed", "no cold ffmpeg and gpupipe renders with an extraction stage to compare")
        )
    return lines


def _fitted(results: dict[str, Any]) -> list[GoalLine]:
    runs = _runs(results)
    comp, fit = results.get("composition", {}), results.get("fit")
    applies = list(comp.get("size", [])) == _FIT_COMPOSITION and list(comp.get("shown_at", [])) == _FIT_SIZE and fit == _FIT_SIZE
    lines = []
    for temp in ("warm", "cold"):
        ref, ours = runs.get(("ffmpeg", "draft", temp)), runs.get(("fitted", "draft", temp))
        if not ref or not ours:
            continue
        wall = 1 - ours["wall_s"] / ref["wall_s"]
        rss = 1 - ours["peak_rss"] / ref["peak_rss"]
        detail = (
            f"draft {temp}, ffmpeg -> fitted: wall {ref['wall_s']:.1f} -> {ours['wall_s']:.1f} s ({wall:+.0%} saved), "
            f"peak RSS {ref['peak_rss'] / 2**20:.0f} -> {ours['peak_rss'] / 2**20:.0f} MiB ({rss:+.0%} saved) "
            f"(goal >= {FIT_SAVING_MIN:.0%} each)"
        )
        if applies and temp == "warm":
            ok = wall >= FIT_SAVING_MIN and rss >= FIT_SAVING_MIN
            lines.append(GoalLine("PASS" if ok else "FAIL", "fitted frames", detail))
        else:
            lines.append(GoalLine("INFO", f"fitted frames {temp}", detail))
    if not applies:
        size = "x".join(map(str, comp.get("size", []))) or "?"
        lines.insert(
            0,
            GoalLine(
                "SKIP",
                "fitted frames",
                f"set for a 3840x2160 composition showing its clips at 1920x1080 fitted to 1920x1080; this one is {size}",
            ),
        )
    elif not any(line.status in ("PASS", "FAIL") for line in lines):
        why = "; ".join(results.get("skipped", [])) or "no warm draft renders with ffmpeg and fitted frames"
        lines.insert(0, GoalLine("SKIP", "fitted frames", why))
    return lines


def check_goals(results: dict[str, Any]) -> list[GoalLine]:
    """The goal lines (module docstring) for a benchmark's results."""
    return [*_parity(results), *_extraction(results), *_fitted(results)]


def exit_status(goals: list[dict[str, Any]]) -> int:
    """0 when every goal was checked and passed, 1 when one failed, 3 when none failed but some were skipped."""
    status = {g["status"] for g in goals}
    return EXIT_FAIL if "FAIL" in status else EXIT_SKIP if "SKIP" in status else EXIT_PASS


def _mib(x: Any) -> str:
    return f"{x / 2**20:.0f}" if isinstance(x, (int, float)) else "—"


def _s(x: Any, nd: int = 1) -> str:
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) else "—"


def _front(f: dict[str, Any] | None) -> str:
    return "—" if not f else f"{f['extractions']} ({f['frames']} frames) / {f['passed']} / {f['fell_back']}"


def markdown_report(results: dict[str, Any]) -> str:
    """The results as markdown: machine and command, one table row per render, the comparisons and goals."""
    m, comp = results["machine"], results["composition"]
    gpu = m["gpu"]
    lines = [
        f"# hyperframes {results['hyperframes']} end-to-end: with and without gpupipe",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; load average at start {m['load_avg_at_start']}; "
        f"GPU: {gpu['device'] if gpu['usable'] else 'none (' + str(gpu['reason']) + ')'}",
        f"- command: `{results['command']}`",
        f"- composition {comp['size'][0]}x{comp['size'][1]}, {comp['duration_s']:g} s, clips "
        + ", ".join("x".join(map(str, c)) for c in comp["clips"])
        + f" (H.264, colour tags: {comp.get('clip_tags', 'none')}) shown at {comp['shown_at'][0]}x{comp['shown_at'][1]}; {results['workers']} workers; fitted mode: GPUPIPE_EXTRACT_FIT={results['fit'][0]}x{results['fit'][1]}",
        f"- ffmpeg: {results['ffmpeg']}; front: {results['tools']['front'] or 'none'}",
        "",
        "| mode | quality | cache | wall s | CPU-s (all processes) | peak RSS MiB | peak PSS MiB | extraction s | cache hits/misses | cache disk MiB | front: extracted / passed / fell back |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results["runs"]:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['quality']} | {r['cache']} | failed | | | | | | | |")
            continue
        lines.append(
            f"| {r['mode']} | {r['quality']} | {r['cache']} | {_s(r['wall_s'])} | {_s(r['cpu_s'])} | {_mib(r['peak_rss'])} | "
            f"{_mib(r['peak_pss'])} | {_s(r['extract_s'], 2)} | {r['cache_hits']}/{r['cache_misses']} | {_s(r['cache_bytes'] / 2**20)} | {_front(r.get('front'))} |"
        )
    lines += ["", "## Goals", ""] + [f"- {g['status']}: {g['goal']}: {g['detail']}" for g in results["goals"]]
    if results["skipped"]:
        lines += ["", "Not run: " + "; ".join(results["skipped"])]
    return "\n".join(lines) + "\n"
