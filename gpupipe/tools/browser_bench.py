"""Real-browser benchmark of ``gpupipe serve``: frames injected into headless Chromium as HTML renderers do.

Each run starts a fresh ``gpupipe serve`` (loopback, free port) over 4K sample frames, and one or
two renderer workers (``gpupipe/tools/browser_bench.mjs``: Node + puppeteer-core + the system
Chromium, a 1920x1080 composition showing each frame at 1920x1080 by setting an ``<img>``'s
``src`` and awaiting ``img.decode()``). Once every worker's browser is up, the clock and the CPU
counters start; each pass shows every frame once. Per pass it reports frames/s, CPU-seconds per
frame of all processes together (Node, every Chromium process, gpupipe: user + system, from
``/proc`` through psutil), and over the run the peak of the summed RSS of those processes and
the service's own peak RSS.

Paths compared, on 4K PNG and 4K JPEG frames:

- ``own``: the renderer's own path: Node reads the file, ``toString('base64')``, ``page.evaluate``;
- ``uri``: gpupipe data URIs (passthrough, and ``auto`` fitted to the 1920x1080 composition);
- ``url``: URL mode: ``img.src`` is the service's ``/v1/image`` URL (passthrough and fitted).

Then two workers rendering the same looped clip at once: each with its own in-process cache
(``own`` with the renderer's per-worker cache, bounded by ``--budget-mib`` each) against both
sharing one service budget of ``--budget-mib`` (data URIs, and URL mode).

Then a source video (a 4K H.264 clip of ``--video-frames`` frames at 30 fps: ffmpeg's ``testsrc2``
with grain, as the throughput bench's frames, ``libx264 -preset veryfast -crf 18``), shown frame by
frame at 1920x1080 both ways:

- the renderer's own path: ffmpeg (imageio-ffmpeg's binary) extracts the clip to PNG files
  (``ffmpeg -i clip.mp4 -vf fps=30 frame_%05d.png``, its wall time and CPU reported as a row of its
  own), then ``own`` on those files;
- ``video``: the video source in URL mode, fitted: ``img.src`` is
  ``/v1/image?src=clip.mp4&t=...&size=1920x1080``, decoded by the service from the clip itself;
  once as the page asks, and once with the frames declared first (``gp.schedule``, on the clock),
  so that the service decodes ahead of the page.

    python -m gpupipe.tools.browser_bench --frames 4 --passes 2 --pair-frames 8 --loops 2 --out results/browser_bench.json
    python -m gpupipe.tools.browser_bench --sections video --video-frames 8 --passes 2   # the video rows alone

Needs ``node``, Chromium (``--chromium``, default the first of chromium / chromium-browser on
PATH) and puppeteer-core in ``clients/node``: ``bash scripts/setup_browser_tests.sh`` installs them. Request loops are bounded: every
worker shows ``frames x passes`` frames and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ..vocabulary import MiB
from .serve_load import start_service

HERE = Path(__file__).resolve().parent
WORKER = HERE / "browser_bench.mjs"
REPO = HERE.parents[1]


@dataclass
class RunResult:
    """One configuration: ``passes`` as ``{frames, seconds, fps, cpu_s_per_frame}``, peak memory in MiB."""

    label: str
    kind: str
    workers: int
    mode: str
    size: str | None
    passes: list[dict[str, float]] = field(default_factory=list)
    errors: int = 0
    peak_rss_mib: float = 0.0
    node_peak_rss_mib: float = 0.0
    server_peak_rss_mib: float = 0.0
    server_loads: int = 0


def _procs(pids: list[int]) -> list[psutil.Process]:
    out: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(p)
            out.extend(p.children(recursive=True))
        except psutil.Error:
            pass
    return out


def _cpu(pids: list[int]) -> dict[tuple[int, float], float]:
    """CPU seconds (user + system) of every process in the trees, by ``(pid, start time)``."""
    out: dict[tuple[int, float], float] = {}
    for p in _procs(pids):
        try:
            t = p.cpu_times()
            out[(p.pid, p.create_time())] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class _Sampler(threading.Thread):
    """Peak summed RSS of the process trees of ``pids`` (and of ``server`` alone), every 100 ms."""

    def __init__(self, pids: list[int], server: int) -> None:
        super().__init__(daemon=True)
        self.pids, self.server = pids, server
        self.peak = self.server_peak = self.node_peak = 0
        self.stop_ = threading.Event()
        self.cpu_seen: dict[tuple[int, float], float] = {}  # the latest CPU time of every process seen, exited ones included

    def note_cpu(self) -> None:
        self.cpu_seen.update(_cpu(self.pids))

    def run(self) -> None:
        n = 0
        procs = _procs(self.pids)
        while not self.stop_.is_set():
            if n % 10 == 0:
                procs = _procs(self.pids)  # Chromium may start processes as it goes
                self.note_cpu()
            self.peak = max(self.peak, _rss(procs))
            with contextlib.suppress(psutil.Error):
                self.server_peak = max(self.server_peak, psutil.Process(self.server).memory_info().rss)
            self.node_peak = max(self.node_peak, _rss([p for p in procs if p.pid in self.pids and p.pid != self.server]))
            n += 1
            self.stop_.wait(0.1)


def _start_server(root: Path, work: Path, budget_mib: int) -> tuple[subprocess.Popen, str]:
    return start_service(
        root,
        work,
        f"defaults:\n  cache: {{max_bytes: {budget_mib}MiB, pressure_available: 0}}\n  serve: {{request_timeout: 600}}\n",
    )


def _server_loads(url: str) -> int:
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    return int(sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("gpupipe_cache_loads_total")))


def run_one(
    label: str,
    kind: str,
    paths: list[Path],
    root: Path,
    *,
    mode: str,
    size: str | None,
    workers: int,
    passes: int,
    budget_mib: int,
    cache_mib: int,
    chromium: str,
    work: Path,
    times: list[float] | None = None,
    schedule: bool = False,
) -> RunResult:
    """One configuration: a fresh service, ``workers`` renderer workers, ``passes`` passes over ``paths``
    (mode ``video``: ``paths[i]`` is a clip shown at ``times[i]`` seconds; ``schedule``: declared first)."""
    server, url = _start_server(root, work, budget_mib)
    res = RunResult(label, kind, workers, mode, size)
    nodes: list[subprocess.Popen] = []
    try:
        plan = {
            "mode": mode,
            "names": [str(p.relative_to(root)) for p in paths],
            "paths": [str(p) for p in paths],
            "times": times or [],
            "schedule": schedule,
            "passes": passes,
            "size": size,
            "cacheBytes": cache_mib * MiB if mode == "own" else 0,
            "url": url,
            "chromium": chromium,
        }
        env = {**os.environ, "BENCH_PLAN": json.dumps(plan)}
        for _ in range(workers):
            nodes.append(
                subprocess.Popen(
                    ["node", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
                )
            )
        for n in nodes:
            line = n.stdout.readline() if n.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"renderer worker did not start: {line!r}")
        pids = [n.pid for n in nodes] + [server.pid]
        sampler = _Sampler(pids, server.pid)
        cpu0 = _cpu(pids)
        sampler.start()
        t0 = time.perf_counter()
        for n in nodes:
            assert n.stdin is not None
            n.stdin.write("go\n")
            n.stdin.flush()
        outs = [json.loads(n.stdout.readline()) for n in nodes if n.stdout]
        t1 = time.perf_counter()
        sampler.stop_.set()
        sampler.join()
        sampler.note_cpu()  # every worker waits for "quit": their browsers are all still there
        for n in nodes:
            assert n.stdin is not None
            n.stdin.write("quit\n")
            n.stdin.close()
        frames = sum(p["frames"] for o in outs for p in o["passes"])
        res.errors = sum(o["errors"] for o in outs)
        # Per pass: wall time is the slowest worker's (they run at once); CPU is split by each pass's share of the wall time.
        walls = [max(o["passes"][i]["seconds"] for o in outs) for i in range(passes)]
        cpu = sum(v - cpu0.get(k, 0.0) for k, v in sampler.cpu_seen.items())
        for i, wall in enumerate(walls):
            n_frames = sum(o["passes"][i]["frames"] for o in outs)
            share = cpu * wall / sum(walls)
            res.passes.append(
                {
                    "frames": n_frames,
                    "seconds": round(wall, 4),
                    "fps": round(n_frames / max(wall, 1e-3), 2),
                    "cpu_s_per_frame": round(share / max(1, n_frames), 3),
                }
            )
        res.passes.append(
            {
                "frames": frames,
                "seconds": round(t1 - t0, 2),
                "fps": round(frames / (t1 - t0), 2),
                "cpu_s_per_frame": round(cpu / max(1, frames), 3),
            }
        )  # the whole run
        res.peak_rss_mib = round(sampler.peak / MiB, 1)
        res.server_peak_rss_mib = round(sampler.server_peak / MiB, 1)
        res.node_peak_rss_mib = round(sampler.node_peak / MiB, 1)
        res.server_loads = _server_loads(url)
        for n in nodes:
            n.wait(timeout=60)
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return res


VIDEO_FPS = 30
SECTIONS = ("images", "pairs", "video")


VIDEO_GRAIN = 12  # ffmpeg noise strength, as the throughput bench's frames: grain that survives the encode, like camera footage


def _make_clip(path: Path, frames: int) -> None:
    """A 4K H.264 clip of ``frames`` frames of ffmpeg's ``testsrc2`` with grain, at :data:`VIDEO_FPS`."""
    from imageio_ffmpeg import get_ffmpeg_exe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    graph = f"testsrc2=size=3840x2160:rate={VIDEO_FPS},noise=alls={VIDEO_GRAIN}:allf=t+u"
    subprocess.run(
        [get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i", graph,
         "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", str(tmp)],
        check=True,
    )  # fmt: skip
    tmp.replace(path)


