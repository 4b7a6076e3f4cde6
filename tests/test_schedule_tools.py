"""The schedule benchmark tools: replay_schedule, the hit-ratio table, the weighting study and the
get() latency benchmark (structure and accounting only; no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from gpupipe import FrameEncoder
from gpupipe.tools import bench
from gpupipe.tools import traces as tr

MiB = tr.MiB


def test_replay_schedule_counts_every_encode():
    t = [(k, 10) for k in "abcdabcdabcd"]
    plain = tr.replay_schedule(t, 3, 10**6, estimate=False)
    assert (plain.requests, plain.hits, plain.loads, plain.prefetched) == (12, 6, 6, 0)
    assert plain.encodes_per_request == 0.5 and plain.bytes_hit == 60
    # With each URI's bytes reserved while it loads, a 30-byte budget must make room for the one in
    # flight; the frame loaded then takes that room, so the cache still holds three.
    tight = tr.replay_schedule(t, 3, 30)
    assert tight.hits == tr.belady_opt(t, 3, 30).hits == 6 and tight.loads == 6
    ahead = tr.replay_schedule(t, 3, 10**6, estimate=False, read_ahead=4, batch_size=2)
    assert ahead.hits == 6 and ahead.loads == 6 and ahead.prefetched >= 1 and ahead.prefetch_wasted == 0
    assert tr.Replay("x", 4, 1, 40, 10).encodes_per_request == 0.75


def test_standard_traces_at_1080p():
    four_k = tr.standard_traces(scale=0.05)
    hd = tr.standard_traces(scale=0.05, resolution="1080p")
    assert len(hd) == 4 and all("1080p" in name for name in hd)
    assert [len(t) for t in four_k.values()] == [len(t) for t in hd.values()]
    assert sum(s for t in hd.values() for _, s in t) < sum(s for t in four_k.values() for _, s in t) / 3
    with pytest.raises(ValueError):
        tr.standard_traces(resolution="8k")


def test_weight_study_runs_and_the_default_is_not_worse_than_distance_alone():
    r = tr.weight_study(cases=40, seed=2, pip_frames=60)
    assert set(r) == {"OPT (belady_opt)", *tr.WEIGHTS}
    default = r["(d+1) * sqrt(bytes) [default]"]
    assert default["random"] >= r["distance only"]["random"] and default["pip"] > 0


def test_traces_main_schedule_table(tmp_path, capsys, monkeypatch):
    full = tr.standard_traces
    monkeypatch.setattr(tr, "standard_traces", lambda seed=0, resolution="4k": full(seed, scale=0.05, resolution=resolution))
    assert tr.main(["--schedule", "--max-mib", "300", "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "| scrubbing (1080p JPEG) | 256 entries, 300 MiB |" in out and "schedule + read-ahead" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 8 and all(0 <= r["sched_ra_hit_ratio"] <= 1 for r in rows)


@pytest.mark.slow
def test_schedule_latency_reports_both_renders(tmp_path):
    frames = bench._latency_frames(tmp_path, 6, (96, 64))
    with FrameEncoder(backend="cpu") as enc:
        r = bench.schedule_latency(frames, enc, read_ahead=4, hit_samples=10)
    assert r["frames"] == 6 and r["encoder_fps"] > 0 and r["request_fps"] == pytest.approx(0.8 * r["encoder_fps"])
    for name in ("hit", "hit_busy"):
        assert r[name]["requests"] == 10 and 0 < r[name]["p50_ms"] <= r[name]["p99_ms"]
    off, on = r["no_read_ahead"], r["read_ahead"]
    assert (off["hits"], off["misses"], off["prefetched"], off["loads"]) == (0, 6, 0, 6)
    assert on["hits"] + on["misses"] == 6 and on["loads"] == on["misses"] + on["prefetched"]
    assert on["prefetched"] == on["prefetch_used"] + on["wasted"]
    assert r["read_ahead_p50_vs_hit"] == on["p50_ms"] / r["hit"]["p50_ms"]
    assert bench.percentile_ms([0.001, 0.003], 50) == pytest.approx(2.0)
