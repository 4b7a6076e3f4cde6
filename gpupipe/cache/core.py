"""The cache's shared state under one lock, and the operations every path through it uses.

:class:`CacheCore` owns the lock, the entries (:mod:`.store`), the in-flight side of the budget
(:mod:`.admission`), the held values (:mod:`.holds`), the single-flight table (:mod:`.flights`),
the prefetch bookkeeping and the counters (:mod:`.stats`). Its methods say whether they take the
lock or expect it held. :class:`~.cache.FrameCache` is the public face; :mod:`.loads` runs batches
and loads ahead of requests through these operations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from .admission import Admission, Estimate, Reservation, nonneg_int
from .holds import Hold, Holds, Lease
from .policy import EvictionPolicy
from .stats import CacheStats, Counters
from .store import Entries, EvictCause, Evicted

__all__ = ["CacheCore", "CostedValue", "Flight", "Outcome", "entry_cost"]

log = logging.getLogger("gpupipe.cache")

V = TypeVar("V")

Outcome = Callable[[Hashable, bool], None]
"""Told, with the cache's lock held, whether a prefetched key was used (``True``) or wasted."""


@runtime_checkable
class CostedValue(Protocol):
    """A cache value that says what it holds on the host and on the device (non-negative integers)."""

    host_bytes: int
    device_bytes: int


def entry_cost(value: Any) -> tuple[int, int]:
    """``(host_bytes, device_bytes)`` that ``value`` holds.

    ``str`` → ``(len(value), 0)``; ``bytes``-like → ``(len, 0)``; a :class:`CostedValue` → its
    ``host_bytes`` and ``device_bytes``. Anything else raises ``TypeError``; negative sizes raise
    ``ValueError``.
    """
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, CostedValue):
        return nonneg_int(value.host_bytes, "host_bytes"), nonneg_int(value.device_bytes, "device_bytes")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).nbytes, 0
    raise TypeError(f"cannot size a cache value of type {type(value).__name__}: give it host_bytes and device_bytes")


class Flight:
    """One load in progress that concurrent requests for the same key wait on.

    ``stale`` is set when the key is discarded (or the cache cleared) during the load: the result
    still reaches the waiters but is not cached. ``prefetch`` is a prefetch's outcome callback
    (``None`` for a request's load); ``claimed`` once a request joined it. ``holders`` leases its
    leader wants on the value, taken as the flight finishes unless ``defer_hold`` (then when the
    leader's call returns); ``held`` is that hold.
    """

    __slots__ = ("claimed", "defer_hold", "done", "error", "held", "holders", "owner", "prefetch", "stale", "value")

    def __init__(self, prefetch: Outcome | None = None) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.owner = threading.get_ident()
        self.stale = False
        self.prefetch = prefetch
        self.claimed = False
        self.holders = 0
        self.defer_hold = False
        self.held: Hold | None = None


