"""Eviction policies for :class:`~gpupipe.cache.FrameCache`: which cached entry leaves first.

A policy only orders keys; the cache owns the values, the byte accounting, the bounds and the
locking, and calls the policy with its lock held. :class:`LruPolicy` is the default;
:class:`SchedulePolicy` evicts by next use in declared schedules (:mod:`gpupipe.schedule`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Protocol

from .schedule import Scheduler

__all__ = ["EvictionPolicy", "LruPolicy", "SchedulePolicy"]


class EvictionPolicy(Protocol):
    """The order in which a cache's entries are evicted.

    ``add`` is called when a key is inserted, ``touch`` when it is read, ``remove`` when it
    leaves for any reason; ``victim`` names the key to evict next (only called while the policy
    holds at least one key), and iterating gives the keys, first victim first.

    Optional, as :class:`SchedulePolicy` has them: ``sized = True`` (``add(key, cost)`` receives
    the entry's bytes), ``bypass = True`` with ``worse_than(key, cost)`` (the cache inserts a new
    key only into room it can make from those keys, else returns it uncached), and ``spare()``
    (the keys :meth:`FrameCache.prefetch_many <gpupipe.FrameCache.prefetch_many>` may displace;
    without it read-ahead uses free room only).
    """

    def add(self, key: Hashable) -> None: ...
    def touch(self, key: Hashable) -> None: ...
    def remove(self, key: Hashable) -> None: ...
    def victim(self) -> Hashable: ...
    def __iter__(self) -> Iterator[Hashable]: ...


class LruPolicy:
    """Least recently used first."""

    def __init__(self) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> None:
        """A new key is the most recently used."""
        self._order[key] = None
        self._order.move_to_end(key)

    def touch(self, key: Hashable) -> None:
        """A read makes ``key`` the most recently used."""
        self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        """Forget ``key``."""
        del self._order[key]

    def victim(self) -> Hashable:
        """The least recently used key."""
        return next(iter(self._order))

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._order)


class SchedulePolicy:
    """Evict by next scheduled use, weighted by size; frames outside every schedule by LRU.

    The order, first victim first (ranks from :meth:`Scheduler.rank <gpupipe.schedule.Scheduler.rank>`):

    1. frames that open schedules hold but never use again, least recently used first;
    2. frames outside every open schedule, least recently used first;
    3. scheduled frames, largest ``(d + 1) * bytes`` first, where ``d`` is the number of
       positions to the frame's next use (the soonest over every open schedule; 0 while it is
       pending, see :mod:`gpupipe.schedule`); ties least recently used first.

    The byte weighting: keeping a frame until its next use earns one hit and occupies its bytes
    for about ``d + 1`` requests, so ``(d + 1) * bytes`` is the space-time a hit costs, and the
    frame with the most is given up first. With uniform sizes this is Belady's furthest-next-use
    order, and the cache's bypass rule (see :meth:`worse_than`) makes it Belady's optimum with
    bypass; with mixed sizes it prefers keeping many small frames to one large frame used as
    soon. With no schedule open the order is exactly LRU.

    ``bypass = True`` tells the cache to insert a new frame only if the room it needs can be
    made by evicting frames that rank at or before it (:meth:`worse_than`), else to return it
    without caching it; read-ahead may displace only tiers 1 and 2 (:meth:`spare`).
    """

    sized = True
    bypass = True

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self._lru: OrderedDict[Hashable, tuple[Hashable, int]] = OrderedDict()  # key -> (schedule id, bytes)

    def add(self, key: Hashable, cost: int = 0) -> None:
        """A new key costing ``cost`` bytes is the most recently used."""
        sid = self.scheduler.sid(key)
        self._lru[key] = (sid, cost)
        self._lru.move_to_end(key)
        self.scheduler._note_cached(sid, 1)

    def touch(self, key: Hashable) -> None:
        """A read makes ``key`` the most recently used."""
        self._lru.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        """Forget ``key``."""
        sid, _ = self._lru.pop(key)
        self.scheduler._note_cached(sid, -1)

    def _ranked(self) -> list[tuple[tuple[int, float], int, Hashable]]:
        sch = self.scheduler
        with sch._lock:
            return [(sch._rank_locked(sid, cost), i, k) for i, (k, (sid, cost)) in enumerate(self._lru.items())]

    def victim(self) -> Hashable:
        """The first key of the order."""
        if not self.scheduler.active:
            return next(iter(self._lru))
        sch = self.scheduler
        best: tuple[int, float] | None = None
        found: Hashable = None
        with sch._lock:
            for k, (sid, cost) in self._lru.items():
                r = sch._rank_locked(sid, cost)
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
