"""Per-stage wall time and host CPU time of the GPU path, and optional cProfile of each stage.

A :class:`StageClock` is shared by the staged runner (its phases: ``process`` on the calling
thread, ``finish`` and ``host`` on helper threads) and the host-string pool (``host_string`` on
its worker threads). Each record holds the stage's wall seconds and the CPU seconds of the thread
that ran it (:func:`time.thread_time`), so the host CPU a batch costs is attributed to the stage
that spent it, whatever thread ran it. With :meth:`StageClock.enable_profiling`, every stage call
also runs under its own :class:`cProfile.Profile` (cProfile sees one thread at a time); the
profiles are merged by :meth:`StageClock.dump_profile`.

Nothing here touches a device.
"""

from __future__ import annotations

import cProfile
import pstats
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StageClock", "StageTime"]


@dataclass(frozen=True)
class StageTime:
    """One call of a stage: its name, wall seconds, and CPU seconds of the thread that ran it."""

    stage: str
    wall_s: float
    cpu_s: float


class StageClock:
    """Thread-safe records of stage calls (the most recent ``maxlen``), and optional per-call profiles."""

    def __init__(self, maxlen: int = 8192) -> None:
        self.records: deque[StageTime] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as one call of stage ``name`` (wall and this thread's CPU time)."""
        prof = cProfile.Profile() if self._profiles is not None else None
        t0, c0 = time.perf_counter(), time.thread_time()
        if prof is not None:
            prof.enable()
        try:
            yield
        finally:
            if prof is not None:
                prof.disable()
            rec = StageTime(name, time.perf_counter() - t0, time.thread_time() - c0)
            with self._lock:
                self.records.append(rec)
                if prof is not None and self._profiles is not None:
                    self._profiles.append(prof)

    def clear(self) -> None:
        """Forget the records (and the profiles gathered so far)."""
        with self._lock:
            self.records.clear()
            if self._profiles is not None:
                self._profiles = []

    def totals(self) -> dict[str, dict[str, float]]:
        """Per stage: ``{"calls", "wall_s", "cpu_s"}`` summed over the records."""
        with self._lock:
            recs = list(self.records)
        out: dict[str, dict[str, float]] = {}
        for r in recs:
            t = out.setdefault(r.stage, {"calls": 0.0, "wall_s": 0.0, "cpu_s": 0.0})
            t["calls"] += 1
            t["wall_s"] += r.wall_s
            t["cpu_s"] += r.cpu_s
        return out

    def enable_profiling(self, on: bool = True) -> None:
        """Run every later stage call under cProfile (``on``), or stop doing so and drop the profiles."""
        with self._lock:
            self._profiles = [] if on else None

    def dump_profile(self, path: str | Path) -> int:
        """Write the merged profiles of the stage calls so far to ``path`` (``pstats`` format); returns how many were merged."""
        with self._lock:
            profs = list(self._profiles or [])
        if not profs:
            return 0
        stats = pstats.Stats(profs[0])
        for p in profs[1:]:
            stats.add(p)
        stats.dump_stats(str(path))
        return len(profs)
