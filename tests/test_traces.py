"""Access traces, LRU replay through the real FrameCache, and Belady's optimum (gpupipe.tools.traces)."""

from __future__ import annotations

import functools
import itertools
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpupipe.tools import traces as tr

MiB = tr.MiB


def brute_force_optimum(trace, max_entries, max_bytes) -> int:
    """The true maximum number of hits of any offline policy (bypass allowed), by exhaustive search.

    Evicting lazily (only when admitting) loses nothing, so on a miss the new cache content is
    any subset of (cache + requested item) that fits both bounds; on a hit it stays.
    Exponential: tiny traces only.
    """
    trace = list(trace)

    @functools.lru_cache(maxsize=None)
    def best(i: int, cached: frozenset) -> int:
        if i == len(trace):
            return 0
        key, _ = trace[i]
        if key in cached:
            return 1 + best(i + 1, cached)
        sizes = dict(trace)
        pool = sorted(cached | {key}, key=repr)
        top = 0
        for r in range(len(pool) + 1):
            for combo in itertools.combinations(pool, r):
                if r <= max_entries and sum(sizes[k] for k in combo) <= max_bytes:
                    top = max(top, best(i + 1, frozenset(combo)))
        return top

    return best(0, frozenset())


def uniform(keys, size=1):
    return [(k, size) for k in keys]


# ---------------------------------------------------------------- exact small cases

CLASSIC = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]


def test_classic_textbook_reference_string():
    """Silberschatz's string with 3 frames: LRU has 12 page faults; OPT 9 under demand paging.

    A cache may decline to store a frame (bypass), which demand paging may not: that saves
    one more fault here (the 4 at position 7 is never requested again; not storing it keeps
    the 0 requested at position 10), 8 faults in all, and the exhaustive search agrees.
    """
    t = uniform(CLASSIC)
    opt = tr.belady_opt(t, max_entries=3, max_bytes=10**9)
    lru = tr.replay_lru(t, max_entries=3, max_bytes=10**9)
    assert (opt.requests, opt.misses, opt.hits) == (20, 8, 12)
    assert (lru.requests, lru.misses, lru.hits) == (20, 12, 8)
    assert opt.hits == brute_force_optimum(t, 3, 10**9)
    # The byte bound alone gives the same capacity when every item costs 100 bytes.
    t100 = uniform(CLASSIC, 100)
    assert tr.belady_opt(t100, 1000, 300).hits == 12
    assert tr.replay_lru(t100, 1000, 300).hits == 8
    assert tr.belady_opt(t100, 1000, 299).hits == brute_force_optimum(t100, 1000, 299)


def test_small_loop_exact():
    t = uniform([1, 2, 3, 4, 5] * 4)
    assert tr.replay_lru(t, 3, 10**6).hits == 0
    opt = tr.belady_opt(t, 3, 10**6)
    assert opt.hits == brute_force_optimum(t, 3, 10**6) == 9


def test_variable_sizes_hand_trace():
    # Budget 10 bytes: the big item b (8) and small items a, c (4 each). Keeping a and c
    # (both reused twice) beats keeping b (reused once).
    t = [("a", 4), ("c", 4), ("b", 8), ("a", 4), ("c", 4), ("b", 8), ("a", 4), ("c", 4)]
    assert brute_force_optimum(t, 10, 10) == 4
    assert tr.belady_opt(t, 10, 10).hits == 4
    assert tr.replay_lru(t, 10, 10).hits == 0  # b pushes both out every time


def test_variable_sizes_heuristic_is_not_exact():
    """Why belady_opt is documented as an estimate with variable sizes.

    Admitting c (9 bytes) into a full 10-byte cache holding b (9) and a (1), furthest-next-use
    evicts a first (next use at 5), then b (next use at 4) as still over budget; evicting b
    alone would have kept a for a hit at position 5.
    """
    t = [("b", 9), ("a", 1), ("c", 9), ("c", 9), ("b", 9), ("a", 1)]
    assert brute_force_optimum(t, 10, 10) == 2
    assert tr.belady_opt(t, 10, 10).hits == 1


def test_oversize_items_are_never_hits():
    t = [("big", 11), ("big", 11), ("s", 3), ("s", 3)]
    for r in (tr.belady_opt(t, 5, 10), tr.replay_lru(t, 5, 10)):
        assert r.hits == 1 and r.bytes_hit == 3 and r.bytes_requested == 28


def test_empty_trace_and_bad_bounds():
    for fn in (tr.belady_opt, tr.replay_lru):
        r = fn([], 4, 100)
        assert (r.requests, r.hits, r.hit_ratio, r.byte_hit_ratio) == (0, 0, 0.0, 0.0)
        with pytest.raises(ValueError):
            fn([("a", 1)], 0, 100)
        with pytest.raises(ValueError):
            fn([("a", 1)], 4, 0)


# ---------------------------------------------------------------- properties

small_keys = st.lists(st.integers(0, 5), min_size=0, max_size=11)


