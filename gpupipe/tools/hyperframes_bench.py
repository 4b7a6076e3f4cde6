"""End-to-end benchmark on the real renderer: ``hyperframes render`` with and without gpupipe.

    python -m gpupipe.tools.hyperframes_bench [--quick] [--install] [--out results]

It renders a composition (:func:`~gpupipe.tools.hyperframes_render.write_project`) showing a 4K and
a 1080p clip (:func:`~gpupipe.tools.video_clips.make_clip`: grainy ``testsrc2``, H.264, tagged BT.709
as HD and UHD footage is; ``--untagged`` leaves the tags out, and hyperframes then adds its own
colour-space guess to the extraction command) each at half the composition's size (so a 4K
composition shows both at 1920x1080), through the pinned ``hyperframes`` CLI (:mod:`~gpupipe.tools.hyperframes_toolchain`),
once per cell of

- quality: ``draft`` and ``standard`` (``--quality``);
- mode (``--modes``): ``ffmpeg`` (the renderer as shipped, Debian's ffmpeg), ``gpupipe`` (its ffmpeg is
  the ``gpupipe-ffmpeg`` front, the real ffmpeg behind it in ``GPUPIPE_REAL_FFMPEG``) and ``fitted``
  (the front with ``GPUPIPE_EXTRACT_FIT`` set to the size the clips are shown at: 1920x1080 in a 4K
  composition, ``--fit``);
- cache (``--caches``): ``cold`` (the extraction cache emptied first; one folder per mode, since the
  cache key does not know about fitting) then ``warm`` (the same folder again).

Per render it reports wall time, CPU-s of all processes, peak RSS and PSS of the process tree, the
extraction stage's time (the CLI's ``video_extract`` trace stage), the extraction cache's disk use
(:func:`~gpupipe.tools.hyperframes_render.measure_render` says how each is measured) and, for every
gpupipe cell, the PSNR of its video against the ``ffmpeg`` cell's of the same quality and cache
(:mod:`~gpupipe.tools.video_compare`), and for every gpupipe cell what the front did
(:func:`front_summary`: extractions it ran, commands it passed to ffmpeg, fallbacks). It writes ``hyperframes_bench.json`` and ``hyperframes_bench.md``
under ``--out`` and prints the goals (:mod:`~gpupipe.tools.hyperframes_goals`) as PASS/FAIL/SKIP lines.

``--quick``: a 640x360 composition, 1 s, the same 4K and 1080p clips (a few minutes on 2 cores).
Without the front (``--front``, else ``gpupipe-ffmpeg`` next to this Python, else on ``PATH``) the
gpupipe cells are skipped, saying so. Exit status: 0 when every goal checked passed, 1 when one
failed or a render failed, 3 when none failed but some were skipped, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .hyperframes_goals import PSNR_MIN_DB, check_goals, exit_status, markdown_report
from .hyperframes_render import RenderFailed, measure_render, write_project
from .hyperframes_toolchain import HYPERFRAMES_VERSION, ToolchainMissing, find_front, find_toolchain, install_hyperframes
from .video_clips import CLIP_FPS, make_clip, tool_name
from .video_compare import video_psnr

__all__ = ["MODES", "compare_renders", "front_summary", "main", "run_bench"]

MODES = ("ffmpeg", "gpupipe", "fitted")
QUALITIES = ("draft", "standard")
CACHES = ("cold", "warm")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even and at least 2; got {text!r}")
    return w, h


def _choices(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}; got {text!r}")
        return items

    return parse


def _machine() -> dict[str, Any]:
    import psutil

    from ..gpu import gpu_status

    cpu = platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    st = gpu_status(0)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "gpu": {"usable": st.usable, "reason": st.reason, "device": st.checks.get("device")},
    }


def front_summary(log: Path) -> dict[str, Any]:
    """What the front did in one render, from its ``GPUPIPE_FFMPEG_LOG`` lines: extractions it ran (their
    frames and seconds), commands it passed to ffmpeg, and extractions that failed in gpupipe and went to ffmpeg."""
    extractions = frames = passed = 0
    seconds = 0.0
    fallbacks: list[str] = []
    lines = log.read_text().splitlines() if log.is_file() else []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("action") == "extract":
            extractions += 1
            frames += int(rec.get("frames") or 0)
            seconds += float(rec.get("seconds") or 0.0)
        elif str(rec.get("reason", "")).startswith("gpupipe failed"):
            fallbacks.append(str(rec["reason"]))
        else:
            passed += 1
    return {
        "extractions": extractions,
        "frames": frames,
        "seconds": seconds,
        "passed": passed,
        "fell_back": len(fallbacks),
        "fallback_reasons": fallbacks,
    }


def compare_renders(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PSNR of every gpupipe and fitted render against the ffmpeg render of the same quality and cache
    state, and of ffmpeg's warm render against its cold one (the renderer's own repeatability)."""
    comparisons: list[dict[str, Any]] = []
    ok = {(r["mode"], r["quality"], r["cache"]): r for r in runs if "error" not in r}
    for (mode, quality, temp), r in ok.items():
        ref = ok.get(("ffmpeg", quality, temp))
        if ref is None or (mode == "ffmpeg" and temp == "cold"):
            continue
        if mode == "ffmpeg":  # the renderer against itself: cold and warm render the same extracted frames
            ref = ok.get(("ffmpeg", quality, "cold"))
            if ref is None:
                continue
        p = video_psnr(Path(ref["output"]), Path(r["output"]))
        comparisons.append(
            {
                "a": f"{ref['mode']} {quality} {ref['cache']}",
                "b": f"{mode} {quality} {temp}",
                "mode": mode,
                "quality": quality,
                "cache": temp,
                **asdict(p),
            }
        )
    return comparisons


