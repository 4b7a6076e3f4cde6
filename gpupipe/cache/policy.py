"""Eviction policies: which cached entry leaves first, and the optional capabilities a policy declares.

A policy only orders keys; the cache owns the values, the byte accounting, the bounds and the
locking, and calls the policy with its lock held. The contract is :class:`EvictionPolicy`; a
policy that also decides admission implements :class:`BypassPolicy`, one that names the entries
read-ahead may displace implements :class:`SparePolicy`. The cache checks these once, with
``isinstance``, when it is built. :class:`LruPolicy` is the plain one; the schedule-aware policy is
:class:`gpupipe.schedule.SchedulePolicy` (the cache's default).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from typing import Protocol, runtime_checkable

__all__ = ["BypassPolicy", "EvictionPolicy", "LruPolicy", "SparePolicy"]


@runtime_checkable
class EvictionPolicy(Protocol):
    """The order in which a cache's entries are evicted.

    ``add`` is called when a key is inserted (with the entry's bytes), ``touch`` when it is read,
    ``remove`` when it leaves for any reason; ``victim`` names the key to evict next (only called
    while the policy holds at least one key), and iterating gives the keys, first victim first.
    """

    def add(self, key: Hashable, cost: int) -> None: ...
    def touch(self, key: Hashable) -> None: ...
    def remove(self, key: Hashable) -> None: ...
    def victim(self) -> Hashable: ...
    def __iter__(self) -> Iterator[Hashable]: ...


@runtime_checkable
class BypassPolicy(EvictionPolicy, Protocol):
    """A policy that also decides admission: the cache inserts a new key only into room it can make by
    evicting the keys :meth:`worse_than` gives, and otherwise returns the value without caching it."""

    def worse_than(self, key: Hashable, cost: int) -> Iterable[Hashable]:
        """The cached keys that a new ``key`` costing ``cost`` bytes may displace, first victim first."""
        ...


@runtime_checkable
class SparePolicy(EvictionPolicy, Protocol):
    """A policy that names the entries loads ahead of requests may displace
    (:meth:`FrameCache.prefetch_many <gpupipe.FrameCache.prefetch_many>`); without it, read-ahead
    uses free room only."""

    def spare(self) -> Iterable[Hashable]:
        """The keys read-ahead may evict, first victim first."""
        ...


class LruPolicy:
    """Least recently used first."""

    def __init__(self) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable, cost: int = 0) -> None:
        """A new key is the most recently used (its cost does not matter)."""
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
