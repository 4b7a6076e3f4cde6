"""The schedule-aware eviction order (:class:`SchedulePolicy`): by next use in the open schedules, LRU otherwise."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator

from .scheduler import Scheduler

__all__ = ["SchedulePolicy"]


class SchedulePolicy:
    """Evict by next scheduled use, weighted by size; frames outside every schedule by LRU.

    The order, first victim first (ranks from :meth:`Scheduler.rank <gpupipe.schedule.Scheduler.rank>`):

    1. frames that open schedules hold but never use again, least recently used first;
    2. frames outside every open schedule, least recently used first;
    3. scheduled frames, largest ``weight(d, bytes)`` first (by default ``(d + 1) * sqrt(bytes)``), where ``d`` is the number of
       positions to the frame's next use (the soonest over every open schedule; 0 while it is
       pending, see :mod:`gpupipe.schedule`); ties least recently used first.

    The byte weighting: keeping a frame until its next use earns one hit and occupies its bytes
    for about ``d + 1`` requests, so ``(d + 1) * bytes`` is the space-time a hit costs, and the
    frame with the most is given up first. With uniform sizes this is Belady's furthest-next-use
    order, and the cache's bypass rule (see :meth:`worse_than`) makes it Belady's optimum with
    bypass; with mixed sizes it prefers keeping many small frames to one large frame used as
    soon. With no schedule open the order is exactly LRU.

    It is a :class:`~gpupipe.cache.BypassPolicy`: the cache inserts a new frame only if the room it
    needs can be made by evicting frames that rank at or before it (:meth:`worse_than`), else
    returns it without caching it; and a :class:`~gpupipe.cache.SparePolicy`: read-ahead may
    displace only tiers 1 and 2 (:meth:`spare`).
    """

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self._lru: OrderedDict[Hashable, tuple[Hashable, int]] = OrderedDict()  # key -> (schedule id, bytes)

    def add(self, key: Hashable, cost: int = 0) -> None:
        """A new key costing ``cost`` bytes is the most recently used."""
        sid = self.scheduler.sid(key)
        self._lru[key] = (sid, cost)
        self._lru.move_to_end(key)
        self.scheduler.note_cached(sid, 1)

    def touch(self, key: Hashable) -> None:
        """A read makes ``key`` the most recently used."""
        self._lru.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        """Forget ``key``."""
        sid, _ = self._lru.pop(key)
        self.scheduler.note_cached(sid, -1)

    def _ranked(self) -> list[tuple[tuple[int, float], int, Hashable]]:
        sch = self.scheduler
        with sch.lock:
            return [(sch.rank_locked(sid, cost), i, k) for i, (k, (sid, cost)) in enumerate(self._lru.items())]

    def victim(self) -> Hashable:
        """The first key of the order."""
        if not self.scheduler.active:
            return next(iter(self._lru))
        sch = self.scheduler
        best: tuple[int, float] | None = None
        found: Hashable = None
        with sch.lock:
            for k, (sid, cost) in self._lru.items():
                r = sch.rank_locked(sid, cost)
                if r[0] == 2:
                    return k
                if best is None or r > best:
                    best, found = r, k
        return found

    def order(self) -> list[Hashable]:
        """Every key, first victim first."""
        if not self.scheduler.active:
            return list(self._lru)
        return [k for _, _, k in sorted(self._ranked(), key=lambda t: (-t[0][0], -t[0][1], t[1]))]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.order())

    def worse_than(self, key: Hashable, cost: int) -> Iterator[Hashable]:
        """The cached keys that a new ``key`` costing ``cost`` bytes may displace, first victim first:
        those ranking at or before it (a new key is the most recently used, so ties go first)."""
        if not self.scheduler.active:
            yield from list(self._lru)
            return
        mine = self.scheduler.rank(self.scheduler.sid(key), cost)
        ahead = [t for t in self._ranked() if t[0] >= mine]
        ahead.sort(key=lambda t: (-t[0][0], -t[0][1], t[1]))
        for _, _, k in ahead:
            yield k

    def spare(self) -> Iterator[Hashable]:
        """The keys read-ahead may displace, first victim first: those no open schedule will use
        again, then those outside every open schedule (with none open, every key, LRU first)."""
        if not self.scheduler.active:
            yield from list(self._lru)
            return
        ranked = [t for t in self._ranked() if t[0][0] >= 1]
        ranked.sort(key=lambda t: (-t[0][0], t[1]))
        for _, _, k in ranked:
            yield k
