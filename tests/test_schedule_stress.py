"""The byte budget holds with read-ahead: 16 threads render a declared schedule of distinct 1080p
frames through FramePipeline with a small budget, in a fresh process that samples ``stats()`` and
RSS (as tests/test_stress.py does for the plain cache). Asserts memory bounds, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20

SCRIPT = textwrap.dedent('''
    import json, sys, threading
    from pathlib import Path
    import psutil
    from gpupipe import FrameCache, FrameEncoder, FramePipeline, load_config
    from gpupipe.pipeline import schedule_ident
    from gpupipe.schedule import SchedulePolicy
    from gpupipe.schedule import Scheduler
    from gpupipe.tools.soak import alias_frames

    src, work, out, output, requests = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    pause = float(sys.argv[6])  # seconds each worker "renders" between requests: idle encoder time for read-ahead
    budget = 128 * 2**20
    originals = sorted(Path(src).glob("*.png"))
    frames = alias_frames(originals, requests, work)
    enc = FrameEncoder(load_config(), backend="cpu")
    cache = FrameCache(256, budget, policy=SchedulePolicy(Scheduler(schedule_ident)))
    size = (1280, 720) if output == "jpeg" else None
    pipe = FramePipeline(enc, cache, output=output, size=size, read_ahead=16)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, violations, stop = [base], [0], threading.Event()

    def sampler():
        while not stop.is_set():
            s = cache.stats()
            if s.bytes + s.inflight_bytes > s.max_bytes or s.entries > s.max_entries:
                violations[0] += 1
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.01)

    nxt, lock, failures = iter(range(len(frames))), threading.Lock(), [0]

    def worker():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            try:
                pipe.get(frames[i])
            except Exception:
                with lock:
                    failures[0] += 1
            stop.wait(pause)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    with pipe.schedule(frames) as sched:
        workers = [threading.Thread(target=worker) for _ in range(16)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    stop.set()
    th.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    json.dump({"base_rss": base, "peak_rss": peak[0], "violations": violations[0], "failures": failures[0],
               "cache": cache.stats().as_dict(), "schedule": sched.stats().as_dict()}, open(out, "w"))
''')


@pytest.mark.slow
@pytest.mark.parametrize("output,requests,pause", [("passthrough", 120, 0.0), ("passthrough", 120, 0.05), ("jpeg", 48, 0.05)])
def test_sixteen_threads_with_read_ahead_stay_inside_the_budget(noisy_1080p, tmp_path, output, requests, pause):
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(noisy_1080p), str(tmp_path / "alias"), str(out), output, str(requests), str(pause)],
                         capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert run.returncode == 0 and out.exists(), run.stdout + run.stderr
    r = json.loads(out.read_text())
    budget = 128 * MiB
    c, s = r["cache"], r["schedule"]
    assert r["failures"] == 0 and r["violations"] == 0
    assert c["peak_bytes"] <= budget and c["inflight_bytes"] == 0
    assert c["loads"] == requests == s["requests"] and c["loads"] == c["misses"] + c["prefetched"]
    assert s["hits"] + s["misses"] == requests and s["prefetched"] == c["prefetched"]
    assert r["peak_rss"] <= r["base_rss"] + budget * 1.15, (r["peak_rss"] - r["base_rss"]) / MiB
