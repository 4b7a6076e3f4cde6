"""Single-flight loads: one load per key at a time, which concurrent requests for that key join.

:func:`claim` sorts a request's keys (under the cache's lock) into hits, keys it leads (a new
:class:`~.core.Flight`) and flights it joins; :func:`finish` completes a flight with its value or error,
caches a good value as the rules allow, and wakes the joiners. A flight may also be a load ahead
of requests (a prefetch), which the first request for its key claims.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from typing import Any

from ..errors import CacheError
from .admission import Reservation
from .core import CacheCore, Flight
from .store import Evicted

__all__ = ["claim", "finish"]


def claim(
    core: CacheCore[Any], keys: Sequence[Hashable], results: list[Any]
) -> tuple[list[Hashable], list[tuple[int, Flight]], dict[Hashable, list[int]]]:
    """Under the lock: fill hits into ``results``; return the keys this thread leads (their flights
    started), the flights it joins with the positions that wait on them, and each key's positions.

    Raises :class:`~gpupipe.errors.CacheError` when a loader asks for a key it is loading itself.
    """
    me = threading.get_ident()
    positions: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        positions.setdefault(k, []).append(i)
        f = core.flights.get(k)
        if f is not None and f.owner == me:
            raise CacheError(f"the loader of key {k!r:.200} requested that same key: it would wait for itself forever")
    led: list[Hashable] = []
    joins: list[tuple[int, Flight]] = []
    c = core.counters
    for k, idx in positions.items():
        value = core.entries.touch(k)
        if value is not None:
            c.hits += len(idx)
            for i in idx:
                results[i] = value
            core.prefetch_used(k)
            continue
        f = core.flights.get(k)
        if f is None:
            core.flights[k] = Flight()
            c.misses += 1
            c.loads += 1
            c.joined += len(idx) - 1
            led.append(k)
            continue
        if f.prefetch is not None and not f.claimed:
            f.claimed = True
            c.prefetch_used += 1
            f.prefetch(k, True)
        c.joined += len(idx)
        joins.extend((i, f) for i in idx)
    return led, joins, positions


def finish(
    core: CacheCore[Any], key: Hashable, value: Any, res: Reservation | None, evicted: Evicted
) -> tuple[Any, BaseException | None]:
    """Complete ``key``'s flight (lock held) with ``value`` (an exception fails it): cache a good value
    unless the flight is stale or the work was oversize, take its leader's leases, wake the joiners.
    Returns ``(value, error)`` as settled."""
    flight = core.flights.pop(key)
    error = value if isinstance(value, BaseException) else None
    if value is None:
        error = CacheError(f"the loader of key {key!r:.200} returned None")
    oversize = res is not None and res.oversize
    stored = False
    if error is None and not flight.stale and not oversize:
        try:
            stored = core.put_locked(key, value, evicted, res, prefetch=flight.prefetch is not None)
        except (TypeError, ValueError) as e:
            error = e
    if flight.prefetch is not None and not flight.claimed:
        if stored:
            core.unused_prefetch[key] = flight.prefetch
        else:
            core.counters.prefetch_wasted += 1
            flight.prefetch(key, False)
    if error is not None:
        core.counters.load_failures += 1
        flight.error, value = error, None
    elif flight.holders and not flight.defer_hold:  # held before the reservation is released: never outside the budget
        flight.held = core.hold_locked(key, value, flight.holders, oversize=oversize)
    flight.value = value
    flight.done.set()
    return value, error
