"""``gpupipe.demo``: the playback the demo command prints, row by row."""

from __future__ import annotations

import pytest

from gpupipe import FrameCache, FrameEncoder, FramePipeline
from gpupipe.config import Config
from gpupipe.demo import SETTINGS, play, render_trace
from gpupipe.samples import write_samples


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("clip"), sizes=("1080p",), kinds=("jpeg",), count=4)[("1080p", "jpeg")]


def test_row_hit_ratios_add_up_to_the_cache_summary(clip):
    """Each row's hit ratio is the cache's own measure (``(hits + joined) / lookups``) over that
    row's requests, so the rows, weighted by requests, give the summary's figure (they once counted
    ``1 - encodes / requests``, read-ahead's encodes included: 85% beside a summary of 90%)."""
    cache = FrameCache(256, 128 * 2**20)
    trace = render_trace(len(clip), 30, seed=3)
    with FrameEncoder(Config(workers=2), backend="cpu") as enc:
        rows = []
        for _label, size, scheduled in SETTINGS:
            before = cache.stats()
            r = play(FramePipeline(enc, cache, size=size), clip, trace, schedule=scheduled, cold=True)
            after = cache.stats()
            lookups = (after.hits + after.joined + after.misses) - (before.hits + before.joined + before.misses)
            assert r.requests == lookups == len(trace) and r.failures == 0
            assert r.hit_ratio == (after.hits + after.joined - before.hits - before.joined) / lookups
            rows.append(r)
    summary = cache.stats()
    assert sum(r.hits for r in rows) / sum(r.requests for r in rows) == pytest.approx(summary.hit_ratio)
    assert any(s for *_, s in SETTINGS) and all(r.encodes >= len(clip) for r in rows)
