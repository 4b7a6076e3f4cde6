"""A thread-safe cache of data URIs bounded by entry count AND bytes, with admission control.

The byte total counts host strings and the device memory that entries hold: a ``str`` costs
``len(value)`` bytes (data URIs are ASCII); any value with ``host_bytes`` and ``device_bytes``
attributes costs their sum.

The byte budget is one limit on cached entries *and* work in flight together. Work reserves its
estimated bytes before it starts (:meth:`FrameCache.get_or_load` / :meth:`FrameCache.get_or_load_many`
with an ``estimate``, or :meth:`FrameCache.reserve`); least-recently-used entries are evicted to
make room, and a reservation that would not fit even then waits, in FIFO order, until work in
flight releases enough (or fails with :class:`~gpupipe.errors.BudgetTimeout` after
``admission_timeout`` seconds). When the work's result is cached, its cost moves from the
reservation to the entry, so the total never grows at insertion.

Work whose estimate alone exceeds the whole budget ("oversize") never evicts entries for itself:
it runs alone, one such job at a time, outside the budget, and its result is returned but not
cached. So the one bound on what the cache and its work hold at once is
``max_bytes + the largest single oversize job``.

Values handed out stay in memory while their users still read them (a URI being sent to a slow
client). :meth:`FrameCache.hold` counts such a value against the budget until it is released:
once, as the entry, while it is one; beside the entries, like work in flight, once it is evicted
or if it was never cached (values larger than the whole budget, outside it with oversize work).

A policy with ``bypass = True`` (:class:`~gpupipe.policy.SchedulePolicy`) also decides
admission: a new entry is cached only if the room it needs can be made by evicting entries the
policy ranks at or before it; otherwise it is returned but not cached (``bypassed``).
:meth:`FrameCache.prefetch_many` loads entries ahead of requests through the same budget, but
never waits and never displaces an entry the policy does not offer as spare.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from .admission import Admission, Estimate, Hold, Reservation, nonneg_int, split_estimate
from .errors import BudgetTimeout, CacheError
from .policy import EvictionPolicy, SchedulePolicy

__all__ = ["CacheStats", "Estimate", "EvictCause", "FrameCache", "Lease", "PrefetchStatus", "entry_cost"]

log = logging.getLogger("gpupipe.cache")

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)
EvictCause = Literal["size", "replaced", "explicit"]

_Evicted = list  # list[tuple[Hashable, V, EvictCause]]

Outcome = Callable[[Hashable, bool], None]
"""Told, with the cache's lock held, whether a prefetched key was used (``True``) or wasted."""


def _no_outcome(key: Hashable, used: bool) -> None:
    pass


PrefetchStatus = Literal["started", "present", "failed", "no-room"]


