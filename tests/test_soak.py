"""A small-scale memory soak: concurrent requests keep the cache's accounting exact and within budget."""

from __future__ import annotations

import pytest

from gpupipe import FrameEncoder
from gpupipe.config import MiB
from gpupipe.samples import encode_frame, make_frame
from gpupipe.tools.soak import alias_frames, run_soak


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("soak")
    paths = []
    for i in range(3):
        p = d / f"f{i}.png"
        p.write_bytes(encode_frame(make_frame(640, 360, i), "png"))
        paths.append(p)
    return paths


def test_soak_keeps_accounting_and_budget(originals, tmp_path):
    size = originals[0].stat().st_size
    budget = 64 * MiB
    unique = int(2.5 * budget / (size * 4 / 3)) + 1  # more distinct frames than fit
    frames = alias_frames(originals, unique, tmp_path / "alias")
    assert len({str(p) for p in frames}) == unique
    with FrameEncoder(backend="cpu") as enc:
        r = run_soak(enc, frames, budget_bytes=budget, requests=400, threads=4, sample_hz=100)
    c = r.cache
    assert r.failures == 0 and r.invariant_violations == 0
    assert c["bytes"] <= budget and c["bytes"] == c["host_bytes"] + c["device_bytes"]
    assert c["evictions"] > 0 and c["hits"] + c["misses"] + c["joined"] == 400
    assert c["inflight_bytes"] == 0 and c["peak_bytes"] <= budget
    assert r.samples and r.peak_rss >= r.base_rss
    assert r.to_dict()["ok"] == r.ok
