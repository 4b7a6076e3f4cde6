"""The byte budget holds under concurrency: 16 threads through FramePipeline on distinct 1080p
frames with a small budget, passthrough and transcode, each in a fresh process (scripts/soak.py)
that samples ``stats()`` and RSS above a base read after the device probe and a warm request.
Asserts memory bounds, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.mark.slow
@pytest.mark.parametrize(
    "frames,output,size,requests",
    [
        ("noisy_1080p", "passthrough", None, 160),
        ("noisy_1080p", "jpeg", "1280x720", 64),
        # A hand-built FramePipeline (the soak builds FrameEncoder + FrameCache itself) fitting random-noise
        # PNGs to 1280x720 JPEG: URIs below 1 MiB that a 1 MiB mmap threshold left in the threads' arenas.
        ("random_1080p", "jpeg", "1280x720", 200),
    ],
)
def test_sixteen_threads_stay_inside_the_budget(request, tmp_path, frames, output, size, requests):
    out = tmp_path / "soak.json"
    frames_dir = request.getfixturevalue(frames)
    cmd = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--frames-dir", str(frames_dir), "--distinct",
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