@settings(max_examples=60, deadline=None)
@given(keys=small_keys, cap=st.integers(1, 4))
def test_opt_is_exact_for_uniform_sizes(keys, cap):
    t = uniform(keys, 7)
    best = brute_force_optimum(t, cap, 10**6)
    assert tr.belady_opt(t, cap, 10**6).hits == best
    assert tr.belady_opt(t, 100, 7 * cap).hits == best  # the same capacity through the byte bound
    assert tr.replay_lru(t, cap, 10**6).hits <= best


@settings(max_examples=60, deadline=None)
@given(
    keys=small_keys,
    size_of=st.lists(st.integers(1, 9), min_size=6, max_size=6),
    max_entries=st.integers(1, 4),
    max_bytes=st.integers(1, 20),
)
def test_variable_sizes_never_beat_the_true_optimum(keys, size_of, max_entries, max_bytes):
    t = [(k, size_of[k]) for k in keys]
    best = brute_force_optimum(t, max_entries, max_bytes)
    opt = tr.belady_opt(t, max_entries, max_bytes)
    lru = tr.replay_lru(t, max_entries, max_bytes)
    assert opt.hits <= best
    assert lru.hits <= best


@settings(max_examples=80, deadline=None)
@given(keys=st.lists(st.integers(0, 30), min_size=1, max_size=300), cap=st.integers(1, 25))
def test_opt_at_least_lru_and_monotone_uniform(keys, cap):
    t = uniform(keys, 1000)
    opt = tr.belady_opt(t, cap, 10**9)
    lru = tr.replay_lru(t, cap, 10**9)
    assert opt.hits >= lru.hits
    # More room never hurts: OPT is exact here, and LRU is a stack algorithm.
    assert tr.belady_opt(t, cap + 1, 10**9).hits >= opt.hits
    assert tr.replay_lru(t, cap + 1, 10**9).hits >= lru.hits
    cold = len(set(keys))
    assert opt.hits <= len(keys) - cold


@settings(max_examples=80, deadline=None)
@given(
    keys=st.lists(st.integers(0, 25), min_size=1, max_size=300),
    size_of=st.lists(st.integers(1, 40), min_size=26, max_size=26),
    max_entries=st.integers(1, 20),
    max_bytes=st.integers(40, 300),
)
def test_opt_at_least_lru_variable_sizes(keys, size_of, max_entries, max_bytes):
    t = [(k, size_of[k]) for k in keys]
    opt = tr.belady_opt(t, max_entries, max_bytes)
    lru = tr.replay_lru(t, max_entries, max_bytes)
    assert opt.hits >= lru.hits
    for r in (opt, lru):
        assert 0 <= r.hits <= r.requests == len(t)
        assert 0 <= r.bytes_hit <= r.bytes_requested == sum(s for _, s in t)
        assert 0.0 <= r.hit_ratio <= 1.0 and r.misses == r.requests - r.hits


# ---------------------------------------------------------------- the generators


def _check_consistent_sizes(trace):
    sizes = {}
    for k, s in trace:
        assert sizes.setdefault(k, s) == s, f"{k} has two sizes"
        assert isinstance(s, int) and s > 0
    return sizes


def test_uri_sizes_are_realistic():
    four_k = tr.frame_sizes(500, "4k", "png", seed=1)
    assert all(0.6 * 16e6 * 4 / 3 <= s <= 1.6 * 16e6 * 4 / 3 + 40 for s in four_k)
    assert 18e6 < sum(four_k) / len(four_k) < 26e6  # 4K PNG URIs: ~20-25 MB
    hd = tr.frame_sizes(500, "1080p", "jpeg", seed=1)
    assert 0.4e6 < sum(hd) / len(hd) < 1.0e6
    assert tr.uri_size(3, "png") == len("data:image/png;base64,") + 4
    assert tr.frame_sizes(50, seed=3) == tr.frame_sizes(50, seed=3) != tr.frame_sizes(50, seed=4)


def test_seekback_is_one_pass_with_short_seek_backs():
    t = list(tr.seekback_trace(n_frames=600, seed=2))
    frames = [int(k.split("/")[1]) for k, _ in t]
    assert frames[0] == 0 and frames[-1] == 599 and set(frames) == set(range(600))
    steps = [b - a for a, b in zip(frames, frames[1:])]
    backs = [s for s in steps if s != 1]
    assert backs and all(-24 <= s <= 0 for s in backs)  # seek-backs of at most 24 frames (0 at the start)
    assert 1.1 < len(t) / 600 < 1.7
    _check_consistent_sizes(t)
    assert t == list(tr.seekback_trace(n_frames=600, seed=2))
    with pytest.raises(ValueError):
        next(tr.seekback_trace(seek_prob=0.1, max_back=48))  # would never reach the end


