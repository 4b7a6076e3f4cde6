"""Values handed out and still in use: their bytes while they are not cache entries, and their leases.

A value the cache hands out (a URI being sent to a slow client) stays in memory as long as its
user reads it, even if its entry is evicted meanwhile. :class:`Holds` tracks such values by
identity: while a held value is an entry its bytes count once, as the entry; once it is not, they
count here, beside the work in flight (values larger than the whole budget outside it, as the
oversize work that made them). A :class:`Lease` is one holder's handle on a value. No locking of
its own: every method runs under the cache's lock, except where it says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Hold", "Holds", "Lease"]


class Hold:
    """One value held by one or more holders; ``outside`` while it is not a cache entry (its bytes then
    count in :attr:`Holds.bytes`, or in :attr:`Holds.oversize_bytes` when ``oversize``)."""

    __slots__ = ("count", "nbytes", "outside", "oversize", "value")

    def __init__(self, value: object, nbytes: int, oversize: bool) -> None:
        self.value = value
        self.nbytes = nbytes
        self.oversize = oversize
        self.count = 0
        self.outside = False


class Holds:
    """Values handed out and still in use, by identity; their bytes while they are not cache entries.

    Evicting a held entry frees none of its bytes. (One object cached under two keys at once is
    two entries to the cache, each counted, and one value here.)

    The cache tells it when a value enters (:meth:`entered`) or leaves (:meth:`left`) its store, so a
    held value's bytes count exactly once: as an entry while it is one, here otherwise. No locking
    of its own (the cache's lock is held).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, Hold] = {}
        self.bytes = 0
        self.oversize_bytes = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, value: object) -> bool:
        return id(value) in self._by_id

    def _outside(self, h: Hold, sign: int) -> None:
        h.outside = sign > 0
        if h.oversize:
            self.oversize_bytes += sign * h.nbytes
        else:
            self.bytes += sign * h.nbytes

    def take(self, value: object, nbytes: int, cached: bool, oversize: bool, holders: int = 1) -> Hold:
        """``holders`` more holders of ``value`` (``nbytes``; ``cached``: it is a cache entry now)."""
        h = self._by_id.get(id(value))
        if h is None:
            h = self._by_id[id(value)] = Hold(value, nbytes, oversize)
            if not cached:
                self._outside(h, 1)
        h.count += holders
        return h

    def drop(self, h: Hold) -> None:
        """One holder of ``h`` let go; the last one ends the hold."""
        h.count -= 1
        if h.count == 0:
            del self._by_id[id(h.value)]
            if h.outside:
                self._outside(h, -1)

    def left(self, value: object) -> None:
        """``value`` stopped being a cache entry: if it is held, its bytes now count here."""
        h = self._by_id.get(id(value))
        if h is not None and not h.outside:
            self._outside(h, 1)

    def entered(self, value: object) -> None:
        """``value`` became a cache entry: if it is held, the entry now counts its bytes."""
        h = self._by_id.get(id(value))
        if h is not None and h.outside:
            self._outside(h, -1)


class Lease:
    """``value``, held against a cache's byte budget until :meth:`release` (or the end of a ``with``
    block); releasing twice is harmless.

    ``release`` and ``orphan`` are the cache's: ``release()`` lets go under the cache's lock;
    ``orphan()`` queues the release without taking it, for a lease garbage-collected unreleased (a
    result nobody took), since the collector may run while this thread holds that lock. A lease
    with neither (:meth:`detached`) counts nowhere.
    """

    __slots__ = ("_orphan", "_release", "value")

    def __init__(self, value: Any, release: Callable[[], None] | None = None, orphan: Callable[[], None] | None = None) -> None:
        self.value = value
        self._release = release
        self._orphan = orphan

    @classmethod
    def detached(cls, value: Any) -> Lease:
        """A lease on a value that no cache counts (e.g. a resolver's answer); releasing it does nothing."""
        return cls(value)

    def release(self) -> None:
        """Let go of the value: its bytes stop counting (unless it is still an entry)."""
        release, self._release, self._orphan = self._release, None, None
        if release is not None:
            release()

    def __del__(self) -> None:
        orphan, self._release, self._orphan = self._orphan, None, None
        if orphan is not None:
            orphan()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
