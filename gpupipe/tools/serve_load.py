"""Load test of ``gpupipe serve`` (a benchmark, not a unit test): many client processes, one budget.

Starts ``gpupipe serve`` on a free loopback port with a byte budget (default 512 MiB), then runs
``clients`` client processes of ``requests`` requests each (bounded: every loop ends by itself)
for 4K frames: PNG and JPEG sample frames hard-linked under ``unique`` names (distinct cache
keys, as in the memory soak), so the frames asked for add up to more than the budget and the
cache evicts. Each client picks frames at random (seeded) and alternates ``/v1/uri`` and
``/v1/image`` on one keep-alive connection, reading every body whole. The server's RSS is
sampled every 20 ms. Reports errors, latency p50/p99, throughput, and peak RSS against the
goal ``start-up RSS + budget × 1.15 (+ staging.pinned_bytes where a pipeline runs on a GPU)``;
then SIGTERM, and the exit code. The start-up RSS is the server's once it listens: the service
warms every pipeline up before that (CuPy, DALI, nvImageCodec, a CUDA context on a GPU), so it is
reported apart from the budget (``startup_rss_mib``, with the seconds to get there).

    python -m gpupipe.tools.serve_load --clients 8 --requests 200 --budget-mib 512
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from ..config import Config
from ..vocabulary import MiB


def _client(args: tuple[int, int, int, list[str], int, str, str | None]) -> dict[str, Any]:
    """One client process: ``requests`` requests on one connection; latencies in ms, statuses, bytes."""
    port, requests, seed, names, _, fmt, size = args
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    lat: list[float] = []
    errors: list[str] = []
    nbytes = 0
    extra = (f"&format={fmt}" if fmt else "") + (f"&size={size}" if size else "")
    for i in range(requests):
        name = rng.choice(names)
        endpoint = "/v1/uri" if i % 2 == 0 else "/v1/image"
        t0 = time.perf_counter()
        try:
            conn.request("GET", f"{endpoint}?src={quote(name)}{extra}")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                errors.append(f"{r.status} {body[:200]!r}")
            nbytes += len(body)
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        lat.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return {"latency_ms": lat, "errors": errors, "bytes": nbytes}


def _frames(directory: Path, unique: int) -> list[str]:
    from ..samples import write_samples
    from .soak import alias_frames

    samples = write_samples(sizes=("4k",), kinds=("png", "jpeg"), count=4)
    originals = [p for kind in ("png", "jpeg") for p in samples[("4k", kind)]]
    return [p.name for p in alias_frames(originals, unique, directory)]


def _health(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/healthz")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def _metrics(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def start_service(root: Path, work: Path, config_yaml: str) -> tuple[subprocess.Popen, str]:
    """Start ``gpupipe serve`` on a free loopback port in a fresh process, with ``config_yaml`` as its
    config (written to ``work``) and no ``GPUPIPE_*`` variables; returns the process and its base URL."""
    cfg = work / "serve.yaml"
    cfg.write_text(config_yaml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPIPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpupipe", "serve", "--root", str(root), "--port", "0", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on http://" not in line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"gpupipe serve did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def run_load(
    *,
    clients: int = 8,
    requests: int = 200,
    budget_mib: int = 512,
    unique: int = 80,
    fmt: str | None = "passthrough",
    size: str | None = None,
    workdir: Path | None = None,
    backend: str = "auto",
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the load test; returns the report (see the module docstring). ``settings``: more top-level
    keys of the service's ``defaults`` config section (YAML values as text)."""
    work = Path(workdir or tempfile.mkdtemp(prefix="gpupipe-serve-load-"))
    root = work / "frames"
    names = _frames(root, unique)
    frame_bytes = sum((root / n).stat().st_size for n in names)
    proc, url = start_service(
        root,
        work,
        f"defaults:\n  backend: {backend}\n  cache: {{max_bytes: {budget_mib}MiB, max_entries: 100000, pressure_available: 0}}\n"
        "  serve: {max_queue: 4096, request_timeout: 600}\n" + "".join(f"  {k}: {v}\n" for k, v in (settings or {}).items()),
    )
    try:
        port = int(url.rsplit(":", 1)[1])
        ps = psutil.Process(proc.pid)
        ready_s = time.time() - ps.create_time()
        time.sleep(0.5)
        base = ps.memory_info().rss
        health = _health(port)
        on_gpu = any(p["backend"] == "gpu" for p in health["pipelines"])
        pinned = Config().staging.pinned_bytes if on_gpu else 0  # the built-in setting: the config above leaves it
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], ps.memory_info().rss)
                except psutil.Error:
                    return
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = ps.cpu_times()
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(clients) as pool:
            results = pool.map(_client, [(port, requests, 1000 + k, names, k, fmt or "", size) for k in range(clients)])
        seconds = time.perf_counter() - t0
        cpu1 = ps.cpu_times()
        stop.set()
        sampler.join()
        m = _metrics(port)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lat = sorted(x for r in results for x in r["latency_ms"])
    errors = [e for r in results for e in r["errors"]]
    total = len(lat)
    budget = budget_mib * MiB
    goal = base + int(budget * 1.15) + pinned
    batches = m.get("gpupipe_batches_total", 0)
    return {
        "command": f"python -m gpupipe.tools.serve_load --clients {clients} --requests {requests} --budget-mib {budget_mib} --unique {unique}"
        + (f" --format {fmt}" if fmt else "")
        + (f" --size {size}" if size else "")
        + "".join(f" --set {k}={v}" for k, v in (settings or {}).items()),
        "clients": clients,
        "requests": total,
        "errors": len(errors),
        "error_samples": errors[:5],
        "unique_frames": unique,
        "frame_bytes_on_disk": frame_bytes,
        "seconds": round(seconds, 2),
        "requests_per_s": round(total / seconds, 1),
        "mb_per_s": round(sum(r["bytes"] for r in results) / seconds / 1e6, 1),
        "p50_ms": round(lat[total // 2], 1),
        "p99_ms": round(lat[min(total - 1, int(total * 0.99))], 1),
        "max_ms": round(lat[-1], 1),
        "server_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1),
        "budget_mib": budget_mib,
        "pipelines": [f"{p['name']} ({p['backend']})" for p in health["pipelines"]],
        "startup_s": round(ready_s, 1),
        "startup_rss_mib": round(base / MiB, 1),
        "pinned_setting_mib": round(pinned / MiB, 1),
        "peak_rss_mib": round(peak[0] / MiB, 1),
        "peak_above_startup_mib": round((peak[0] - base) / MiB, 1),
        "goal_rss_mib": round(goal / MiB, 1),
        "rss_within_goal": peak[0] <= goal,
        "cache_peak_mib": round(m.get("gpupipe_cache_peak_bytes", 0) / MiB, 1),
        "hits": int(m.get("gpupipe_cache_hits_total", 0)),
        "misses": int(m.get("gpupipe_cache_misses_total", 0)),
        "joined": int(m.get("gpupipe_cache_joined_total", 0)),
        "evictions": int(m.get("gpupipe_cache_evictions_total", 0)),
        "batches": int(batches),
        "mean_batch": round(m.get("gpupipe_batch_size_sum", 0) / batches, 2) if batches else 0.0,
        "send_timeouts": int(m.get("gpupipe_send_timeouts_total", 0)),
        "sigterm_exit_code": code,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line; prints the report as JSON and exits 1 if any request failed or RSS passed its goal."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--budget-mib", type=int, default=512)
    ap.add_argument("--unique", type=int, default=80, help="distinct frame names (4K PNG and JPEG, hard-linked)")
    ap.add_argument("--format", default="passthrough", help="output format asked for (auto|passthrough|jpeg|png)")
    ap.add_argument("--size", default=None, help="WxH to fit, e.g. 1920x1080")
    ap.add_argument("--backend", default="auto")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a top-level config key for the service, e.g. png_device=gpu",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    a = ap.parse_args(argv)
    rep = run_load(
        clients=a.clients,
        requests=a.requests,
        budget_mib=a.budget_mib,
        unique=a.unique,
        fmt=a.format,
        size=a.size,
        backend=a.backend,
        settings=dict(kv.split("=", 1) for kv in a.set),
    )
    text = json.dumps(rep, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0 if rep["errors"] == 0 and rep["rss_within_goal"] and rep["sigterm_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
