"""Admission control: work in flight reserves its bytes from a budget it shares with cached entries.

:class:`Admission` keeps the in-flight side of :class:`~gpupipe.cache.FrameCache`'s byte budget.
A reservation is admitted in FIFO order once the work in flight leaves room for it; the cache
then evicts entries until stored + in flight fits (``make_room``). A reservation that waits longer
than ``timeout`` fails with :class:`~gpupipe.errors.BudgetTimeout`. Work larger than the whole
budget ("oversize") does not wait for room: it runs alone, one such job at a time, outside the
budget. All methods run under the cache's lock except where they say otherwise.

Values handed out and still in use (:mod:`.holds`) count beside the work in flight once they are
not entries; so do bytes *kept* past the work that admitted them (:meth:`Admission.keep`: an
open video decoder's state, kept between the frames it decodes). :attr:`Admission.committed` is
what evicting entries cannot free. A request that finds no room asks the *reclaimers*
(:meth:`Admission.add_reclaimer`: the pools of open decoders) to give kept bytes back, closing
idle decoders, before it waits.
"""

from __future__ import annotations

import operator
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import BudgetTimeout
from ..vocabulary import Estimate
from .holds import Hold, Holds

__all__ = ["Admission", "Estimate", "Reservation", "nonneg_int", "split_estimate"]


