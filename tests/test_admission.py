"""FrameCache admission control and single-flight edge cases: the budget is one limit on entries
and work in flight together, under threads, timeouts, oversize work, batches and faulty callbacks."""

from __future__ import annotations

import gc
import threading
import traceback
import weakref

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from waits import WAIT, wait_until

from gpupipe import FrameCache
from gpupipe.errors import BudgetTimeout, CacheError


class Blob:
    """A cache value with explicit sizes that can be weakly referenced."""

    def __init__(self, host: int, device: int = 0):
        self.host_bytes = host
        self.device_bytes = device


def start(fn, *args) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box




def hold(cache: FrameCache, nbytes: int, entered: threading.Event, release: threading.Event, log: list | None = None, name: str = ""):
    with cache.reserve(nbytes):
        if log is not None:
            log.append(name)
        entered.set()
        release.wait(WAIT)


def test_reservation_that_does_not_fit_waits_for_work_in_flight():
    c = FrameCache(10, 100)
    a_in, a_go, b_in, b_go = (threading.Event() for _ in range(4))
    ta, _ = start(hold, c, 60, a_in, a_go)
    assert a_in.wait(WAIT)
    tb, _ = start(hold, c, 60, b_in, b_go)
    wait_until(lambda: c.stats().queued == 1, "b to queue")
    assert not b_in.is_set() and c.stats().inflight_bytes == 60
    a_go.set()
    assert b_in.wait(WAIT)
    s = c.stats()
    assert s.inflight_bytes == 60 and s.admission_waits == 1 and s.peak_bytes <= 100
    b_go.set()
    ta.join(WAIT), tb.join(WAIT)
    assert c.stats().inflight_bytes == 0


def test_admission_is_fifo_so_large_requests_do_not_starve():
    c = FrameCache(10, 100)
    order: list[str] = []
    ev = {n: (threading.Event(), threading.Event()) for n in "abc"}
    ta, _ = start(hold, c, 90, *ev["a"], order, "a")
    assert ev["a"][0].wait(WAIT)
    tb, _ = start(hold, c, 50, *ev["b"], order, "b")  # does not fit until a leaves
    wait_until(lambda: c.stats().queued == 1, "b to queue")
    tc, _ = start(hold, c, 5, *ev["c"], order, "c")  # would fit now, but b came first
    wait_until(lambda: c.stats().queued == 2, "c to queue")
    assert order == ["a"]
    ev["a"][1].set()
    assert ev["b"][0].wait(WAIT) and ev["c"][0].wait(WAIT)
    assert order == ["a", "b", "c"]
    ev["b"][1].set(), ev["c"][1].set()
    for t in (ta, tb, tc):
        t.join(WAIT)
    assert c.stats().inflight_bytes == 0


def test_admission_times_out_with_a_typed_error_and_leaves_the_queue():
    c = FrameCache(10, 100, admission_timeout=0.2)
    a_in, a_go = threading.Event(), threading.Event()
    ta, _ = start(hold, c, 90, a_in, a_go)
    assert a_in.wait(WAIT)
    with pytest.raises(BudgetTimeout, match="frame-7.*waited 0.2 s for 50 bytes"):
        with c.reserve(50, label="frame-7"):
            pass
    s = c.stats()
    assert s.admission_timeouts == 1 and s.inflight_bytes == 90 and not c.stats().queued
    with c.reserve(10):  # the queue is free again
        assert c.stats().inflight_bytes == 100
    a_go.set()
    ta.join(WAIT)


def test_evicted_entries_are_released_before_the_work_starts():
    c = FrameCache(10, 100)
    c.put("old", Blob(80))
    ref = weakref.ref(c.peek("old"))
    with c.reserve(50):
        gc.collect()
        assert "old" not in c and ref() is None
        assert c.stats().bytes + c.stats().inflight_bytes <= 100


def test_oversize_work_runs_alone_evicts_nothing_and_is_not_cached():
    c = FrameCache(10, 100)
    c.put("keep", "k" * 60)
    running, peak = [0], [0]
    lock = threading.Lock()
    gate = threading.Event()

    def loader():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(0.3)
        with lock:
            running[0] -= 1
        return "small"

    threads = [start(lambda k=k: c.get_or_load(k, loader, estimate=500)) for k in ("big1", "big2", "big3")]
    for t, box in threads:
        t.join(WAIT)
        assert box["value"] == "small"
    s = c.stats()
    assert peak[0] == 1  # one oversize job at a time
    assert s.oversize_rejects == 3 and "keep" in c and s.evictions == 0 and s.entries == 1
    assert not any(k in c for k in ("big1", "big2", "big3"))
    assert s.oversize_inflight_bytes == 0 and s.peak_bytes <= 100


