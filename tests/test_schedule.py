"""Declared schedules: eviction by next use (exact victims, Belady on uniform sizes), bypass,
cursors (out of order, retries, seeks, several schedules), read-ahead (never displacing a frame
needed sooner, stopping on close), prefetch accounting and thread safety."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupipe import FrameCache
from gpupipe.cache import LruPolicy
from gpupipe.schedule import SchedulePolicy
from gpupipe.schedule import ReadAhead, Scheduler, sqrt_weight
from gpupipe.tools import traces as tr
from test_traces import brute_force_optimum

WAIT = 10  # seconds any event may take before the test fails (never a timing assertion)


class Blob:
    """A cache value of ``n`` bytes."""

    def __init__(self, n: int, tag: object = None):
        self.host_bytes = n
        self.device_bytes = 0
        self.tag = tag


def scheduled_cache(max_entries: int, max_bytes: int, **kw) -> tuple[FrameCache, Scheduler, list]:
    evicted: list = []
    sch = Scheduler(**kw)
    cache = FrameCache(max_entries, max_bytes, policy=SchedulePolicy(sch), on_evict=lambda k, v, c: evicted.append((k, c)))
    return cache, sch, evicted


def request(cache: FrameCache, sch: Scheduler, key, size: int = 1, estimate: int | None = None):
    sch.observe(key)
    return cache.get_or_load(key, lambda: Blob(size, key), estimate=estimate)


def exact(cache: FrameCache) -> None:
    s = cache.stats()
    assert s.bytes == sum(cache.peek(k).host_bytes for k in cache.keys())
    assert s.entries == len(cache.keys()) <= s.max_entries
    assert s.bytes + s.inflight_bytes <= s.max_bytes and s.peak_bytes <= s.max_bytes


# ---------------------------------------------------------------- exact victims on hand-made schedules


def test_loop_keeps_what_belady_keeps_and_bypasses_the_rest():
    """a b c d a b c d a b c d with room for 3: after a b c, d's next use (7) is farther than every
    cached frame's (4, 5, 6), so d is returned but not cached; a, b, c then hit in every loop."""
    cache, sch, evicted = scheduled_cache(3, 10**6)
    order = list("abcd") * 3
    sch.open(order)
    for k in order[:-1]:
        assert request(cache, sch, k).tag == k
    s = cache.stats()
    assert evicted == [] and sorted(cache.keys()) == ["a", "b", "c"]
    assert (s.hits, s.loads, s.bypassed) == (6, 5, 2)
    # The last d: a, used for the last time, ranks with the never-again frames and makes room.
    request(cache, sch, "d")
    assert evicted == [("a", "size")] and cache.stats().loads == 6
    # Plain LRU gets nothing on the same requests.
    assert tr.replay_lru([(k, 1) for k in list("abcd") * 3], 3, 10**6).hits == 0


def test_evicts_the_farthest_next_use():
    """Room for 2. After a b: c's next use (5) is sooner than b's (6), later than a's (3): b leaves."""
    cache, sch, evicted = scheduled_cache(2, 10**6)
    order = ["a", "b", "c", "a", "x", "c", "b"]
    sch.open(order)
    for k in order[:3]:
        request(cache, sch, k)
    assert evicted == [("b", "size")] and sorted(cache.keys()) == ["a", "c"]
    request(cache, sch, "a")  # hit; a is never used again now
    request(cache, sch, "x")  # never used again either: it may only displace a (never-again frames go by LRU)
    assert evicted == [("b", "size"), ("a", "size")] and sorted(cache.keys()) == ["c", "x"]
    request(cache, sch, "c")
    request(cache, sch, "b")  # all three never used again now: x, the least recently used, leaves
    assert evicted[-1] == ("x", "size") and sorted(cache.keys()) == ["b", "c"]
    assert cache.stats().hits == 2 and cache.stats().bypassed == 0


def test_order_never_again_first_then_unscheduled_lru_then_by_weight():
    cache, sch, _ = scheduled_cache(10, 10**6)
    for k in ("u1", "done", "far", "u2", "near"):
        cache.put(k, Blob(100))
    sch.open(["done", "near", "x", "far"])
    sch.observe("done")  # cursor 1: done is never used again, near is next, far 2 positions later
    assert cache.policy.order() == ["done", "u1", "u2", "far", "near"]
    assert cache.policy.victim() == "done"
    # Touching an unscheduled frame moves it behind the other one (LRU among them).
    cache.get("u1")
    assert cache.policy.order() == ["done", "u2", "u1", "far", "near"]