def entry_cost(value: Any) -> tuple[int, int]:
    """``(host_bytes, device_bytes)`` that ``value`` holds.

    ``str`` → ``(len(value), 0)``; ``bytes``-like → ``(len, 0)``; objects exposing
    ``host_bytes`` and ``device_bytes`` (non-negative integers) → those. Anything else raises
    ``TypeError``; negative sizes raise ``ValueError``.
    """
    if isinstance(value, str):
        return len(value), 0
    hb = getattr(value, "host_bytes", None)
    db = getattr(value, "device_bytes", None)
    if hb is not None and db is not None:
        return nonneg_int(hb, "host_bytes"), nonneg_int(db, "device_bytes")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).nbytes, 0
    raise TypeError(f"cannot size a cache value of type {type(value).__name__}: give it host_bytes and device_bytes")


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a :class:`FrameCache`'s state and counters.

    ``bytes == host_bytes + device_bytes`` is the cost of the present entries;
    ``inflight_bytes`` is what work under way holds inside the budget (of which
    ``inflight_device_bytes`` on the device); ``held_bytes`` is what values handed out and still
    in use (:meth:`FrameCache.hold`, :meth:`FrameCache.lease_many`: a URI being sent) hold while
    they are not entries; ``peak_bytes`` is the highest ``bytes + inflight_bytes + held_bytes``
    seen, never above ``max_bytes`` while estimates hold and held values fit.
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
    ``hits + misses + joined - loads``.
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

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict."""
        return dict(self.__dict__)


class _Flight:
    """One load in progress that concurrent requests for the same key wait on.

    ``stale`` is set when the key is discarded (or the cache cleared) during the load: the
    result still reaches the waiters but is not inserted.
    """

    __slots__ = ("claimed", "defer_hold", "done", "error", "held", "holders", "owner", "prefetch", "stale", "value")

    def __init__(self, prefetch: Outcome | None = None) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.owner = threading.get_ident()
        self.stale = False
        self.prefetch = prefetch  # a prefetch's outcome callback (_no_outcome when none was given); None: a request's load
        self.claimed = False  # a request joined this prefetch
        self.holders = 0  # leases its leader wants on the value as the flight finishes (FrameCache.lease_many)
        self.defer_hold = False  # an earlier part of a multi-part call: its leases are taken when the call returns
        self.held: Hold | None = None  # their hold, taken as the flight finishes


class _Store(Generic[V]):
    """Cached values with their costs, ordered for eviction by a policy; no locking of its own."""

    def __init__(self, policy: EvictionPolicy) -> None:
        self.policy = policy
        self._sized = bool(getattr(policy, "sized", False))
        self._items: dict[Hashable, tuple[V, int, int]] = {}
        self.host = 0
        self.device = 0
        self.on_remove: Callable[[Hashable, V], None] | None = None
        self.on_insert: Callable[[V], None] | None = None

    @property
    def bytes(self) -> int:
        return self.host + self.device

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def peek(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def touch(self, key: Hashable) -> V | None:
        """The value for ``key``, counted as a use by the policy; ``None`` if absent."""
        item = self._items.get(key)
        if item is None:
            return None
        self.policy.touch(key)
        return item[0]

    def cost(self, key: Hashable) -> int:
        _, host, device = self._items[key]
        return host + device

    def insert(self, key: Hashable, value: V, host: int, device: int) -> None:
        self._items[key] = (value, host, device)
        if self._sized:
            self.policy.add(key, host + device)  # type: ignore[call-arg]
        else:
            self.policy.add(key)
        self.host += host
        self.device += device
        if self.on_insert is not None:
            self.on_insert(value)

    def remove(self, key: Hashable) -> tuple[V, int, int]:
        value, host, device = self._items.pop(key)
        self.policy.remove(key)
        self.host -= host
        self.device -= device
        if self.on_remove is not None:
            self.on_remove(key, value)
        return value, host, device

    def victim(self) -> Hashable:
        return self.policy.victim()

    def keys(self) -> list[Hashable]:
        return list(self.policy)

    def clear(self) -> list[tuple[Hashable, V]]:
        items = [(k, self._items[k][0]) for k in self.policy]
        for k, _ in items:
            self.remove(k)
        return items


def _waiter_copy(err: BaseException) -> BaseException:
    """A fresh copy of a shared load error for one waiter, so that re-raising it in many threads
    does not chain every waiter's traceback onto one object."""
    try:
        dup = copy.copy(err)
    except Exception:  # noqa: BLE001 - an exception type that cannot be copied is raised as is
        return err
    if type(dup) is not type(err) or dup is err:
        return err
    dup.__cause__ = err.__cause__
    dup.__suppress_context__ = True
    return dup.with_traceback(None)