def test_batches_are_split_into_parts_that_fit_and_cached_within_the_budget():
    c = FrameCache(100, 100)
    parts: list[list[str]] = []
    inflight_seen: list[int] = []

    def loader(keys):
        parts.append(list(keys))
        inflight_seen.append(c.stats().inflight_bytes)
        return ["v" * 20 for _ in keys]

    keys = [f"k{i}" for i in range(10)]
    out = c.get_or_load_many(keys, loader, estimate=lambda k: 30)
    assert out == ["v" * 20] * 10
    assert [len(p) for p in parts] == [3, 3, 3, 1] and sum(parts, []) == keys
    assert max(inflight_seen) <= 90
    s = c.stats()
    assert s.inflight_bytes == 0 and s.peak_bytes <= 100 and s.bytes <= 100 and s.loads == 10


def test_a_cached_result_takes_its_cost_from_the_reservation():
    c = FrameCache(10, 100)
    seen = []

    def loader():
        return "x" * 40

    def on_evict(*a):
        seen.append(a)

    c.on_evict = on_evict
    c.put("a", "a" * 50)
    assert c.get_or_load("b", loader, estimate=50) == "x" * 40
    s = c.stats()
    # 50 cached + 50 reserved fit exactly: nothing was evicted to insert the 40-byte result.
    assert seen == [] and s.bytes == 90 and s.inflight_bytes == 0 and s.peak_bytes == 100


def test_get_or_load_many_shares_loads_with_itself_and_with_get():
    c = FrameCache(100, 10_000)
    loaded: list[str] = []
    lock = threading.Lock()
    gate = threading.Event()

    def loader(keys):
        with lock:
            loaded.extend(keys)
        gate.wait(WAIT)
        return [k.upper() for k in keys]

    keys = ["a", "b", "c", "d"]
    threads = [start(c.get_or_load_many, keys, loader) for _ in range(8)]
    threads += [start(c.get_or_load, "a", lambda: loader(["a"])[0]) for _ in range(2)]
    wait_until(lambda: c.stats().misses + c.stats().joined == 8 * 4 + 2, "every request to join")
    gate.set()
    for t, box in threads[:8]:
        t.join(WAIT)
        assert box["value"] == ["A", "B", "C", "D"]
    for t, box in threads[8:]:
        t.join(WAIT)
        assert box["value"] == "A"
    s = c.stats()
    assert sorted(loaded) == keys and s.loads == 4 and s.misses == 4 and s.joined == 30
    assert s.hit_ratio == pytest.approx(30 / 34)


def test_hit_ratio_counts_joined_requests_as_work_saved():
    c = FrameCache(10, 1000)
    gate = threading.Event()
    threads = [start(c.get_or_load, "k", lambda: gate.wait(WAIT) and "v") for _ in range(8)]
    wait_until(lambda: c.stats().joined == 7, "waiters to join")
    gate.set()
    for t, _ in threads:
        t.join(WAIT)
    s = c.stats()
    assert (s.misses, s.joined, s.hits, s.loads) == (1, 7, 0, 1)
    assert s.hit_ratio == pytest.approx(7 / 8)  # the same as 1 miss then 7 hits one after another


def test_loader_requesting_its_own_key_raises_instead_of_deadlocking():
    c = FrameCache(10, 1000)

    def loader():
        return c.get_or_load("k", lambda: "inner")

    with pytest.raises(CacheError, match="requested that same key"):
        c.get_or_load("k", loader)
    t, box = start(c.get_or_load, "k", lambda: "later")  # later callers are not stuck
    t.join(WAIT)
    assert box["value"] == "later" and c.stats().load_failures == 1


def test_loader_returning_none_fails_every_waiter_alike():
    c = FrameCache(10, 1000)
    gate = threading.Event()
    threads = [start(c.get_or_load, "k", lambda: gate.wait(WAIT) and None) for _ in range(4)]
    wait_until(lambda: c.stats().joined == 3, "waiters to join")
    gate.set()
    for t, box in threads:
        t.join(WAIT)
        assert isinstance(box.get("error"), CacheError) and "returned None" in str(box["error"])
    assert "k" not in c and c.stats().load_failures == 1


def test_shared_load_error_does_not_accumulate_tracebacks():
    c = FrameCache(10, 1000)
    gate = threading.Event()

    def loader():
        gate.wait(WAIT)
        raise ValueError("bad frame")

    threads = [start(c.get_or_load, "k", loader) for _ in range(20)]
    wait_until(lambda: c.stats().joined == 19, "waiters to join")
    gate.set()
    errors = []
    for t, box in threads:
        t.join(WAIT)
        errors.append(box["error"])
    assert all(isinstance(e, ValueError) and str(e) == "bad frame" for e in errors)
    assert len({id(e) for e in errors}) == 20  # each waiter raised its own copy
    assert max(len(traceback.extract_tb(e.__traceback__)) for e in errors) < 15


