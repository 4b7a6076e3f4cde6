"""One measured render through the real ``hyperframes`` CLI, and the composition it renders.

:func:`write_project` writes a composition (``index.html``) that shows each clip in its own quadrant of
the frame (the first top-left, the second bottom-right), each at half the composition's width and
height: a 3840x2160 composition shows its clips at 1920x1080. The root carries ``data-composition-id``,
``data-width``, ``data-height`` and ``data-no-timeline`` (without a timeline the CLI would wait 45 s
for one).

:func:`measure_render` runs ``hyperframes render`` and measures it:

- wall time, from start to the CLI's exit;
- CPU-s of every process of the render: ``getrusage(RUSAGE_CHILDREN)`` of this process before and
  after. That sum is complete because this process makes itself the child subreaper
  (``prctl(PR_SET_CHILD_SUBREAPER)``): a process either is waited for by its parent, which adds its
  time to its own children's time up to the CLI, or is orphaned, reparented to this process, and reaped
  here before the second reading. (A psutil poll only sees a process until its last sample, so it misses
  the last slice of every short-lived ffmpeg; it is kept as ``cpu_s_polled``, a lower bound.)
- peak RSS and peak PSS of the process tree (every descendant of this process), summed per sample of
  a psutil poll every :data:`POLL_S` seconds (``memory_full_info``; PSS shares Chromium's shared pages
  out fairly, RSS counts them once per process);
- the stage times the CLI logs (its ``[Render:trace]`` JSON lines: ``video_extract`` is the extraction
  stage, probing included), and its extraction cache hits and misses;
- the disk used by the extraction cache folder after the render (allocated blocks).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GpupipeError
from .hyperframes_toolchain import Toolchain

__all__ = ["POLL_S", "RenderFailed", "RenderRun", "disk_used", "measure_render", "parse_trace", "write_project"]

POLL_S = 0.2
"""Seconds between two samples of the process tree's memory."""
_PR_SET_CHILD_SUBREAPER = 36
_TRACE = "[Render:trace] "


class RenderFailed(GpupipeError, RuntimeError):
    """``hyperframes render`` exited non-zero, wrote no output, or ran past its time limit; names the log."""


@dataclass(frozen=True)
class RenderRun:
    """The figures of one render (module docstring). Times in seconds, memory and disk in bytes."""

    output: Path
    log: Path
    wall_s: float
    cpu_s: float
    cpu_s_polled: float
    cpu_complete: bool
    peak_rss: int
    peak_pss: int
    processes: int
    cache_bytes: int
    extract_s: float | None
    cache_hits: int | None
    cache_misses: int | None
    stages_s: dict[str, float] = field(default_factory=dict)


