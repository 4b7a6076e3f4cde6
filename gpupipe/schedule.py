"""Declared frame schedules: cursors that follow requests, next-use distances, and read-ahead.

A renderer knows the order in which it will request frames. :meth:`Scheduler.open` takes that
order (any iterable of *schedule ids*, loops and repeats included) and returns a
:class:`Schedule`. From then on every request the cache sees is :meth:`Scheduler.observe`\\ d:

* **Cursor.** Each schedule tracks its position from the requests it matches. The expected
  frame advances it by one. A request for a frame further ahead *re-synchronises* the cursor to
  the nearest position of that frame ahead (a seek or a skipped frame); the positions jumped
  over stay *pending* for ``window`` more positions, so that frames requested a little out of
  order (several threads rendering one schedule) still match their place, and a pending frame
  counts as needed now. A request for a frame consumed within the last ``window`` positions (a
  retry, a second layer asking again) leaves the cursor where it is. A request never waits and
  a frame the schedule does not hold leaves it unchanged. When a frame lies ahead in several
  schedules and none of them has it within ``window``, only the schedule where it is nearest
  jumps.
* **Next use.** :meth:`Scheduler.rank` orders cached frames for eviction (see
  :class:`~gpupipe.policy.SchedulePolicy`): a frame's next use is the soonest over every open
  schedule, counted in positions from each schedule's cursor (schedules are assumed to advance
  at similar rates).
* **Read-ahead.** :class:`ReadAhead` loads the next frames of a schedule in batches, up to a
  horizon, in a background thread.

Memory: about 20 bytes per scheduled position plus one dict entry and one reference per
distinct frame, so a schedule of 10^6 positions over 10^5 distinct frames takes ~30 MB.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from array import array
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

__all__ = ["DEFAULT_WINDOW", "ReadAhead", "Schedule", "ScheduleStats", "Scheduler", "sqrt_weight"]

log = logging.getLogger("gpupipe.schedule")

DEFAULT_WINDOW = 64
"""Positions behind the cursor within which a request still matches its place (out of order or a retry)."""


def sqrt_weight(distance: int, nbytes: int) -> float:
    """The default eviction weight of a scheduled frame: ``(distance + 1) * sqrt(bytes)`` (see :class:`~gpupipe.policy.SchedulePolicy`)."""
    return (distance + 1) * math.sqrt(max(nbytes, 1))


Weight = Callable[[int, int], float]
"""``weight(distance, bytes)``: larger is evicted first among scheduled frames; must grow with distance."""

NEVER = 2, 0
"""Rank of a cached frame that open schedules hold but never use again: evicted first."""
UNSCHEDULED_TIER = 1
"""Tier of a frame outside every open schedule: below scheduled frames, LRU among themselves."""


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
        self, scheduler: Scheduler, number: int, sids: list[Hashable], sources: list[Any], ids: array, window: int
    ) -> None:
        self._scheduler = scheduler
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
        self._reader: ReadAhead | None = None
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

    def _distance(self, lid: int) -> int | None:
        """Positions from the cursor to ``lid``'s next use: 0 while a skipped position of it is pending; ``None``: never again."""
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

    def _probe(self, lid: int) -> tuple[str, int]:
        """How a request for ``lid`` matches: ``pending`` / ``next`` / ``repeat`` / ``near`` / ``far`` (with the target position) or ``none``."""
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

    def _apply(self, kind: str, target: int, lid: int) -> None:
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

    def _upcoming(self, horizon: int, limit: int, cached: Callable[[Hashable], bool]) -> tuple[list[tuple[int, int]], int]:
        """Up to ``limit`` ``(position, lid)`` pairs that read-ahead should load next, in order, and the
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

    def _due(self) -> bool:
        """Whether read-ahead has a batch to start: ``batch_size`` unhandled positions within its
        horizon, or any while it is less than a batch ahead of the cursor."""
        r = self._reader
        if r is None:
            return False
        ahead = max(self.pos, self._ra_next)
        unhandled = min(self.length, self.pos + r.horizon) - ahead
        return unhandled >= r.batch_size or (unhandled > 0 and ahead - self.pos < r.batch_size)

    # ------------------------------------------------------------------ public

    def prefetch_outcome(self, key: Hashable, used: bool) -> None:
        """Count a frame this schedule's read-ahead loaded as used by a request, or wasted; the
        ``outcome`` callback of :meth:`FrameCache.prefetch_many <gpupipe.FrameCache.prefetch_many>`."""
        with self._scheduler._lock:
            if used:
                self._prefetch_used += 1
            else:
                self._wasted += 1

    @property
    def position(self) -> int:
        """The cursor: the next expected position."""
        with self._scheduler._lock:
            return self.pos

    def stats(self) -> ScheduleStats:
        """A consistent snapshot of this schedule's position and counters."""
        with self._scheduler._lock:
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
        reader = self._scheduler._close(self)
        if reader is not None:
            reader.join()

    def __enter__(self) -> Schedule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats()
        return f"Schedule(#{self.number}, position={s.position}/{s.length}, hits={s.hits}, misses={s.misses}, closed={s.closed})"


