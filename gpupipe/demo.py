"""``gpupipe demo``: a render played through :class:`~gpupipe.FramePipeline` on sample frames.

A renderer asks for frames mostly in order, sometimes seeking back a few frames (a
transition, a re-render of a segment). The demo plays such a request sequence over each
sample clip, once passing frames through and once scaled to fit 720p (JPEG, or PNG for frames with alpha), and reports throughput
and what the cache did.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .pipeline import FramePipeline

__all__ = ["render_trace", "play", "PlayResult"]


def render_trace(n_frames: int, requests: int, seek_back_prob: float = 0.15, max_seek: int = 4, seed: int = 0) -> list[int]:
    """Frame indices a renderer requests: sequential, with short seek-backs, wrapping at the end."""
    rng = random.Random(seed)
    out: list[int] = []
    i = 0
    while len(out) < requests:
        out.append(i)
        if rng.random() < seek_back_prob and i > 0:
            i = max(0, i - rng.randint(1, max_seek))
        else:
            i = (i + 1) % n_frames
    return out


@dataclass
class PlayResult:
    """What one playback did: requests, failures, seconds, bytes of URIs served."""

    requests: int
    failures: int
    seconds: float
    uri_bytes: int

    @property
    def fps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("inf")


def play(
    pipe: FramePipeline,
    frames: Sequence[Path],
    trace: Sequence[int],
    on_request: Callable[[], None] | None = None,
) -> PlayResult:
    """Request ``frames[i]`` for each ``i`` in ``trace`` through ``pipe``; failures are counted, not raised."""
    from .errors import FrameError

    failures = 0
    nbytes = 0
    t0 = time.perf_counter()
    for i in trace:
        try:
            nbytes += len(pipe.get(frames[i]))
        except FrameError:
            failures += 1
        if on_request is not None:
            on_request()
    return PlayResult(len(trace), failures, time.perf_counter() - t0, nbytes)