def test_size_weighting_rule():
    """Among scheduled frames the one with the largest (distance + 1) * sqrt(bytes) goes first."""
    cache, sch, _ = scheduled_cache(10, 10**6)
    sch.open(["s", "big", "small", "tiny_far"])
    cache.put("big", Blob(10_000))  # distance 1 -> 2 * 100 = 200
    cache.put("small", Blob(100))  # distance 2 -> 3 * 10 = 30
    cache.put("tiny_far", Blob(1))  # distance 3 -> 4 * 1 = 4
    assert cache.policy.order() == ["big", "small", "tiny_far"]
    assert sqrt_weight(1, 10_000) == 200 and sqrt_weight(0, 0) == 1
    # With equal sizes it is plain farthest-next-use.
    cache2, sch2, _ = scheduled_cache(10, 10**6)
    sch2.open(["p", "q", "r"])
    for k in "rqp":
        cache2.put(k, Blob(50))
    assert cache2.policy.order() == ["r", "q", "p"]


def test_no_schedule_is_exactly_lru():
    cache, _, evicted = scheduled_cache(3, 10**6)
    for k in "abcd":
        cache.put(k, Blob(1))
    cache.get("b")
    cache.put("e", Blob(1))
    assert evicted == [("a", "size"), ("c", "size")] and cache.keys() == ["d", "b", "e"]


def test_unscheduled_frames_rank_below_scheduled_ones():
    cache, sch, evicted = scheduled_cache(2, 10**6)
    sch.open(["a", "b", "a", "b"])
    request(cache, sch, "a")
    request(cache, sch, "b")
    assert cache.get_or_load("stranger", lambda: Blob(1)).tag is None
    assert "stranger" not in cache and sorted(cache.keys()) == ["a", "b"] and not evicted


def test_bypass_with_sizes_evicts_nothing_when_room_cannot_be_made_from_worse_frames():
    """Budget 10: cached s (1 byte, next use far) and m (8 bytes, next use near). A 5-byte frame
    between them may displace s but that frees too little, so it is bypassed and s stays."""
    cache, sch, evicted = scheduled_cache(10, 10)
    sch.open(["m", "s", "n", "m", "n", "s"])
    request(cache, sch, "m", 8)
    request(cache, sch, "s", 1)
    request(cache, sch, "n", 5)
    assert sorted(cache.keys()) == ["m", "s"] and not evicted and cache.stats().bypassed == 1
    exact(cache)


# ---------------------------------------------------------------- against the optimum


def replay_hits(trace, max_entries, max_bytes, **kw) -> int:
    return tr.replay_schedule(trace, max_entries, max_bytes, estimate=False, **kw).hits


@settings(max_examples=80, deadline=None)
@given(keys=st.lists(st.integers(0, 5), max_size=12), cap=st.integers(1, 4))
def test_uniform_sizes_equal_belady_and_the_exhaustive_optimum(keys, cap):
    t = [(k, 7) for k in keys]
    best = brute_force_optimum(t, cap, 10**6)
    assert replay_hits(t, cap, 10**6) == best == tr.belady_opt(t, cap, 10**6).hits
    assert replay_hits(t, 100, 7 * cap) == best  # the same capacity through the byte bound


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 5), max_size=11),
    size_of=st.lists(st.integers(1, 9), min_size=6, max_size=6),
    max_entries=st.integers(1, 4),
    max_bytes=st.integers(1, 20),
)
def test_mixed_sizes_never_beat_the_exhaustive_optimum(keys, size_of, max_entries, max_bytes):
    t = [(k, size_of[k]) for k in keys]
    assert replay_hits(t, max_entries, max_bytes) <= brute_force_optimum(t, max_entries, max_bytes)


