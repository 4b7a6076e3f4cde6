"""FramePipeline.schedule: requests move the cursor, read-ahead encodes ahead through the cache's
budget, statistics per schedule, closing, identities, bad frames, 16 threads, the demo."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import pytest
from PIL import Image
from waits import wait_until

from gpupipe import FrameCache, FrameEncoder, FramePipeline, load_config, open_pipeline
from gpupipe.config import MiB
from gpupipe.demo import play
from gpupipe.errors import FrameDecodeError, FrameError
from gpupipe.pipeline import schedule_ident
from gpupipe.cache import LruPolicy
from gpupipe.schedule import SchedulePolicy
from gpupipe.samples import make_frame
from gpupipe.schedule import Scheduler


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("sched-frames")
    out = []
    for i in range(16):
        p = d / f"f{i:02d}.png"
        Image.fromarray(make_frame(160, 90, index=i, seed=5)).save(p, "PNG", compress_level=1)
        out.append(p)
    return out


@pytest.fixture
def enc():
    cfg = replace(load_config(), batch_size=4)
    with FrameEncoder(cfg, backend="cpu") as e:
        yield e


def scheduled_pipe(enc, max_entries=64, max_bytes=64 * MiB, **kw) -> FramePipeline:
    cache = FrameCache(max_entries, max_bytes, policy=SchedulePolicy(Scheduler(schedule_ident)))
    return FramePipeline(enc, cache, **kw)


def exact(cache: FrameCache) -> None:
    s = cache.stats()
    assert s.bytes == sum(len(cache.peek(k)) for k in cache.keys())
    assert s.entries == len(cache.keys()) <= s.max_entries
    assert s.bytes <= s.max_bytes and s.peak_bytes <= s.max_bytes


def test_read_ahead_encodes_the_schedule_before_it_is_requested(enc, frames):
    pipe = scheduled_pipe(enc, read_ahead=8)
    order = frames[:8]
    with pipe.schedule(order) as s:
        wait_until(lambda: s.stats().prefetched == 8, "read-ahead to encode 8 frames")
        uris = [pipe.get(f) for f in order]
        st = s.stats()
    assert uris == enc.encode_batch(order)
    cs = pipe.stats()
    assert (st.position, st.requests, st.hits, st.misses, st.prefetched, st.prefetch_used, st.wasted) == (8, 8, 8, 0, 8, 8, 0)
    assert (cs.loads, cs.prefetched, cs.prefetch_used, cs.hits, cs.misses) == (8, 8, 8, 8, 0)
    assert st.closed is False and s.stats().closed
    exact(pipe.cache)


def test_without_read_ahead_requests_encode_and_are_counted_per_schedule(enc, frames):
    pipe = scheduled_pipe(enc, max_entries=3, read_ahead=0)
    order = frames[:4] * 3
    with pipe.schedule(order) as s:
        for f in order:
            pipe.get(f)
        st = s.stats()
    # A 4-frame loop with room for 3: the first 3 frames stay and hit in every later loop.
    assert (st.requests, st.hits, st.misses, st.prefetched) == (12, 6, 6, 0)
    assert pipe.stats().loads == 6 and pipe.stats().bypassed >= 2
    lru = FramePipeline(enc, FrameCache(3, 64 * MiB))
    for f in order:
        lru.get(f)
    assert lru.stats().loads == 12


def test_get_many_and_bytes_sources_follow_the_schedule(enc, frames):
    data = [f.read_bytes() for f in frames[:3]]
    pipe = scheduled_pipe(enc, read_ahead=0)
    with pipe.schedule(data + [frames[3]]) as s:
        out = pipe.get_many([bytes(data[0]), data[1], data[2], frames[3]])
        assert all(isinstance(u, str) for u in out)
        assert s.stats().position == 4 and s.stats().requests == 4


def test_a_rewritten_file_still_matches_its_place(enc, frames, tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(frames[0].read_bytes())
    pipe = scheduled_pipe(enc, read_ahead=0)
    with pipe.schedule([f, frames[1]]) as s:
        f.write_bytes(frames[2].read_bytes())
        os.utime(f, ns=(10**9, 10**9))
        assert pipe.get(f) == enc.encode(frames[2])
        assert s.stats().position == 1


def test_bad_frame_in_a_schedule_fails_alone(enc, frames, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(frames[0].read_bytes()[:200])
    pipe = scheduled_pipe(enc, read_ahead=4)
    order = [frames[0], bad, frames[1], frames[2]]
    with pipe.schedule(order) as s:
        wait_until(lambda: s.stats().prefetched + pipe.stats().load_failures >= 3, "read-ahead")
        results = pipe.get_many(order)
    assert isinstance(results[1], FrameDecodeError) and "bad.png" in str(results[1])
    assert all(isinstance(r, str) for i, r in enumerate(results) if i != 1)
    with pytest.raises(FrameError):
        pipe.get(bad)
    exact(pipe.cache)


def test_closing_the_pipeline_stops_read_ahead(enc, frames):
    pipe = scheduled_pipe(enc, read_ahead=4)
    s = pipe.schedule(frames * 50)
    wait_until(lambda: s.stats().prefetched >= 4, "read-ahead to start")
    reader = s.reader
    pipe.close()
    assert s.stats().closed and not reader.is_alive()
    assert not pipe.scheduler.active and pipe.stats().inflight_bytes == 0


def test_a_hand_built_pipeline_evicts_by_its_schedule(enc, frames):
    # A FrameCache built without a policy ranks by the declared schedules like open_pipeline's:
    # a 4-frame loop (and a ping-pong over 4 frames) with room for 3 keeps the frames used soonest.
    loop = frames[:4] * 4
    pingpong = [frames[i] for i in (0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3)]
    # Belady's optimum with bypass: the loop misses 4 then frame 3 once per loop; the ping-pong misses 4 then 3 twice.
    for order, belady in ((loop, 4 + 3), (pingpong, 4 + 2)):
        loads = []
        for pipe in (FramePipeline(enc, FrameCache(3, 64 * MiB), read_ahead=0), scheduled_pipe(enc, max_entries=3, read_ahead=0)):
            with pipe.schedule(order):
                for f in order:
                    pipe.get(f)
            loads.append(pipe.stats().loads)
        lru = FramePipeline(enc, FrameCache(3, 64 * MiB, policy=LruPolicy()), read_ahead=0)
        with lru.schedule(order):
            for f in order:
                lru.get(f)
        assert loads[0] == loads[1] == belady < lru.stats().loads, (loads, lru.stats().loads)


def test_default_cache_policy_is_lru_until_a_schedule_is_declared(enc, frames):
    cache = FrameCache(3, 64 * MiB)
    assert isinstance(cache.policy, SchedulePolicy)
    pipe = FramePipeline(enc, cache, read_ahead=0)
    for f in [*frames[:4], frames[1], frames[0]]:
        pipe.get(f)
    # LRU: 0,1,2 then 3 evicts 0; 1 hits; 0 misses and evicts 2 (least recently used).
    assert pipe.stats().loads == 5 and pipe.stats().hits == 1
    assert pipe.key(frames[2]) not in cache and pipe.key(frames[3]) in cache


def test_an_lru_cache_still_gets_cursors_and_read_ahead_into_free_room(enc, frames, caplog):
    pipe = FramePipeline(enc, FrameCache(64, 64 * MiB, policy=LruPolicy()), read_ahead=4)
    with caplog.at_level("WARNING", "gpupipe.pipeline"), pipe.schedule(frames[:4]) as s:
        wait_until(lambda: s.stats().prefetched == 4, "read-ahead")
        for f in frames[:4]:
            pipe.get(f)
        assert s.stats().hits == 4
    assert pipe.scheduler is not None and pipe.cache.stats().loads == 4
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "does not evict by schedule" in caplog.records[0].message
    pipe.schedule(frames[:2]).close()
    assert len([r for r in caplog.records if "does not evict by schedule" in r.message]) == 1


def test_read_ahead_setting(enc, tmp_path):
    assert FramePipeline(enc, FrameCache(4, 64 * MiB)).read_ahead == 16 == load_config().schedule.read_ahead
    with pytest.raises(ValueError, match="read_ahead"):
        FramePipeline(enc, FrameCache(4, 64 * MiB), read_ahead=-1)
    with pytest.raises(ValueError, match="read_ahead"):
        scheduled_pipe(enc).schedule([], read_ahead=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {schedule: {read_ahead: 3}, backend: cpu}\n")
    with open_pipeline(cfg) as pipe:
        assert pipe.read_ahead == 3 and isinstance(pipe.cache.policy, SchedulePolicy)
        assert pipe.scheduler is pipe.cache.policy.scheduler and pipe.scheduler.ident is schedule_ident


def test_sixteen_threads_through_the_pipeline_keep_the_budget(enc, frames):
    uri = len(enc.encode(frames[0]))
    budget = 6 * uri  # a handful of frames: read-ahead, requests and entries all compete
    pipe = scheduled_pipe(enc, max_entries=64, max_bytes=budget, read_ahead=8)
    order = [frames[i % len(frames)] for i in range(160)]
    expected = dict(zip(frames, enc.encode_batch(frames)))
    nxt = iter(range(len(order)))
    lock = threading.Lock()
    errors: list = []
    seen: list = []

    def sample():
        s = pipe.cache.stats()
        seen.append(s.bytes + s.inflight_bytes)

    def worker():
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                assert pipe.get(order[i]) == expected[order[i]]
                sample()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with pipe.schedule(order) as s:
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors[:1]
    cs, st = pipe.stats(), s.stats()
    assert max(seen) <= budget and cs.peak_bytes <= budget and cs.inflight_bytes == 0
    assert cs.hits + cs.misses + cs.joined == len(order) == st.requests
    assert cs.loads == cs.misses + cs.prefetched and st.prefetched == cs.prefetched
    assert st.hits + st.misses == len(order)
    exact(pipe.cache)


def test_demo_play_with_and_without_the_schedule(enc, frames):
    cache = FrameCache(4, 64 * MiB, policy=SchedulePolicy())
    pipe = FramePipeline(enc, cache, read_ahead=4)
    trace = list(range(6)) * 4  # a 6-frame loop through room for 4
    lru = play(pipe, frames, trace, cold=True)
    sched = play(pipe, frames, trace, schedule=True, cold=True)
    assert lru.requests == sched.requests == 24 and lru.failures == sched.failures == 0
    assert lru.encodes == 24 and lru.hit_ratio == 0.0
    assert sched.encodes < lru.encodes and 0 < sched.hit_ratio < 1
    assert not pipe.scheduler.active


@pytest.mark.parametrize(
    "text,value",
    [("defaults: {schedule: {read_ahead: 0}}", 0), ("defaults: {schedule: {read_ahead: 1000000}}", 10**6),
     ("gpus: {0: {schedule: {read_ahead: 5}}}", 5), ("defaults: {schedule: null}", 16)],
)
def test_config_schedule_read_ahead(tmp_path, text, value):
    p = tmp_path / "c.yaml"
    p.write_text(text + "\n")
    cfg = load_config(p, gpu=0)
    assert cfg.schedule.read_ahead == value and cfg.to_dict()["schedule"] == {"read_ahead": value}


@pytest.mark.parametrize(
    "text,key",
    [("defaults: {schedule: {read_ahead: -1}}", "defaults.schedule.read_ahead"),
     ("defaults: {schedule: {read_ahead: 1000001}}", "defaults.schedule.read_ahead"),
     ("defaults: {schedule: {read_ahead: '8'}}", "defaults.schedule.read_ahead"),
     ("defaults: {schedule: {read_ahead: 1.5}}", "defaults.schedule.read_ahead"),
     ("gpus: {1: {schedule: {horizon: 8}}}", "gpus.1.schedule.horizon"),
     ("defaults: {schedule: 8}", "defaults.schedule")],
)
def test_config_schedule_errors_name_the_key(tmp_path, text, key):
    from gpupipe.errors import ConfigError

    p = tmp_path / "c.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == key and str(p) in str(e.value)
