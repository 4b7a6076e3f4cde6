"""Read-ahead (:class:`ReadAhead`): a schedule's next frames loaded in a background thread before they are requested."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .cursor import Schedule

__all__ = ["Fetch", "ReadAhead"]

log = logging.getLogger("gpupipe.schedule")


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
        sch = s.scheduler
        with sch.lock:
            if s.closed:
                return 0
            todo, scanned = s.upcoming(self.horizon, self.batch_size, sch.is_cached)
            if not todo:
                s.read_ahead_done(0, scanned)
                return 0
            srcs = [s.source_of(lid) for _, lid in todo]
        statuses = self.fetch(srcs)
        started = sum(st == "started" for st in statuses)
        with sch.lock:
            blocked = next((p for (p, _), st in zip(todo, statuses) if st == "no-room"), None)
            s.read_ahead_done(started, blocked if blocked is not None else scanned)
        return started

    def start(self) -> None:
        """Run :meth:`step` in a daemon thread until the schedule closes."""
        with self.schedule.scheduler.lock:
            self.schedule.reader = self
        self._thread = threading.Thread(target=self._run, name=f"gpupipe-readahead-{self.schedule.number}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        s = self.schedule
        sch = s.scheduler
        try:
            while not s.closed:
                if self.idle is not None and not self.idle(self.POLL_S):
                    continue
                if self.step():
                    continue
                with sch.changed:
                    if not s.closed:
                        sch.changed.wait(self.POLL_S)
                        while not s.closed and not s.due() and sch.changed.wait(self.POLL_S):
                            pass
        except Exception:  # read-ahead is an optimisation: log, stop, let requests load
            log.exception("read-ahead of schedule #%d stopped", s.number)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread (after the schedule closed)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether its thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    def is_current_thread(self) -> bool:
        """Whether the calling thread is this read-ahead's own."""
        return self._thread is threading.current_thread()
