"""The byte budget holds under concurrency: 16 threads through FramePipeline on distinct 1080p
frames with a small budget, passthrough and transcode, each in a fresh process (scripts/soak.py)
that samples ``stats()`` and RSS. Asserts memory bounds, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.mark.slow
@pytest.mark.parametrize("output,size,requests", [("passthrough", None, 160), ("jpeg", "1280x720", 64)])
def test_sixteen_threads_stay_inside_the_budget(noisy_1080p, tmp_path, output, size, requests):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--frames-dir", str(noisy_1080p), "--distinct",
           "--threads", "16", "--budget-mib", "128", "--requests", str(requests), "--output", output, "--json", str(out)]
    if size:
        cmd += ["--size", size]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.exists(), run.stdout + run.stderr
    (cell,) = json.loads(out.read_text())
    budget = 128 * MiB
    assert cell["failures"] == 0 and cell["requests"] == requests
    assert cell["invariant_violations"] == 0
    assert cell["cache"]["peak_bytes"] <= budget, cell["cache"]
    assert cell["cache"]["loads"] == requests and cell["cache"]["inflight_bytes"] == 0
    assert cell["peak_rss"] <= cell["base_rss"] + budget * 1.15, (cell["peak_rss"] - cell["base_rss"]) / MiB
    assert len(cell["samples"]) > 3
    assert run.returncode == 0, run.stdout + run.stderr
