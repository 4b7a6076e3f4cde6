"""FrameCache: two bounds, true LRU, oversize rule, accounting invariants, single-flight."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gpupipe import CacheStats, FrameCache
from gpupipe.config import MiB

KiB = 1024


class DeviceURI:
    """A stand-in for the GPU path's device-resident URI."""

    def __init__(self, host: int, device: int):
        self.host_bytes = host
        self.device_bytes = device


def check_invariants(c: FrameCache) -> CacheStats:
    s = c.stats()
    costs = [c.peek(k) for k in c.keys()]
    total = 0
    for v in costs:
        total += len(v) if isinstance(v, str) else v.host_bytes + v.device_bytes
    assert s.bytes == s.host_bytes + s.device_bytes == total
    assert s.bytes <= s.max_bytes
    assert s.entries == len(c) <= s.max_entries
    assert s.peak_bytes >= s.bytes
    return s


def test_entry_bound_evicts_exactly_the_oldest():
    evicted = []
    c = FrameCache(3, 10 * MiB, on_evict=lambda k, v, cause: evicted.append((k, cause)))
    for k in "abc":
        assert c.put(k, k * 10)
    c.put("d", "d" * 10)
    assert evicted == [("a", "size")]
    assert c.keys() == ["b", "c", "d"]
    assert "a" not in c and len(c) == 3


def test_hit_refreshes_recency():
    c = FrameCache(3, 10 * MiB)
    for k in "abc":
        c.put(k, k)
    assert c.get("a") == "a"  # a is now the most recent; b is the oldest
    c.put("d", "d")
    assert "b" not in c and "a" in c
    assert c.keys() == ["c", "a", "d"]


def test_byte_bound_evicts_oldest_until_it_fits():
    evicted = []
    c = FrameCache(100, 100 * KiB, on_evict=lambda k, v, cause: evicted.append(k))
    for i in range(4):
        c.put(i, "x" * (30 * KiB))
        check_invariants(c)
    # 4 × 30 KiB = 120 KiB > 100 KiB: exactly the oldest one leaves.
    assert evicted == [0]
    assert c.keys() == [1, 2, 3]
    c.put("big", "y" * (70 * KiB))
    assert evicted == [0, 1, 2]
    assert c.keys() == [3, "big"]  # 30 + 70 = 100 KiB fits exactly
    check_invariants(c)


def test_oversize_value_is_not_stored_but_returned():
    c = FrameCache(10, 32 * KiB)
    c.put("keep", "k" * 100)
    big = "z" * (64 * KiB)
    assert c.put("big", big) is False
    s = c.stats()
    assert s.oversize_rejects == 1 and "big" not in c and "keep" in c and s.evictions == 0
    assert c.get_or_load("big2", lambda: big) == big
    s = c.stats()
    assert s.oversize_rejects == 2 and s.loads == 1 and "big2" not in c and "keep" in c
    check_invariants(c)


def test_replace_subtracts_old_cost():
    events = []
    c = FrameCache(10, 1 * MiB, on_evict=lambda k, v, cause: events.append((k, v, cause)))
    c.put("a", "1" * 1000)
    c.put("a", "2" * 10)
    s = check_invariants(c)
    assert s.bytes == 10 and s.entries == 1 and s.evictions == 0
    assert events == [("a", "1" * 1000, "replaced")]
    # A replacement that is itself oversize drops the stale value.
    c.put("a", "3" * (2 * MiB))
    assert "a" not in c and c.stats().bytes == 0
    assert events[-1] == ("a", "2" * 10, "replaced")


def test_device_bytes_count_toward_the_budget():
    c = FrameCache(10, 1000)
    c.put("host", "h" * 400)
    c.put("dev", DeviceURI(100, 400))
    s = check_invariants(c)
    assert (s.host_bytes, s.device_bytes, s.bytes) == (500, 400, 900)
    c.put("dev2", DeviceURI(0, 300))  # 1200 > 1000: "host" (oldest) goes
    s = check_invariants(c)
    assert c.keys() == ["dev", "dev2"] and s.device_bytes == 700 and s.host_bytes == 100


def test_discard_and_clear_are_explicit():
    events = []
    c = FrameCache(10, 1 * MiB, on_evict=lambda k, v, cause: events.append((k, cause)))
    c.put("a", "a")
    c.put("b", "b")
    assert c.discard("a") and not c.discard("a")
    c.clear()
    assert events == [("a", "explicit"), ("b", "explicit")]
    s = check_invariants(c)
    assert s.entries == 0 and s.bytes == 0 and s.evictions == 0


def test_stats_counters():
    c = FrameCache(2, 1 * MiB)
    assert c.get("x") is None
    c.put("x", "1")
    assert c.get("x") == "1"
    assert c.get_or_load("y", lambda: "2") == "2"
    assert c.get_or_load("y", lambda: "never") == "2"
    with pytest.raises(KeyError):
        c.get_or_load("z", lambda: (_ for _ in ()).throw(KeyError("boom")))
    s = c.stats()
    assert (s.hits, s.misses, s.loads, s.load_failures) == (2, 3, 2, 1)
    assert s.hit_ratio == pytest.approx(2 / 5)
    assert s.max_entries == 2 and s.max_bytes == 1 * MiB
    assert "z" not in c


