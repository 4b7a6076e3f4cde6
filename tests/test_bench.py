"""The benchmark runs end to end in quick mode and writes its report (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from gpupipe.bench import WORKLOADS, median_time, stdlib_uri
from gpupipe.plan import OutputSpec


def test_median_time_counts_runs():
    calls = []
    med, times = median_time(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and len(times) == 5 and med >= 0


def test_stdlib_baseline_is_a_valid_uri(frame_files):
    import base64

    p, j = frame_files
    assert stdlib_uri(p, WORKLOADS["passthrough"]) == "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
    assert stdlib_uri(j, OutputSpec("jpeg", (64, 64), 80)).startswith("data:image/jpeg;base64,/9j/")


@pytest.mark.slow
def test_quick_bench_writes_report(tmp_path, monkeypatch):
    from gpupipe.bench import run_bench

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = tmp_path / "results"
    r = run_bench(quick=True, out=out, use_ffmpeg=False)
    data = json.loads((out / "bench.json").read_text())
    assert len(data["workloads"]) == 18 and all(w["cpu_fps"] > 0 and w["stdlib_fps"] > 0 for w in data["workloads"])
    assert {s["workload"] for s in data["stages"]} == set(WORKLOADS)
    assert data["soak"]["invariant_violations"] == 0
    md = (out / "BENCH.md").read_text()
    assert "Throughput" in md and "Memory soak" in md
    for chart in ("throughput.png", "stages.png", "soak_rss.png"):
        assert (out / chart).stat().st_size > 1000
    assert r["machine"]["cores"] >= 1
