"""``gpupipe demo``: a render played through :class:`~gpupipe.FramePipeline` on sample frames.

A renderer asks for frames mostly in order, sometimes seeking back a few frames (a
transition, a re-render of a segment). The demo plays such a request sequence over each
sample clip, once passing frames through and once scaled to fit 720p (JPEG, or PNG for frames
with alpha), and reports throughput and what the cache did; each setting is played twice from a cold cache, without and then with
the render's schedule declared (:meth:`FramePipeline.schedule`), so that the hit ratios of
LRU and of eviction by next use (with read-ahead) stand side by side.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .pipeline import FramePipeline

__all__ = ["SETTINGS", "PlayResult", "play", "render_trace"]

SETTINGS: tuple[tuple[str, tuple[int, int] | None, bool], ...] = (
    ("passthrough", None, False),
    ("passthrough", None, True),
    ("fit 720p", (1280, 720), False),
    ("fit 720p", (1280, 720), True),
)
"""The demo's settings: ``(output label, size to fit or None, whether the render declares its
schedule)``. ``fit 720p`` is output format ``auto`` (JPEG, or PNG for frames with alpha)."""


def render_trace(n_frames: int, requests: int, seek_back_prob: float = 0.15, max_seek: int = 4, seed: int = 0) -> list[int]:
    """Frame indices a renderer requests: sequential, with short seek-backs, wrapping at the end."""
    rng = random.Random(seed)
    out: list[int] = []
    i = 0
    while len(out) < requests:
        out.append(i)
        i = max(0, i - rng.randint(1, max_seek)) if rng.random() < seek_back_prob and i > 0 else (i + 1) % n_frames
    return out


@dataclass
class PlayResult:
    """What one playback did: requests, failures, seconds, bytes of URIs served, the encodes it
    caused (read-ahead included, from the cache's ``loads``) and ``hits``: requests the cache
    answered without an encode of their own (``hits + joined`` of :class:`~gpupipe.cache.CacheStats`:
    found cached, or waiting on an encode already under way, a read-ahead one included)."""

    requests: int
    failures: int
    seconds: float
    uri_bytes: int
    encodes: int = 0
    hits: int = 0

    @property
    def hit_ratio(self) -> float:
        """``hits / requests``: the cache's own ``hit_ratio`` over this playback's requests."""
        return self.hits / self.requests if self.requests else 0.0

    @property
    def fps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("inf")


def play(
    pipe: FramePipeline,
    frames: Sequence[Path],
    trace: Sequence[int],
    on_request: Callable[[], None] | None = None,
    *,
    schedule: bool = False,
    cold: bool = False,
) -> PlayResult:
    """Request ``frames[i]`` for each ``i`` in ``trace`` through ``pipe``; failures are counted, not raised.

    ``schedule``: declare the whole request sequence first (and withdraw it at the end), as a
    renderer that knows its timeline does. ``cold``: clear the cache first.
    """
    from .errors import FrameError

    if cold:
        pipe.cache.clear()
    failures = 0
    nbytes = 0
    before = pipe.stats()
    t0 = time.perf_counter()
    handle = pipe.schedule([frames[i] for i in trace]) if schedule else None
    try:
        for i in trace:
            try:
                nbytes += len(pipe.get(frames[i]))
            except FrameError:
                failures += 1
            if on_request is not None:
                on_request()
    finally:
        if handle is not None:
            handle.close()
    seconds = time.perf_counter() - t0
    after = pipe.stats()
    hits = after.hits + after.joined - before.hits - before.joined
    return PlayResult(len(trace), failures, seconds, nbytes, after.loads - before.loads, hits)
