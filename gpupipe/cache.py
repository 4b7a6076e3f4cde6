"""A thread-safe LRU cache of data URIs bounded by entry count AND bytes.

The byte total counts host strings and the device memory that entries hold: a ``str`` costs
``len(value)`` bytes (data URIs are ASCII); any value with ``host_bytes`` and ``device_bytes``
attributes (such as the GPU path's device-resident URIs) costs their sum. In-flight work can
reserve bytes (:meth:`FrameCache.reserve`) so that staging buffers and the URIs being built
fit inside the same budget: entries are evicted to make room for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Iterator, Literal, TypeVar

__all__ = ["FrameCache", "CacheStats", "EvictCause", "entry_cost"]

log = logging.getLogger("gpupipe.cache")

V = TypeVar("V")
EvictCause = Literal["size", "replaced", "explicit"]


def entry_cost(value: Any) -> tuple[int, int]:
    """``(host_bytes, device_bytes)`` that ``value`` holds.

    ``str`` → ``(len(value), 0)``; ``bytes``-like → ``(len, 0)``; objects exposing
    ``host_bytes`` and ``device_bytes`` → those. Anything else raises ``TypeError``.
    """
    if isinstance(value, str):
        return len(value), 0
    hb = getattr(value, "host_bytes", None)
    db = getattr(value, "device_bytes", None)
    if hb is not None and db is not None:
        return int(hb), int(db)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value), 0
    raise TypeError(f"cannot size a cache value of type {type(value).__name__}: give it host_bytes and device_bytes")


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a :class:`FrameCache`'s state and counters.

    ``bytes == host_bytes + device_bytes`` is the cost of the present entries;
    ``inflight_bytes`` is what :meth:`FrameCache.reserve` holds for work under way;
    ``peak_bytes`` is the highest ``bytes + inflight_bytes`` seen.
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

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict."""
        return dict(self.__dict__)


