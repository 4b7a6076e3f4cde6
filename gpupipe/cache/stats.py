"""The cache's counters and the snapshot it reports (:class:`CacheStats`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CacheStats", "Counters"]


@dataclass
class Counters:
    """The cache's running counters (mutated under its lock); :class:`CacheStats` documents each."""

    hits: int = 0
    misses: int = 0
    joined: int = 0
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    oversize_rejects: int = 0
    prefetched: int = 0
    prefetch_used: int = 0
    prefetch_wasted: int = 0
    bypassed: int = 0
    peak_bytes: int = 0

    @property
    def hit_ratio(self) -> float:
        """``(hits + joined) / lookups``; 0 before any lookup."""
        lookups = self.hits + self.misses + self.joined
        return (self.hits + self.joined) / lookups if lookups else 0.0


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a :class:`FrameCache`'s state and counters.

    ``bytes == host_bytes + device_bytes`` is the cost of the present entries;
    ``inflight_bytes`` is what work under way holds inside the budget (of which
    ``inflight_device_bytes`` on the device); ``held_bytes`` is what values handed out and still
    in use (:meth:`FrameCache.hold`, :meth:`FrameCache.lease_many`: a URI being sent) hold while
    they are not entries; ``kept_bytes`` is what is kept past the work that admitted it (open
    video decoders' state, :meth:`FrameCache.keep`); ``peak_bytes`` is the highest
    ``bytes + inflight_bytes + held_bytes + kept_bytes`` seen, never above ``max_bytes`` while
    estimates hold and held values fit.
    ``oversize_inflight_bytes`` is held outside the budget by the one oversize job allowed, and by
    held values larger than the whole budget.

    Lookups are ``hits + misses + joined``: a *miss* starts a load, a *join* waits for a load
    another request started. ``hit_ratio`` is ``(hits + joined) / lookups``, the share of
    requests that caused no work, so it does not fall when more threads ask for the same frames.

    ``prefetched`` loads were started ahead of requests (:meth:`FrameCache.prefetch_many`; they
    count in ``loads`` but not in lookups); ``prefetch_used`` of them were then requested (a hit,
    or a join while loading) and ``prefetch_wasted`` left the cache, or were never admitted,
    before any request. ``bypassed`` values were returned but not cached because the policy
    ranked them behind every entry they would have displaced. Requests served without any encode:
    ``hits + misses + joined - loads``. ``queued`` reservations wait for room now, and
    ``prefetch_unused`` prefetched entries are cached but not yet requested.
    """

    entries: int
    bytes: int
    host_bytes: int
    device_bytes: int
    max_entries: int
    max_bytes: int
    hits: int
    misses: int
    loads: int
    load_failures: int
    evictions: int
    evicted_bytes: int
    oversize_rejects: int
    peak_bytes: int
    hit_ratio: float
    inflight_bytes: int = 0
    inflight_device_bytes: int = 0
    oversize_inflight_bytes: int = 0
    joined: int = 0
    admission_waits: int = 0
    admission_timeouts: int = 0
    prefetched: int = 0
    prefetch_used: int = 0
    prefetch_wasted: int = 0
    bypassed: int = 0
    held_bytes: int = 0
    queued: int = 0
    prefetch_unused: int = 0
    kept_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict."""
        return dict(self.__dict__)
