"""Batches of loads through the budget: requests (:meth:`Loads.get_many`) and loads ahead of them
(:meth:`Loads.prefetch_many`).

A request's led keys are estimated, split into consecutive parts that fit the budget, and each
part is admitted (:meth:`CacheCore.admit <.core.CacheCore.admit>`), loaded by one loader call
and completed (:func:`.flights.finish`) before its reservation is released. Values may be handed
out as leases (:mod:`.holds`); a call never waits while it holds a lease, so calls never wait on
each other's leases (see :meth:`Loads.get_many`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Literal

from ..errors import BudgetTimeout, CacheError
from .admission import Estimate, Reservation, split_estimate
from .core import CacheCore, Flight, Outcome
from .flights import claim, finish
from .store import Evicted

__all__ = ["Loads", "PrefetchStatus", "running_reservation"]

PrefetchStatus = Literal["started", "present", "failed", "no-room"]
Loader = Callable[[list[Any]], Sequence[Any]]
Settled = dict[Hashable, tuple[Any, BaseException | None]]

_RUNNING: ContextVar[tuple[CacheCore[Any], Reservation] | None] = ContextVar("gpupipe_cache_load", default=None)


def running_reservation(core: CacheCore[Any]) -> Reservation | None:
    """The reservation of the load of ``core`` that the calling thread runs a loader for, if any."""
    running = _RUNNING.get()
    return running[1] if running is not None and running[0] is core else None


def _no_outcome(key: Hashable, used: bool) -> None:
    pass


def waiter_copy(err: BaseException) -> BaseException:
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


class Loads:
    """The load paths of one cache's :class:`~.core.CacheCore`."""

    def __init__(self, core: CacheCore[Any]) -> None:
        self.core = core

    # ------------------------------------------------------------------ requests

    def get_many(
        self,
        keys: Sequence[Any],
        loader: Loader,
        estimate: Callable[[Any], Estimate] | None,
        label: Callable[[Any], str],
        hold: bool,
    ) -> list[Any]:
        """One result per key (see :meth:`FrameCache.get_or_load_many <.cache.FrameCache.get_or_load_many>`);
        with ``hold``, each value as a lease.

        When leases are taken: a call that only hits leases under the lock that finds the values;
        a call that loads and joins nothing leases its last part's values as their flights finish
        (before the reservation is released); every other value when the call returns.
        """
        core = self.core
        results: list[Any] = [None] * len(keys)
        with core.lock:
            led, joins, positions = claim(core, keys, results)
            flights = {k: core.flights[k] for k in led}
            if hold and not led and not joins:
                self._lease_results(positions, results, flights)
                return results
            if hold and not joins:
                for k in led:
                    flights[k].holders = len(positions[k])
        out: Settled = {}
        if led:
            try:
                self._load_led(led, loader, estimate, label, out)
            except BaseException as e:
                self._finish_all(led, e, out)
                raise
        for k, (value, err) in out.items():
            for n, i in enumerate(positions[k]):
                results[i] = value if err is None else (err if n == 0 else waiter_copy(err))
        for i, flight in joins:
            flight.done.wait()
            results[i] = flight.value if flight.error is None else waiter_copy(flight.error)
        if hold:
            with core.lock:
                self._lease_results(positions, results, flights)
        return results

    def _lease_results(self, positions: dict[Hashable, list[int]], results: list[Any], flights: dict[Hashable, Flight]) -> None:
        """Replace each value in ``results`` with a lease on it (lock held): under the hold its flight
        took as it finished, else one taken now."""
        core = self.core
        for k, idx in positions.items():
            value = results[idx[0]]
            if isinstance(value, BaseException):
                continue
            f = flights.get(k)
            h = f.held if f is not None and f.held is not None else core.hold_locked(k, value, len(idx))
            for i in idx:
                results[i] = core.lease(h, value)

    def _load_led(
        self,
        led: list[Hashable],
        loader: Loader,
        estimate: Callable[[Any], Estimate] | None,
        label: Callable[[Any], str],
        out: Settled,
    ) -> None:
        """Estimate the keys this call leads, then load them in parts that fit the budget; the parts
        before the last defer their leases to the call's return (it still waits for the later parts)."""
        ests: dict[Hashable, tuple[int, int]] = {}
        for k in led:
            try:
                ests[k] = split_estimate(estimate(k)) if estimate is not None else (0, 0)
            except Exception as e:  # noqa: BLE001 - that key's failure only
                self._finish_all([k], e, out)
        parts = list(self._parts([k for k in led if k in ests], ests))
        with self.core.lock:
            for part, _ in parts[:-1]:
                for k in part:
                    self.core.flights[k].defer_hold = True
        for part, est in parts:
            self._run_part(part, est, loader, label, out)

    def _parts(
        self, keys: list[Hashable], ests: dict[Hashable, tuple[int, int]]
    ) -> Iterator[tuple[list[Hashable], tuple[int, int]]]:
        """Consecutive parts of ``keys`` whose estimates fit the budget; an oversize key goes alone."""
        part: list[Hashable] = []
        host = device = 0
        for k in keys:
            h, d = ests[k]
            if part and host + device + h + d > self.core.max_bytes:
                yield part, (host, device)
                part, host, device = [], 0, 0
            part.append(k)
            host += h
            device += d
        if part:
            yield part, (host, device)

    def _run_part(self, part: list[Hashable], est: Estimate, loader: Loader, label: Callable[[Any], str], out: Settled) -> None:
        """Admit, load and complete one part."""
        core = self.core
        try:
            res = core.admit(est, label(part[0]) if len(part) == 1 else f"{label(part[0])} and {len(part) - 1} more")
        except BudgetTimeout as e:
            with core.lock:
                for k in part:
                    out[k] = finish(core, k, BudgetTimeout(label(k), e.reason), None, [])
            return
        try:
            self._load_and_finish(part, loader, res, out)
        finally:
            core.admission.release(res)

    def _load_and_finish(self, keys: Sequence[Hashable], loader: Loader, res: Reservation, out: Settled) -> None:
        """Run ``loader`` for ``keys`` (admitted under ``res``) and complete their flights; a loader that
        raises, or returns the wrong count, fails every key."""
        token = _RUNNING.set((self.core, res))
        try:
            values = list(loader(list(keys)))
            if len(values) != len(keys):
                raise CacheError(f"the loader returned {len(values)} results for {len(keys)} keys")
        except Exception as e:  # noqa: BLE001 - a load failure reaches every waiter of these keys
            self._finish_all(keys, e, out)
            return
        finally:
            _RUNNING.reset(token)
        evicted: Evicted = []
        with self.core.lock:
            for k, v in zip(keys, values):
                out[k] = finish(self.core, k, v, res, evicted)
        self.core.notify(evicted)

    def _finish_all(self, keys: Sequence[Hashable], error: BaseException, out: Settled) -> None:
        with self.core.lock:
            for k in keys:
                if k in self.core.flights and k not in out:
                    out[k] = finish(self.core, k, error, None, [])

    # ------------------------------------------------------------------ ahead of requests

    def prefetch_many(
        self, keys: Sequence[Hashable], loader: Loader, estimate: Callable[[Any], Estimate] | None, outcome: Outcome | None
    ) -> list[PrefetchStatus]:
        """Load keys ahead of any request (see :meth:`FrameCache.prefetch_many <.cache.FrameCache.prefetch_many>`)."""
        core = self.core
        status = self._absent(keys)
        ests = self._prefetch_estimates(status, estimate)
        evicted: Evicted = []
        with core.lock:
            todo = [k for k, st in status.items() if st == "no-room" and not self._present(k, status)]
            res = self._admit_now(todo, ests, evicted)
            if res is None:
                todo = []
            for k in todo:
                core.flights[k] = Flight(outcome or _no_outcome)
                status[k] = "started"
            core.counters.loads += len(todo)
            core.counters.prefetched += len(todo)
            core.entries.note_peak()
        core.notify(evicted)
        if res is not None:
            out: Settled = {}
            try:
                self._load_and_finish(todo, loader, res, out)
            except BaseException as e:
                self._finish_all(todo, e, out)
                raise
            finally:
                core.admission.release(res)
        return [status[k] for k in keys]

    def _absent(self, keys: Sequence[Hashable]) -> dict[Hashable, PrefetchStatus]:
        """``present`` for keys cached or in flight now, ``no-room`` (not started yet) for the others."""
        core = self.core
        with core.lock:
            return {k: "present" if (k in core.entries or k in core.flights) else "no-room" for k in dict.fromkeys(keys)}

    def _present(self, k: Hashable, status: dict[Hashable, PrefetchStatus]) -> bool:
        """Whether ``k`` became cached or in flight since it was looked at (lock held); marks it so."""
        if k in self.core.entries or k in self.core.flights:
            status[k] = "present"
            return True
        return False

    def _prefetch_estimates(
        self, status: dict[Hashable, PrefetchStatus], estimate: Callable[[Any], Estimate] | None
    ) -> dict[Hashable, tuple[int, int]]:
        """Each absent key's estimate; a key whose estimate raises or exceeds the budget is ``failed``."""
        ests: dict[Hashable, tuple[int, int]] = {}
        for k in [k for k, st in status.items() if st == "no-room"]:
            try:
                ests[k] = split_estimate(estimate(k)) if estimate is not None else (0, 0)
            except Exception:  # noqa: BLE001 - that frame's request will report it
                status[k] = "failed"
                continue
            if sum(ests[k]) > self.core.max_bytes:  # oversize work runs alone, for a request only
                status[k] = "failed"
        return ests

    def _admit_now(self, todo: list[Hashable], ests: dict[Hashable, tuple[int, int]], evicted: Evicted) -> Reservation | None:
        """Reserve ``todo`` together now or not at all, dropping keys from its end until it fits (lock
        held): never while requests wait, and making room only from the policy's spare entries."""
        core = self.core
        while todo:
            host = sum(ests[k][0] for k in todo)
            device = sum(ests[k][1] for k in todo)

            def make_room(total: int, entries: int = len(todo)) -> bool:
                plan = core.entries.plan_room(core.entries.spare(), total, entries)
                if plan is None:
                    return False
                for v in plan:
                    core.entries.evict(evicted, v)
                return True

            res = core.admission.try_admit((host, device), make_room)
            if res is not None:
                return res
            todo.pop()
        return None
