"""The byte budget holds with video decoders open: 8 threads over 4 1080p H.264 clips with a 96 MiB
budget, in a fresh process (scripts/soak.py --video-clips) that samples ``stats()`` and RSS above
a base read after a warm request. Every open decoder's state counts in the budget (kept bytes),
and requests that find no room close idle decoders. Asserts memory bounds, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.mark.slow
def test_eight_threads_over_four_1080p_clips_stay_inside_96_mib(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "soak.py"),
        "--video-clips",
        "4",
        "--resolution",
        "1080p",
        "--distinct",
        "--threads",
        "8",
        "--budget-mib",
        "96",
        "--requests",
        "96",
        "--output",
        "jpeg",
        "--json",
        str(out),
    ]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False)
    assert out.exists(), run.stdout + run.stderr
    (cell,) = json.loads(out.read_text())
    budget = 96 * MiB
    assert cell["failures"] == 0 and cell["requests"] == 96
    assert cell["invariant_violations"] == 0
    assert cell["cache"]["peak_bytes"] <= budget, cell["cache"]
    assert cell["peak_rss"] <= cell["base_rss"] + budget * 1.15, (cell["peak_rss"] - cell["base_rss"]) / MiB
    assert cell["decoders"]["opened"] >= 4  # decoders were open (and counted) while it ran
    assert cell["cache"]["inflight_bytes"] == 0
    assert run.returncode == 0, run.stdout + run.stderr
