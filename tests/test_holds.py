"""FrameCache.hold: values handed out and still in use (a URI being sent) count against the budget until
released, once as an entry while they are one and as held bytes once they are not."""

from __future__ import annotations

import contextlib
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from waits import WAIT, wait_until

from gpupipe import FrameCache
from gpupipe.errors import BudgetTimeout
from gpupipe.cache import LruPolicy


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
    with c.hold("x", "x" * 500):
        s = c.stats()
        assert s.held_bytes == 500 and s.bytes == 300 and s.bytes + s.held_bytes <= 1000
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
    wait_until(lambda: c.stats().queued == 1, "the reservation to queue behind the held value")
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
    assert c.stats().held_bytes == 0


class HoldMachine(RuleBasedStateMachine):
    """Random puts, discards, holds and releases (one thread): held bytes are exactly the distinct held
    values that are not entries, and entries never push the total past the budget."""

    MAX = 1000
    policy = None

    def __init__(self):
        super().__init__()
        self.cache = FrameCache(4, self.MAX, admission_timeout=0.001, policy=self.policy() if self.policy else None)
        self.leases: list = []  # (lease, value, held outside the budget as oversize)

    @rule(key=st.integers(0, 5), size=st.integers(2, 600))
    def put(self, key, size):
        self.cache.put(key, "v" * size)  # a new object each time (one-character strings are shared)

    @rule(key=st.integers(0, 5))
    def discard(self, key):
        self.cache.discard(key)

    @rule(key=st.integers(0, 5))
    def hold_cached(self, key):
        v = self.cache.peek(key)
        if v is not None:
            self.leases.append((self.cache.hold(key, v), v, False))

    @rule(key=st.integers(6, 8), size=st.integers(2, 1200))
    def hold_uncached(self, key, size):
        v = "h" * size
        self.leases.append((self.cache.hold(key, v), v, size > self.MAX))

    @rule(key=st.integers(0, 8), size=st.integers(2, 1200), slack=st.integers(0, 200))
    def lease(self, key, size, slack):
        before = self.cache.peek(key)
        # Estimates are upper bounds (footprint.py), so the work's reservation covers the value.
        (r,) = self.cache.lease_many([key], lambda ks: ["L" * size], estimate=lambda k: size + slack)
        if isinstance(r, BudgetTimeout):
            return
        # A value made by oversize work (estimate over the budget) is held outside it, as that work ran.
        self.leases.append((r, r.value, r.value is not before and size + slack > self.MAX))

    @rule(i=st.integers(0, 10))
    def release(self, i):
        if self.leases:
            lease, _, _ = self.leases.pop(i % len(self.leases))
            lease.release()

    @rule(est=st.integers(1, 1000))
    def load(self, est):
        with contextlib.suppress(BudgetTimeout):
            self.cache.get_or_load(("load", est), lambda: "w", estimate=est)

    @invariant()
    def accounting(self):
        s = self.cache.stats()
        entries = {id(self.cache.peek(k)) for k in self.cache.keys()}
        first: dict[int, tuple[str, bool]] = {}
        for _, v, oversize in self.leases:
            first.setdefault(id(v), (v, oversize))  # the first holder's kind of hold stands for the value
        outside = [(v, o) for i, (v, o) in first.items() if i not in entries]
        assert s.held_bytes == sum(len(v) for v, o in outside if not o)
        assert s.oversize_inflight_bytes == sum(len(v) for v, o in outside if o)
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


def test_lease_many_leases_hits_loads_and_joiners_once_each():
    c = FrameCache(10, 1000)
    c.put("hit", "h" * 100)
    gate = threading.Event()
    started = threading.Event()

    def slow(keys):
        started.set()
        gate.wait(WAIT)
        return ["L" * 300 for _ in keys]

    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("a", c.lease_many(["hit", "new"], slow, estimate=lambda k: 400)))
    t.start()
    started.wait(WAIT)
    joiner = threading.Thread(target=lambda: box.setdefault("b", c.lease_many(["new"], slow, estimate=lambda k: 400)))
    joiner.start()
    wait_until(lambda: c.stats().joined == 1, "the second request to join the load")
    gate.set()
    t.join(WAIT)
    joiner.join(WAIT)
    (hit, new), (joined,) = box["a"], box["b"]
    assert hit.value == "h" * 100 and new.value is joined.value == "L" * 300
    assert c.stats().held_bytes == 0  # both are entries
    c.clear()
    assert c.stats().held_bytes == 400  # each value once, however many leases
    new.release()
    assert c.stats().held_bytes == 400
    joined.release()
    hit.release()
    assert c.stats().held_bytes == 0


def test_calls_larger_than_the_budget_do_not_wait_on_each_other():
    # Each call needs two parts; its first part's values are leased only when it returns, so two such calls
    # never wait for each other's leases (no deadlock); each holder lets go as soon as it has its values.
    c = FrameCache(10, 1000, admission_timeout=5)
    errors: list = []

    def call(name):
        for round_ in range(5):
            got = c.lease_many([f"{name}{round_}.{i}" for i in range(3)], lambda ks: ["v" * 300 for _ in ks], estimate=lambda k: 400)
            errors.extend(x for x in got if isinstance(x, BaseException))
            for lease in got:
                if not isinstance(lease, BaseException):
                    lease.release()

    threads = [threading.Thread(target=call, args=(n,)) for n in "ab"]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT)
    assert errors == [] and c.stats().held_bytes == 0 and c.stats().inflight_bytes == 0
    # One such call's values are all counted once it returns (the one overshoot: a batch larger than the budget).
    leases = c.lease_many(["x0", "x1", "x2"], lambda ks: [k + "w" * 298 for k in ks], estimate=lambda k: 400)
    c.clear()
    assert c.stats().held_bytes == 900
    for lease in leases:
        lease.release()
    assert c.stats().held_bytes == 0


def test_a_lease_dropped_unreleased_is_released_by_the_next_operation():
    c = FrameCache(10, 1000)
    (lease,) = c.lease_many(["k"], lambda ks: ["v" * 500], estimate=lambda k: 500)
    c.clear()
    assert c.stats().held_bytes == 500
    del lease  # a result nobody took (e.g. a request that timed out)
    assert c.stats().held_bytes == 0
