"""Memory soak: a long concurrent render through :class:`~gpupipe.FramePipeline` while sampling RSS.

Plays ``requests`` frame requests (sequential with seek-backs, spread over ``threads`` worker
threads that request concurrently, as a renderer's page workers do) over ``unique`` distinct
frames, and samples the process's resident set size (psutil) — and the GPU's used memory
when a GPU is usable — several times a second. The goal: peak RSS ≤ budget × 1.15 + the
process's RSS before the run (*base*).

The base is read as a user sees it, after every import and device start-up: after the device
probe (where a GPU is usable it imports CuPy, DALI and nvImageCodec and makes a CUDA context:
~100 MiB and more, reported apart as ``probe_rss``) and after one warm request through the
encoder (codec start-up, thread pools; its result is dropped and not cached).

Distinct frames are distinct *paths*: the soak hard-links a few real frame files under many
names, so the cache holds ``unique`` different URIs while the disk (and page cache) holds only
the few originals — the cache's byte budget, not the sample set, is what is exercised.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ..cache import FrameCache
from ..demo import render_trace
from ..encoder import FrameEncoder
from ..errors import FrameError
from ..frames import Source
from ..pipeline import FramePipeline

__all__ = ["SoakResult", "alias_frames", "run_soak"]


@dataclass
class SoakResult:
    """What the soak saw. Times in seconds, memory in bytes; ``samples`` are ``(t, rss, device_used)``.

    ``start_rss``: RSS when the soak began; ``probe_rss``: what the device probe added (imports
    and a CUDA context where a GPU is usable); ``base_rss``: RSS after the probe and one warm
    request, the base of ``target_rss``.
    """

    requests: int
    unique_frames: int
    threads: int
    budget_bytes: int
    start_rss: int
    probe_rss: int
    base_rss: int
    peak_rss: int
    final_rss: int
    target_rss: int
    seconds: float
    failures: int
    cache: dict
    invariant_violations: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    output: str = "auto"
    size: tuple[int, int] | None = None

    @property
    def cache_peak(self) -> int:
        """The highest ``entries + work in flight`` the cache admitted (``CacheStats.peak_bytes``)."""
        return int(self.cache["peak_bytes"])

    @property
    def ok(self) -> bool:
        """Peak RSS within budget × 1.15 + base, the cache's peak within its budget, and its accounting never broke."""
        return self.peak_rss <= self.target_rss and self.cache_peak <= self.budget_bytes and self.invariant_violations == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def alias_frames(originals: Sequence[Path], unique: int, directory: Path) -> list[Path]:
    """``unique`` paths that hard-link (or, failing that, copy) the ``originals`` round-robin."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(unique):
        src = Path(originals[i % len(originals)])
        dst = directory / f"alias_{i:05d}{src.suffix}"
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                dst.write_bytes(src.read_bytes())
        out.append(dst)
    return out


def _device_used() -> Callable[[], int]:
    try:
        from ..gpu import gpu_available

        if not gpu_available()[0]:
            return lambda: 0
        import cupy  # only reached where a GPU backend is usable

        def used() -> int:
            free, total = cupy.cuda.runtime.memGetInfo()
            return int(total - free)

        return used
    except Exception:  # noqa: BLE001
        return lambda: 0


def run_soak(
    encoder: FrameEncoder,
    frames: Sequence[Source],
    *,
    budget_bytes: int,
    requests: int = 1000,
    threads: int = 4,
    max_entries: int = 256,
    sample_hz: float = 10.0,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    output: str | None = None,
    size: tuple[int, int] | None = None,
    distinct: bool = False,
) -> SoakResult:
    """Play ``requests`` requests over ``frames`` with ``threads`` concurrent workers and sample memory.

    ``frames`` are any sources (paths, or :class:`~gpupipe.VideoFrame` objects, whose decoders then
    count in the budget). ``output``/``size`` are the pipeline's output settings; ``distinct``
    requests each frame once, in order (no hits: the most pressure on the budget), instead of a
    render with seek-backs.
    """
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    device_used = _device_used()
    probe_rss = proc.memory_info().rss - start_rss
    cache: FrameCache = FrameCache(max_entries, budget_bytes)
    pipe = FramePipeline(encoder, cache, output=output, size=size)
    trace = list(range(min(requests, len(frames)))) if distinct else render_trace(len(frames), requests, seed=seed)
    spec = pipe.spec
    warm = encoder.encode_batch([frames[-1]], spec.format, spec.size, spec.quality)  # codec start-up; not cached
    del warm
    encoder.videos.release()  # a video decoder the warm request opened counted in no budget
    base_rss = proc.memory_info().rss
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    t0 = time.perf_counter()
    violations = [0]

    def sampler() -> None:
        while not stop.is_set():
            s = cache.stats()
            if s.bytes + s.inflight_bytes > s.max_bytes or s.bytes != s.host_bytes + s.device_bytes or s.entries > s.max_entries:
                violations[0] += 1
            samples.append((time.perf_counter() - t0, proc.memory_info().rss, device_used()))
            stop.wait(1.0 / sample_hz)

    # Each worker takes the next request from a shared cursor, so the request order stays the
    # renderer's while up to `threads` frames are in flight at once.
    cursor = [0]
    lock = threading.Lock()
    failures = [0]

    def worker() -> None:
        while True:
            with lock:
                i = cursor[0]
                if i >= len(trace):
                    return
                cursor[0] += 1
            try:
                pipe.get(frames[trace[i]])
            except FrameError:
                with lock:
                    failures[0] += 1
            if on_progress is not None:
                on_progress(1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    stop.set()
    th.join()
    samples.append((seconds, proc.memory_info().rss, device_used()))
    peak = max(s[1] for s in samples)
    return SoakResult(
        requests=len(trace),
        unique_frames=len(frames),
        threads=threads,
        budget_bytes=budget_bytes,
        start_rss=start_rss,
        probe_rss=probe_rss,
        base_rss=base_rss,
        peak_rss=peak,
        final_rss=samples[-1][1],
        target_rss=int(budget_bytes * 1.15) + base_rss,
        seconds=seconds,
        failures=failures[0],
        cache=cache.stats().as_dict(),
        invariant_violations=violations[0],
        samples=samples,
        output=pipe.spec.format,
        size=pipe.spec.size,
    )
