"""The service's open schedules (``POST /v1/schedules``): each split by lane into pipeline schedules.

A schedule declares the order in which frames will be requested (:meth:`FramePipeline.schedule
<gpupipe.FramePipeline.schedule>`). Its sources are confined to the roots and routed to their
lanes (order kept within each), and each lane's part is scheduled on the lane's view for the
schedule's output settings. A source that is refused or missing refuses the whole schedule.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .errors import BadParameter, ScheduleNotFound, SchedulesUnsupported, ServiceStopping, TooManySchedules
from .lanes import Lane, route
from .params import FrameParams
from .roots import Roots

__all__ = ["MAX_SCHEDULES", "MAX_SCHEDULE_SOURCES", "OpenSchedules", "OpenedSchedule"]

log = logging.getLogger("gpupipe.serve")

MAX_SCHEDULE_SOURCES = 1_000_000
MAX_SCHEDULES = 1024

_Handles = list[tuple[Lane, Any]]  # (lane, what its view's schedule() returned: a handle with close())


@dataclass(frozen=True)
class OpenedSchedule:
    """A schedule the service opened: its ``id`` and how many ``sources`` it was given."""

    id: str
    sources: int


class OpenSchedules:
    """The open schedules of a service over ``lanes``; blocking work runs on ``pool``.

    Methods are called on the event loop, one at a time per schedule id.
    """

    def __init__(self, lanes: Sequence[Lane], roots: Roots, pool: Executor) -> None:
        self.lanes = list(lanes)
        self.roots = roots
        self.pool = pool
        self._open: dict[str, _Handles] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._open)

    @property
    def supported(self) -> bool:
        """Whether every lane's pipeline can schedule (a gpupipe from before schedules cannot)."""
        return all(callable(getattr(lane.pipeline, "schedule", None)) for lane in self.lanes)

    def _check_supported(self) -> None:
        if not self.supported:
            raise SchedulesUnsupported("this gpupipe has no frame schedules (FramePipeline.schedule); requests work without one")

    async def open(self, sources: Sequence[str], params: FrameParams) -> OpenedSchedule:
        """Open a schedule of ``sources`` under ``params``.

        Raises :class:`SchedulesUnsupported`, :class:`TooManySchedules` (:data:`MAX_SCHEDULES` open),
        :class:`BadParameter`, :class:`~gpupipe.serve.errors.PathRefused`,
        :class:`~gpupipe.errors.FrameNotFound` or :class:`ServiceStopping`.
        """
        self._check_supported()
        if len(self._open) >= MAX_SCHEDULES:
            raise TooManySchedules(f"{len(self._open)} schedules are open (at most {MAX_SCHEDULES}); DELETE one first")
        if len(sources) > MAX_SCHEDULE_SOURCES:
            raise BadParameter(f"sources holds {len(sources)} entries; at most {MAX_SCHEDULE_SOURCES}")
        loop = asyncio.get_running_loop()
        handles = await loop.run_in_executor(self.pool, self._open_blocking, sources, params)
        if self._closed:
            await loop.run_in_executor(self.pool, _close_handles, handles)
            raise ServiceStopping("the service is stopping; it opens no more schedules")
        sid = secrets.token_hex(12)
        self._open[sid] = handles
        return OpenedSchedule(sid, len(sources))

    async def close(self, sid: str) -> None:
        """Withdraw the schedule ``sid``; :class:`ScheduleNotFound` when none is open with that id."""
        self._check_supported()
        handles = self._open.pop(sid, None)
        if handles is None:
            raise ScheduleNotFound(f"no open schedule has id {sid[:64]!r}")
        await asyncio.get_running_loop().run_in_executor(self.pool, _close_handles, handles)

    async def close_all(self) -> None:
        """Withdraw every open schedule; none opens afterwards."""
        self._closed = True
        loop = asyncio.get_running_loop()
        while self._open:
            _, handles = self._open.popitem()
            await loop.run_in_executor(self.pool, _close_handles, handles)

    def _open_blocking(self, sources: Sequence[str], params: FrameParams) -> _Handles:
        """Confine every source, split them by lane (order kept) and schedule each part."""
        resolved: dict[str, str] = {}
        by_lane: dict[int, list[str]] = {}
        for src in sources:
            real = resolved.get(src)
            if real is None:
                real = resolved[src] = self.roots.resolve(src)
            by_lane.setdefault(route(real, len(self.lanes)), []).append(real)
        handles: _Handles = []
        try:
            for i, part in sorted(by_lane.items()):
                lane = self.lanes[i]
                try:
                    view = lane.view(params.format, params.size, params.quality)
                except ValueError as e:
                    raise BadParameter(str(e)) from None
                handles.append((lane, view.schedule(part)))
        except BaseException:
            _close_handles(handles)
            raise
        return handles


def _close_handles(handles: _Handles) -> None:
    for lane, h in handles:
        try:
            h.close()
        except Exception:
            log.exception("closing a schedule on %s failed", lane.name)
