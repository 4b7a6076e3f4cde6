"""The service's open schedules (``POST /v1/schedules``): each split by lane into pipeline schedules.

A schedule declares the order in which frames will be requested (:meth:`FramePipeline.schedule
<gpupipe.FramePipeline.schedule>`). Its sources (:class:`~gpupipe.serve.refs.FrameRef`: frame
files, and video clips' frames by index or time) are confined to the roots and routed to their
lanes (order kept within each), and each lane's part is scheduled on the lane's view for the
schedule's output settings.

Sources whose file does not exist under any root are left out and reported by ``src``, once each
(:attr:`OpenedSchedule.missing`: a missing clip is one entry, however many of its frames were given),
so that one missing frame does not cost the whole timeline its read-ahead and eviction order; a
request for a missing frame is answered 404 when it comes, as without a schedule. A schedule none
of whose sources exists is refused (404 naming them: most likely a wrong ``--root``). A source
refused by confinement (403), a bad value (400) or a video's frame picked in an image file (400)
refuses the whole schedule: those are the caller's mistakes, not gaps in the frames. A video
frame past its clip's end is not looked for here; its request answers 404 when it comes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..errors import FrameNotFound
from .errors import BadParameter, ScheduleNotFound, ServiceStopping, TooManySchedules
from .lanes import Lane, route
from .params import FrameParams
from .refs import FrameRef, refuse_image
from .roots import Roots

__all__ = ["MAX_MISSING_LISTED", "MAX_SCHEDULES", "MAX_SCHEDULE_SOURCES", "OpenSchedules", "OpenedSchedule"]

log = logging.getLogger("gpupipe.serve")

MAX_SCHEDULE_SOURCES = 1_000_000
MAX_SCHEDULES = 1024
MAX_MISSING_LISTED = 100  # missing sources named in an answer

_Handles = list[tuple[Lane, Any]]  # (lane, what its view's schedule() returned: a handle with close())


@dataclass(frozen=True)
class OpenedSchedule:
    """A schedule the service opened: its ``id``, how many ``sources`` it was given, and the distinct
    sources that exist under no root (``missing``: the first :data:`MAX_MISSING_LISTED`, in order;
    ``missing_count``: all of them), which it left out."""

    id: str
    sources: int
    missing: tuple[str, ...] = ()
    missing_count: int = 0


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

    async def open(self, sources: Sequence[FrameRef], params: FrameParams) -> OpenedSchedule:
        """Open a schedule of ``sources`` under ``params``, leaving out (and reporting) missing ones.

        Raises :class:`TooManySchedules` (:data:`MAX_SCHEDULES` open),
        :class:`BadParameter`, :class:`~gpupipe.serve.errors.PathRefused`,
        :class:`~gpupipe.errors.FrameNotFound` (no source exists) or :class:`ServiceStopping`.
        """
        if len(self._open) >= MAX_SCHEDULES:
            raise TooManySchedules(f"{len(self._open)} schedules are open (at most {MAX_SCHEDULES}); DELETE one first")
        if len(sources) > MAX_SCHEDULE_SOURCES:
            raise BadParameter(f"sources holds {len(sources)} entries; at most {MAX_SCHEDULE_SOURCES}")
        loop = asyncio.get_running_loop()
        handles, missing = await loop.run_in_executor(self.pool, self._open_blocking, sources, params)
        if self._closed:
            await loop.run_in_executor(self.pool, _close_handles, handles)
            raise ServiceStopping("the service is stopping; it opens no more schedules")
        sid = secrets.token_hex(12)
        self._open[sid] = handles
        return OpenedSchedule(sid, len(sources), tuple(missing[:MAX_MISSING_LISTED]), len(missing))

    async def close(self, sid: str) -> None:
        """Withdraw the schedule ``sid``; :class:`ScheduleNotFound` when none is open with that id."""
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

    def _open_blocking(self, sources: Sequence[FrameRef], params: FrameParams) -> tuple[_Handles, list[str]]:
        """Confine every source, split them by lane (order kept) and schedule each part; also the missing sources."""
        resolved: dict[str, str | None] = {}
        videos: set[str] = set()  # real paths checked not to be images
        missing: list[str] = []
        by_lane: dict[int, list[Any]] = {}
        for ref in sources:
            src = ref.src
            if src in resolved:
                real = resolved[src]
            else:
                try:
                    real = self.roots.resolve(src)
                except FrameNotFound:
                    real = None
                    missing.append(src)
                resolved[src] = real
            if real is None:
                continue
            if ref.video and real not in videos:
                refuse_image(ref, real)
                videos.add(real)
            by_lane.setdefault(route(real, len(self.lanes)), []).append(ref.source(real))
        if not by_lane:
            listed = ", ".join(repr(s[:200]) for s in missing[:MAX_MISSING_LISTED])
            more = f" and {len(missing) - MAX_MISSING_LISTED} more" if len(missing) > MAX_MISSING_LISTED else ""
            raise FrameNotFound(missing[0], f"none of the schedule's sources is a frame under any --root: {listed}{more}")
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
        return handles, missing


def _close_handles(handles: _Handles) -> None:
    for lane, h in handles:
        try:
            h.close()
        except Exception:
            log.exception("closing a schedule on %s failed", lane.name)
