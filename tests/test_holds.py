"""FrameCache.hold: values handed out and still in use (a URI being sent) count against the budget until
released, once as an entry while they are one and as held bytes once they are not."""

from __future__ import annotations

import contextlib
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from waits import wait_until

from gpupipe import FrameCache
from gpupipe.errors import BudgetTimeout
from gpupipe.policy import LruPolicy


def test_a_held_entry_counts_once_and_keeps_counting_after_eviction():
    c = FrameCache(10, 1000)
    v = "u" * 400
    c.put("a", v)
    with c.hold("a", v) as lease:
        assert c.stats().held_bytes == 0 and c.stats().bytes == 400  # counted once, as the entry
        assert c.discard("a")
        s = c.stats()
        assert (s.bytes, s.held_bytes, s.peak_bytes) == (0, 400, 400)
        # The held URI is still in memory: entries get only what is left beside it.
        c.put("b", "b" * 500)
        assert c.put("c", "c" * 200) and "b" not in c  # 400 held + 500 + 200 > 1000: "b" makes room
        assert not c.put("d", "d" * 700)  # 400 held + 700 > 1000 whatever is evicted
        assert c.stats().bytes + c.stats().held_bytes <= 1000
    assert c.stats().held_bytes == 0
    lease.release()  # twice is harmless
    assert c.stats().held_bytes == 0


def test_holding_a_value_that_is_not_cached_evicts_to_make_room():
    evicted = []
    c = FrameCache(10, 1000, on_evict=lambda k, v, cause: evicted.append((k, cause)))
    for k in "abc":
        c.put(k, k * 300)
    with c.hold("x", "x" * 500, extra=100):
        s = c.stats()
        assert s.held_bytes == 600 and s.bytes == 300 and s.bytes + s.held_bytes <= 1000
        assert [k for k, _ in evicted] == ["a", "b"] and {cause for _, cause in evicted} == {"size"}
    assert c.stats().held_bytes == 0


def test_a_reservation_waits_while_held_values_fill_the_budget():
    c = FrameCache(10, 1000, admission_timeout=30)
    lease = c.hold("x", "x" * 800)
    done = threading.Event()

    def work():
        with c.reserve(300):
            done.set()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    wait_until(lambda: c._admission.queued == 1, "the reservation to queue behind the held value")
    assert not done.is_set()
    lease.release()
    t.join(10)
    assert done.is_set() and c.stats().held_bytes == 0 and c.stats().inflight_bytes == 0


def test_a_reservation_that_cannot_fit_beside_held_values_times_out():
    c = FrameCache(10, 1000, admission_timeout=0.05)
    with c.hold("x", "x" * 900), pytest.raises(BudgetTimeout) as e:
        c.get_or_load("y", lambda: "y", estimate=200, label="frame y")
    assert "frame y" in str(e.value)


def test_many_holders_of_one_value_count_it_once_until_the_last_lets_go():
    c = FrameCache(10, 1000)
    v = "v" * 300
    leases = [c.hold("k", v) for _ in range(3)]
    assert c.stats().held_bytes == 300
    leases[0].release()
    leases[1].release()
    assert c.stats().held_bytes == 300
    c.put("k", v)  # the held value becomes an entry: counted there, not twice
    assert (c.stats().bytes, c.stats().held_bytes) == (300, 0)
    c.discard("k")
    assert c.stats().held_bytes == 300
    leases[2].release()
    assert c.stats().held_bytes == 0 and c.stats().bytes == 0


def test_a_replaced_value_still_held_counts_beside_its_successor():
    c = FrameCache(10, 1000)
    old = "o" * 300
    c.put("k", old)
    with c.hold("k", old):
        c.put("k", "n" * 200)
        s = c.stats()
        assert (s.bytes, s.held_bytes) == (200, 300)
    assert c.stats().held_bytes == 0


def test_a_value_larger_than_the_budget_is_held_outside_it():
    c = FrameCache(10, 1000)
    c.put("a", "a" * 400)
    with c.hold("big", "B" * 5000):
        s = c.stats()
        assert s.oversize_inflight_bytes == 5000 and s.held_bytes == 0 and s.bytes == 400
    assert c.stats().oversize_inflight_bytes == 0


def test_hold_refuses_what_it_cannot_size():
    c = FrameCache(10, 1000)
    with pytest.raises(TypeError):
        c.hold("k", object())
    with pytest.raises(ValueError):
        c.hold("k", "v", extra=-1)
    assert c.stats().held_bytes == 0


class HoldMachine(RuleBasedStateMachine):
    """Random puts, discards, holds and releases (one thread): held bytes are exactly the distinct held
    values that are not entries (plus extras), and entries never push the total past the budget."""

    MAX = 1000
    policy = None

    def __init__(self):
        super().__init__()
        self.cache = FrameCache(4, self.MAX, admission_timeout=0.001, policy=self.policy() if self.policy else None)
        self.leases: list = []  # (lease, value, extra)

    @rule(key=st.integers(0, 5), size=st.integers(2, 600))
    def put(self, key, size):
        self.cache.put(key, "v" * size)  # a new object each time (one-character strings are shared)

    @rule(key=st.integers(0, 5))
    def discard(self, key):
        self.cache.discard(key)

    @rule(key=st.integers(0, 5), extra=st.integers(0, 50))
    def hold_cached(self, key, extra):
        v = self.cache.peek(key)
        if v is not None:
            self.leases.append((self.cache.hold(key, v, extra=extra), v, extra))

    @rule(key=st.integers(6, 8), size=st.integers(2, 1200))
    def hold_uncached(self, key, size):
        v = "h" * size
        self.leases.append((self.cache.hold(key, v), v, 0))

    @rule(i=st.integers(0, 10))
    def release(self, i):
        if self.leases:
            lease, _, _ = self.leases.pop(i % len(self.leases))
            lease.release()

    @rule(est=st.integers(0, 1000))
    def load(self, est):
        with contextlib.suppress(BudgetTimeout):
            self.cache.get_or_load(("load", est), lambda: "w", estimate=est)

    @invariant()
    def accounting(self):
        s = self.cache.stats()
        entries = {id(self.cache.peek(k)) for k in self.cache.keys()}
        distinct = {id(v): v for _, v, _ in self.leases}
        outside = [v for i, v in distinct.items() if i not in entries]
        assert s.held_bytes == sum(len(v) for v in outside if len(v) <= self.MAX) + sum(e for _, _, e in self.leases)
        assert s.oversize_inflight_bytes == sum(len(v) for v in outside if len(v) > self.MAX)
        assert s.inflight_bytes == 0
        if s.held_bytes <= self.MAX:
            assert s.bytes + s.held_bytes <= self.MAX
        else:
            assert s.bytes == 0

    def teardown(self):
        for lease, _, _ in self.leases:
            lease.release()
        s = self.cache.stats()
        assert s.held_bytes == 0 and s.oversize_inflight_bytes == 0


HoldMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestHoldMachine = HoldMachine.TestCase


class LruHoldMachine(HoldMachine):
    """The same with an LRU policy (no bypass: puts evict in order, then drop what does not fit)."""

    policy = LruPolicy


LruHoldMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestLruHoldMachine = LruHoldMachine.TestCase