def write_project(folder: Path, clips: list[Path], size: tuple[int, int], duration: float) -> Path:
    """A project folder holding ``index.html`` (module docstring) and ``clips`` (hard links, else copies); returns it."""
    w, h = size
    folder.mkdir(parents=True, exist_ok=True)
    places = [(0, 0), (w // 2, h // 2), (w // 2, 0), (0, h // 2)]
    if len(clips) > len(places):
        raise ValueError(f"at most {len(places)} clips; got {len(clips)}")
    videos = []
    for i, clip in enumerate(clips):
        local = folder / clip.name
        if not local.exists():
            try:
                os.link(clip, local)
            except OSError:
                shutil.copy2(clip, local)
        x, y = places[i]
        videos.append(
            f'<video id="v{i}" class="clip" src="{clip.name}" style="left:{x}px;top:{y}px" '
            f'data-start="0" data-duration="{duration:g}" muted playsinline></video>'
        )
    html = f"""<!doctype html>
<html><head><meta charset="UTF-8"><style>
* {{ margin: 0; padding: 0; box-sizing: border-box; }}
html, body {{ width: {w}px; height: {h}px; overflow: hidden; background: #101010; }}
#root {{ position: relative; width: {w}px; height: {h}px; }}
video {{ position: absolute; width: {w // 2}px; height: {h // 2}px; object-fit: fill; }}
</style></head><body>
<div id="root" data-composition-id="main" data-start="0" data-duration="{duration:g}" data-width="{w}" data-height="{h}" data-no-timeline>
{chr(10).join(videos)}
</div></body></html>
"""
    (folder / "index.html").write_text(html)
    return folder


def parse_trace(log_text: str) -> tuple[dict[str, float], dict[str, int]]:
    """From the CLI's log: each ``[Render:trace]`` phase's duration in seconds (``status: end``), and the
    extraction checkpoint's counters (``cacheHits``, ``cacheMisses``, ``totalFramesExtracted``)."""
    stages: dict[str, float] = {}
    counters: dict[str, int] = {}
    for line in log_text.splitlines():
        _, sep, rest = line.partition(_TRACE)
        if not sep:
            continue
        try:
            rec = json.loads(rest)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        phase = rec.get("phase")
        if rec.get("status") == "end" and isinstance(phase, str) and isinstance(rec.get("durationMs"), (int, float)):
            stages[phase] = stages.get(phase, 0.0) + rec["durationMs"] / 1e3
        if phase == "video_extract" and rec.get("status") == "checkpoint":
            for k in ("cacheHits", "cacheMisses", "totalFramesExtracted"):
                if isinstance(rec.get(k), int):
                    counters[k] = rec[k]
    return stages, counters


def disk_used(folder: Path) -> int:
    """Bytes allocated on disk to the files under ``folder`` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class _TreeSampler:
    """Peak RSS/PSS sums over this process's descendants, and each one's last-seen CPU time."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak_rss = self.peak_pss = 0
        self.cpu: dict[tuple[int, float], float] = {}

    def sample(self) -> None:
        import psutil

        rss = pss = 0
        for p in self._me.children(recursive=True):
            try:
                with p.oneshot():
                    mem = p.memory_full_info()
                    t = p.cpu_times()
                    self.cpu[(p.pid, p.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += mem.rss
            pss += getattr(mem, "pss", mem.rss)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


def _reap_orphans(deadline: float) -> None:
    """Wait for the descendants left after the CLI exited (orphans reparented here); kill them past ``deadline``."""
    import psutil

    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            for p in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            deadline = float("inf")
        time.sleep(0.05)


def measure_render(
    tools: Toolchain,
    project: Path,
    output: Path,
    env: dict[str, str],
    quality: str,
    *,
    workers: int = 2,
    timeout: float = 1800.0,
) -> RenderRun:
    """Render ``project`` to ``output`` at ``quality`` (``draft``, ``standard``, ...) with ``workers``
    Chromium workers in ``env`` (:meth:`Toolchain.render_env`), measured (module docstring). The log goes
    next to ``output`` (``.log``). Raises :class:`RenderFailed`. Not thread-safe: it reaps every child."""
    complete = _become_subreaper()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    log = output.with_suffix(".log")
    cmd = tools.command("render", "-o", str(output), "-q", quality, "-w", str(workers), ".")
    sampler = _TreeSampler()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                sampler.sample()
                if time.perf_counter() - t0 > timeout:
                    proc.kill()
                    proc.wait()
                    _reap_orphans(time.monotonic())
                    raise RenderFailed(f"hyperframes render ran past {timeout:g} s; log: {log}")
                time.sleep(POLL_S)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    wall = time.perf_counter() - t0
    _reap_orphans(time.monotonic() + 10.0)
    cpu = _children_cpu() - cpu0
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or not output.is_file():
        tail = "\n".join(line for line in text.splitlines()[-15:] if "@hf-progress" not in line)
        raise RenderFailed(
            f"hyperframes render exited {proc.returncode} (output {'written' if output.is_file() else 'missing'}); log: {log}\n{tail}"
        )
    stages, counters = parse_trace(text)
    return RenderRun(
        output=output,
        log=log,
        wall_s=wall,
        cpu_s=cpu,
        cpu_s_polled=sum(sampler.cpu.values()),
        cpu_complete=complete,
        peak_rss=sampler.peak_rss,
        peak_pss=sampler.peak_pss,
        processes=len(sampler.cpu),
        cache_bytes=disk_used(Path(env["HYPERFRAMES_EXTRACT_CACHE_DIR"])),
        extract_s=stages.get("video_extract"),
        cache_hits=counters.get("cacheHits"),
        cache_misses=counters.get("cacheMisses"),
        stages_s=stages,
    )
