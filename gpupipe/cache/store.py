"""The cache's entries: values with their costs, in a policy's order, within the two bounds.

:class:`Entries` keeps ``len <= max_entries`` and ``bytes + committed() <= max_bytes``, where
``committed()`` is the rest of the budget that evicting entries cannot free (work in flight and
held values, :mod:`.admission`, :mod:`.holds`). A held value that is evicted stays in memory, so
its eviction frees none of the budget: room is planned with that in mind. No locking of its own:
the cache's lock is held for every call.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, Literal, TypeVar

from .holds import Holds
from .policy import BypassPolicy, EvictionPolicy, SparePolicy
from .stats import Counters

__all__ = ["Entries", "EvictCause", "Evicted"]

V = TypeVar("V")
EvictCause = Literal["size", "replaced", "explicit"]
Evicted = list  # list[tuple[Hashable, value, EvictCause]]: entries that left, reported after the lock is released


class Entries(Generic[V]):
    """Cached values with their ``(host, device)`` costs, ordered by ``policy`` (see the module docstring).

    ``on_remove(key, value)`` is told of every entry that leaves, whatever the cause.
    """

    def __init__(
        self,
        policy: EvictionPolicy,
        max_entries: int,
        max_bytes: int,
        committed: Callable[[], int],
        holds: Holds,
        counters: Counters,
    ) -> None:
        self.policy = policy
        # The optional capabilities, checked once: Protocols the policy declares, not attributes probed.
        self._bypass: BypassPolicy | None = policy if isinstance(policy, BypassPolicy) else None
        self._spare: SparePolicy | None = policy if isinstance(policy, SparePolicy) else None
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._committed = committed
        self._holds = holds
        self._counters = counters
        self._items: dict[Hashable, tuple[V, int, int]] = {}
        self.host = 0
        self.device = 0
        self.on_remove: Callable[[Hashable, V], None] | None = None

    # ------------------------------------------------------------------ the items

    @property
    def bytes(self) -> int:
        """Host plus device bytes of the entries."""
        return self.host + self.device

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def peek(self, key: Hashable) -> V | None:
        """The value of ``key`` (no use counted), or ``None``."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def touch(self, key: Hashable) -> V | None:
        """The value for ``key``, counted as a use by the policy; ``None`` if absent."""
        item = self._items.get(key)
        if item is None:
            return None
        self.policy.touch(key)
        return item[0]

    def cost(self, key: Hashable) -> int:
        """Bytes the entry of ``key`` costs."""
        _, host, device = self._items[key]
        return host + device

    def keys(self) -> list[Hashable]:
        """The keys, first victim first."""
        return list(self.policy)

    def insert(self, key: Hashable, value: V, host: int, device: int) -> None:
        """Add an entry (bounds not checked: see :meth:`place`)."""
        self._items[key] = (value, host, device)
        self.policy.add(key, host + device)
        self.host += host
        self.device += device
        self._holds.entered(value)

    def remove(self, key: Hashable) -> tuple[V, int, int]:
        """Take the entry of ``key`` out: ``(value, host, device)``."""
        value, host, device = self._items.pop(key)
        self.policy.remove(key)
        self.host -= host
        self.device -= device
        self._holds.left(value)
        if self.on_remove is not None:
            self.on_remove(key, value)
        return value, host, device

    def clear(self) -> list[tuple[Hashable, V]]:
        """Take every entry out, first victim first."""
        items = [(k, self._items[k][0]) for k in self.policy]
        for k, _ in items:
            self.remove(k)
        return items

    # ------------------------------------------------------------------ the bounds

    def over(self, extra: int = 0) -> bool:
        """Whether a bound is broken with ``extra`` more bytes committed."""
        return len(self._items) > self.max_entries or self.bytes + self._committed() + extra > self.max_bytes

    def note_peak(self) -> None:
        """Record the highest ``entries + committed`` bytes seen."""
        self._counters.peak_bytes = max(self._counters.peak_bytes, self.bytes + self._committed())

    def evict(self, out: Evicted, key: Hashable | None = None) -> None:
        """Evict ``key`` (default: the policy's victim) for a bound; reported in ``out``."""
        if key is None:
            key = self.policy.victim()
        value, host, device = self.remove(key)
        self._counters.evictions += 1
        self._counters.evicted_bytes += host + device
        out.append((key, value, "size"))

    def evict_to_fit(self, extra: int, out: Evicted) -> None:
        """Evict until both bounds hold with ``extra`` more bytes committed (or nothing is left)."""
        while len(self._items) and self.over(extra):
            self.evict(out)

    def plan_room(self, victims: Iterable[Hashable], extra: int, entries: int) -> list[Hashable] | None:
        """The first of ``victims`` whose eviction makes ``entries`` more entries and ``extra`` more bytes
        fit both bounds (evicts nothing); ``None`` if they cannot."""
        n = len(self._items) + entries
        over = self.bytes + self._committed() + extra - self.max_bytes
        plan: list[Hashable] = []
        if n <= self.max_entries and over <= 0:
            return plan
        for k in victims:
            plan.append(k)
            n -= 1
            if self.peek(k) not in self._holds:  # a held value stays in memory when evicted
                over -= self.cost(k)
            if n <= self.max_entries and over <= 0:
                return plan
        return None

    def place(self, key: Hashable, value: V, host: int, device: int, out: Evicted, prefetch: bool = False) -> bool:
        """Insert a new entry within the bounds; whether it is cached.

        A :class:`~.policy.BypassPolicy` (and any ``prefetch``) inserts only into room it may make from
        the keys the policy offers (``worse_than``, or ``spare`` for a prefetch), else returns
        ``False`` (``bypassed``). Otherwise the policy's victims leave until the entry fits; one that
        does not fit beside what is committed leaves at once (``False``).
        """
        if self._bypass is not None or prefetch:
            return self._insert_or_bypass(key, value, host, device, out, prefetch)
        self.insert(key, value, host, device)
        while len(self._items) > 1 and self.over():
            self.evict(out)
        if self.over():
            self.evict(out)
            return False
        self.note_peak()
        return True

    def spare(self) -> Iterable[Hashable]:
        """The keys loads ahead of requests may displace (none unless the policy is a :class:`~.policy.SparePolicy`)."""
        return self._spare.spare() if self._spare is not None else ()

    def _insert_or_bypass(self, key: Hashable, value: V, host: int, device: int, out: Evicted, prefetch: bool) -> bool:
        victims: Iterable[Hashable]
        if prefetch:
            victims = self.spare()
        elif self._bypass is not None:
            victims = self._bypass.worse_than(key, host + device)
        else:
            victims = self.policy
        plan = self.plan_room(victims, host + device, 1)
        if plan is None:
            self._counters.bypassed += 1
            return False
        for k in plan:
            self.evict(out, k)
        self.insert(key, value, host, device)
        self.note_peak()
        return True