class Lease:
    """``value``, held against a :class:`FrameCache`'s budget (:meth:`FrameCache.hold`,
    :meth:`FrameCache.lease_many`) until :meth:`release` (or the end of a ``with`` block).

    Releasing twice is harmless. A lease garbage-collected unreleased (a result nobody took) is
    queued and released by the cache's next operation, never from the collector itself, which
    may run while the cache's lock is held.
    """

    __slots__ = ("_cache", "_hold", "value")

    def __init__(self, cache: FrameCache[Any] | None, hold: Hold | None, value: Any) -> None:
        self._cache = cache
        self._hold = hold
        self.value = value

    @classmethod
    def detached(cls, value: Any) -> Lease:
        """A lease on a value that no cache counts (e.g. a resolver's answer); releasing it does nothing."""
        return cls(None, None, value)

    def release(self) -> None:
        """Let go of the value: its bytes stop counting (unless it is still an entry)."""
        cache, self._cache = self._cache, None
        if cache is not None and self._hold is not None:
            cache._unhold(self._hold)

    def __del__(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None and self._hold is not None:
            cache._admission.orphan(self._hold)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FrameCache(Generic[V]):
    """A cache bounded by ``max_entries`` and ``max_bytes`` (entries + work in flight); thread-safe.

    Entries leave in the order of ``policy`` while
    ``entries > max_entries`` or ``bytes + inflight > max_bytes``. An entry whose cost alone
    exceeds ``max_bytes`` is never inserted: :meth:`put` returns ``False`` and
    ``oversize_rejects`` counts it.

    ``on_evict(key, value, cause)`` is called, outside the cache's lock, for every entry that
    leaves: ``cause`` is ``"size"`` (a bound), ``"replaced"`` (a new value for the key) or
    ``"explicit"`` (:meth:`discard` / :meth:`clear`). An ``Exception`` it raises is logged; a
    ``BaseException`` (e.g. ``KeyboardInterrupt``) is re-raised after every entry has been
    reported and the accounting is complete.

    ``admission_timeout`` is how long (seconds) a reservation waits for budget held by work in
    flight before it fails with :class:`~gpupipe.errors.BudgetTimeout`.

    The default ``policy`` is a :class:`~gpupipe.policy.SchedulePolicy` with its own
    :class:`~gpupipe.schedule.Scheduler`: least recently used first until a schedule is declared
    (:meth:`FramePipeline.schedule <gpupipe.FramePipeline.schedule>`), then by next use. Pass
    :class:`~gpupipe.policy.LruPolicy` for a cache that ignores schedules.
    """

    _LOG_INTERVAL_S = 10.0

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        on_evict: Callable[[Hashable, V, EvictCause], None] | None = None,
        *,
        admission_timeout: float = 60.0,
        policy: EvictionPolicy | None = None,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if not (isinstance(admission_timeout, (int, float)) and 0 < admission_timeout < float("inf")):
            raise ValueError(f"admission_timeout must be a positive finite number of seconds, got {admission_timeout!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self.admission_timeout = float(admission_timeout)
        self._lock = threading.Lock()
        self._store: _Store[V] = _Store(policy if policy is not None else SchedulePolicy())
        self._admission = Admission(max_bytes, self.admission_timeout, self._lock)
        self._flights: dict[Hashable, _Flight] = {}
        self._peak = 0
        self._hits = self._misses = self._joined = self._loads = self._load_failures = 0
        self._evictions = self._evicted_bytes = self._oversize = 0
        self._prefetched = self._prefetch_used = self._prefetch_wasted = self._bypassed = 0
        self._unused_prefetch: dict[Hashable, Outcome] = {}  # prefetched entries no request has used yet
        self._holds = self._admission.holds
        self._store.on_remove = self._left_store
        self._store.on_insert = self._holds.entered
        self._bypassing = bool(getattr(self._store.policy, "bypass", False))
        self._last_oversize_log = -1e9
        self._suppressed_logs = 0

    # ------------------------------------------------------------------ bounds (lock held)

    def _over(self, extra: int = 0) -> bool:
        return len(self._store) > self.max_entries or self._store.bytes + self._admission.committed + extra > self.max_bytes

    @property
    def policy(self) -> EvictionPolicy:
        """The eviction policy."""
        return self._store.policy

    def _evict_one(self, out: _Evicted, key: Hashable | None = None) -> None:
        if key is None:
            key = self._store.victim()
        value, hb, db = self._store.remove(key)
        self._evictions += 1
        self._evicted_bytes += hb + db
        out.append((key, value, "size"))

    def _left_store(self, key: Hashable, value: V) -> None:
        """A key left the store (lock held): a held value now counts outside it, and a prefetched value
        no request used is wasted."""
        self._holds.left(value)
        outcome = self._unused_prefetch.pop(key, None)
        if outcome is not None:
            self._prefetch_wasted += 1
            outcome(key, False)

    def _plan_room(self, victims: Iterable[Hashable], extra: int, entries: int) -> list[Hashable] | None:
        """The first of ``victims`` whose eviction makes ``entries`` more entries and ``extra`` more bytes
        fit both bounds beside the work in flight (lock held; evicts nothing); ``None`` if they cannot."""
        n = len(self._store) + entries
        over = self._store.bytes + self._admission.committed + extra - self.max_bytes
        plan: list[Hashable] = []
        if n <= self.max_entries and over <= 0:
            return plan
        for k in victims:
            plan.append(k)
            n -= 1
            if self._store.peek(k) not in self._holds:  # a held value stays in memory when evicted
                over -= self._store.cost(k)
            if n <= self.max_entries and over <= 0:
                return plan
        return None

    def _insert_or_bypass(self, key: Hashable, value: V, hb: int, db: int, evicted: _Evicted, prefetch: bool) -> bool:
        """Insert ``key`` if room can be made from the entries the policy lets it displace, else bypass it (lock held)."""
        policy: Any = self._store.policy
        if prefetch:
            victims: Iterable[Hashable] = policy.spare() if hasattr(policy, "spare") else ()
        else:
            victims = policy.worse_than(key, hb + db) if hasattr(policy, "worse_than") else policy
        plan = self._plan_room(victims, hb + db, 1)
        if plan is None:
            self._bypassed += 1
            return False
        for k in plan:
            self._evict_one(evicted, k)
        self._store.insert(key, value, hb, db)
        self._note_peak()
        return True

    def _evict_to_fit(self, extra: int, out: _Evicted) -> None:
        """Evict until both bounds hold with ``extra`` more bytes in flight (or nothing is left)."""
        while len(self._store) and self._over(extra):
            self._evict_one(out)

    def _note_peak(self) -> None:
        self._peak = max(self._peak, self._store.bytes + self._admission.committed)

    def _log_oversize(self, key: Hashable, cost: int, what: str) -> None:
        now = time.monotonic()
        if now - self._last_oversize_log >= self._LOG_INTERVAL_S:
            more = f" ({self._suppressed_logs} more since the last message)" if self._suppressed_logs else ""
            log.debug(
                "not caching %.200r: its %s of %d bytes exceeds the whole budget of %d bytes%s",
                key,
                what,
                cost,
                self.max_bytes,
                more,
            )
            self._last_oversize_log = now
            self._suppressed_logs = 0
        else:
            self._suppressed_logs += 1

    def _put_locked(
        self, key: Hashable, value: V, evicted: _Evicted, res: Reservation | None = None, prefetch: bool = False
    ) -> bool:
        """Insert ``value``; with ``res``, its cost is taken from that reservation first. A bypassing
        policy (and any ``prefetch``) inserts only into room it may make (:meth:`_insert_or_bypass`)."""
        hb, db = entry_cost(value)
        if key in self._store:
            old, _, _ = self._store.remove(key)
            if old is not value:
                evicted.append((key, old, "replaced"))
        if hb + db > self.max_bytes:
            self._oversize += 1
            self._log_oversize(key, hb + db, "value")
            return False
        if res is not None:
            self._admission.take(res, hb + db)
        if self._bypassing or prefetch:
            return self._insert_or_bypass(key, value, hb, db, evicted, prefetch)
        self._store.insert(key, value, hb, db)
        while len(self._store) > 1 and self._over():
            self._evict_one(evicted)
        if self._over():  # it does not fit beside the work in flight: it leaves at once
            self._evict_one(evicted)
            return False
        self._note_peak()
        return True

    def _notify(self, evicted: _Evicted) -> None:
        """Report evicted entries to ``on_evict`` and drop the cache's references to them."""
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

    # ------------------------------------------------------------------ admission

    def _admit(self, est: Estimate, label: str) -> Reservation:
        """Reserve ``est`` bytes (see :class:`~gpupipe.admission.Admission`), evicting entries to make room."""
        evicted: _Evicted = []

        def make_room(total: int) -> None:
            self._evict_to_fit(total, evicted)

        res = self._admission.admit(est, label, make_room)
        with self._lock:
            if res.oversize:
                self._oversize += 1
                self._log_oversize(label, res.total, "work")
            else:
                self._note_peak()
        try:
            self._notify(evicted)
        except BaseException:
            self._admission.release(res)
            raise
        return res

    @contextmanager
    def reserve(self, nbytes: Estimate, *, label: str = "work") -> Iterator[int]:
        """Hold ``nbytes`` (or ``(host, device)``) of the budget for work in flight; yields the bytes held.

        Evicts entries to make room and waits (FIFO) while work in flight holds too much; raises
        :class:`~gpupipe.errors.BudgetTimeout` (naming ``label``) after ``admission_timeout``
        seconds. More than ``max_bytes`` runs alone, outside the budget, evicting nothing.
        Released when the block exits.
        """
        res = self._admit(nbytes, label)
        try:
            yield res.total
        finally:
            self._admission.release(res)

    # ------------------------------------------------------------------ single-flight loads

    def _claim(
        self, keys: Sequence[Hashable], results: list[Any]
    ) -> tuple[list[Hashable], list[tuple[int, _Flight]], dict[Hashable, list[int]]]:
        """Under the lock: fill hits into ``results``; return the keys this thread leads, the flights it
        joins, and each key's positions."""
        me = threading.get_ident()
        positions: dict[Hashable, list[int]] = {}
        for i, k in enumerate(keys):
            positions.setdefault(k, []).append(i)
            f = self._flights.get(k)
            if f is not None and f.owner == me:
                raise CacheError(f"the loader of key {k!r:.200} requested that same key: it would wait for itself forever")
        led: list[Hashable] = []
        joins: list[tuple[int, _Flight]] = []
        for k, idx in positions.items():
            value = self._store.touch(k)
            if value is not None:
                self._hits += len(idx)
                for i in idx:
                    results[i] = value
                outcome = self._unused_prefetch.pop(k, None)
                if outcome is not None:
                    self._prefetch_used += 1
                    outcome(k, True)
                continue
            f = self._flights.get(k)
            if f is not None and f.prefetch is not None and not f.claimed:
                f.claimed = True
                self._prefetch_used += 1
                f.prefetch(k, True)
            if f is None:
                self._flights[k] = _Flight()
                self._misses += 1
                self._loads += 1
                self._joined += len(idx) - 1
                led.append(k)
            else:
                self._joined += len(idx)
                joins.extend((i, f) for i in idx)
        return led, joins, positions

    def _finish(self, key: Hashable, value: Any, res: Reservation | None, evicted: _Evicted) -> tuple[Any, BaseException | None]:
        """Complete ``key``'s flight (lock held) with ``value`` (an exception fails it): cache a good
        value unless the flight is stale or the work was oversize. Returns ``(value, error)`` as settled."""
        flight = self._flights.pop(key)
        error = value if isinstance(value, BaseException) else None
        if value is None:
            error = CacheError(f"the loader of key {key!r:.200} returned None")
        stored = False
        if error is None and not flight.stale and not (res is not None and res.oversize):
            try:
                stored = self._put_locked(key, value, evicted, res, prefetch=flight.prefetch is not None)
            except (TypeError, ValueError) as e:
                error = e
        if flight.prefetch is not None and not flight.claimed:
            if stored:
                self._unused_prefetch[key] = flight.prefetch
            else:
                self._prefetch_wasted += 1
                flight.prefetch(key, False)
        if error is not None:
            self._load_failures += 1
            flight.error, value = error, None
        elif flight.holders and not flight.defer_hold:  # held before the reservation is released: never outside the budget
            flight.held = self._hold_locked(key, value, flight.holders, oversize=res is not None and res.oversize)
        flight.value = value
        flight.done.set()
        return value, error

    def _run_part(
        self,
        part: list[Hashable],
        est: Estimate,
        loader: Callable[[list[Any]], Sequence[Any]],
        label: Callable[[Hashable], str],
        out: dict[Hashable, tuple[Any, BaseException | None]],
    ) -> None:
        """Admit, load and complete one part of a batch (a set of led keys whose estimate fits)."""
        try:
            res = self._admit(est, label(part[0]) if len(part) == 1 else f"{label(part[0])} and {len(part) - 1} more")
        except BudgetTimeout as e:
            with self._lock:
                for k in part:
                    out[k] = self._finish(k, BudgetTimeout(label(k), e.reason), None, [])
            return
        try:
            self._load_and_finish(part, loader, res, out)
        finally:
            self._admission.release(res)

    def _load_and_finish(
        self,
        keys: Sequence[Hashable],
        loader: Callable[[list[Any]], Sequence[Any]],
        res: Reservation,
        out: dict[Hashable, tuple[Any, BaseException | None]],
    ) -> None:
        """Run ``loader`` for ``keys`` (admitted under ``res``) and complete their flights: each value is
        cached as the rules allow; a loader that raises, or returns the wrong count, fails every key."""
        try:
            values = list(loader(list(keys)))
            if len(values) != len(keys):
                raise CacheError(f"the loader returned {len(values)} results for {len(keys)} keys")
        except Exception as e:  # noqa: BLE001 - a load failure reaches every waiter of these keys
            self._finish_all(keys, e, out)
            return
        evicted: _Evicted = []
        with self._lock:
            for k, v in zip(keys, values):
                out[k] = self._finish(k, v, res, evicted)
        self._notify(evicted)

    def _finish_all(
        self, keys: Sequence[Hashable], error: BaseException, out: dict[Hashable, tuple[Any, BaseException | None]]
    ) -> None:
        with self._lock:
            for k in keys:
                if k in self._flights and k not in out:
                    out[k] = self._finish(k, error, None, [])

    def _parts(
        self, keys: list[Hashable], ests: dict[Hashable, tuple[int, int]]
    ) -> Iterator[tuple[list[Hashable], tuple[int, int]]]:
        """Split led keys into consecutive parts whose estimates fit the budget; oversize keys go alone."""
        part: list[Hashable] = []
        host = device = 0
        for k in keys:
            h, d = ests[k]
            if part and host + device + h + d > self.max_bytes:
                yield part, (host, device)
                part, host, device = [], 0, 0
            part.append(k)
            host += h
            device += d
        if part:
            yield part, (host, device)

    def _load_led(
        self,
        led: list[Hashable],
        loader: Callable[[list[Any]], Sequence[Any]],
        estimate: Callable[[Any], Estimate] | None,
        label: Callable[[Any], str],
        out: dict[Hashable, tuple[Any, BaseException | None]],
    ) -> None:
        """Estimate the keys this thread leads, then load them in parts that fit the budget.

        Leases (:meth:`lease_many`) are taken as the flights of the last part finish, where the call has
        asked for them (see :meth:`_get_many`): after that the call waits for nothing, and a call never
        waits while it holds a lease, so calls never wait on each other's leases."""
        ests: dict[Hashable, tuple[int, int]] = {}
        for k in led:
            try:
                ests[k] = split_estimate(estimate(k)) if estimate is not None else (0, 0)
            except Exception as e:  # noqa: BLE001 - that key's failure only
                self._finish_all([k], e, out)
        parts = list(self._parts([k for k in led if k in ests], ests))
        with self._lock:
            for part, _ in parts[:-1]:
                for k in part:
                    self._flights[k].defer_hold = True
        for part, est in parts:
            self._run_part(part, est, loader, label, out)

    def get_or_load_many(
        self,
        keys: Sequence[K],
        loader: Callable[[list[K]], Sequence[Any]],
        *,
        estimate: Callable[[K], Estimate] | None = None,
        label: Callable[[K], str] | None = None,
    ) -> list[Any]:
        """One result per key, in order: the cached value, a value loaded now, or the exception that stopped it.

        Keys that are neither cached nor being loaded by another request are loaded by
        ``loader(keys)``, which returns one value (or exception) per key; keys another request is
        loading are waited for (single-flight, shared with :meth:`get_or_load`). Each led key's
        in-flight bytes are ``estimate(key)`` (an exception it raises becomes that key's result);
        the keys are loaded in parts that fit the budget, each part's bytes reserved while it runs
        and its values cached as they come (their cost taken from the reservation). A key whose
        estimate alone exceeds the budget is loaded alone and not cached. ``label(key)`` names a
        key in errors. A loader that raises fails every key of its part; a ``BaseException``
        also fails them, then propagates.
        """
        return self._get_many(keys, loader, estimate, label, hold=False)

    def lease_many(
        self,
        keys: Sequence[K],
        loader: Callable[[list[K]], Sequence[Any]],
        *,
        estimate: Callable[[K], Estimate] | None = None,
        label: Callable[[K], str] | None = None,
    ) -> list[Lease | BaseException]:
        """:meth:`get_or_load_many`, each value handed out as a :class:`Lease` on it (see :meth:`hold`).

        A call never waits while it holds a lease (so calls cannot wait on each other's leases): the
        values of a call that only hits are leased under the lock that finds them; the values of the
        last part a call loads are leased as each load completes, before its reservation is released,
        when the call joins no other request's load; every other value (hits beside loads, earlier
        parts of a call larger than the budget, joined loads) is leased when the call returns, and
        counts as an entry, or not at all if it was evicted, until then. A value counts against the
        budget from then until its lease is released, cached or not. Release every lease (one dropped
        unreleased is released once it is garbage-collected).
        """
        return self._get_many(keys, loader, estimate, label, hold=True)

    def _get_many(
        self,
        keys: Sequence[Any],
        loader: Callable[[list[Any]], Sequence[Any]],
        estimate: Callable[[Any], Estimate] | None,
        label: Callable[[Any], str] | None,
        hold: bool,
    ) -> list[Any]:
        results: list[Any] = [None] * len(keys)
        with self._lock:
            led, joins, positions = self._claim(keys, results)
            flights = {k: self._flights[k] for k in led}
            if hold and not led and not joins:  # hits only: leased at once, under the lock that found them
                self._lease_results(positions, results, flights)
                return results
            if hold and not joins:  # the leases of the last part are taken as its flights finish (see _load_led)
                for k in led:
                    flights[k].holders = len(positions[k])
        out: dict[Hashable, tuple[Any, BaseException | None]] = {}
        if led:
            try:
                self._load_led(led, loader, estimate, label or (lambda k: repr(k)[:200]), out)
            except BaseException as e:
                self._finish_all(led, e, out)
                raise
        for k, (value, err) in out.items():
            for n, i in enumerate(positions[k]):
                results[i] = value if err is None else (err if n == 0 else _waiter_copy(err))
        for i, flight in joins:
            flight.done.wait()
            results[i] = flight.value if flight.error is None else _waiter_copy(flight.error)
        if hold:
            with self._lock:
                self._lease_results(positions, results, flights)
        return results

    def _lease_results(self, positions: dict[Hashable, list[int]], results: list[Any], flights: dict[Hashable, _Flight]) -> None:
        """Replace each value in ``results`` with a lease on it (lock held): the hold its flight took as it
        finished, else a hold taken now."""
        for k, idx in positions.items():
            value = results[idx[0]]
            if isinstance(value, BaseException):
                continue
            f = flights.get(k)
            h = f.held if f is not None and f.held is not None else self._hold_locked(k, value, len(idx))
            for i in idx:
                results[i] = Lease(self, h, value)

    def get_or_load(
        self,
        key: Hashable,
        loader: Callable[[], V],
        *,
        estimate: Estimate | Callable[[], Estimate] | None = None,
        label: str | None = None,
    ) -> V:
        """The cached value for ``key``, else ``loader()``'s result, cached if it fits.

        Single-flight: concurrent misses of one key call ``loader`` once; the others wait and
        get the same value, or a copy of the same exception. ``estimate`` (bytes, ``(host,
        device)``, or a callable returning them) is reserved while ``loader`` runs (see
        :meth:`get_or_load_many`). A loader that returns ``None``, or requests its own key,
        fails with :class:`~gpupipe.errors.CacheError`.
        """
        est: Callable[[Hashable], Estimate] | None
        if estimate is None:
            est = None
        elif callable(estimate):
            fn = estimate
            est = lambda _k: fn()  # noqa: E731
        else:
            fixed = estimate
            est = lambda _k: fixed  # noqa: E731
        (result,) = self.get_or_load_many(
            [key], lambda _keys: [loader()], estimate=est, label=(lambda _k: label) if label else None
        )
        if isinstance(result, BaseException):
            raise result
        return result

    # ------------------------------------------------------------------ loads ahead of requests

    def prefetch_many(  # noqa: PLR0912, PLR0915 - claim, plan, admit and load in one pass under the same rules as requests
        self,
        keys: Sequence[Hashable],
        loader: Callable[[list[Any]], Sequence[Any]],
        *,
        estimate: Callable[[Any], Estimate] | None = None,
        outcome: Outcome | None = None,
    ) -> list[PrefetchStatus]:
        """Load keys ahead of any request for them, as one batch; returns one status per key.

        ``present``: cached or being loaded already; ``failed``: ``estimate(key)`` raised (the
        request for it will meet the error) or exceeds the whole budget; ``no-room``: not started. The keys to start are
        reserved together and only *now*: never while requests wait for budget, never past the
        budget beside the work in flight, and making room (bytes, and entries for the keys
        started) only by evicting what the policy offers as spare (``policy.spare()``; nothing
        for a policy without it); keys are dropped from the
        end of the batch until what is left fits. Those started (``started``) are loaded by one
        ``loader`` call, count in ``loads`` and ``prefetched`` (not as lookups), and are cached
        under the same rule; requests for them meanwhile join the load. ``outcome(key, used)``
        (called with the cache's lock held: it must not call the cache) tells whether each
        started key was then requested or left unused (``prefetch_used`` / ``prefetch_wasted``).
        """
        status: dict[Hashable, PrefetchStatus] = {}
        with self._lock:
            for k in keys:
                if k not in status:
                    status[k] = "present" if (k in self._store or k in self._flights) else "no-room"
        todo = [k for k, st in status.items() if st == "no-room"]
        ests: dict[Hashable, tuple[int, int]] = {}
        for k in todo:
            try:
                ests[k] = split_estimate(estimate(k)) if estimate is not None else (0, 0)
            except Exception:  # noqa: BLE001 - that frame's request will report it
                status[k] = "failed"
                continue
            if sum(ests[k]) > self.max_bytes:  # oversize work runs alone, for a request only
                status[k] = "failed"
        evicted: _Evicted = []
        res: Reservation | None = None
        with self._lock:
            todo = []
            for k, st in status.items():
                if st != "no-room":
                    continue
                if k in self._store or k in self._flights:
                    status[k] = "present"
                else:
                    todo.append(k)
            policy: Any = self._store.policy
            while todo:
                host = sum(ests[k][0] for k in todo)
                device = sum(ests[k][1] for k in todo)

                def make_room(total: int, entries: int = len(todo)) -> bool:
                    plan = self._plan_room(policy.spare() if hasattr(policy, "spare") else (), total, entries)
                    if plan is None:
                        return False
                    for v in plan:
                        self._evict_one(evicted, v)
                    return True

                res = self._admission.try_admit((host, device), make_room)
                if res is not None:
                    break
                todo.pop()
            for k in todo:
                self._flights[k] = _Flight(outcome or _no_outcome)
                status[k] = "started"
            self._loads += len(todo)
            self._prefetched += len(todo)
            self._note_peak()
        self._notify(evicted)
        if res is None:
            return [status[k] for k in keys]
        out: dict[Hashable, tuple[Any, BaseException | None]] = {}
        try:
            self._load_and_finish(todo, loader, res, out)
        except BaseException as e:
            self._finish_all(todo, e, out)
            raise
        finally:
            self._admission.release(res)
        return [status[k] for k in keys]

    # ------------------------------------------------------------------ values in use

    def hold(self, key: Hashable, value: V) -> Lease:
        """Count ``value`` (the value of ``key`` as handed out) against the budget until the returned
        :class:`Lease` is released, even if its entry is evicted meanwhile.

        While ``key``'s entry is ``value`` itself its bytes count once, as the entry; while it is not
        (evicted, replaced, or never cached) they count in ``held_bytes``, and entries are evicted to
        keep the budget, as for work in flight; reservations wait while held values fill it. A value
        larger than the whole budget counts outside it (``oversize_inflight_bytes``). Any number of
        holders may hold one value. :meth:`lease_many` takes the lease as the value is made, which
        leaves no moment uncounted. Raises ``TypeError``/``ValueError`` for a value whose size
        cannot be told.
        """
        entry_cost(value)
        evicted: _Evicted = []
        with self._lock:
            h = self._hold_locked(key, value, 1)
            self._evict_to_fit(0, evicted)
        self._notify(evicted)
        return Lease(self, h, value)

    def _hold_locked(self, key: Hashable, value: Any, holders: int, oversize: bool = False) -> Hold:
        """``holders`` more holders of ``value`` (lock held); ``oversize``: made by oversize work, so held
        outside the budget as that work was, whatever its size."""
        self._admission.reap()
        hb, db = entry_cost(value)
        cost = hb + db
        h = self._holds.take(value, cost, self._store.peek(key) is value, oversize or cost > self.max_bytes, holders)
        self._note_peak()
        return h

    def _unhold(self, h: Hold) -> None:
        with self._lock:
            self._admission.unhold(h)

    # ------------------------------------------------------------------ plain operations

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` (refreshing its recency), or ``None`` on a miss."""
        with self._lock:
            value = self._store.touch(key)
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
                outcome = self._unused_prefetch.pop(key, None)
                if outcome is not None:
                    self._prefetch_used += 1
                    outcome(key, True)
            return value

    def peek(self, key: Hashable) -> V | None:
        """The value for ``key`` without touching recency or counters."""
        with self._lock:
            return self._store.peek(key)

    def put(self, key: Hashable, value: V) -> bool:
        """Store ``value``; ``True`` if it is cached after the call.

        ``False`` if it alone exceeds ``max_bytes`` (``oversize_rejects``), or if it does not fit
        beside the work in flight (it is evicted at once, cause ``"size"``). A previous value
        under ``key`` is removed first (cause ``"replaced"``), even when the new one is not kept.
        Raises ``TypeError``/``ValueError`` for a value whose size cannot be told.
        """
        evicted: _Evicted = []
        with self._lock:
            stored = self._put_locked(key, value, evicted)
        self._notify(evicted)
        return stored

    def discard(self, key: Hashable) -> bool:
        """Remove ``key`` if present (cause ``"explicit"``); ``True`` if it was there.

        A load of ``key`` under way still returns its value to its waiters but does not cache it.
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.stale = True
            if key not in self._store:
                return False
            value, _, _ = self._store.remove(key)
        self._notify([(key, value, "explicit")])
        return True

    def clear(self) -> None:
        """Remove every entry (cause ``"explicit"``); loads under way are not cached; counters are kept."""
        with self._lock:
            for flight in self._flights.values():
                flight.stale = True
            items: _Evicted = [(k, v, "explicit") for k, v in self._store.clear()]
        self._notify(items)

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first."""
        with self._lock:
            return self._store.keys()

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._store

    def stats(self) -> CacheStats:
        """A consistent snapshot of the cache's size and counters."""
        with self._lock:
            self._admission.reap()
            lookups = self._hits + self._misses + self._joined
            return CacheStats(
                entries=len(self._store),
                bytes=self._store.bytes,
                host_bytes=self._store.host,
                device_bytes=self._store.device,
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
                hit_ratio=((self._hits + self._joined) / lookups) if lookups else 0.0,
                inflight_bytes=self._admission.inflight,
                inflight_device_bytes=self._admission.device,
                oversize_inflight_bytes=self._admission.oversize_bytes + self._holds.oversize_bytes,
                held_bytes=self._holds.bytes,
                joined=self._joined,
                admission_waits=self._admission.waits,
                admission_timeouts=self._admission.timeouts,
                prefetched=self._prefetched,
                prefetch_used=self._prefetch_used,
                prefetch_wasted=self._prefetch_wasted,
                bypassed=self._bypassed,
            )

    def __repr__(self) -> str:
        s = self.stats()
        return f"FrameCache(entries={s.entries}/{s.max_entries}, bytes={s.bytes}/{s.max_bytes})"