def test_mixed_sizes_close_to_the_exhaustive_optimum_on_small_cases():
    """150 random small traces of mixed sizes: the weighted rule reaches at least 98% of the true
    optimum's hits in total (measured: 650 of 655), and is exact on most traces."""
    rng = random.Random(11)
    got = best = exact_cases = 0
    for _ in range(150):
        size_of = [rng.randint(1, 9) for _ in range(7)]
        t = [(k, size_of[k]) for k in (rng.randrange(7) for _ in range(rng.randrange(8, 15)))]
        me, mb = rng.randint(2, 5), rng.randint(8, 20)
        h, b = replay_hits(t, me, mb), brute_force_optimum(t, me, mb)
        assert h <= b
        got, best, exact_cases = got + h, best + b, exact_cases + (h == b)
    assert got >= 0.98 * best and exact_cases >= 135


def test_standard_traces_reach_opt_counting_read_ahead_encodes():
    traces = {**tr.standard_traces(scale=0.1), **tr.standard_traces(scale=0.1, resolution="1080p")}
    rows = tr.schedule_table(traces, budgets=[(256, 500 * tr.MiB)], read_ahead=16)
    assert len(rows) == 8
    for r in rows:
        assert r["lru_hits"] <= r["sched_hits"]
        assert r["sched_ra_vs_opt"] >= 0.95, r
        assert r["sched_ra_hits"] == r["requests"] - round(r["sched_ra_encodes_per_request"] * r["requests"])
    text = tr.format_schedule_table(rows)
    assert text.count("\n") == len(rows) + 1 and "seek-back (1080p PNG)" in text


# ---------------------------------------------------------------- cursors


def test_cursor_follows_in_order_requests():
    sch = Scheduler()
    s = sch.open("abcabc")
    for k in "abca":
        assert sch.observe(k) == [s]
    st_ = s.stats()
    assert (st_.position, st_.requests, st_.resyncs) == (4, 4, 0)
    assert sch.next_use("b") == 0 and sch.next_use("a") is None and sch.next_use("zz") is None


def test_out_of_order_requests_match_their_place_without_jumping_a_loop():
    """Threads rendering one looping schedule ask for b before a: a matches its skipped place
    (pending) instead of its next loop's, and a pending frame counts as needed now."""
    sch = Scheduler(window=8)
    s = sch.open(list("abcdefgh") * 3)
    sch.observe("b")  # skips a (pending)
    assert s.position == 2 and sch.next_use("a") == 0
    sch.observe("a")
    assert s.position == 2 and sch.next_use("a") == 6
    for k in "cdefgh":
        sch.observe(k)
    st_ = s.stats()
    assert (st_.position, st_.requests, st_.resyncs) == (8, 8, 1)


def test_retry_of_a_recent_frame_does_not_move_the_cursor():
    sch = Scheduler(window=8)
    s = sch.open(list("abcd") * 10)
    for k in "abc":
        sch.observe(k)
    sch.observe("b")  # a retry: its last place is 1 back, its next 3 ahead
    sch.observe("c")
    assert s.position == 3 and s.stats().requests == 5


def test_seek_resynchronises_to_the_nearest_place_ahead():
    sch = Scheduler(window=4)
    frames = [f"f{i}" for i in range(100)]
    s = sch.open(frames + frames)
    sch.observe("f0")
    sch.observe("f50")  # far seek: jumps, the 4 positions before it pending for a while
    assert s.position == 51 and s.stats().resyncs == 1
    assert sch.next_use("f49") == 0 and sch.next_use("f45") == 145 - 51
    for k in frames[51:60]:
        sch.observe(k)
    assert sch.next_use("f49") == 149 - 60  # the pending place expired after the window
    sch.observe("f10")  # the nearest f10 ahead is in the second pass
    assert s.position == 111
    assert sch.observe("nope") == [] and s.position == 111


