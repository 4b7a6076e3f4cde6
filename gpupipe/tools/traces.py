"""Access traces of frame requests, and the cache's hit ratio against Belady's optimum.

A *trace* is a sequence of ``(key, size_bytes)`` requests: ``key`` names a frame (its URI's
cache key) and ``size_bytes`` is the length of its data URI, which is what the cache charges.
The same key always has the same size. Four generators model how renderers read frames
(issue 4 §3):

* :func:`seekback_trace` — one pass through a video with frequent short seek-backs
  (an editor re-playing the last second or two);
* :func:`loop_trace` — a clip looped more times than the cache can hold (plain LRU hits
  nothing once the clip is larger than the cache);
* :func:`interleaved_trace` — several videos read together, as a composition with
  picture-in-picture does (a 4K main video, 1080p insets and a short looping overlay);
* :func:`scrub_trace` — scrubbing back and forth along the timeline at varying speeds.

:func:`replay_lru` replays a trace through the real :class:`gpupipe.FrameCache`;
:func:`belady_opt` computes the optimum (exact for uniform sizes; see its docstring for
variable sizes) on the same trace and bounds; :func:`hit_ratio_table` puts them side by
side, :func:`format_table` prints it and :func:`plot_hit_ratios` draws a bar chart.

:func:`replay_schedule` replays a trace through the real cache with the trace declared as a
schedule (:class:`gpupipe.schedule.SchedulePolicy`), optionally with read-ahead;
:func:`schedule_table` compares LRU, schedule-aware (with and without read-ahead) and OPT,
counting every encode (read-ahead included) as work, and :func:`weight_study` compares eviction
weightings on random traces of mixed frame sizes.

``python -m gpupipe.tools.traces [--chart out.png]`` prints the table for the default traces;
``--schedule`` the schedule-aware table at 4K and 1080p; ``--weights`` the weighting study.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import random
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..cache import FrameCache
from ..schedule import DEFAULT_WINDOW, ReadAhead, SchedulePolicy, Scheduler, Weight, sqrt_weight
from ..uri import b64_len
from ..vocabulary import MiB

__all__ = [
    "URI_SIZE_MODEL",
    "Replay",
    "Request",
    "belady_opt",
    "format_schedule_table",
    "format_table",
    "frame_sizes",
    "hit_ratio_table",
    "interleaved_trace",
    "loop_trace",
    "main",
    "plot_hit_ratios",
    "replay_lru",
    "replay_schedule",
    "schedule_table",
    "scrub_trace",
    "seekback_trace",
    "standard_traces",
    "uri_size",
    "weight_study",
]

Request = tuple[Hashable, int]
"""One request: ``(key, size_bytes)``."""


# Mean encoded-frame sizes (bytes) for realistic video frames: a 4K PNG render is 14-20 MB,
# a high-quality 4K JPEG ~2 MB; 1080p is about a quarter of that. URIs are base64 of these.
URI_SIZE_MODEL: dict[tuple[str, str], int] = {
    ("4k", "png"): 16_000_000,
    ("4k", "jpeg"): 2_000_000,
    ("1080p", "png"): 4_000_000,
    ("1080p", "jpeg"): 500_000,
}


def uri_size(encoded_bytes: int, kind: str) -> int:
    """Length of the ``data:image/<kind>;base64,`` URI of an ``encoded_bytes``-long frame."""
    return len(f"data:image/{kind};base64,") + b64_len(encoded_bytes)


def frame_sizes(count: int, resolution: str = "4k", kind: str = "png", seed: int = 0) -> list[int]:
    """URI sizes of ``count`` consecutive frames of one video.

    Encoded size follows scene complexity: a smooth multiplicative random walk around the
    mean of :data:`URI_SIZE_MODEL` (about ±10 % frame to frame drift, clipped to 0.6–1.6×),
    so neighbouring frames have similar sizes, as in real footage. Deterministic in ``seed``.
    """
    mean = URI_SIZE_MODEL[(resolution, kind)]
    rng = random.Random(f"sizes/{resolution}/{kind}/{seed}")
    level = 0.0
    out = []
    for _ in range(count):
        level = 0.9 * level + rng.gauss(0.0, 0.05)
        factor = min(1.6, max(0.6, math.exp(level) * (1.0 + rng.gauss(0.0, 0.02))))
        out.append(uri_size(int(mean * factor), kind))
    return out


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")


def seekback_trace(
    n_frames: int = 3000,
    seek_prob: float = 0.02,
    max_back: int = 24,
    resolution: str = "4k",
    kind: str = "png",
    seed: int = 0,
    video: str = "main",
) -> Iterator[Request]:
    """One pass through ``n_frames`` frames with frequent short seek-backs.

    After each frame, with probability ``seek_prob`` playback jumps back 1..``max_back``
    frames (uniformly) and plays forward again from there; the pass ends after the last frame.
    The defaults (a one-second seek-back about every two seconds at 24 fps) give about
    1.35 requests per frame. Playback must make progress on average:
    ``seek_prob * (max_back + 1) / 2 < 1 - seek_prob``, else ``ValueError``.
    """
    _check_positive(n_frames=n_frames, max_back=max_back)
    if not 0.0 <= seek_prob < 1.0:
        raise ValueError(f"seek_prob must be in [0, 1); got {seek_prob!r}")
    if seek_prob * (max_back + 1) / 2 >= 1 - seek_prob:
        raise ValueError(f"seek_prob={seek_prob} with max_back={max_back} seeks back faster than playback moves on")
    sizes = frame_sizes(n_frames, resolution, kind, seed)
    rng = random.Random(f"seekback/{seed}")
    i = 0
    while i < n_frames:
        yield (f"{video}/{i:05d}", sizes[i])
        if rng.random() < seek_prob:
            i = max(0, i - rng.randint(1, max_back))
        else:
            i += 1


def loop_trace(
    clip_frames: int = 96,
    loops: int = 20,
    resolution: str = "4k",
    kind: str = "png",
    seed: int = 0,
    video: str = "clip",
) -> Iterator[Request]:
    """A ``clip_frames``-frame clip played ``loops`` times in a row.

    When the clip does not fit the cache, LRU evicts every frame just before it is needed
    again and hits nothing; the optimum keeps a fixed part of the clip and hits it each loop.
    """
    _check_positive(clip_frames=clip_frames, loops=loops)
    sizes = frame_sizes(clip_frames, resolution, kind, seed)
    for _ in range(loops):
        for i in range(clip_frames):
            yield (f"{video}/{i:05d}", sizes[i])


def interleaved_trace(
    n_frames: int = 1500,
    main: tuple[str, str] = ("4k", "png"),
    insets: int = 2,
    inset_format: tuple[str, str] = ("1080p", "jpeg"),
    overlay_frames: int = 72,
    overlay_format: tuple[str, str] = ("1080p", "png"),
    seed: int = 0,
) -> Iterator[Request]:
    """A picture-in-picture composition: per output frame, one frame of every layer.

    Layers: a main video played straight through; ``insets`` inset videos, each starting at
    its own offset and occasionally jumping back a few frames (as when an editor retimes a
    clip, repeating frames); and a short overlay animation of ``overlay_frames`` frames
    looped over and over (a lower third or logo sting). ``overlay_frames=0`` leaves it out.
    """
    _check_positive(n_frames=n_frames)
    if insets < 0 or overlay_frames < 0:
        raise ValueError("insets and overlay_frames must be >= 0")
    rng = random.Random(f"interleaved/{seed}")
    main_sizes = frame_sizes(n_frames, *main, seed=seed)
    inset_len = n_frames + 64
    inset_sizes = [frame_sizes(inset_len, *inset_format, seed=seed + 1 + j) for j in range(insets)]
    offsets = [rng.randrange(0, 32) for _ in range(insets)]
    overlay_sizes = frame_sizes(overlay_frames, *overlay_format, seed=seed + 101) if overlay_frames else []
    for t in range(n_frames):
        yield (f"main/{t:05d}", main_sizes[t])
        for j in range(insets):
            if rng.random() < 0.02:
                offsets[j] = max(0, offsets[j] - rng.randint(1, 12))
            f = min(inset_len - 1, t + offsets[j])
            yield (f"inset{j}/{f:05d}", inset_sizes[j][f])
        if overlay_frames:
            f = t % overlay_frames
            yield (f"overlay/{f:05d}", overlay_sizes[f])


def scrub_trace(
    n_requests: int = 4000,
    n_frames: int = 2400,
    max_speed: int = 6,
    window: int = 240,
    resolution: str = "4k",
    kind: str = "jpeg",
    seed: int = 0,
    video: str = "scrub",
) -> Iterator[Request]:
    """Scrubbing a timeline back and forth: ``n_requests`` requests over ``n_frames`` frames.

    The playhead moves 1..``max_speed`` frames per request, reverses direction at random
    (about every 30 requests) and at the ends of a ``window``-frame region of interest, and
    now and then (1 %) jumps to a new region, as a user dragging a scrub bar does.
    """
    _check_positive(n_requests=n_requests, n_frames=n_frames, max_speed=max_speed, window=window)
    sizes = frame_sizes(n_frames, resolution, kind, seed)
    rng = random.Random(f"scrub/{seed}")
    window = min(window, n_frames)
    lo = rng.randrange(0, n_frames - window + 1)
    pos, direction, speed = lo, 1, rng.randint(1, max_speed)
    for _ in range(n_requests):
        yield (f"{video}/{pos:05d}", sizes[pos])
        r = rng.random()
        if r < 0.01:
            lo = rng.randrange(0, n_frames - window + 1)
            pos = rng.randrange(lo, lo + window)
            continue
        if r < 0.045:
            direction = -direction
            speed = rng.randint(1, max_speed)
        nxt = pos + direction * speed
        if not lo <= nxt < lo + window:
            direction = -direction
            nxt = min(lo + window - 1, max(lo, pos + direction * speed))
        pos = nxt


def standard_traces(seed: int = 0, scale: float = 1.0, resolution: str = "4k") -> dict[str, list[Request]]:
    """The four traces of issue 4 §3 at their default sizes (``scale`` < 1 shortens them, e.g. for tests).

    ``resolution="1080p"`` gives the same access patterns with 1080p frame sizes (the
    picture-in-picture main video then 1080p PNG too).
    """

    def n(x: int) -> int:
        return max(1, int(x * scale))

    if resolution == "4k":
        return {
            "seek-back (4K PNG)": list(seekback_trace(n(3000), seed=seed)),
            "loop 96 frames x20 (4K PNG)": list(loop_trace(96, max(2, n(20)), seed=seed)),
            "picture-in-picture (4K + 2x1080p + overlay)": list(interleaved_trace(n(1500), seed=seed)),
            "scrubbing (4K JPEG)": list(scrub_trace(n(4000), seed=seed)),
        }
    if resolution == "1080p":
        return {
            "seek-back (1080p PNG)": list(seekback_trace(n(3000), resolution="1080p", seed=seed)),
            "loop 96 frames x20 (1080p PNG)": list(loop_trace(96, max(2, n(20)), resolution="1080p", seed=seed)),
            "picture-in-picture (3x1080p + overlay)": list(interleaved_trace(n(1500), main=("1080p", "png"), seed=seed)),
            "scrubbing (1080p JPEG)": list(scrub_trace(n(4000), resolution="1080p", seed=seed)),
        }
    raise ValueError(f"resolution must be 4k or 1080p; got {resolution!r}")


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Replay:
    """The outcome of replaying a trace: request and hit counts, and byte-weighted figures."""

    policy: str
    requests: int
    hits: int
    bytes_requested: int
    bytes_hit: int
    loads: int = -1
    """Encodes, read-ahead included (``-1``: one per miss, as for a policy without read-ahead)."""
    prefetched: int = 0
    prefetch_wasted: int = 0

    @property
    def misses(self) -> int:
        return self.requests - self.hits

    @property
    def encodes_per_request(self) -> float:
        """Encodes (read-ahead included) per request (0.0 for an empty trace)."""
        n = self.loads if self.loads >= 0 else self.misses
        return n / self.requests if self.requests else 0.0

    @property
    def hit_ratio(self) -> float:
        """Hits per request (0.0 for an empty trace)."""
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        """Bytes served from the cache per byte requested (0.0 for an empty trace)."""
        return self.bytes_hit / self.bytes_requested if self.bytes_requested else 0.0


class _Sized:
    """A stand-in cache value that costs ``size`` bytes without holding them."""

    __slots__ = ("device_bytes", "host_bytes")

    def __init__(self, size: int) -> None:
        self.host_bytes = size
        self.device_bytes = 0


def _check_bounds(max_entries: int, max_bytes: int) -> None:
    _check_positive(max_entries=max_entries, max_bytes=max_bytes)


def replay_lru(trace: Iterable[Request], max_entries: int, max_bytes: int) -> Replay:
    """Replay ``trace`` through a real :class:`gpupipe.FrameCache` with these bounds.

    Each request is a :meth:`~gpupipe.FrameCache.get_or_load` whose loader returns a value
    costing ``size_bytes``; hits are the cache's own counters. Frames larger than
    ``max_bytes`` are never cached (the cache rejects them), exactly as in production.
    """
    _check_bounds(max_entries, max_bytes)
    cache: FrameCache[Any] = FrameCache(max_entries, max_bytes)
    requests = bytes_requested = bytes_hit = 0
    for key, size in trace:
        requests += 1
        bytes_requested += size
        missed = False

        def load(size: int = size) -> _Sized:
            nonlocal missed
            missed = True
            return _Sized(size)

        cache.get_or_load(key, load)
        if not missed:
            bytes_hit += size
    s = cache.stats()
    assert s.hits + s.misses == requests and s.bytes <= max_bytes and s.entries <= max_entries
    return Replay("LRU", requests, s.hits, bytes_requested, bytes_hit)


def replay_schedule(
    trace: Iterable[Request],
    max_entries: int,
    max_bytes: int,
    *,
    read_ahead: int = 0,
    batch_size: int = 8,
    estimate: bool = True,
    window: int = DEFAULT_WINDOW,
    weight: Weight = sqrt_weight,
) -> Replay:
    """Replay ``trace`` through a real :class:`gpupipe.FrameCache` whose policy knows the trace.

    The whole trace is declared as one schedule first (what a renderer does with
    :meth:`gpupipe.FramePipeline.schedule`); each request is observed by the scheduler, then
    loaded through :meth:`~gpupipe.FrameCache.get_or_load`, reserving its URI's bytes while it
    loads when ``estimate`` (as the pipeline reserves a frame's footprint; OPT reserves
    nothing, so this is the harder case). With ``read_ahead`` > 0 a :class:`ReadAhead` of that
    horizon runs after every request until it starts nothing more (a read-ahead that keeps up).

    ``hits`` counts requests minus *every* encode, read-ahead included (an encode read-ahead
    started and then lost counts against it); ``bytes_hit`` likewise subtracts the bytes of
    every encode (not below 0).
    """
    _check_bounds(max_entries, max_bytes)
    reqs = list(trace)
    sizes: dict[Hashable, int] = dict(reqs)
    scheduler = Scheduler(window=window, weight=weight)
    cache: FrameCache[Any] = FrameCache(max_entries, max_bytes, policy=SchedulePolicy(scheduler))
    sched = scheduler.open(k for k, _ in reqs)
    loaded_bytes = 0

    def loader(keys: list[Hashable]) -> list[_Sized]:
        nonlocal loaded_bytes
        loaded_bytes += sum(sizes[k] for k in keys)
        return [_Sized(sizes[k]) for k in keys]

    est = (lambda k: sizes[k]) if estimate else None
    reader = None
    if read_ahead:

        def fetch(keys: list[Any]) -> list[str]:
            return list(cache.prefetch_many(keys, loader, estimate=est, outcome=sched.prefetch_outcome))

        reader = ReadAhead(sched, fetch, read_ahead, batch_size)
    for key, _ in reqs:
        scheduler.observe(key)
        cache.get_or_load_many([key], loader, estimate=est)
        if reader is not None:
            while reader.step():
                pass
    s = cache.stats()
    sched.close()
    assert s.bytes <= max_bytes and s.entries <= max_entries and s.peak_bytes <= max_bytes
    bytes_requested = sum(size for _, size in reqs)
    return Replay(
        "schedule" + (f"+read-ahead {read_ahead}" if read_ahead else ""),
        len(reqs),
        len(reqs) - s.loads,
        bytes_requested,
        max(0, bytes_requested - loaded_bytes),
        s.loads,
        s.prefetched,
        s.prefetch_wasted,
    )


def _next_uses(keys: Sequence[Hashable]) -> list[int]:
    """For each position, the position of the next request for the same key (``len(keys)`` if none)."""
    n = len(keys)
    nxt = [n] * n
    last: dict[Hashable, int] = {}
    for i in range(n - 1, -1, -1):
        k = keys[i]
        nxt[i] = last.get(k, n)
        last[k] = i
    return nxt


def belady_opt(trace: Iterable[Request], max_entries: int, max_bytes: int) -> Replay:
    """Belady's optimum (furthest next use first), generalised to two bounds and sizes.

    On a hit the frame stays. On a miss the requested frame is admitted, then, while the
    cache is over ``max_entries`` or ``max_bytes``, the frame whose next use lies furthest in
    the future is evicted; when that is the frame just requested, it is *bypassed* (never
    admitted). Frames never used again, and frames larger than ``max_bytes``, are bypassed.

    * With **uniform sizes** the two bounds reduce to one capacity
      ``min(max_entries, max_bytes // size)`` and this is Belady's MIN with bypass, which is
      **exactly optimal**: no policy (with any knowledge of the future) gets more hits.
    * With **variable sizes**, maximising hits is NP-hard; this is the standard size-aware
      Belady heuristic. It is a good *estimate* of the optimum, an upper reference for an
      online policy, but **not a proven optimum**: a cleverer offline choice can do better
      (e.g. evicting one large frame instead of a small one *and* that large one), so the
      true optimum may lie a little above it. It is not guaranteed to beat LRU on every
      trace either, though no such trace turned up in the property tests or in 60,000
      random small traces.

    Runs in ``O(n log n)`` with a precomputed next-use table and a lazy max-heap.
    """
    _check_bounds(max_entries, max_bytes)
    reqs = list(trace)
    keys = [k for k, _ in reqs]
    nxt = _next_uses(keys)
    n = len(reqs)
    cached: dict[Hashable, tuple[int, int]] = {}  # key -> (size, next use)
    heap: list[tuple[int, int, Hashable]] = []  # (-next use, unique seq, key); stale entries skipped
    seq = itertools.count()  # ties (several frames never used again) never compare keys
    used = hits = bytes_requested = bytes_hit = 0
    for i, (key, size) in enumerate(reqs):
        bytes_requested += size
        nu = nxt[i]
        if key in cached:
            hits += 1
            bytes_hit += size
            cached[key] = (cached[key][0], nu)
            heapq.heappush(heap, (-nu, next(seq), key))
            continue
        if nu >= n or size > max_bytes:
            continue  # never needed again, or can never fit: bypass
        cached[key] = (size, nu)
        used += size
        heapq.heappush(heap, (-nu, next(seq), key))
        while len(cached) > max_entries or used > max_bytes:
            neg, _, victim = heapq.heappop(heap)
            entry = cached.get(victim)
            if entry is None or entry[1] != -neg:
                continue  # stale heap entry
            del cached[victim]
            used -= entry[0]
        if len(heap) > 4 * len(cached) + 64:  # drop stale entries now and then
            heap = [(-nu_, next(seq), k) for k, (_, nu_) in cached.items()]
            heapq.heapify(heap)
    return Replay("OPT", n, hits, bytes_requested, bytes_hit)


# --------------------------------------------------------------------------- reporting


def hit_ratio_table(
    traces: Mapping[str, Sequence[Request]] | None = None,
    max_entries: int = 256,
    max_bytes: int = 1500 * MiB,
    budgets: Sequence[tuple[int, int]] | None = None,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """One row per (trace, budget): LRU next to OPT on the same trace and bounds.

    ``traces`` defaults to :func:`standard_traces` (a quarter of their length with ``quick``,
    though the full ones take well under a second too); ``budgets`` is a list of
    ``(max_entries, max_bytes)`` and defaults to the one pair given. Each row has ``trace``,
    ``requests``, ``unique_frames``, ``unique_bytes``, ``max_entries``, ``max_bytes``,
    ``lru_hit_ratio``, ``opt_hit_ratio``, ``lru_byte_hit_ratio``, ``opt_byte_hit_ratio``,
    ``lru_hits``, ``opt_hits`` and ``lru_vs_opt`` (LRU hits / OPT hits; 1.0 when OPT has none).
    """
    if traces is None:
        traces = standard_traces(scale=0.25 if quick else 1.0)
    pairs = list(budgets) if budgets is not None else [(max_entries, max_bytes)]
    rows = []
    for name, requests in traces.items():
        trace = list(requests)
        sizes: dict[Hashable, int] = dict(trace)
        for me, mb in pairs:
            lru = replay_lru(trace, me, mb)
            opt = belady_opt(trace, me, mb)
            rows.append(
                {
                    "trace": name,
                    "requests": len(trace),
                    "unique_frames": len(sizes),
                    "unique_bytes": sum(sizes.values()),
                    "max_entries": me,
                    "max_bytes": mb,
                    "lru_hits": lru.hits,
                    "opt_hits": opt.hits,
                    "lru_hit_ratio": lru.hit_ratio,
                    "opt_hit_ratio": opt.hit_ratio,
                    "lru_byte_hit_ratio": lru.byte_hit_ratio,
                    "opt_byte_hit_ratio": opt.byte_hit_ratio,
                    "lru_vs_opt": (lru.hits / opt.hits) if opt.hits else 1.0,
                }
            )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`hit_ratio_table` as a markdown table."""
    head = "| trace | requests | unique frames (MiB) | budget | LRU hit ratio | OPT hit ratio | LRU/OPT | LRU byte hit | OPT byte hit |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['trace']} | {r['requests']} | {r['unique_frames']} ({r['unique_bytes'] / MiB:,.0f}) "
            f"| {r['max_entries']} entries, {r['max_bytes'] / MiB:,.0f} MiB "
            f"| {r['lru_hit_ratio']:.1%} | {r['opt_hit_ratio']:.1%} | {r['lru_vs_opt']:.2f} "
            f"| {r['lru_byte_hit_ratio']:.1%} | {r['opt_byte_hit_ratio']:.1%} |"
        )
    return "\n".join(lines)