class CacheCore(Generic[V]):
    """The state of one cache (see the module docstring)."""

    _LOG_INTERVAL_S = 10.0

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        policy: EvictionPolicy,
        admission_timeout: float,
        on_evict: Callable[[Hashable, V, EvictCause], None] | None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self.lock = threading.Lock()
        self.counters = Counters()
        self.admission = Admission(max_bytes, admission_timeout, self.lock)
        self.holds: Holds = self.admission.holds
        self.entries: Entries[V] = Entries(
            policy, max_entries, max_bytes, lambda: self.admission.committed, self.holds, self.counters
        )
        self.entries.on_remove = self._left
        self.flights: dict[Hashable, Flight] = {}
        self.unused_prefetch: dict[Hashable, Outcome] = {}  # prefetched entries no request has used yet
        self._last_oversize_log = -1e9
        self._suppressed_logs = 0

    # ------------------------------------------------------------------ entries (lock held)

    def put_locked(
        self, key: Hashable, value: V, evicted: Evicted, res: Reservation | None = None, prefetch: bool = False
    ) -> bool:
        """Cache ``value`` under ``key`` as the rules allow (lock held); whether it is cached.

        A previous value is removed first (reported as ``"replaced"``). A value larger than the whole
        budget is never cached. With ``res``, the value's cost moves from that reservation to the
        entry. Then :meth:`Entries.place <.store.Entries.place>` decides.
        """
        hb, db = entry_cost(value)
        if key in self.entries:
            old, _, _ = self.entries.remove(key)
            if old is not value:
                evicted.append((key, old, "replaced"))
        if hb + db > self.max_bytes:
            self.counters.oversize_rejects += 1
            self.log_oversize(key, hb + db, "value")
            return False
        if res is not None:
            self.admission.take(res, hb + db)
        return self.entries.place(key, value, hb, db, evicted, prefetch)

    def _left(self, key: Hashable, value: V) -> None:
        """An entry left (lock held): a prefetched value no request used is wasted."""
        outcome = self.unused_prefetch.pop(key, None)
        if outcome is not None:
            self.counters.prefetch_wasted += 1
            outcome(key, False)

    def prefetch_used(self, key: Hashable) -> None:
        """A request met ``key``'s prefetched entry (lock held): count it used, once."""
        outcome = self.unused_prefetch.pop(key, None)
        if outcome is not None:
            self.counters.prefetch_used += 1
            outcome(key, True)

    def notify(self, evicted: Evicted) -> None:
        """Report evicted entries to ``on_evict`` (lock *not* held) and drop the references to them.

        An ``Exception`` from the callback is logged; a ``BaseException`` is re-raised once every
        entry is reported."""
        pending: BaseException | None = None
        try:
            if self.on_evict is not None:
                for key, value, cause in evicted:
                    try:
                        self.on_evict(key, value, cause)
                    except Exception:  # a faulty callback must not corrupt the cache
                        log.exception("on_evict callback failed for %.200r", key)
                    except BaseException as e:  # noqa: BLE001 - re-raised once every entry is reported
                        pending = pending or e
        finally:
            evicted.clear()
        if pending is not None:
            raise pending

    def log_oversize(self, key: Hashable, cost: int, what: str) -> None:
        """One debug line per ``_LOG_INTERVAL_S`` about work or values larger than the budget (lock held)."""
        now = time.monotonic()
        if now - self._last_oversize_log < self._LOG_INTERVAL_S:
            self._suppressed_logs += 1
            return
        more = f" ({self._suppressed_logs} more since the last message)" if self._suppressed_logs else ""
        log.debug(
            "not caching %.200r: its %s of %d bytes exceeds the whole budget of %d bytes%s", key, what, cost, self.max_bytes, more
        )
        self._last_oversize_log = now
        self._suppressed_logs = 0

    # ------------------------------------------------------------------ admission (lock not held)

    def admit(self, est: Estimate, label: str) -> Reservation:
        """Reserve ``est`` bytes for work in flight, evicting entries to make room (FIFO, may wait)."""
        evicted: Evicted = []
        res = self.admission.admit(est, label, lambda total: self.entries.evict_to_fit(total, evicted))
        with self.lock:
            if res.oversize:
                self.counters.oversize_rejects += 1
                self.log_oversize(label, res.total, "work")
            else:
                self.entries.note_peak()
        try:
            self.notify(evicted)
        except BaseException:
            self.admission.release(res)
            raise
        return res

    # ------------------------------------------------------------------ holds

    def hold_locked(self, key: Hashable, value: Any, holders: int, oversize: bool = False) -> Hold:
        """``holders`` more holders of ``value`` (lock held); ``oversize``: made by oversize work, so held
        outside the budget as that work was, whatever its size."""
        self.admission.reap()
        hb, db = entry_cost(value)
        cost = hb + db
        h = self.holds.take(value, cost, self.entries.peek(key) is value, oversize or cost > self.max_bytes, holders)
        self.entries.note_peak()
        return h

    def lease(self, h: Hold, value: Any) -> Lease:
        """A holder's lease on ``value`` under ``h`` (one of the holders ``h`` counts)."""

        def release() -> None:
            with self.lock:
                self.admission.unhold(h)

        return Lease(value, release, lambda: self.admission.orphan(h))

    # ------------------------------------------------------------------ report

    def stats(self) -> CacheStats:
        """A consistent snapshot (takes the lock)."""
        with self.lock:
            self.admission.reap()
            c, e, a = self.counters, self.entries, self.admission
            return CacheStats(
                entries=len(e),
                bytes=e.bytes,
                host_bytes=e.host,
                device_bytes=e.device,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                hits=c.hits,
                misses=c.misses,
                loads=c.loads,
                load_failures=c.load_failures,
                evictions=c.evictions,
                evicted_bytes=c.evicted_bytes,
                oversize_rejects=c.oversize_rejects,
                peak_bytes=c.peak_bytes,
                hit_ratio=c.hit_ratio,
                inflight_bytes=a.inflight,
                inflight_device_bytes=a.device,
                oversize_inflight_bytes=a.oversize_bytes + self.holds.oversize_bytes,
                joined=c.joined,
                admission_waits=a.waits,
                admission_timeouts=a.timeouts,
                prefetched=c.prefetched,
                prefetch_used=c.prefetch_used,
                prefetch_wasted=c.prefetch_wasted,
                bypassed=c.bypassed,
                held_bytes=self.holds.bytes,
                queued=a.queued,
                prefetch_unused=len(self.unused_prefetch),
                kept_bytes=a.kept,
            )