def test_several_schedules_soonest_use_counts_and_only_the_nearest_far_one_jumps():
    sch = Scheduler(window=2)
    a = sch.open(["x", "a1", "a2", "a3", "a4", "a5", "shared"])
    b = sch.open(["b1", "b2", "b3", "shared", "b4", "b5", "b6"])
    assert sch.next_use("shared") == 3 and sch.next_use("x") == 0 and sch.next_use("b4") == 4
    sch.observe("b1")
    sch.observe("b2")
    assert sch.next_use("shared") == 1  # b is 1 away, a 6
    assert (a.position, b.position) == (0, 2)
    sch.observe("shared")  # near in b (1 ahead): b moves; far in a: a stays
    assert (a.position, b.position) == (0, 4)
    sch.observe("a5")  # far in a only: a jumps
    assert a.position == 6
    cache = FrameCache(10, 10**6, policy=SchedulePolicy(sch))
    for k in ("b6", "a3", "shared"):
        cache.put(k, Blob(1))
    # shared: next use 0 in a; b6: 2 in b; a3: never again (a passed it)
    assert cache.policy.order() == ["a3", "b6", "shared"]
    a.close()
    # shared: b holds it but has passed it (never again); a3: outside every schedule now; b6 scheduled
    assert cache.policy.order() == ["shared", "a3", "b6"]
    b.close()
    assert cache.policy.order() == ["b6", "a3", "shared"] and not sch.active


def test_closing_mid_render_falls_back_to_lru_and_is_idempotent():
    cache, sch, evicted = scheduled_cache(2, 10**6)
    s = sch.open(list("abc") * 4)
    for k in "abc":
        request(cache, sch, k)
    assert sorted(cache.keys()) == ["a", "b"]
    with s:
        pass
    s.close()
    assert s.stats().closed and sch.observe("a") == []
    request(cache, sch, "c")
    assert cache.keys() == ["b", "c"] and evicted == [("a", "size")]


def test_schedule_of_a_million_positions():
    sch = Scheduler()
    frames = [f"frame{i}" for i in range(1000)]
    s = sch.open(frames[i % 1000] for i in range(10**6))
    assert s.length == 10**6
    sch.observe("frame0")
    sch.observe("frame999")
    assert s.position == 1000 and sch.next_use("frame0") == 0 and sch.next_use("frame5") == 5
    s.close()


# ---------------------------------------------------------------- read-ahead


def sized_fetch(cache: FrameCache, sched, sizes: dict, calls: list | None = None):
    def loader(keys):
        if calls is not None:
            calls.append(list(keys))
        return [Blob(sizes[k], k) for k in keys]

    return lambda keys: cache.prefetch_many(keys, loader, estimate=lambda k: sizes[k], outcome=sched.prefetch_outcome)


def test_read_ahead_loads_in_batches_and_requests_then_hit():
    cache, sch, _ = scheduled_cache(100, 10**6)
    order = [f"f{i}" for i in range(20)]
    s = sch.open(order)
    calls: list = []
    ra = ReadAhead(s, sized_fetch(cache, s, dict.fromkeys(order, 10), calls), horizon=8, batch_size=4)
    assert ra.step() == 4 and ra.step() == 4 and ra.step() == 0  # the horizon is reached
    assert calls == [order[:4], order[4:8]]
    for k in order[:8]:
        request(cache, sch, k, 10)
    assert ra.step() == 4
    st_, cs = s.stats(), cache.stats()
    assert (st_.prefetched, st_.prefetch_used, st_.wasted) == (12, 8, 0)
    assert (cs.prefetched, cs.prefetch_used, cs.hits, cs.misses, cs.loads) == (12, 8, 8, 0, 12)


