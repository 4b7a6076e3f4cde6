"""One declared order of frames and its cursor (:class:`Schedule`), with its statistics.

The cursor rules are in :mod:`gpupipe.schedule`. Every method that says "lock held" runs under
the scheduler's lock (:attr:`Scheduler.lock <.scheduler.Scheduler.lock>`).
"""

from __future__ import annotations

import bisect
import logging
import threading
from array import array
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["Reader", "Schedule", "ScheduleOwner", "ScheduleStats"]

log = logging.getLogger("gpupipe.schedule")


class Reader(Protocol):
    """What a schedule needs from its read-ahead (:class:`~.readahead.ReadAhead`)."""

    horizon: int
    batch_size: int

    def join(self, timeout: float | None = None) -> None: ...
    def is_current_thread(self) -> bool: ...


class ScheduleOwner(Protocol):
    """What a schedule and its read-ahead need from the scheduler that opened it (:class:`~.scheduler.Scheduler`)."""

    lock: threading.Lock
    changed: threading.Condition

    def close(self, sched: Schedule) -> Reader | None: ...
    def is_cached(self, sid: Hashable) -> bool: ...


@dataclass(frozen=True)
class ScheduleStats:
    """A snapshot of one schedule.

    ``position`` is the cursor (the next expected position) out of ``length``; ``requests``
    are the requests it matched, of which ``hits`` were served without an encode by that
    request (cached, or joined to an encode under way) and ``misses`` started one;
    ``resyncs`` counts cursor jumps. ``prefetched`` frames were encoded by read-ahead;
    ``prefetch_used`` of them were then requested, ``wasted`` left the cache (or were never
    admitted) unrequested. Encodes of this schedule: ``misses + prefetched``.
    """

    position: int
    length: int
    requests: int
    hits: int
    misses: int
    resyncs: int
    prefetched: int
    prefetch_used: int
    wasted: int
    read_ahead: int
    closed: bool

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict."""
        return dict(self.__dict__)


class Schedule:
    """One declared order of frames, with its cursor; returned by :meth:`Scheduler.open`.

    :meth:`close` (or leaving a ``with`` block) withdraws it: its frames stop counting as
    needed and its read-ahead stops. All state is guarded by the scheduler's lock.
    """

    def __init__(
        self, scheduler: ScheduleOwner, number: int, sids: list[Hashable], sources: list[Any], ids: array, window: int
    ) -> None:
        self.scheduler = scheduler
        self.number = number
        self._sids = sids
        self._sources = sources
        self._index: dict[Hashable, int] = {sid: i for i, sid in enumerate(sids)}
        self.length = n = len(ids)
        self._window = window
        self._ids = ids  # position -> frame (index into sids)
        m = len(sids)
        view = np.frombuffer(ids, dtype=np.intc) if n else np.zeros(0, np.intc)
        start = np.zeros(m + 1, np.int64)
        np.cumsum(np.bincount(view, minlength=m), out=start[1:])
        # Positions grouped by frame, ascending within each: frame f's are _order[_start[f]:_start[f + 1]].
        self._order = array("q", np.argsort(view, kind="stable").astype(np.int64).tobytes())
        self._start = array("q", start.tobytes())
        # The first position >= some earlier cursor holding each frame: still its next use while >= the cursor.
        self._nu = array("q", np.full(m, -1, np.int64).tobytes())
        self.pos = 0
        self._pending: dict[int, deque[int]] = {}
        self._pending_fifo: deque[tuple[int, int]] = deque()
        self._ra_next = 0  # lowest position read-ahead has not handled yet
        self.read_ahead = 0
        self.closed = False
        self.reader: Reader | None = None  # its read-ahead, while one runs
        self._requests = self._hits = self._misses = self._resyncs = 0
        self._prefetched = self._prefetch_used = self._wasted = 0

    # ------------------------------------------------------------------ positions (lock held)

    def _first_at_or_after(self, lid: int, c: int) -> int:
        lo, hi = self._start[lid], self._start[lid + 1]
        i = bisect.bisect_left(self._order, c, lo, hi)
        return self._order[i] if i < hi else self.length

    def _last_before(self, lid: int, c: int) -> int:
        lo, hi = self._start[lid], self._start[lid + 1]
        i = bisect.bisect_left(self._order, c, lo, hi) - 1
        return self._order[i] if i >= lo else -1

    def _next_use(self, lid: int) -> int:
        """The first position >= the cursor holding ``lid`` (``length`` if none)."""
        nu = self._nu[lid]
        if nu < self.pos:
            nu = self._first_at_or_after(lid, self.pos)
            self._nu[lid] = nu
        return nu

    def distance(self, lid: int) -> int | None:
        """(Lock held.) Positions from the cursor to ``lid``'s next use: 0 while a skipped position of it is pending; ``None``: never again."""
        if self._pending.get(lid):
            return 0
        nu = self._next_use(lid)
        return nu - self.pos if nu < self.length else None

    def _expire(self) -> None:
        limit = self.pos - self._window
        fifo = self._pending_fifo
        while fifo and fifo[0][0] < limit:
            p, lid = fifo.popleft()
            q = self._pending.get(lid)
            if q and q[0] == p:
                q.popleft()
                if not q:
                    del self._pending[lid]

    def probe(self, lid: int) -> tuple[str, int]:
        """(Lock held.) How a request for ``lid`` matches: ``pending`` / ``next`` / ``repeat`` / ``near`` / ``far`` (with the target position) or ``none``."""
        if self._pending.get(lid):
            return "pending", -1
        c = self.pos
        if c < self.length and self._ids[c] == lid:
            return "next", c
        q = self._next_use(lid)
        p = self._last_before(lid, c)
        recent = p >= 0 and p >= c - self._window
        if q < self.length:
            if recent and c - 1 - p <= q - c:
                return "repeat", p
            return ("near" if q - c <= self._window else "far"), q
        return ("repeat", p) if recent else ("none", -1)

    def apply(self, kind: str, target: int, lid: int) -> None:
        """(Lock held.) Move the cursor as :meth:`probe` said a request for ``lid`` matches."""
        if kind == "pending":
            q = self._pending[lid]
            q.popleft()
            if not q:
                del self._pending[lid]
        elif kind == "next":
            self.pos += 1
            self._expire()
        elif kind in ("near", "far"):
            for p in range(max(self.pos, target - self._window), target):
                other = self._ids[p]
                self._pending.setdefault(other, deque()).append(p)
                self._pending_fifo.append((p, other))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("schedule #%d: request for position %d while at %d: resynchronised", self.number, target, self.pos)
            self.pos = target + 1
            self._resyncs += 1
            self._expire()
        if kind != "none":
            self._requests += 1

    def upcoming(self, horizon: int, limit: int, cached: Callable[[Hashable], bool]) -> tuple[list[tuple[int, int]], int]:
        """(Lock held.) Up to ``limit`` ``(position, lid)`` pairs that read-ahead should load next, in order, and the
        position just past the last one looked at: positions from the cursor (or where read-ahead
        stopped) up to ``horizon`` ahead, skipping frames already cached and repeats within the window."""
        start = max(self.pos, self._ra_next)
        end = min(self.length, self.pos + horizon)
        out: list[tuple[int, int]] = []
        seen: set[int] = set()
        p = start
        while p < end and len(out) < limit:
            lid = self._ids[p]
            if lid not in seen and not cached(self._sids[lid]):
                out.append((p, lid))
            seen.add(lid)
            p += 1
        return out, p

    def due(self) -> bool:
        """(Lock held.) Whether read-ahead has a batch to start: ``batch_size`` unhandled positions within its
        horizon, or any while it is less than a batch ahead of the cursor."""
        r = self.reader
        if r is None:
            return False
        ahead = max(self.pos, self._ra_next)
        unhandled = min(self.length, self.pos + r.horizon) - ahead
        return unhandled >= r.batch_size or (unhandled > 0 and ahead - self.pos < r.batch_size)

    # ------------------------------------------------------------------ for the scheduler and read-ahead (lock held)

    def frame_of(self, sid: Hashable) -> int | None:
        """(Lock held.) This schedule's frame number of schedule id ``sid``, or ``None`` if it does not hold it."""
        return self._index.get(sid)

    def count(self, hit: bool) -> None:
        """(Lock held.) Count one matched request as served without an encode (``hit``) or not."""
        if hit:
            self._hits += 1
        else:
            self._misses += 1

    def source_of(self, lid: int) -> Any:
        """(Lock held.) What read-ahead loads for frame ``lid``: its source, else its schedule id."""
        src = self._sources[lid]
        return src if src is not None else self._sids[lid]

    def read_ahead_done(self, started: int, upto: int) -> None:
        """(Lock held.) Read-ahead started ``started`` loads and handled every position before ``upto``."""
        self._prefetched += started
        self._ra_next = max(self._ra_next, upto)

    # ------------------------------------------------------------------ public

    def prefetch_outcome(self, key: Hashable, used: bool) -> None:
        """Count a frame this schedule's read-ahead loaded as used by a request, or wasted; the
        ``outcome`` callback of :meth:`FrameCache.prefetch_many <gpupipe.FrameCache.prefetch_many>`."""
        with self.scheduler.lock:
            if used:
                self._prefetch_used += 1
            else:
                self._wasted += 1

    @property
    def position(self) -> int:
        """The cursor: the next expected position."""
        with self.scheduler.lock:
            return self.pos

    def stats(self) -> ScheduleStats:
        """A consistent snapshot of this schedule's position and counters."""
        with self.scheduler.lock:
            return ScheduleStats(
                position=self.pos,
                length=self.length,
                requests=self._requests,
                hits=self._hits,
                misses=self._misses,
                resyncs=self._resyncs,
                prefetched=self._prefetched,
                prefetch_used=self._prefetch_used,
                wasted=self._wasted,
                read_ahead=self.read_ahead,
                closed=self.closed,
            )

    def close(self) -> None:
        """Withdraw the schedule: its frames stop counting as needed, read-ahead starts nothing more
        (a batch under way finishes) and this call waits for it. Idempotent."""
        reader = self.scheduler.close(self)
        if reader is not None:
            reader.join()

    def __enter__(self) -> Schedule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats()
        return f"Schedule(#{self.number}, position={s.position}/{s.length}, hits={s.hits}, misses={s.misses}, closed={s.closed})"
