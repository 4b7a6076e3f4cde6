"""Bytes kept past the load that admitted them (FrameCache.keep: an open video decoder's state), and
reclaimers that give them back to a request that finds no room."""

from __future__ import annotations

import pytest

from gpupipe import FrameCache
from gpupipe.errors import BudgetTimeout


def test_keep_inside_a_loader_moves_bytes_out_of_its_reservation():
    cache: FrameCache = FrameCache(10, 1000)
    seen = {}

    def load(keys):
        seen["before"] = cache.stats().inflight_bytes
        assert cache.keep(300)
        seen["after"] = cache.stats()
        return ["x" * 10 for _ in keys]

    cache.get_or_load_many(["a"], load, estimate=lambda k: 500)
    assert seen["before"] == 500
    assert seen["after"].inflight_bytes == 200 and seen["after"].kept_bytes == 300
    s = cache.stats()
    assert (s.kept_bytes, s.inflight_bytes, s.bytes) == (300, 0, 10)
    assert s.peak_bytes == 500  # moving bytes never raised the total
    cache.unkeep(300)
    assert cache.stats().kept_bytes == 0


def test_keep_is_all_or_nothing():
    cache: FrameCache = FrameCache(10, 1000)

    def load(keys):
        assert not cache.keep(600)  # more than the reservation, and no room beside it
        return ["y"]

    cache.get_or_load_many(["a"], load, estimate=lambda k: 500)
    assert cache.stats().kept_bytes == 0
    assert cache.keep(400) and cache.stats().kept_bytes == 400  # outside a load: only into free room
    assert not cache.keep(700)
    assert cache.stats().kept_bytes == 400


def test_keep_outside_a_load_counts_the_entries_and_never_passes_the_budget():
    """A decoder opened by a load whose reservation did not include its state (the decoder it counted on
    was reclaimed meanwhile) is kept only where it fits beside the entries: the peak stays in the budget."""
    cache: FrameCache = FrameCache(10, 1000)
    cache.get_or_load("a", lambda: "x" * 800, estimate=800, label="a")
    assert cache.stats().bytes == 800
    assert not cache.keep(300)  # 800 stored + 300 would pass 1000: refused, nothing evicted
    assert cache.stats().bytes == 800 and cache.stats().kept_bytes == 0
    assert cache.keep(200) and cache.stats().peak_bytes <= 1000


def test_a_request_without_room_reclaims_kept_bytes_instead_of_waiting():
    cache: FrameCache = FrameCache(10, 1000, admission_timeout=0.5)
    held = {"n": 900}

    def reclaim(nbytes):
        freed, held["n"] = held["n"], 0
        return freed

    assert cache.keep(900)
    with pytest.raises(BudgetTimeout):  # no reclaimer: the kept bytes block it
        cache.get_or_load("a", lambda: "v", estimate=500, label="a")
    cache.add_reclaimer(reclaim)
    cache.add_reclaimer(reclaim)  # once
    assert cache.get_or_load("a", lambda: "v", estimate=500, label="a") == "v"
    assert cache.stats().kept_bytes == 0 and held["n"] == 0