def schedule_table(
    traces: Mapping[str, Sequence[Request]] | None = None,
    budgets: Sequence[tuple[int, int]] = ((256, 1500 * MiB),),
    read_ahead: int = 16,
    batch_size: int = 8,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """One row per (trace, budget): LRU, schedule-aware, schedule-aware with read-ahead, and OPT.

    ``traces`` defaults to :func:`standard_traces` at 4K and at 1080p (a quarter of their length
    with ``quick``). Hits count requests minus every encode (read-ahead included), so
    ``<policy>_hit_ratio`` is ``1 - <policy>_encodes_per_request``. Row keys: ``trace``,
    ``requests``, ``max_entries``, ``max_bytes``, and for each of ``lru``, ``sched``, ``sched_ra``,
    ``opt``: ``_hits``, ``_hit_ratio``, ``_encodes_per_request``; plus ``sched_vs_opt`` and
    ``sched_ra_vs_opt`` (hits over OPT's; 1.0 when OPT has none), ``read_ahead``,
    ``prefetched`` and ``prefetch_wasted``.
    """
    if traces is None:
        scale = 0.25 if quick else 1.0
        traces = {**standard_traces(scale=scale), **standard_traces(scale=scale, resolution="1080p")}
    rows = []
    for name, requests in traces.items():
        trace = list(requests)
        for me, mb in budgets:
            runs = {
                "lru": replay_lru(trace, me, mb),
                "sched": replay_schedule(trace, me, mb),
                "sched_ra": replay_schedule(trace, me, mb, read_ahead=read_ahead, batch_size=batch_size),
                "opt": belady_opt(trace, me, mb),
            }
            row: dict[str, Any] = {
                "trace": name,
                "requests": len(trace),
                "max_entries": me,
                "max_bytes": mb,
                "read_ahead": read_ahead,
            }
            for p, r in runs.items():
                row[f"{p}_hits"] = r.hits
                row[f"{p}_hit_ratio"] = r.hit_ratio
                row[f"{p}_encodes_per_request"] = r.encodes_per_request
            opt = runs["opt"].hits
            row["sched_vs_opt"] = runs["sched"].hits / opt if opt else 1.0
            row["sched_ra_vs_opt"] = runs["sched_ra"].hits / opt if opt else 1.0
            row["prefetched"] = runs["sched_ra"].prefetched
            row["prefetch_wasted"] = runs["sched_ra"].prefetch_wasted
            rows.append(row)
    return rows


def format_schedule_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`schedule_table` as a markdown table (hit ratios, then encodes per request)."""
    head = (
        "| trace | budget | LRU | schedule | schedule + read-ahead | OPT | schedule / OPT | + read-ahead / OPT "
        "| encodes per request (LRU / sched / +RA / OPT) | prefetched (wasted) |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        epr = " / ".join(f"{r[f'{p}_encodes_per_request']:.3f}" for p in ("lru", "sched", "sched_ra", "opt"))
        lines.append(
            f"| {r['trace']} | {r['max_entries']} entries, {r['max_bytes'] / MiB:,.0f} MiB "
            f"| {r['lru_hit_ratio']:.1%} | {r['sched_hit_ratio']:.1%} | {r['sched_ra_hit_ratio']:.1%} | {r['opt_hit_ratio']:.1%} "
            f"| {r['sched_vs_opt']:.3f} | {r['sched_ra_vs_opt']:.3f} | {epr} | {r['prefetched']} ({r['prefetch_wasted']}) |"
        )
    return "\n".join(lines)


WEIGHTS: dict[str, Weight] = {
    "distance only": lambda d, b: float(d),
    "(d+1) * sqrt(bytes) [default]": sqrt_weight,
    "(d+1) * bytes": lambda d, b: float((d + 1) * max(b, 1)),
    "d * bytes": lambda d, b: float(d * max(b, 1)),
}
"""Eviction weightings compared by :func:`weight_study` (``d``: positions to the next use)."""


def weight_study(
    cases: int = 300, seed: int = 5, weights: Mapping[str, Weight] | None = None, pip_frames: int = 800
) -> dict[str, dict[str, int]]:
    """Hits of the schedule-aware cache under each weighting, on ``cases`` random traces of mixed frame
    sizes (5-40 frames of 1-40 bytes, small and large mixed; 50-300 requests; 2-30 entries and
    40-300 bytes) and on picture-in-picture traces of ``pip_frames`` output frames with overlays
    of 24-120 frames (300 and 800 MiB), next to :func:`belady_opt` on the same traces. Returns
    ``{name: {"random": hits, "pip": hits}}``."""
    rng = random.Random(seed)
    rand = []
    for _ in range(cases):
        nk = rng.randint(5, 40)
        size = [rng.choice([rng.randint(1, 5), rng.randint(10, 40), rng.randint(1, 40)]) for _ in range(nk)]
        keys = [rng.randrange(nk) for _ in range(rng.randint(50, 300))]
        rand.append(([(k, size[k]) for k in keys], rng.randint(2, 30), rng.randint(40, 300)))
    pip = [
        (list(interleaved_trace(pip_frames, overlay_frames=o, seed=sd)), 256, b * MiB)
        for o in (24, 48, 72, 120)
        for sd in (0, 1)
        for b in (300, 800)
    ]
    out: dict[str, dict[str, int]] = {
        "OPT (belady_opt)": {"random": sum(belady_opt(*c).hits for c in rand), "pip": sum(belady_opt(*c).hits for c in pip)}
    }
    for name, w in (weights or WEIGHTS).items():
        out[name] = {
            "random": sum(replay_schedule(*c, estimate=False, weight=w).hits for c in rand),
            "pip": sum(replay_schedule(*c, estimate=False, weight=w).hits for c in pip),
        }
    return out


def plot_hit_ratios(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str | None = None) -> str:
    """A grouped bar chart (LRU vs OPT hit ratio per trace row) written as PNG to ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = [
        r["trace"]
        if len({(x["max_entries"], x["max_bytes"]) for x in rows}) == 1
        else f"{r['trace']}\n{r['max_bytes'] / MiB:,.0f} MiB / {r['max_entries']}"
        for r in rows
    ]
    x = list(range(len(rows)))
    w = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(rows) + 2), 4.6))
    try:
        lru = [100 * r["lru_hit_ratio"] for r in rows]
        opt = [100 * r["opt_hit_ratio"] for r in rows]
        b1 = ax.bar([i - w / 2 for i in x], lru, w, label="LRU (gpupipe.FrameCache)", color="#4C72B0")
        b2 = ax.bar([i + w / 2 for i in x], opt, w, label="OPT (Belady, size-aware)", color="#DD8452")
        ax.bar_label(b1, fmt="%.1f", fontsize=8, padding=2)
        ax.bar_label(b2, fmt="%.1f", fontsize=8, padding=2)
        ax.set_xticks(x, [lab.replace(" (", "\n(", 1) for lab in labels], fontsize=8)
        ax.set_ylabel("hit ratio (%)")
        ax.set_ylim(0, 105)
        if title is None and rows:
            budgets = {(r["max_entries"], r["max_bytes"]) for r in rows}
            if len(budgets) == 1:
                me, mb = budgets.pop()
                title = f"Cache hit ratio vs Belady's optimum ({mb / MiB:,.0f} MiB, {me} entries)"
        ax.set_title(title or "Cache hit ratio vs Belady's optimum")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=120)
    finally:
        plt.close(fig)
    return os.fspath(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gpupipe.tools.traces``: parse ``argv`` (default: the command line), run, return the exit status."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m gpupipe.tools.traces", description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-entries", type=int, default=256)
    ap.add_argument("--max-mib", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chart", help="write a PNG bar chart here")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--schedule", action="store_true", help="LRU / schedule-aware / + read-ahead / OPT at 4K and 1080p")
    ap.add_argument("--read-ahead", type=int, default=16, help="read-ahead horizon for --schedule (positions)")
    ap.add_argument("--extra-mib", type=int, action="append", default=[], help="another budget for --schedule (repeatable)")
    ap.add_argument("--weights", action="store_true", help="compare eviction weightings (weight_study)")
    a = ap.parse_args(argv)
    rows: Any
    if a.weights:
        rows = weight_study()
        print("| weighting | hits, random mixed sizes | hits, picture-in-picture |\n|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['random']} | {r['pip']} |")
    elif a.schedule:
        traces = {**standard_traces(a.seed), **standard_traces(a.seed, resolution="1080p")}
        budgets = [(a.max_entries, a.max_mib * MiB)] + [(a.max_entries, m * MiB) for m in a.extra_mib]
        rows = schedule_table(traces, budgets, read_ahead=a.read_ahead)
        print(format_schedule_table(rows))
    else:
        rows = hit_ratio_table(standard_traces(a.seed), a.max_entries, a.max_mib * MiB)
        print(format_table(rows))
        if a.chart:
            print(f"chart: {plot_hit_ratios(rows, a.chart)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