def test_single_flight_under_threads():
    c = FrameCache(10, 1 * MiB)
    calls = []
    gate = threading.Event()

    def loader():
        calls.append(1)
        gate.wait(5)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(c.get_or_load("k", loader))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == ["value"] * 8 and len(calls) == 1
    s = c.stats()
    assert s.loads == 1 and s.entries == 1


def test_loader_failure_reaches_every_waiter_and_is_not_cached():
    c = FrameCache(10, 1 * MiB)
    gate = threading.Event()
    calls = []

    def loader():
        calls.append(1)
        gate.wait(5)
        raise ValueError("decode failed")

    errors = []

    def worker():
        try:
            c.get_or_load("k", loader)
        except ValueError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert errors == ["decode failed"] * 5 and len(calls) == 1
    assert "k" not in c and c.stats().load_failures == 1
    assert c.get_or_load("k", lambda: "ok") == "ok"  # a later request retries


def test_reservation_evicts_to_make_room_and_is_released():
    c = FrameCache(10, 100 * KiB)
    for i in range(3):
        c.put(i, "x" * (30 * KiB))
    with c.reserve(50 * KiB) as n:
        assert n == 50 * KiB
        s = c.stats()
        assert s.inflight_bytes == 50 * KiB and s.bytes + s.inflight_bytes <= s.max_bytes
        assert c.keys() == [2]
    assert c.stats().inflight_bytes == 0
    check_invariants(c)


def test_on_evict_errors_do_not_corrupt_the_cache():
    def bad(k, v, cause):
        raise RuntimeError("callback bug")

    c = FrameCache(1, 1 * MiB, on_evict=bad)
    c.put("a", "a")
    c.put("b", "b")
    assert c.keys() == ["b"]
    check_invariants(c)


def test_rejects_bad_bounds():
    with pytest.raises(ValueError):
        FrameCache(0, 100)
    with pytest.raises(ValueError):
        FrameCache(1, 0)
    with pytest.raises(TypeError):
        FrameCache(1, 100).put("k", 12345)


def test_1080p_regression_at_default_budget():
    """Default budget (1500 MiB, 256 entries) with ~8 MB 1080p URIs: the byte bound governs, ~187 entries."""
    c = FrameCache(256, 1500 * MiB)
    uri = "d" * 8_400_000  # one ~8 MB 1080p PNG data URI (shared: costs are per entry)
    for i in range(400):
        c.put(i, uri)
    s = check_invariants(c)
    assert s.entries < 256
    assert s.bytes <= 1500 * MiB
    assert s.entries == 1500 * MiB // 8_400_000 == 187
    assert c.keys() == list(range(400 - 187, 400))  # exactly the newest survive
    assert s.evictions == 400 - 187


class CacheMachine(RuleBasedStateMachine):
    """Random put/get/get_or_load/discard sequences keep the accounting exact and mirror a reference LRU."""

    def __init__(self):
        super().__init__()
        self.cache = FrameCache(5, 1000)
        self.model: list[tuple[int, int]] = []  # (key, cost), LRU first

    def _model_put(self, key: int, cost: int) -> None:
        self.model = [(k, c) for k, c in self.model if k != key]
        if cost > 1000:
            return
        self.model.append((key, cost))
        while len(self.model) > 5 or sum(c for _, c in self.model) > 1000:
            self.model.pop(0)

    keys = st.integers(0, 9)
    sizes = st.integers(0, 1200)

    @rule(key=keys, size=sizes, device=st.booleans())
    def put(self, key, size, device):
        value = DeviceURI(size // 2, size - size // 2) if device else "v" * size
        stored = self.cache.put(key, value)
        assert stored == (size <= 1000)
        self._model_put(key, size)

    @rule(key=keys)
    def get(self, key):
        got = self.cache.get(key)
        present = [k for k, _ in self.model]
        assert (got is not None) == (key in present)
        if key in present:
            item = next(x for x in self.model if x[0] == key)
            self.model.remove(item)
            self.model.append(item)

    @rule(key=keys, size=sizes)
    def get_or_load(self, key, size):
        present = [k for k, _ in self.model]
        v = self.cache.get_or_load(key, lambda: "w" * size)
        if key in present:
            item = next(x for x in self.model if x[0] == key)
            self.model.remove(item)
            self.model.append(item)
        else:
            assert v == "w" * size
            self._model_put(key, size)

    @rule(key=keys)
    def discard(self, key):
        assert self.cache.discard(key) == (key in [k for k, _ in self.model])
        self.model = [(k, c) for k, c in self.model if k != key]

    @precondition(lambda self: True)
    @invariant()
    def accounting(self):
        s = check_invariants(self.cache)
        assert self.cache.keys() == [k for k, _ in self.model]
        assert s.bytes == sum(c for _, c in self.model)


TestCacheMachine = CacheMachine.TestCase