class _Flight:
    """One in-progress load that concurrent misses of the same key wait on."""

    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class FrameCache(Generic[V]):
    """LRU cache bounded by ``max_entries`` and ``max_bytes``; thread-safe.

    After each insert, least-recently-used entries are evicted while
    ``entries > max_entries or bytes > max_bytes``. An entry whose cost alone exceeds
    ``max_bytes`` is never inserted (it would only evict everything and then itself):
    :meth:`put` returns ``False``, ``oversize_rejects`` counts it and :meth:`get_or_load`
    still returns it to the caller.

    ``on_evict(key, value, cause)`` is called, outside the cache's lock, for every entry that
    leaves: ``cause`` is ``"size"`` (a bound), ``"replaced"`` (a new value for the key) or
    ``"explicit"`` (:meth:`discard` / :meth:`clear`).
    """

    _LOG_INTERVAL_S = 10.0

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        on_evict: Callable[[Hashable, V, EvictCause], None] | None = None,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple[V, int, int]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._host = 0
        self._device = 0
        self._inflight = 0
        self._peak = 0
        self._hits = self._misses = self._loads = self._load_failures = 0
        self._evictions = self._evicted_bytes = self._oversize = 0
        self._last_oversize_log = -1e9
        self._suppressed_logs = 0

    # ------------------------------------------------------------------ internals (lock held)

    @property
    def _bytes(self) -> int:
        return self._host + self._device

    def _remove(self, key: Hashable) -> tuple[V, int, int]:
        value, hb, db = self._data.pop(key)
        self._host -= hb
        self._device -= db
        return value, hb, db

    def _evict_to_fit(self, extra: int, out: list[tuple[Hashable, V, EvictCause]], keep_newest: bool = False) -> None:
        """Evict LRU entries while over a bound, counting reservations and ``extra`` bytes.

        With ``keep_newest`` the most recent entry (the one just put, which fits the budget
        on its own) is never evicted, even while reservations of work in flight are large.
        """
        floor = 1 if keep_newest else 0
        while len(self._data) > floor and (
            len(self._data) > self.max_entries or self._bytes + self._inflight + extra > self.max_bytes
        ):
            key = next(iter(self._data))
            value, hb, db = self._remove(key)
            self._evictions += 1
            self._evicted_bytes += hb + db
            out.append((key, value, "size"))

    def _note_peak(self) -> None:
        total = self._bytes + self._inflight
        if total > self._peak:
            self._peak = total

    def _log_oversize(self, key: Hashable, cost: int) -> None:
        now = time.monotonic()
        if now - self._last_oversize_log >= self._LOG_INTERVAL_S:
            more = f" ({self._suppressed_logs} more since the last message)" if self._suppressed_logs else ""
            log.debug(
                "not caching %r: its %d bytes exceed the whole budget of %d bytes%s",
                key, cost, self.max_bytes, more,
            )
            self._last_oversize_log = now
            self._suppressed_logs = 0
        else:
            self._suppressed_logs += 1

    def _notify(self, evicted: list[tuple[Hashable, V, EvictCause]]) -> None:
        if self.on_evict is not None:
            for key, value, cause in evicted:
                try:
                    self.on_evict(key, value, cause)
                except Exception:  # a faulty callback must not corrupt the cache
                    log.exception("on_evict callback failed for %r", key)

    def _put_locked(self, key: Hashable, value: V, evicted: list[tuple[Hashable, V, EvictCause]]) -> bool:
        hb, db = entry_cost(value)
        if key in self._data:
            old, _, _ = self._remove(key)
            if old is not value:
                evicted.append((key, old, "replaced"))
        if hb + db > self.max_bytes:
            self._oversize += 1
            self._log_oversize(key, hb + db)
            return False
        self._data[key] = (value, hb, db)
        self._host += hb
        self._device += db
        self._note_peak()
        self._evict_to_fit(0, evicted, keep_newest=True)
        return True

    # ------------------------------------------------------------------ public API

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` (refreshing its recency), or ``None`` on a miss."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return item[0]

    def peek(self, key: Hashable) -> V | None:
        """The value for ``key`` without touching recency or counters."""
        with self._lock:
            item = self._data.get(key)
            return None if item is None else item[0]

    def put(self, key: Hashable, value: V) -> bool:
        """Store ``value``; ``True`` if stored, ``False`` if rejected because it alone exceeds ``max_bytes``.

        A previous value under ``key`` is removed first (``on_evict`` cause ``"replaced"``),
        even when the new value is rejected: the old one is stale.
        """
        evicted: list[tuple[Hashable, V, EvictCause]] = []
        with self._lock:
            stored = self._put_locked(key, value, evicted)
        self._notify(evicted)
        return stored

    def get_or_load(self, key: Hashable, loader: Callable[[], V]) -> V:
        """The cached value for ``key``, else ``loader()``'s result, cached if it fits.

        Single-flight: concurrent misses of one key call ``loader`` once; the others wait
        and get the same value. If ``loader`` raises, every waiter gets that exception and
        nothing is cached.
        """
        with self._lock:
            item = self._data.get(key)
            if item is not None:
                self._data.move_to_end(key)
                self._hits += 1
                return item[0]
            self._misses += 1
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
                self._loads += 1
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        evicted: list[tuple[Hashable, V, EvictCause]] = []
        try:
            value = loader()
        except BaseException as e:
            with self._lock:
                self._load_failures += 1
                del self._flights[key]
            flight.error = e
            flight.done.set()
            raise
        try:
            with self._lock:
                del self._flights[key]
                self._put_locked(key, value, evicted)
        finally:
            flight.value = value
            flight.done.set()
        self._notify(evicted)
        return value

    def discard(self, key: Hashable) -> bool:
        """Remove ``key`` if present (``on_evict`` cause ``"explicit"``); ``True`` if it was there."""
        with self._lock:
            if key not in self._data:
                return False
            value, _, _ = self._remove(key)
        self._notify([(key, value, "explicit")])
        return True

    def clear(self) -> None:
        """Remove every entry (``on_evict`` cause ``"explicit"`` for each); counters are kept."""
        with self._lock:
            items = [(k, v, "explicit") for k, (v, _, _) in self._data.items()]
            self._data.clear()
            self._host = self._device = 0
        self._notify(items)  # type: ignore[arg-type]

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[int]:
        """Hold ``nbytes`` of the byte budget for work in flight (staging buffers, URIs being built).

        Least-recently-used entries are evicted until ``bytes + inflight + nbytes <= max_bytes``
        (or the cache is empty); the reservation is released when the block exits.
        Yields the number of bytes reserved.
        """
        nbytes = max(0, int(nbytes))
        evicted: list[tuple[Hashable, V, EvictCause]] = []
        with self._lock:
            self._evict_to_fit(nbytes, evicted)
            self._inflight += nbytes
            self._note_peak()
        self._notify(evicted)
        try:
            yield nbytes
        finally:
            with self._lock:
                self._inflight -= nbytes

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def stats(self) -> CacheStats:
        """A consistent snapshot of the cache's size and counters."""
        with self._lock:
            lookups = self._hits + self._misses
            return CacheStats(
                entries=len(self._data),
                bytes=self._bytes,
                host_bytes=self._host,
                device_bytes=self._device,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                hits=self._hits,
                misses=self._misses,
                loads=self._loads,
                load_failures=self._load_failures,
                evictions=self._evictions,
                evicted_bytes=self._evicted_bytes,
                oversize_rejects=self._oversize,
                peak_bytes=self._peak,
                hit_ratio=(self._hits / lookups) if lookups else 0.0,
                inflight_bytes=self._inflight,
            )

    def __repr__(self) -> str:
        s = self.stats()
        return f"FrameCache(entries={s.entries}/{s.max_entries}, bytes={s.bytes}/{s.max_bytes})"