class Scheduler:
    """The open schedules of one cache, and the next-use ranks its eviction policy asks for.

    ``ident(key)`` maps a cache key to the schedule id it is declared by (default: the key
    itself); a pipeline drops the parts of a key that change when a file is rewritten. One
    lock guards every schedule; the cache's lock may be held when it is taken, never the other
    way round.
    """

    def __init__(
        self, ident: Callable[[Any], Hashable] | None = None, *, window: int = DEFAULT_WINDOW, weight: Weight = sqrt_weight
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window must be a non-negative integer, got {window!r}")
        self.ident = ident
        self.window = window
        self.weight = weight
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._schedules: list[Schedule] = []
        self._cached: dict[Hashable, int] = {}  # schedule id -> cached keys with it
        self._numbers = 0

    def sid(self, key: Hashable) -> Hashable:
        """The schedule id of cache key ``key``."""
        return key if self.ident is None else self.ident(key)

    @property
    def active(self) -> bool:
        """Whether any schedule is open (read without the lock: a hint)."""
        return bool(self._schedules)

    def open(self, items: Iterable[Hashable | tuple[Hashable, Any]], *, with_sources: bool = False) -> Schedule:
        """Open a schedule of the given schedule ids, in request order; returns it.

        With ``with_sources``, each item is ``(sid, source)``, the source being what read-ahead
        loads for that id (the first one given per id is kept).
        """
        index: dict[Hashable, int] = {}
        sids: list[Hashable] = []
        sources: list[Any] = []
        ids = array("i")
        for item in items:
            sid, src = cast("tuple[Hashable, Any]", item) if with_sources else (item, None)
            lid = index.get(sid)
            if lid is None:
                lid = index[sid] = len(sids)
                sids.append(sid)
                sources.append(src)
            ids.append(lid)
        with self._lock:
            self._numbers += 1
            number = self._numbers
        sched = Schedule(self, number, sids, sources, ids, self.window)
        with self._lock:
            self._schedules.append(sched)
            self._changed.notify_all()
        log.debug("schedule #%d opened: %d positions, %d distinct frames", number, sched.length, len(sids))
        return sched

    def _close(self, sched: Schedule) -> ReadAhead | None:
        with self._lock:
            if sched.closed:
                return None
            sched.closed = True
            self._schedules.remove(sched)
            self._changed.notify_all()
            reader, sched._reader = sched._reader, None
        s = sched.stats()
        log.info(
            "schedule #%d closed at position %d/%d: %d requests, %d hits, %d misses, %d resyncs, "
            "%d prefetched (%d used, %d wasted)",
            sched.number,
            s.position,
            s.length,
            s.requests,
            s.hits,
            s.misses,
            s.resyncs,
            s.prefetched,
            s.prefetch_used,
            s.wasted,
        )
        return reader if reader is not None and reader._thread is not threading.current_thread() else None

    def schedules(self) -> list[Schedule]:
        """The open schedules, oldest first."""
        with self._lock:
            return list(self._schedules)

    def observe(self, sid: Hashable) -> list[Schedule]:
        """Note a request for ``sid``: move the cursors it matches (see the module doc); returns those schedules."""
        if not self._schedules:
            return []
        with self._lock:
            matched: list[Schedule] = []
            far: list[tuple[int, Schedule, int, int]] = []
            for s in self._schedules:
                lid = s._index.get(sid)
                if lid is None:
                    continue
                kind, target = s._probe(lid)
                if kind == "far":
                    far.append((target - s.pos, s, target, lid))
                elif kind != "none":
                    s._apply(kind, target, lid)
                    matched.append(s)
            if not matched and far:
                _, s, target, lid = min(far, key=lambda f: f[0])
                s._apply("far", target, lid)
                matched.append(s)
            if any(s._due() for s in matched):
                self._changed.notify_all()
            return matched

    def count(self, schedules: Sequence[Schedule], hit: bool) -> None:
        """Count one request's outcome (served without an encode, or not) in each of ``schedules``."""
        with self._lock:
            for s in schedules:
                if hit:
                    s._hits += 1
                else:
                    s._misses += 1

    # ------------------------------------------------------------------ ranks (for the eviction policy)

    def _rank_locked(self, sid: Hashable, cost: int) -> tuple[int, float]:
        """``(tier, weight)``; larger is evicted first. Tier 2: held by open schedules but never used
        again; tier 1: outside every open schedule; tier 0: scheduled, weighted by ``self.weight(distance, cost)``."""
        best = -1
        member = False
        for s in self._schedules:
            lid = s._index.get(sid)
            if lid is None:
                continue
            member = True
            d = s._distance(lid)
            if d is not None and (best < 0 or d < best):
                best = d
        if best >= 0:
            return 0, self.weight(best, cost)
        return NEVER if member else (UNSCHEDULED_TIER, 0)

    def rank(self, sid: Hashable, cost: int) -> tuple[int, float]:
        """The eviction rank of a frame with schedule id ``sid`` costing ``cost`` bytes (see :meth:`_rank_locked`)."""
        with self._lock:
            return self._rank_locked(sid, cost)

    def next_use(self, sid: Hashable) -> int | None:
        """Positions until ``sid``'s soonest use over the open schedules (``None``: none)."""
        with self._lock:
            ds = [d for s in self._schedules if (lid := s._index.get(sid)) is not None and (d := s._distance(lid)) is not None]
            return min(ds) if ds else None

    def _note_cached(self, sid: Hashable, delta: int) -> None:
        """The cache added (``+1``) or removed (``-1``) a key with this schedule id."""
        with self._lock:
            n = self._cached.get(sid, 0) + delta
            if n > 0:
                self._cached[sid] = n
            else:
                self._cached.pop(sid, None)
                if self._schedules:
                    self._changed.notify_all()


Fetch = Callable[[list[Any]], list[str]]
"""Read-ahead's loader: sources in, one status each: ``started``, ``present`` (cached or loading
already), ``failed`` (cannot be loaded: its request will report why) or ``no-room``."""


class ReadAhead:
    """Loads a schedule's next frames before they are requested, ``batch_size`` at a time.

    Each :meth:`step` takes the next frames from the cursor up to ``horizon`` positions ahead
    that are not cached and hands up to ``batch_size`` of them to ``fetch`` (which admits them
    through the cache's budget and encodes them as one batch). Positions are handled once, in
    order: a frame that was cached when its turn came, or was loaded and then evicted, is not
    loaded again by read-ahead; a frame that found no room is tried again on the next step.
    :meth:`start` runs steps in a background thread until the schedule closes. Before each step
    it calls ``idle(timeout)``, which waits up to ``timeout`` seconds for requests to stop
    loading and says whether they have (read-ahead yields to requests); when a step starts
    nothing, it waits until a cursor moves or the cache drops a frame.
    """

    POLL_S = 0.05

    def __init__(
        self, schedule: Schedule, fetch: Fetch, horizon: int, batch_size: int, idle: Callable[[float], bool] | None = None
    ) -> None:
        if horizon < 1 or batch_size < 1:
            raise ValueError(f"horizon and batch_size must be positive, got {horizon} and {batch_size}")
        self.schedule = schedule
        self.fetch = fetch
        self.horizon = horizon
        self.batch_size = batch_size
        self.idle = idle
        self._thread: threading.Thread | None = None
        schedule.read_ahead = horizon

    def step(self) -> int:
        """Start loading the next batch; returns how many frames it started (0: nothing to do or no room)."""
        s = self.schedule
        sch = s._scheduler
        with sch._lock:
            if s.closed:
                return 0
            todo, scanned = s._upcoming(self.horizon, self.batch_size, sch._cached.__contains__)
            if not todo:
                s._ra_next = max(s._ra_next, scanned)
                return 0
            srcs = [s._sources[lid] if s._sources[lid] is not None else s._sids[lid] for _, lid in todo]
        statuses = self.fetch(srcs)
        started = sum(st == "started" for st in statuses)
        with sch._lock:
            s._prefetched += started
            blocked = next((p for (p, _), st in zip(todo, statuses) if st == "no-room"), None)
            s._ra_next = max(s._ra_next, blocked if blocked is not None else scanned)
        return started

    def start(self) -> None:
        """Run :meth:`step` in a daemon thread until the schedule closes."""
        with self.schedule._scheduler._lock:
            self.schedule._reader = self
        self._thread = threading.Thread(target=self._run, name=f"gpupipe-readahead-{self.schedule.number}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        s = self.schedule
        sch = s._scheduler
        try:
            while not s.closed:
                if self.idle is not None and not self.idle(self.POLL_S):
                    continue
                if self.step():
                    continue
                with sch._changed:
                    if not s.closed:
                        sch._changed.wait(self.POLL_S)
                        while not s.closed and not s._due() and sch._changed.wait(self.POLL_S):
                            pass
        except Exception:  # read-ahead is an optimisation: log, stop, let requests load
            log.exception("read-ahead of schedule #%d stopped", s.number)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread (after the schedule closed)."""
        if self._thread is not None:
            self._thread.join(timeout)
