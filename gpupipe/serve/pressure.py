"""Memory-pressure shedding: a frame service gives memory back when its box runs short.

Every ``cache.pressure_interval`` seconds the service reads the memory available to it
(:func:`gpupipe.hostmem.available_memory`: the host's ``MemAvailable``, or less under a cgroup
limit). While that is below the threshold (``cache.pressure_available``; by default 5% of the
memory limit, at least 128 MiB), it discards cached entries, least useful first, until it has
freed the shortfall plus half the threshold (so that one check frees enough to matter), split
across the pipelines' caches in proportion to what each holds. Entries are discarded, not
evicted by a bound, so ``evictions`` does not count them; the monitor's own counters do. The
cache fills again by itself as requests come once memory is back: the budget is unchanged.
A warning is logged when pressure starts and at each check that sheds, an info line when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..cache import FrameCache, entry_cost
from ..hostmem import available_memory, memory_limit

__all__ = ["PressureMonitor", "ShedReport", "default_threshold"]

log = logging.getLogger("gpupipe.serve.pressure")

MiB = 1024**2


def default_threshold(limit: int | None = None) -> int:
    """The default pressure threshold: 5% of the memory ``limit`` (default :func:`memory_limit`), at least 128 MiB."""
    if limit is None:
        limit = memory_limit()
    return max(128 * MiB, (limit or 0) // 20)


@dataclass(frozen=True)
class ShedReport:
    """What one check did: memory ``available`` (``None``: unknown), whether it was under ``pressure``,
    and the ``entries`` and ``bytes`` it discarded."""

    available: int | None
    pressure: bool
    entries: int = 0
    bytes: int = 0


class PressureMonitor:
    """Sheds entries of ``caches`` while ``read()`` reports less available memory than ``threshold`` bytes.

    ``read`` defaults to :func:`~gpupipe.hostmem.available_memory`; tests pass their own.
    Counters: ``sheds`` (checks that discarded something), ``shed_entries``, ``shed_bytes``, and
    ``pressure`` (whether the last check was under the threshold).
    """

    def __init__(self, caches: Sequence[FrameCache], threshold: int, read: Callable[[], int | None] = available_memory) -> None:
        self.caches = list(caches)
        self.threshold = int(threshold)
        self.read = read
        self.pressure = False
        self.available: int | None = None
        self.sheds = 0
        self.shed_entries = 0
        self.shed_bytes = 0

    def check(self) -> ShedReport:
        """Read available memory once and shed if it is below the threshold (blocking; call it off the event loop)."""
        avail = self.read()
        self.available = avail
        if avail is None or avail >= self.threshold:
            if self.pressure:
                log.info(
                    "memory pressure over: %.0f MiB available (threshold %.0f MiB); the cache refills as requests come",
                    (avail or 0) / MiB,
                    self.threshold / MiB,
                )
            self.pressure = False
            return ShedReport(avail, False)
        started = not self.pressure
        self.pressure = True
        want = self.threshold - avail + self.threshold // 2
        held = [c.stats().bytes for c in self.caches]
        total = sum(held)
        entries = freed = 0
        if total:
            for cache, h in zip(self.caches, held):
                n, b = _shed(cache, -(-want * h // total))
                entries += n
                freed += b
        if entries:
            self.sheds += 1
            self.shed_entries += entries
            self.shed_bytes += freed
        log.log(
            logging.WARNING if started or entries else logging.DEBUG,
            "memory pressure%s: %.0f MiB available, below the threshold of %.0f MiB; shed %d cached entries (%.1f MiB)",
            " started" if started else "",
            avail / MiB,
            self.threshold / MiB,
            entries,
            freed / MiB,
        )
        return ShedReport(avail, True, entries, freed)


def _shed(cache: FrameCache, want: int) -> tuple[int, int]:
    """Discard entries of ``cache`` in its eviction order until ``want`` bytes are freed; ``(entries, bytes)``."""
    entries = freed = 0
    for key in cache.keys():  # noqa: SIM118 - a FrameCache, not a dict: keys() is a snapshot in eviction order
        if freed >= want:
            break
        value = cache.peek(key)
        if value is None:
            continue
        try:
            host, device = entry_cost(value)
        except (TypeError, ValueError):
            host, device = 0, 0
        if cache.discard(key):
            entries += 1
            freed += host + device
    return entries, freed