@pytest.mark.parametrize("exc", [RuntimeError("callback bug"), KeyboardInterrupt()])
def test_on_evict_that_raises_leaves_accounting_right(exc):
    reported = []

    def on_evict(k, v, cause):
        reported.append(k)
        raise exc

    c = FrameCache(10, 100, on_evict=on_evict)
    for k in "abc":
        c.put(k, k * 30)
    raises = pytest.raises(KeyboardInterrupt) if isinstance(exc, KeyboardInterrupt) else _nothing()
    with raises:
        with c.reserve(70):  # evicts a and b
            pass
    s = c.stats()
    assert reported == ["a", "b"] and s.inflight_bytes == 0 and s.bytes == 30 and c.keys() == ["c"]
    with raises:
        c.put("d", "d" * 90)  # evicts c (the callback raises), keeps d
    assert reported == ["a", "b", "c"] and c.keys() == ["d"] and c.stats().bytes == 90


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_put_refuses_bad_sizes(bad):
    c = FrameCache(10, 100)
    c.put("ok", "x")
    with pytest.raises((TypeError, ValueError)):
        c.put("k", Blob(bad))
    with pytest.raises((TypeError, ValueError)):
        c.put("k", Blob(1, bad))
    s = c.stats()
    assert c.keys() == ["ok"] and s.bytes == 1


@pytest.mark.parametrize("drop", ["discard", "clear"])
def test_discard_or_clear_during_a_load_returns_but_does_not_cache(drop):
    c = FrameCache(10, 1000)
    entered, gate = threading.Event(), threading.Event()

    def loader():
        entered.set()
        gate.wait(WAIT)
        return "stale"

    t, box = start(c.get_or_load, "k", loader)
    assert entered.wait(WAIT)
    w, wbox = start(c.get_or_load, "k", lambda: "never")
    wait_until(lambda: c.stats().joined == 1, "a waiter")
    c.discard("k") if drop == "discard" else c.clear()
    gate.set()
    t.join(WAIT), w.join(WAIT)
    assert box["value"] == wbox["value"] == "stale"
    assert "k" not in c and c.stats().bytes == 0
    assert c.get_or_load("k", lambda: "fresh") == "fresh"


class ReservationMachine(RuleBasedStateMachine):
    """Random puts, loads, reservations and releases (one thread; a reservation that cannot be
    admitted times out): entries + work in flight never exceed the budget, and the accounting is exact."""

    def __init__(self):
        super().__init__()
        self.cache = FrameCache(4, 1000, admission_timeout=0.001)
        self.held: list = []  # (context manager, bytes) of reservations inside the budget

    @rule(key=st.integers(0, 6), size=st.integers(0, 1100))
    def put(self, key, size):
        inflight = self.cache.stats().inflight_bytes
        stored = self.cache.put(key, "v" * size)
        assert stored == (size + inflight <= 1000)
        assert (key in self.cache) == stored

    @rule(size=st.integers(0, 1000))
    def reserve(self, size):
        cm = self.cache.reserve(size)
        inflight = self.cache.stats().inflight_bytes
        try:
            cm.__enter__()
        except BudgetTimeout:
            assert inflight + size > 1000
            return
        self.held.append((cm, size))

    @rule()
    def release(self):
        if self.held:
            self.held.pop(0)[0].__exit__(None, None, None)

    @rule(key=st.integers(0, 6), size=st.integers(0, 1100), est=st.integers(0, 1200))
    def load(self, key, size, est):
        before = self.cache.peek(key)
        inflight = self.cache.stats().inflight_bytes
        try:
            v = self.cache.get_or_load(key, lambda: "w" * size, estimate=est)
        except BudgetTimeout:
            assert before is None and est <= 1000 and inflight + est > 1000
            return
        assert v == (before if before is not None else "w" * size)
        if before is None and est > 1000:
            assert key not in self.cache  # oversize work is returned, not cached

    @invariant()
    def accounting(self):
        s = self.cache.stats()
        keys = self.cache.keys()
        assert s.bytes == sum(len(self.cache.peek(k)) for k in keys) == s.host_bytes
        assert s.entries == len(keys) <= 4
        assert s.inflight_bytes == sum(n for _, n in self.held)
        assert s.bytes + s.inflight_bytes <= 1000 and s.peak_bytes <= 1000
        assert s.oversize_inflight_bytes == 0

    def teardown(self):
        while self.held:
            self.release()
        assert self.cache.stats().inflight_bytes == 0


ReservationMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestReservationMachine = ReservationMachine.TestCase