def _extract_pngs(clip: Path, out_dir: Path, frames: int) -> RunResult:
    """The renderer's extraction step: ffmpeg writes every frame of ``clip`` to PNG files in
    ``out_dir``; a one-pass result with its wall time and CPU (user + system, ffmpeg's own rusage)."""
    from imageio_ffmpeg import get_ffmpeg_exe

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("frame_*.png"):
        old.unlink()
    cmd = [get_ffmpeg_exe(), "-v", "error", "-i", str(clip), "-vf", f"fps={VIDEO_FPS}", str(out_dir / "frame_%05d.png")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    written = len(list(out_dir.glob("frame_*.png")))
    if proc.returncode != 0 or written != frames:
        raise RuntimeError(f"ffmpeg extraction failed (exit {proc.returncode}, {written} of {frames} frames)")
    cpu = usage.ru_utime + usage.ru_stime
    one = {"frames": frames, "seconds": round(wall, 4), "fps": round(frames / wall, 2), "cpu_s_per_frame": round(cpu / frames, 3)}
    return RunResult(
        "ffmpeg extracts the clip to PNG files (the renderer's step before showing them)",
        "h264",
        1,
        "extract",
        None,
        passes=[one, dict(one)],
    )


def run_video(*, frames: int, passes: int, budget_mib: int, chromium: str, work: Path) -> list[RunResult]:
    """The video rows: a 4K H.264 clip of ``frames`` frames, extracted to PNG and shown the renderer's own
    way, against the video source in URL mode fitted to the composition."""
    clip_dir = work / "video"
    clip = clip_dir / f"testsrc2-grain{VIDEO_GRAIN}-4k-{frames}f.mp4"
    if not clip.exists():
        _make_clip(clip, frames)
    extract = _extract_pngs(clip, work / "video-png", frames)
    print(_row(extract), flush=True)
    pngs = sorted((work / "video-png").glob("frame_*.png"))

    def one(
        label: str,
        paths: list[Path],
        root: Path,
        mode: str,
        size: str | None,
        times: list[float] | None = None,
        schedule: bool = False,
    ) -> RunResult:
        res = run_one(
            label,
            "h264",
            paths,
            root,
            mode=mode,
            size=size,
            workers=1,
            passes=passes,
            budget_mib=budget_mib,
            cache_mib=0,
            chromium=chromium,
            work=work,
            times=times,
            schedule=schedule,
        )
        print(_row(res), flush=True)
        return res

    own = one("renderer's own path on those PNG files", pngs, pngs[0].parent, "own", None)
    times = [i / VIDEO_FPS for i in range(frames)]
    video = one("video source, URL mode, fitted 1920x1080 (auto)", [clip] * frames, clip_dir, "video", "1920x1080", times)
    ahead = one(
        "video source, URL mode, fitted 1920x1080 (auto), schedule declared",
        [clip] * frames,
        clip_dir,
        "video",
        "1920x1080",
        times,
        schedule=True,
    )
    return [extract, own, video, ahead]


def run_bench(
    *,
    frames: int = 4,
    passes: int = 2,
    budget_mib: int = 1500,
    loops: int = 2,
    pair_frames: int = 8,
    video_frames: int = 8,
    chromium: str | None = None,
    work: Path | None = None,
    kinds: tuple[str, ...] = ("png", "jpeg"),
    sections: tuple[str, ...] = SECTIONS,
) -> list[RunResult]:
    """Every configuration of the module docstring in ``sections`` (``images``, ``pairs``, ``video``); returns their results."""
    from ..samples import write_samples

    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not shutil.which("node"):
        raise RuntimeError("needs node and Chromium on PATH: bash scripts/setup_browser_tests.sh installs them")
    if not (REPO / "clients" / "node" / "node_modules" / "puppeteer-core").is_dir():
        raise RuntimeError("needs puppeteer-core in clients/node: bash scripts/setup_browser_tests.sh installs it")
    work = work or Path(os.environ.get("TMPDIR", "/tmp")) / "gpupipe-browser-bench"
    work.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    if "images" in sections or "pairs" in sections:
        samples = write_samples(sizes=("4k",), kinds=kinds, count=max(frames, pair_frames))
        root = samples[("4k", kinds[0])][0].parents[1]
    if "images" in sections:
        results += _run_images(samples, root, kinds, frames, passes, budget_mib, chromium, work)
    if "pairs" in sections:
        results += _run_pairs(samples[("4k", kinds[0])][:pair_frames], root, kinds[0], loops, budget_mib, chromium, work)
    if "video" in sections and video_frames > 0:
        results += run_video(frames=video_frames, passes=passes, budget_mib=budget_mib, chromium=chromium, work=work)
    return results


def _run_images(
    samples: dict[tuple[str, str], list[Path]],
    root: Path,
    kinds: tuple[str, ...],
    frames: int,
    passes: int,
    budget_mib: int,
    chromium: str,
    work: Path,
) -> list[RunResult]:
    """One worker over 4K frames of each kind, every path of the module docstring."""
    results = []
    configs = [("own", None), ("uri", None), ("uri", "1920x1080"), ("url", None), ("url", "1920x1080")]
    for kind in kinds:
        paths = samples[("4k", kind)][:frames]
        for mode, size in configs:
            label = {"own": "renderer's own (read + base64 in Node)", "uri": "gpupipe data URI", "url": "gpupipe URL mode"}[mode]
            label += "" if mode == "own" else (", fit 1920x1080 (auto)" if size else ", passthrough")
            results.append(
                run_one(
                    label,
                    kind,
                    paths,
                    root,
                    mode=mode,
                    size=size,
                    workers=1,
                    passes=passes,
                    budget_mib=budget_mib,
                    cache_mib=0,
                    chromium=chromium,
                    work=work,
                )
            )
            print(_row(results[-1]), flush=True)
    return results


def _run_pairs(
    paths: list[Path], root: Path, kind: str, loops: int, budget_mib: int, chromium: str, work: Path
) -> list[RunResult]:
    """Two workers rendering the same looped clip: in-process caches against one service budget."""
    results = []
    for label, mode in (
        ("2 workers, in-process caches", "own"),
        ("2 workers, one service budget (data URIs)", "uri"),
        ("2 workers, one service budget (URL mode)", "url"),
    ):
        results.append(
            run_one(
                label,
                kind,
                paths,
                root,
                mode=mode,
                size=None,
                workers=2,
                passes=loops,
                budget_mib=budget_mib,
                cache_mib=budget_mib,
                chromium=chromium,
                work=work,
            )
        )
        print(_row(results[-1]), flush=True)
    return results


def _row(r: RunResult) -> str:
    first, rest, whole = r.passes[0], r.passes[1:-1], r.passes[-1]
    frames = "4K H.264 clip" if r.kind == "h264" else f"4K {r.kind.upper()}"
    later = f"{sum(p['frames'] for p in rest) / max(1e-3, sum(p['seconds'] for p in rest)):.2f}" if rest else "-"
    later_cpu = f"{sum(p['cpu_s_per_frame'] * p['frames'] for p in rest) / sum(p['frames'] for p in rest):.3f}" if rest else "-"
    return (
        f"| {frames} | {r.label} | {r.workers} | {first['fps']:.2f} | {later} | {first['cpu_s_per_frame']:.3f} | "
        f"{later_cpu} | {whole['fps']:.2f} | {whole['cpu_s_per_frame']:.3f} | {r.peak_rss_mib:.0f} | {r.node_peak_rss_mib:.0f} | {r.server_peak_rss_mib:.0f} | "
        f"{r.server_loads} | {r.errors} |"
    )


HEADER = (
    "| frames | path | workers | fps, first pass | fps, later passes | CPU-s/frame, first | CPU-s/frame, later | fps, run | "
    "CPU-s/frame, run | peak RSS, all (MiB) | peak RSS, Node (MiB) | peak RSS, gpupipe (MiB) | encodes | errors |\n|"
    + "---|"
    * 14
)


def main(argv: list[str] | None = None) -> int:
    """Command line: prints a markdown table row per configuration; ``--out`` also writes JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=4, help="distinct 4K frames per kind")
    ap.add_argument("--passes", type=int, default=2, help="passes over the frames, single worker (the first is cold)")
    ap.add_argument("--loops", type=int, default=2, help="passes (loops of the clip) in the two-worker runs")
    ap.add_argument("--pair-frames", type=int, default=8, help="distinct 4K PNG frames in the clip of the two-worker runs")
    ap.add_argument("--video-frames", type=int, default=8, help="frames of the 4K H.264 clip in the video rows (0: none)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="which runs, comma-separated: images, pairs, video")
    ap.add_argument("--budget-mib", type=int, default=1500, help="the service's budget, and each in-process cache's")
    ap.add_argument("--chromium", default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    sections = tuple(x.strip() for x in a.sections.split(",") if x.strip())
    if not sections or set(sections) - set(SECTIONS):
        ap.error(f"--sections: choose from {', '.join(SECTIONS)}, got {a.sections!r}")
    print(HEADER, flush=True)
    results = run_bench(
        frames=a.frames,
        passes=a.passes,
        budget_mib=a.budget_mib,
        loops=a.loops,
        pair_frames=a.pair_frames,
        video_frames=a.video_frames,
        chromium=a.chromium,
        sections=sections,
    )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