def _front_line(f: dict[str, Any]) -> str:
    return f"  front: {f['extractions']} extracted ({f['frames']} frames), {f['passed']} passed, {f['fell_back']} fell back"


def run_bench(a: argparse.Namespace, say: Any = None) -> dict[str, Any]:
    """Every cell of the module docstring selected by the parsed flags ``a``; writes and returns the results."""
    say = say or (lambda line: print(line, flush=True))
    home = Path(a.home) if a.home else None
    if a.install:
        install_hyperframes(home)
    tools = find_toolchain(home, chromium=a.chromium, ffmpeg=a.ffmpeg, ffprobe=a.ffprobe)
    front = find_front(a.front)
    size, duration = a.size, a.duration
    fit = a.fit or (size[0] // 2, size[1] // 2)
    work = Path(a.work or tempfile.mkdtemp(prefix="gpupipe-hyperframes-bench-"))
    frames = max(1, round(duration * CLIP_FPS))
    clips = [make_clip(work / "clips", c, frames, "h264", str(tools.ffmpeg), bt709=not a.untagged) for c in a.clips]
    project = write_project(work / "project", clips, size, duration)
    results: dict[str, Any] = {
        "hyperframes": HYPERFRAMES_VERSION,
        "command": " ".join([Path(sys.executable).name, "-m", "gpupipe.tools.hyperframes_bench", *a.argv]),
        "machine": _machine(),
        "tools": {k: str(v) for k, v in asdict(tools).items()} | {"front": str(front) if front else None},
        "ffmpeg": tool_name(str(tools.ffmpeg)),
        "composition": {
            "size": list(size),
            "duration_s": duration,
            "clips": [list(c) for c in a.clips],
            "clip_tags": "none" if a.untagged else "bt709",
            "shown_at": [size[0] // 2, size[1] // 2],
        },
        "fit": list(fit),
        "workers": a.workers,
        "psnr_min_db": a.psnr_min,
        "runs": [],
        "skipped": [],
        "comparisons": [],
    }
    t_start = time.perf_counter()
    for quality in a.quality:
        for mode in a.modes:
            if mode != "ffmpeg" and front is None:
                results["skipped"].append(f"{mode} {quality}: no gpupipe-ffmpeg front (--front, or install gpupipe with it)")
                continue
            cache = work / f"cache-{mode}"
            extra = {"GPUPIPE_EXTRACT_FIT": f"{fit[0]}x{fit[1]}"} if mode == "fitted" else {}
            for temp in a.caches:
                if temp == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                out = work / "renders" / f"{mode}-{quality}-{temp}.mp4"
                front_log = out.with_suffix(".front.jsonl")
                front_log.unlink(missing_ok=True)
                if mode != "ffmpeg":
                    extra["GPUPIPE_FFMPEG_LOG"] = str(front_log)
                env = tools.render_env(cache, front if mode != "ffmpeg" else None, extra)
                try:
                    run = measure_render(tools, project, out, env, quality, workers=a.workers, timeout=a.timeout)
                except RenderFailed as e:
                    results["runs"].append({"mode": mode, "quality": quality, "cache": temp, "error": str(e)})
                    say(f"FAILED {mode} {quality} {temp}: {e}")
                    continue
                row = {
                    "mode": mode,
                    "quality": quality,
                    "cache": temp,
                    **asdict(run),
                    "output": str(run.output),
                    "log": str(run.log),
                }
                if mode != "ffmpeg":
                    row["front"] = front_summary(front_log)
                results["runs"].append(row)
                say(
                    f"{mode:8} {quality:8} {temp:5} wall {run.wall_s:6.1f} s  CPU {run.cpu_s:6.1f} s  "
                    f"RSS {run.peak_rss / 2**20:6.0f} MiB  PSS {run.peak_pss / 2**20:6.0f} MiB  "
                    f"extract {run.extract_s if run.extract_s is not None else float('nan'):5.2f} s  cache {run.cache_bytes / 2**20:6.1f} MiB"
                    + (_front_line(row["front"]) if "front" in row else "")
                )
    results["comparisons"] = compare_renders(results["runs"])
    results["seconds"] = time.perf_counter() - t_start
    results["goals"] = [asdict(g) for g in check_goals(results)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyperframes_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "hyperframes_bench.md").write_text(markdown_report(results))
    return results


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gpupipe.tools.hyperframes_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="640x360 composition, 1 s (overrides --size and --duration)")
    ap.add_argument("--size", type=_size, default=(3840, 2160), help="composition size WxH (default 3840x2160)")
    ap.add_argument("--duration", type=float, default=4.0, help="composition (and clip) duration in seconds (default 4)")
    ap.add_argument(
        "--clips",
        type=lambda t: [_size(v) for v in t.split(",")],
        default=[(3840, 2160), (1920, 1080)],
        help="clip sizes (default 3840x2160,1920x1080)",
    )
    ap.add_argument(
        "--untagged", action="store_true", help="clips without colour tags (default: tagged BT.709, as HD/UHD footage)"
    )
    ap.add_argument("--quality", type=_choices(QUALITIES), default=list(QUALITIES), help="draft,standard")
    ap.add_argument("--modes", type=_choices(MODES), default=list(MODES), help="ffmpeg,gpupipe,fitted")
    ap.add_argument("--caches", type=_choices(CACHES), default=list(CACHES), help="cold,warm (warm reuses cold's cache)")
    ap.add_argument(
        "--fit",
        type=_size,
        default=None,
        help="GPUPIPE_EXTRACT_FIT of the fitted mode (default: the size the clips are shown at)",
    )
    ap.add_argument("--workers", type=int, default=2, help="Chromium capture workers (default 2)")
    ap.add_argument(
        "--psnr-min",
        type=float,
        default=PSNR_MIN_DB,
        help=f"least per-frame PSNR of gpupipe renders against ffmpeg's (default {PSNR_MIN_DB:g} dB)",
    )
    ap.add_argument("--front", default=None, help="the gpupipe-ffmpeg executable (default: next to this Python, else on PATH)")
    ap.add_argument("--ffmpeg", default=None, help="the real ffmpeg (default: ffmpeg on PATH; Debian's)")
    ap.add_argument("--ffprobe", default=None, help="ffprobe (default: ffprobe on PATH)")
    ap.add_argument("--chromium", default=None, help="Chromium (default: chromium on PATH)")
    ap.add_argument(
        "--home", default=None, help="where the pinned CLI is installed (default ~/.cache/gpupipe/hyperframes-VERSION)"
    )
    ap.add_argument("--install", action="store_true", help="install the pinned CLI (and Node 22) with npm first where missing")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one render may take (default 1800)")
    ap.add_argument(
        "--work", default=None, help="scratch folder for clips, project, caches and renders (default: a new temp folder)"
    )
    ap.add_argument("--out", default="results", help="folder for hyperframes_bench.json and .md (default results)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring for the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    a.argv = argv
    if a.quick:
        a.size, a.duration = (640, 360), 1.0
    try:
        results = run_bench(a)
    except ToolchainMissing as e:
        print(f"hyperframes_bench: {e}", file=sys.stderr)
        return 1
    for g in results["goals"]:
        print(f"{g['status']}: {g['goal']}: {g['detail']}")
    print(f"wrote {Path(a.out) / 'hyperframes_bench.json'} and .md in {results['seconds']:.0f} s")
    failed = any("error" in r for r in results["runs"])
    return 1 if failed else exit_status(results["goals"])


if __name__ == "__main__":
    sys.exit(main())
