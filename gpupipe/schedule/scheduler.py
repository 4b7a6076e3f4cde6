"""The open schedules of one cache (:class:`Scheduler`) and the next-use ranks its eviction policy asks for."""

from __future__ import annotations

import logging
import math
import threading
from array import array
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, cast

from .cursor import Reader, Schedule

__all__ = ["DEFAULT_WINDOW", "NEVER", "UNSCHEDULED_TIER", "Scheduler", "Weight", "sqrt_weight"]

log = logging.getLogger("gpupipe.schedule")

DEFAULT_WINDOW = 64
"""Positions behind the cursor within which a request still matches its place (out of order or a retry)."""


def sqrt_weight(distance: int, nbytes: int) -> float:
    """The default eviction weight of a scheduled frame: ``(distance + 1) * sqrt(bytes)`` (see :class:`~gpupipe.schedule.SchedulePolicy`)."""
    return (distance + 1) * math.sqrt(max(nbytes, 1))


Weight = Callable[[int, int], float]
"""``weight(distance, bytes)``: larger is evicted first among scheduled frames; must grow with distance."""

NEVER = 2, 0
"""Rank of a cached frame that open schedules hold but never use again: evicted first."""
UNSCHEDULED_TIER = 1
"""Tier of a frame outside every open schedule: below scheduled frames, LRU among themselves."""


class Scheduler:
    """The open schedules of one cache, and the next-use ranks its eviction policy asks for.

    ``ident(key)`` maps a cache key to the schedule id it is declared by (default: the key
    itself); a pipeline drops the parts of a key that change when a file is rewritten. One
    lock guards every schedule; the cache's lock may be held when it is taken, never the other
    way round.
    """

    def __init__(
        self, ident: Callable[[Any], Hashable] | None = None, *, window: int = DEFAULT_WINDOW, weight: Weight = sqrt_weight
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window must be a non-negative integer, got {window!r}")
        self.ident = ident
        self.window = window
        self.weight = weight
        self.lock = threading.Lock()
        """Guards every schedule's state; the cache's lock may be held when it is taken, never the other way round."""
        self.changed = threading.Condition(self.lock)
        """Notified when a cursor moves, a schedule opens or closes, or the cache drops a scheduled frame."""
        self._schedules: list[Schedule] = []
        self._cached: dict[Hashable, int] = {}  # schedule id -> cached keys with it
        self._numbers = 0

    def sid(self, key: Hashable) -> Hashable:
        """The schedule id of cache key ``key``."""
        return key if self.ident is None else self.ident(key)

    @property
    def active(self) -> bool:
        """Whether any schedule is open (read without the lock: a hint)."""
        return bool(self._schedules)

    def open(self, items: Iterable[Hashable | tuple[Hashable, Any]], *, with_sources: bool = False) -> Schedule:
        """Open a schedule of the given schedule ids, in request order; returns it.

        With ``with_sources``, each item is ``(sid, source)``, the source being what read-ahead
        loads for that id (the first one given per id is kept).
        """
        index: dict[Hashable, int] = {}
        sids: list[Hashable] = []
        sources: list[Any] = []
        ids = array("i")
        for item in items:
            sid, src = cast("tuple[Hashable, Any]", item) if with_sources else (item, None)
            lid = index.get(sid)
            if lid is None:
                lid = index[sid] = len(sids)
                sids.append(sid)
                sources.append(src)
            ids.append(lid)
        with self.lock:
            self._numbers += 1
            number = self._numbers
        sched = Schedule(self, number, sids, sources, ids, self.window)
        with self.lock:
            self._schedules.append(sched)
            self.changed.notify_all()
        log.debug("schedule #%d opened: %d positions, %d distinct frames", number, sched.length, len(sids))
        return sched

    def close(self, sched: Schedule) -> Reader | None:
        """Withdraw ``sched`` (idempotent); returns its read-ahead for the caller to join, unless that is
        the calling thread (or it had none). :meth:`Schedule.close` is the public way."""
        with self.lock:
            if sched.closed:
                return None
            sched.closed = True
            self._schedules.remove(sched)
            self.changed.notify_all()
            reader, sched.reader = sched.reader, None
        s = sched.stats()
        log.info(
            "schedule #%d closed at position %d/%d: %d requests, %d hits, %d misses, %d resyncs, "
            "%d prefetched (%d used, %d wasted)",
            sched.number,
            s.position,
            s.length,
            s.requests,
            s.hits,
            s.misses,
            s.resyncs,
            s.prefetched,
            s.prefetch_used,
            s.wasted,
        )
        return reader if reader is not None and not reader.is_current_thread() else None

    def schedules(self) -> list[Schedule]:
        """The open schedules, oldest first."""
        with self.lock:
            return list(self._schedules)

    def observe(self, sid: Hashable) -> list[Schedule]:
        """Note a request for ``sid``: move the cursors it matches (see the module doc); returns those schedules."""
        if not self._schedules:
            return []
        with self.lock:
            matched: list[Schedule] = []
            far: list[tuple[int, Schedule, int, int]] = []
            for s in self._schedules:
                lid = s.frame_of(sid)
                if lid is None:
                    continue
                kind, target = s.probe(lid)
                if kind == "far":
                    far.append((target - s.pos, s, target, lid))
                elif kind != "none":
                    s.apply(kind, target, lid)
                    matched.append(s)
            if not matched and far:
                _, s, target, lid = min(far, key=lambda f: f[0])
                s.apply("far", target, lid)
                matched.append(s)
            if any(s.due() for s in matched):
                self.changed.notify_all()
            return matched

    def count(self, schedules: Sequence[Schedule], hit: bool) -> None:
        """Count one request's outcome (served without an encode, or not) in each of ``schedules``."""
        with self.lock:
            for s in schedules:
                s.count(hit)

    # ------------------------------------------------------------------ ranks (for the eviction policy)

    def rank_locked(self, sid: Hashable, cost: int) -> tuple[int, float]:
        """(Lock held.) ``(tier, weight)``; larger is evicted first. Tier 2: held by open schedules but never used
        again; tier 1: outside every open schedule; tier 0: scheduled, weighted by ``self.weight(distance, cost)``."""
        best = -1
        member = False
        for s in self._schedules:
            lid = s.frame_of(sid)
            if lid is None:
                continue
            member = True
            d = s.distance(lid)
            if d is not None and (best < 0 or d < best):
                best = d
        if best >= 0:
            return 0, self.weight(best, cost)
        return NEVER if member else (UNSCHEDULED_TIER, 0)

    def rank(self, sid: Hashable, cost: int) -> tuple[int, float]:
        """The eviction rank of a frame with schedule id ``sid`` costing ``cost`` bytes (see :meth:`rank_locked`)."""
        with self.lock:
            return self.rank_locked(sid, cost)

    def next_use(self, sid: Hashable) -> int | None:
        """Positions until ``sid``'s soonest use over the open schedules (``None``: none)."""
        with self.lock:
            ds = [d for s in self._schedules if (lid := s.frame_of(sid)) is not None and (d := s.distance(lid)) is not None]
            return min(ds) if ds else None

    def note_cached(self, sid: Hashable, delta: int) -> None:
        """The cache added (``+1``) or removed (``-1``) a key with this schedule id."""
        with self.lock:
            n = self._cached.get(sid, 0) + delta
            if n > 0:
                self._cached[sid] = n
            else:
                self._cached.pop(sid, None)
                if self._schedules:
                    self.changed.notify_all()

    def is_cached(self, sid: Hashable) -> bool:
        """(Lock held.) Whether the cache holds a key with schedule id ``sid``."""
        return sid in self._cached
