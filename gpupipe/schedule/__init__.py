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
  :class:`SchedulePolicy`): a frame's next use is the soonest over every open
  schedule, counted in positions from each schedule's cursor (schedules are assumed to advance
  at similar rates).
* **Read-ahead.** :class:`ReadAhead` loads the next frames of a schedule in batches, up to a
  horizon, in a background thread.

Memory: about 20 bytes per scheduled position plus one dict entry and one reference per
distinct frame, so a schedule of 10^6 positions over 10^5 distinct frames takes ~30 MB.

One module per part: :mod:`.cursor` (:class:`Schedule`, one declared order and its cursor),
:mod:`.scheduler` (:class:`Scheduler`, the open schedules and next-use ranks), :mod:`.readahead`
(:class:`ReadAhead`) and :mod:`.policy` (:class:`SchedulePolicy`, the cache's eviction order).
"""

from __future__ import annotations

from .cursor import Schedule, ScheduleStats
from .policy import SchedulePolicy
from .readahead import ReadAhead
from .scheduler import DEFAULT_WINDOW, Scheduler, Weight, sqrt_weight

__all__ = ["DEFAULT_WINDOW", "ReadAhead", "Schedule", "SchedulePolicy", "ScheduleStats", "Scheduler", "Weight", "sqrt_weight"]
