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


def test_base_rss_is_read_after_the_device_probe_and_a_warm_request(originals, tmp_path, monkeypatch):
    # On a GPU host the probe imports CuPy, DALI and nvImageCodec and makes a CUDA context (~100 MiB and
    # more): that is start-up, not the budget's. A stand-in probe that holds 64 MiB must land in probe_rss
    # and in the base, not in the peak above it.
    from gpupipe.tools import soak

    held: list[bytearray] = []

    def probe():
        held.append(bytearray(b"\x01" * (64 * MiB)))
        return lambda: 0

    monkeypatch.setattr(soak, "_device_used", probe)
    frames = alias_frames(originals, 12, tmp_path / "alias")
    with FrameEncoder(backend="cpu") as enc:
        r = run_soak(enc, frames, budget_bytes=64 * MiB, requests=24, threads=2, sample_hz=100)
    assert r.probe_rss >= 60 * MiB
    assert r.base_rss - r.start_rss >= r.probe_rss and r.target_rss == r.base_rss + int(64 * MiB * 1.15)
    assert r.to_dict()["probe_rss"] == r.probe_rss and held