def test_read_ahead_never_displaces_a_frame_needed_sooner():
    """The cache is full of frames the schedule needs soon: read-ahead finds no room and evicts
    nothing; once they are never needed again it may displace them."""
    cache, sch, evicted = scheduled_cache(100, 40)
    order = ["a", "b", "c", "d", "a", "b", "c", "d", "e", "f"]
    s = sch.open(order)
    sizes = dict.fromkeys("abcdef", 10)
    for k in "abcd":
        request(cache, sch, k, 10)
    ra = ReadAhead(s, sized_fetch(cache, s, sizes), horizon=10, batch_size=2)
    assert ra.step() == 0 and not evicted and cache.stats().prefetched == 0
    for k in "abcd":
        request(cache, sch, k, 10)
    assert ra.step() == 2 and sorted(k for k, _ in evicted) == ["a", "b"]
    assert sorted(cache.keys()) == ["c", "d", "e", "f"]
    exact(cache)


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 9), min_size=1, max_size=40),
    size_of=st.lists(st.integers(1, 30), min_size=10, max_size=10),
    max_entries=st.integers(1, 8),
    max_bytes=st.integers(30, 120),
    horizon=st.integers(1, 10),
    batch=st.integers(1, 4),
)
def test_read_ahead_only_displaces_frames_not_needed_again(keys, size_of, max_entries, max_bytes, horizon, batch):
    order = [f"k{k}" for k in keys]
    sizes = {f"k{k}": size_of[k] for k in range(10)}
    sch = Scheduler()
    in_prefetch = threading.local()
    bad: list = []
    s = sch.open(order)

    def on_evict(k, v, cause):
        if getattr(in_prefetch, "on", False) and cause == "size" and sch.next_use(k) is not None:
            bad.append(k)

    cache = FrameCache(max_entries, max_bytes, policy=SchedulePolicy(sch), on_evict=on_evict)
    fetch = sized_fetch(cache, s, sizes)

    def guarded(ks):
        in_prefetch.on = True
        try:
            return fetch(ks)
        finally:
            in_prefetch.on = False

    ra = ReadAhead(s, guarded, horizon, batch)
    for k in order:
        while ra.step():
            pass
        request(cache, sch, k, sizes[k], estimate=sizes[k])
        exact(cache)
    assert bad == []
    st_, cs = s.stats(), cache.stats()
    assert cs.loads == cs.misses + cs.prefetched and st_.prefetched == cs.prefetched
    assert cs.prefetched == cs.prefetch_used + cs.prefetch_wasted + cache.stats().prefetch_unused


def test_read_ahead_thread_stops_when_the_schedule_closes():
    cache, sch, _ = scheduled_cache(1000, 10**6)
    order = [f"f{i}" for i in range(200)]
    s = sch.open(order)
    calls: list = []
    first = threading.Event()
    release = threading.Event()

    def loader(keys):
        calls.append(list(keys))
        first.set()
        release.wait(WAIT)
        return [Blob(1) for _ in keys]

    ra = ReadAhead(s, lambda ks: cache.prefetch_many(ks, loader, outcome=s.prefetch_outcome), horizon=100, batch_size=4)
    ra.start()
    assert first.wait(WAIT)
    closer = threading.Thread(target=s.close)
    closer.start()
    release.set()
    closer.join(WAIT)
    assert not closer.is_alive() and not ra.is_alive()
    n = len(calls)
    assert ra.step() == 0 and len(calls) == n == s.stats().prefetched // 4
    assert cache.stats().inflight_bytes == 0


def test_read_ahead_yields_to_queued_requests_and_never_waits():
    cache, sch, _ = scheduled_cache(10, 100)
    sch.open(["a", "b"])
    held = threading.Event()
    go = threading.Event()

    def hold():
        with cache.reserve(90):
            held.set()
            go.wait(WAIT)

    t1 = threading.Thread(target=hold)
    t1.start()
    assert held.wait(WAIT)
    waiter = threading.Thread(target=lambda: cache.reserve(50).__enter__())
    waiter.start()
    for _ in range(WAIT * 100):
        if cache.stats().queued:
            break
        threading.Event().wait(0.01)
    assert cache.stats().queued == 1
    # 5 bytes would fit beside the 90 in flight, but a request is queued: read-ahead steps aside.
    assert cache.prefetch_many(["a"], lambda ks: [Blob(5)], estimate=lambda k: 5) == ["no-room"]
    go.set()
    t1.join(WAIT)
    waiter.join(WAIT)


