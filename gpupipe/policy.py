"""Eviction policies for :class:`~gpupipe.cache.FrameCache`: which cached entry leaves first.

A policy only orders keys; the cache owns the values, the byte accounting, the bounds and the
locking, and calls the policy with its lock held. :class:`LruPolicy` is the default.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterator, Protocol

__all__ = ["EvictionPolicy", "LruPolicy"]


class EvictionPolicy(Protocol):
    """The order in which a cache's entries are evicted.

    ``add`` is called when a key is inserted, ``touch`` when it is read, ``remove`` when it
    leaves for any reason; ``victim`` names the key to evict next (only called while the policy
    holds at least one key), and iterating gives the keys, first victim first.
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
