"""A thread-safe cache of data URIs bounded by entry count AND bytes, with admission control.

The byte total counts host strings and the device memory that entries hold: a ``str`` costs
``len(value)`` bytes (data URIs are ASCII); a :class:`~gpupipe.cache.CostedValue` (``host_bytes``
and ``device_bytes``) costs their sum.

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

A :class:`~gpupipe.cache.BypassPolicy` (as :class:`~gpupipe.schedule.SchedulePolicy` is) also decides
admission: a new entry is cached only if the room it needs can be made by evicting entries the
policy ranks at or before it; otherwise it is returned but not cached (``bypassed``).
:meth:`FrameCache.prefetch_many` loads entries ahead of requests through the same budget, but
never waits and never displaces an entry the policy does not offer as spare.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from ..schedule import SchedulePolicy
from ..vocabulary import Estimate
from .core import CacheCore, Outcome
from .holds import Lease
from .loads import Loads, PrefetchStatus, running_reservation
from .policy import EvictionPolicy
from .stats import CacheStats
from .store import EvictCause, Evicted

__all__ = ["FrameCache"]

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)


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

    The default ``policy`` is a :class:`~gpupipe.schedule.SchedulePolicy` with its own
    :class:`~gpupipe.schedule.Scheduler`: least recently used first until a schedule is declared
    (:meth:`FramePipeline.schedule <gpupipe.FramePipeline.schedule>`), then by next use. Pass
    :class:`~gpupipe.cache.LruPolicy` for a cache that ignores schedules.
    """

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
        if policy is None:
            policy = SchedulePolicy()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.admission_timeout = float(admission_timeout)
        self._core: CacheCore[V] = CacheCore(max_entries, max_bytes, policy, self.admission_timeout, on_evict)
        self._loads = Loads(self._core)

    @property
    def policy(self) -> EvictionPolicy:
        """The eviction policy."""
        return self._core.entries.policy

    @property
    def on_evict(self) -> Callable[[Hashable, V, EvictCause], None] | None:
        """The eviction callback (see the class docstring)."""
        return self._core.on_evict

    @on_evict.setter
    def on_evict(self, fn: Callable[[Hashable, V, EvictCause], None] | None) -> None:
        self._core.on_evict = fn

    # ------------------------------------------------------------------ loads

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
        return self._loads.get_many(keys, loader, estimate, label or _repr_label, hold=False)

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
        return self._loads.get_many(keys, loader, estimate, label or _repr_label, hold=True)

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

    def prefetch_many(
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
        return self._loads.prefetch_many(keys, loader, estimate, outcome)

    @contextmanager
    def reserve(self, nbytes: Estimate, *, label: str = "work") -> Iterator[int]:
        """Hold ``nbytes`` (or ``(host, device)``) of the budget for work in flight; yields the bytes held.

        Evicts entries to make room and waits (FIFO) while work in flight holds too much; raises
        :class:`~gpupipe.errors.BudgetTimeout` (naming ``label``) after ``admission_timeout``
        seconds. More than ``max_bytes`` runs alone, outside the budget, evicting nothing.
        Released when the block exits.
        """
        res = self._core.admit(nbytes, label)
        try:
            yield res.total
        finally:
            self._core.admission.release(res)

    def keep(self, nbytes: int) -> bool:
        """Keep ``nbytes`` counted against the budget past the load that is running (an open video
        decoder's state, kept between the frames it decodes); whether they are kept.

        Called from inside a loader (in the thread the cache called it in), the bytes move out of
        that load's reservation, which must hold them all; elsewhere, or when it does not, they are
        kept only if they fit now beside the entries and the work in flight (never waiting,
        evicting nothing). All
        or nothing. Kept bytes count in ``kept_bytes`` (and ``peak_bytes``) until :meth:`unkeep`,
        or until a reclaimer (:meth:`add_reclaimer`) frees them for a request that needs room.
        """
        core = self._core
        with core.lock:
            kept = core.admission.keep(running_reservation(core), nbytes, stored=core.entries.bytes)
            core.entries.note_peak()
        return kept

    def unkeep(self, nbytes: int) -> None:
        """Give back ``nbytes`` kept with :meth:`keep` (not those a reclaimer freed)."""
        with self._core.lock:
            self._core.admission.unkeep(nbytes)

    def add_reclaimer(self, reclaim: Callable[[int], int]) -> None:
        """Let requests that find no room take kept bytes back: ``reclaim(nbytes)`` is called with the
        cache's lock held (it must not call the cache, and must not wait), frees up to about
        ``nbytes`` of what it kept (closing idle decoders) and returns the bytes freed; they stop
        counting then, without :meth:`unkeep`. Registering it again changes nothing."""
        with self._core.lock:
            self._core.admission.add_reclaimer(reclaim)

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
        core = self._core
        evicted: Evicted = []
        with core.lock:
            h = core.hold_locked(key, value, 1)
            core.entries.evict_to_fit(0, evicted)
        core.notify(evicted)
        return core.lease(h, value)

    # ------------------------------------------------------------------ plain operations

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` (refreshing its recency), or ``None`` on a miss."""
        core = self._core
        with core.lock:
            value = core.entries.touch(key)
            if value is None:
                core.counters.misses += 1
            else:
                core.counters.hits += 1
                core.prefetch_used(key)
            return value

    def peek(self, key: Hashable) -> V | None:
        """The value for ``key`` without touching recency or counters."""
        with self._core.lock:
            return self._core.entries.peek(key)

    def put(self, key: Hashable, value: V) -> bool:
        """Store ``value``; ``True`` if it is cached after the call.

        ``False`` if it alone exceeds ``max_bytes`` (``oversize_rejects``), or if it does not fit
        beside the work in flight (it is evicted at once, cause ``"size"``). A previous value
        under ``key`` is removed first (cause ``"replaced"``), even when the new one is not kept.
        Raises ``TypeError``/``ValueError`` for a value whose size cannot be told.
        """
        evicted: Evicted = []
        with self._core.lock:
            stored = self._core.put_locked(key, value, evicted)
        self._core.notify(evicted)
        return stored

    def discard(self, key: Hashable) -> bool:
        """Remove ``key`` if present (cause ``"explicit"``); ``True`` if it was there.

        A load of ``key`` under way still returns its value to its waiters but does not cache it.
        """
        core = self._core
        with core.lock:
            flight = core.flights.get(key)
            if flight is not None:
                flight.stale = True
            if key not in core.entries:
                return False
            value, _, _ = core.entries.remove(key)
        core.notify([(key, value, "explicit")])
        return True

    def clear(self) -> None:
        """Remove every entry (cause ``"explicit"``); loads under way are not cached; counters are kept."""
        core = self._core
        with core.lock:
            for flight in core.flights.values():
                flight.stale = True
            items: Evicted = [(k, v, "explicit") for k, v in core.entries.clear()]
        core.notify(items)

    def keys(self) -> list[Hashable]:
        """The keys, first victim first (least recently used first with no schedule)."""
        with self._core.lock:
            return self._core.entries.keys()

    def __len__(self) -> int:
        with self._core.lock:
            return len(self._core.entries)

    def __contains__(self, key: object) -> bool:
        with self._core.lock:
            return key in self._core.entries

    def stats(self) -> CacheStats:
        """A consistent snapshot of the cache's size and counters."""
        return self._core.stats()

    def __repr__(self) -> str:
        s = self.stats()
        return f"FrameCache(entries={s.entries}/{s.max_entries}, bytes={s.bytes}/{s.max_bytes})"


def _repr_label(key: Any) -> str:
    return repr(key)[:200]