def nonneg_int(value: Any, name: str) -> int:
    """``value`` as a non-negative ``int`` (``__index__`` types accepted; ``bool`` refused), else ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a non-negative integer, got a boolean")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a non-negative integer, got {type(value).__name__}") from None
    if n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n}")
    return n


def split_estimate(est: Estimate) -> tuple[int, int]:
    """``(host, device)`` bytes of an estimate."""
    if isinstance(est, tuple):
        return nonneg_int(est[0], "estimate host bytes"), nonneg_int(est[1], "estimate device bytes")
    return nonneg_int(est, "estimate"), 0


class Reservation:
    """Bytes held for one piece of work; ``oversize`` work holds them outside the budget."""

    __slots__ = ("device", "host", "oversize")

    def __init__(self, host: int, device: int, oversize: bool) -> None:
        self.host = host
        self.device = device
        self.oversize = oversize

    @property
    def total(self) -> int:
        """Host plus device bytes held."""
        return self.host + self.device


class Admission:
    """The in-flight side of a byte budget of ``max_bytes``, under ``lock`` (the cache's): reservations
    of work in flight, and values held outside the cache (:attr:`holds`)."""

    def __init__(self, max_bytes: int, timeout: float, lock: threading.Lock) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._lock = lock
        self._freed = threading.Condition(lock)
        self._queue: deque[object] = deque()
        self._oversize_gate = threading.Lock()
        self.host = 0
        self.device = 0
        self.oversize_bytes = 0
        self.waits = 0
        self.timeouts = 0
        self.holds = Holds()
        self._orphans: deque[Hold] = deque()
        self.kept = 0
        self._reclaimers: list[Callable[[int], int]] = []

    @property
    def inflight(self) -> int:
        """Bytes that work in flight holds inside the budget."""
        return self.host + self.device

    @property
    def committed(self) -> int:
        """Bytes inside the budget that evicting entries cannot free: work in flight, held values
        that are not entries, and kept bytes."""
        return self.host + self.device + self.holds.bytes + self.kept

    def keep(self, res: Reservation | None, nbytes: int, *, stored: int) -> bool:
        """Count ``nbytes`` as kept past the work of ``res`` (lock held); whether they are.

        They move out of ``res`` (host bytes first) when it holds them all; otherwise they are
        kept only if they fit beside what is committed now and the ``stored`` bytes of the entries
        (nothing is evicted for them), with no request waiting. All or nothing: ``False`` changes
        nothing.
        """
        nbytes = nonneg_int(nbytes, "kept bytes")
        if res is not None and not res.oversize and res.total >= nbytes:
            host = min(nbytes, res.host)
            device = nbytes - host
            res.host -= host
            res.device -= device
            self.host -= host
            self.device -= device
        elif self._queue or self.committed + stored + nbytes > self.max_bytes:
            return False
        self.kept += nbytes
        return True

    def unkeep(self, nbytes: int) -> None:
        """Kept bytes given back (lock held); wakes reservations waiting for room."""
        self.kept -= nbytes
        self._freed.notify_all()

    def add_reclaimer(self, reclaim: Callable[[int], int]) -> None:
        """Register ``reclaim(nbytes)`` (lock held when it is called; it must not call the cache): it
        frees up to about ``nbytes`` of kept bytes (closing idle decoders) and returns how many it
        freed, which stop counting. Registering the same callable twice registers it once."""
        if reclaim not in self._reclaimers:
            self._reclaimers.append(reclaim)

    def _reclaim(self, nbytes: int) -> None:
        for reclaim in list(self._reclaimers):
            if nbytes <= 0:
                break
            freed = reclaim(nbytes)
            self.kept -= freed
            nbytes -= freed

    def unhold(self, h: Hold) -> None:
        """A holder of ``h`` let go; wakes reservations waiting for room."""
        self.holds.drop(h)
        self.reap()
        self._freed.notify_all()

    def orphan(self, h: Hold) -> None:
        """A holder of ``h`` was dropped without letting go; called *without* the lock (from a finaliser,
        which may run while this thread holds it): queued for :meth:`reap`."""
        self._orphans.append(h)

    def reap(self) -> None:
        """Let go of the holds whose holders were dropped (lock held)."""
        if self._orphans:
            while self._orphans:
                self.holds.drop(self._orphans.popleft())
            self._freed.notify_all()

    @property
    def queued(self) -> int:
        """Reservations waiting for room."""
        return len(self._queue)

    def admit(self, est: Estimate, label: str, make_room: Callable[[int], None]) -> Reservation:
        """Reserve ``est``; called *without* the lock held. ``make_room(total)`` runs under the lock
        once the reservation may proceed, to evict entries until stored + in flight + total fits."""
        host, device = split_estimate(est)
        if host + device > self.max_bytes:
            return self._admit_oversize(host, device, label)
        with self._lock:
            self._wait_turn(host + device, label, make_room)
            self.host += host
            self.device += device
        return Reservation(host, device, False)

    def try_admit(self, est: Estimate, make_room: Callable[[int], bool]) -> Reservation | None:
        """Reserve ``est`` now or not at all; called *with* the lock held, never waits.

        ``None`` while other reservations are queued (they come first), when ``est`` would not
        fit beside the work in flight (or exceeds the whole budget), or when ``make_room(total)``
        says it could not make stored + in flight + total fit (it evicts only if it can).
        """
        host, device = split_estimate(est)
        total = host + device
        self.reap()
        if self._queue or self.committed + total > self.max_bytes:
            return None
        if not make_room(total):
            return None
        self.host += host
        self.device += device
        return Reservation(host, device, False)

    def _wait_turn(self, total: int, label: str, make_room: Callable[[int], None]) -> None:
        """Wait (lock held) until this request is first in line and the work in flight and held values leave
        room, then ``make_room``; evicting an entry that is held frees none of its bytes, so the request
        keeps its place and waits again if the room is still not there."""
        ticket = object()
        deadline = time.monotonic() + self.timeout
        self._queue.append(ticket)
        try:
            waited = False
            self.reap()
            while not self._room(ticket, total, make_room):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.timeouts += 1
                    raise BudgetTimeout(
                        label,
                        f"waited {self.timeout:g} s for {total} bytes of the cache budget "
                        f"({self.max_bytes} bytes, {self.committed} held by work in flight and values being used)",
                    )
                waited = True
                self._freed.wait(min(remaining, 0.1))  # also wakes for holds reaped from dropped leases
                self.reap()
            self.waits += waited
        finally:
            self._queue.remove(ticket)
            self._freed.notify_all()

    def _room(self, ticket: object, total: int, make_room: Callable[[int], None]) -> bool:
        if self._queue[0] is not ticket:
            return False
        if self.kept and self.committed + total > self.max_bytes:
            self._reclaim(self.committed + total - self.max_bytes)
        if self.committed + total > self.max_bytes:
            return False
        make_room(total)
        return self.committed + total <= self.max_bytes

    def _admit_oversize(self, host: int, device: int, label: str) -> Reservation:
        if not self._oversize_gate.acquire(timeout=self.timeout):
            with self._lock:
                self.timeouts += 1
            raise BudgetTimeout(
                label,
                f"waited {self.timeout:g} s to run alone (its {host + device} bytes "
                f"exceed the cache budget of {self.max_bytes} bytes)",
            )
        with self._lock:
            self.oversize_bytes += host + device
        return Reservation(host, device, True)

    def take(self, res: Reservation, nbytes: int) -> None:
        """Move up to ``nbytes`` out of ``res`` (lock held): an entry now accounts for them."""
        if res.oversize:
            return
        host = min(nbytes, res.host)
        device = min(nbytes - host, res.device)
        res.host -= host
        res.device -= device
        self.host -= host
        self.device -= device
        self._freed.notify_all()

    def release(self, res: Reservation) -> None:
        """Give back what ``res`` still holds; called *without* the lock held."""
        with self._lock:
            if res.oversize:
                self.oversize_bytes -= res.total
            else:
                self.host -= res.host
                self.device -= res.device
                self._freed.notify_all()
            res.host = res.device = 0
        if res.oversize:
            res.oversize = False
            self._oversize_gate.release()