def test_prefetch_statuses_joins_and_waste():
    policy = SchedulePolicy()
    cache = FrameCache(3, 100, policy=policy)
    s = policy.scheduler.open(["p", "q", "r", "s"])
    cache.put("p", Blob(1))

    def bad_estimate(k):
        if k == "r":
            raise FileNotFoundError(k)
        return 10

    gate = threading.Event()
    started = threading.Event()

    def slow(keys):
        started.set()
        gate.wait(WAIT)
        return [Blob(10, k) for k in keys]

    out: list = []
    t = threading.Thread(target=lambda: out.append(cache.prefetch_many(["p", "q", "r"], slow, estimate=bad_estimate, outcome=s.prefetch_outcome)))
    t.start()
    assert started.wait(WAIT)
    joiner = threading.Thread(target=lambda: out.append(cache.get_or_load("q", lambda: Blob(99))))
    joiner.start()
    for _ in range(WAIT * 100):
        if cache.stats().joined:
            break
        threading.Event().wait(0.01)
    gate.set()
    t.join(WAIT)
    joiner.join(WAIT)
    assert out[0] == ["present", "started", "failed"] and out[1].tag == "q"
    cs = cache.stats()
    assert (cs.prefetched, cs.prefetch_used, cs.loads, cs.misses, cs.joined) == (1, 1, 1, 0, 1)
    # A prefetched frame evicted before any request is wasted.
    assert cache.prefetch_many(["s"], lambda ks: [Blob(10, "s")], outcome=s.prefetch_outcome) == ["started"]
    assert cache.discard("s")
    assert cache.stats().prefetch_wasted == 1 and s.stats().wasted == 1 and s.stats().prefetch_used == 1


def test_prefetch_into_an_lru_cache_uses_free_room_only():
    cache = FrameCache(2, 100, policy=LruPolicy())
    cache.put("a", Blob(60))
    assert cache.prefetch_many(["b"], lambda ks: [Blob(50)], estimate=lambda k: 50) == ["no-room"]
    assert cache.prefetch_many(["c"], lambda ks: [Blob(40)], estimate=lambda k: 40) == ["started"]
    assert cache.keys() == ["a", "c"]
    assert cache.prefetch_many(["d"], lambda ks: [Blob(0)]) == ["no-room"]  # fits by bytes, not by entries
    s = cache.stats()
    assert "d" not in cache and s.prefetched == 1 and s.prefetch_wasted == 0 and s.evictions == 0


# ---------------------------------------------------------------- thread safety


def test_sixteen_threads_with_read_ahead_keep_the_budget_and_the_counts():
    budget = 200
    sizes = {f"f{i}": 5 + (i * 7) % 20 for i in range(60)}
    order = [f"f{i % 60}" for i in range(600)]
    cache, sch, _ = scheduled_cache(12, budget)
    s = sch.open(order)
    ra = ReadAhead(s, sized_fetch(cache, s, sizes), horizon=16, batch_size=4)
    ra.start()
    nxt = iter(range(len(order)))
    lock = threading.Lock()
    errors: list = []
    peak: list = []

    def worker():
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                k = order[i]
                sch.observe(k)
                v = cache.get_or_load(k, lambda k=k: Blob(sizes[k], k), estimate=sizes[k])
                assert v.tag == k
                st_ = cache.stats()
                peak.append(st_.bytes + st_.inflight_bytes)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    s.close()
    assert not errors and not any(t.is_alive() for t in threads)
    exact(cache)
    cs = cache.stats()
    assert max(peak) <= budget and cs.peak_bytes <= budget and cs.inflight_bytes == 0
    assert cs.hits + cs.misses + cs.joined == len(order)
    assert cs.loads == cs.misses + cs.prefetched
    assert cs.prefetched == cs.prefetch_used + cs.prefetch_wasted + cache.stats().prefetch_unused
    st_ = s.stats()
    assert st_.requests == len(order) and st_.prefetched == cs.prefetched and st_.prefetch_used == cs.prefetch_used


def test_scheduler_rejects_a_bad_window():
    with pytest.raises(ValueError):
        Scheduler(window=-1)
    with pytest.raises(ValueError):
        ReadAhead(Scheduler().open([]), lambda ks: [], horizon=0, batch_size=1)


def test_prefetch_skips_oversize_frames_and_get_counts_a_prefetch_as_used():
    policy = SchedulePolicy()
    cache = FrameCache(10, 100, policy=policy)
    s = policy.scheduler.open(["huge", "ok"])
    calls: list = []

    def loader(keys):
        calls.append(list(keys))
        return [Blob(10) for _ in keys]

    sizes = {"huge": 101, "ok": 10}
    assert cache.prefetch_many(["huge", "ok"], loader, estimate=sizes.__getitem__, outcome=s.prefetch_outcome) == ["failed", "started"]
    assert calls == [["ok"]]
    assert cache.get("ok") is not None and cache.stats().prefetch_used == 1 and s.stats().prefetch_used == 1