def test_loop_trace_lru_gets_nothing_opt_does():
    t = list(tr.loop_trace(clip_frames=96, loops=6))
    sizes = _check_consistent_sizes(t)
    assert len(t) == 576 and len(sizes) == 96
    budget = 1500 * MiB
    assert sum(sizes.values()) > budget  # the clip is larger than the cache
    lru = tr.replay_lru(t, 256, budget)
    opt = tr.belady_opt(t, 256, budget)
    assert lru.hits == 0 and lru.hit_ratio == 0.0
    assert opt.hit_ratio > 0.4
    # With room for the whole clip, LRU only misses the first loop, like OPT.
    assert tr.replay_lru(t, 256, 4000 * MiB).hits == tr.belady_opt(t, 256, 4000 * MiB).hits == 480


def test_interleaved_trace_layers():
    t = list(tr.interleaved_trace(n_frames=100, insets=2, overlay_frames=10, seed=5))
    assert len(t) == 100 * 4
    _check_consistent_sizes(t)
    layers = Counter(k.split("/")[0] for k, _ in t)
    assert layers == {"main": 100, "inset0": 100, "inset1": 100, "overlay": 100}
    assert len({k for k, _ in t if k.startswith("overlay/")}) == 10
    main_sizes = [s for k, s in t if k.startswith("main/")]
    inset_sizes = [s for k, s in t if k.startswith("inset0/")]
    assert min(main_sizes) > max(inset_sizes)  # 4K PNG main, 1080p JPEG insets
    assert len(list(tr.interleaved_trace(n_frames=10, insets=0, overlay_frames=0))) == 10


def test_scrub_trace_goes_both_ways_within_bounds():
    t = list(tr.scrub_trace(n_requests=2000, n_frames=500, max_speed=6, window=100, seed=3))
    assert len(t) == 2000
    _check_consistent_sizes(t)
    frames = [int(k.split("/")[1]) for k, _ in t]
    assert all(0 <= f < 500 for f in frames)
    steps = [b - a for a, b in zip(frames, frames[1:])]
    assert sum(s > 0 for s in steps) > 300 and sum(s < 0 for s in steps) > 300
    assert Counter(frames).most_common(1)[0][1] > 5  # frames are revisited


def test_standard_traces_replay_fast():
    traces = tr.standard_traces()
    assert set(traces) == {
        "seek-back (4K PNG)",
        "loop 96 frames x20 (4K PNG)",
        "picture-in-picture (4K + 2x1080p + overlay)",
        "scrubbing (4K JPEG)",
    }
    big = [req for t in traces.values() for req in t][:10_000]
    assert len(big) == 10_000
    t0 = time.perf_counter()
    tr.belady_opt(big, 256, 1500 * MiB)
    tr.replay_lru(big, 256, 1500 * MiB)
    assert time.perf_counter() - t0 < 5.0


def test_hit_ratio_table_format_and_chart(tmp_path):
    traces = tr.standard_traces(scale=0.1)
    rows = tr.hit_ratio_table(traces, budgets=[(256, 500 * MiB), (256, 1500 * MiB)])
    assert len(rows) == 8
    for r in rows:
        assert 0.0 <= r["lru_hit_ratio"] <= r["opt_hit_ratio"] <= 1.0
        assert r["requests"] == len(traces[r["trace"]])
        assert r["lru_vs_opt"] == (r["lru_hits"] / r["opt_hits"] if r["opt_hits"] else 1.0)
    loop = [r for r in rows if r["trace"].startswith("loop")]
    assert all(r["lru_hit_ratio"] == 0.0 < r["opt_hit_ratio"] for r in loop)
    text = tr.format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "0.0%" in text
    png = tr.plot_hit_ratios(rows, tmp_path / "hit.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500


def test_module_main_prints_table(tmp_path, capsys, monkeypatch):
    full = tr.standard_traces
    monkeypatch.setattr(tr, "standard_traces", lambda seed=0: full(seed, scale=0.05))
    rc = tr.main(["--max-mib", "400", "--json", str(tmp_path / "rows.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| loop 96 frames x20 (4K PNG) |" in out and "400 MiB" in out
    assert (tmp_path / "rows.json").stat().st_size > 100


def test_mixed_key_types_and_long_traces():
    """Keys of any hashable type (never compared), stale heap entries compacted, results unchanged."""
    import random

    rng = random.Random(11)
    kinds = [lambda i: i, lambda i: f"f{i}", lambda i: ("v", i), lambda i: frozenset({i})]
    raw = [rng.randrange(400) for _ in range(6000)]
    mixed = [(kinds[k % 4](k), 100 + (k * 37) % 900) for k in raw]
    as_str = [(repr(k), s) for k, s in mixed]
    for me, mb in [(50, 10**9), (10**6, 20_000), (40, 15_000)]:
        a = tr.belady_opt(mixed, me, mb)
        b = tr.belady_opt(as_str, me, mb)
        assert (a.hits, a.bytes_hit) == (b.hits, b.bytes_hit)
        assert a.hits >= tr.replay_lru(mixed, me, mb).hits
