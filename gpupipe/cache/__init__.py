"""The two-bound frame cache: entries, work in flight and values in use within one byte budget.

One module per part: :mod:`.cache` (:class:`FrameCache`, the public face), :mod:`.core` (the state
under the cache's lock), :mod:`.store` (entries within the bounds), :mod:`.admission` (work in
flight), :mod:`.holds` (values in use, :class:`Lease`), :mod:`.flights` (single-flight loads),
:mod:`.loads` (batches and loads ahead of requests), :mod:`.policy` (eviction order: the
protocols and LRU) and :mod:`.stats` (:class:`CacheStats`).
"""

from __future__ import annotations

from ..vocabulary import Estimate
from .cache import FrameCache
from .core import CostedValue, Outcome, entry_cost
from .holds import Lease
from .loads import PrefetchStatus
from .policy import BypassPolicy, EvictionPolicy, LruPolicy, SparePolicy
from .stats import CacheStats
from .store import EvictCause

__all__ = [
    "BypassPolicy",
    "CacheStats",
    "CostedValue",
    "Estimate",
    "EvictCause",
    "EvictionPolicy",
    "FrameCache",
    "Lease",
    "LruPolicy",
    "Outcome",
    "PrefetchStatus",
    "SparePolicy",
    "entry_cost",
]
