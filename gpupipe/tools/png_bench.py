"""``python -m gpupipe.tools.png_bench``: 4K PNG transcode (to JPEG, same size) of the bench's frames with each PNG decoder, in
one run: the CPU path with Pillow and with libspng, the GPU backend with DALI (``num_threads`` = the
host's cores) and with nvCOMP + the un-filter kernel; frames/s and process CPU-s per frame, then the
goal line (a GPU host's best >= 2x the CPU path's f/s at <= 0.5x its CPU-s/frame). JSON to ``--out``.
Run by ``scripts/gpu_session.sh`` step ``png``; on a machine without a GPU only the CPU rows run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..cpu import CpuBackend
from ..frames import read_frame
from ..plan import OutputSpec, plan_job
from .ffmpeg_frames import frames_or_synthetic


def _frames(root: Path, n: int) -> tuple[list[Path], str]:
    """The bench's 4K PNG frames: ffmpeg ``testsrc2`` with grain (Paeth-filtered rows, as ffmpeg writes
    them) where an ffmpeg binary is found, else ``gpupipe.samples`` frames written by Pillow."""
    from .bench import FFMPEG_GRAIN

    return frames_or_synthetic(root, 3840, 2160, n, "png", grain=FFMPEG_GRAIN, prefer_ffmpeg=True)


def _run(backend: Any, jobs: list[Any], rounds: int) -> dict[str, float]:
    backend.run(jobs[:2])  # warm-up: pipelines, kernels, pools
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        res = backend.run(jobs)
        bad = [r for r in res if not isinstance(r, str)]
        if bad:
            raise SystemExit(f"a frame failed: {bad[0]}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = rounds * len(jobs)
    return {"fps": n / wall, "cpu_s_per_frame": cpu / n, "frames": n}


def _cpu_rows(jobs: list[Any], cores: int, rounds: int) -> dict[str, Any]:
    from ..cpu.decode import spng_available

    rows: dict[str, Any] = {}
    for dec in ("pillow", "spng"):
        if dec == "spng" and not spng_available():
            rows["cpu spng"] = {"error": "imagecodecs (libspng) is not installed: png_decoder spng would be Pillow"}
        else:
            cpu = CpuBackend(cores, dec)
            try:
                rows[f"cpu {dec}"] = _run(cpu, jobs, rounds)
            finally:
                cpu.close()
        print(f"cpu {dec}: {rows[f'cpu {dec}']}", flush=True)
    return rows


def _gpu_rows(jobs: list[Any], cores: int, rounds: int) -> dict[str, Any]:
    from ..gpu import GpuBackend
    from ..gpu.device import DeviceLayer
    from ..gpu.png_decode import nvcomp_available

    rows: dict[str, Any] = {}
    for dec in ("dali", "nvcomp"):
        if dec == "nvcomp" and not nvcomp_available():
            rows["gpu nvcomp"] = {"error": "nvidia-nvcomp-cu13 does not import"}
            print(f"gpu nvcomp: {rows['gpu nvcomp']['error']}", flush=True)
            continue
        cfg = replace(Config(), png_device="gpu", png_decoder="nvcomp" if dec == "nvcomp" else "pillow", batch_size=8)
        gpu = GpuBackend(cfg, ops=DeviceLayer(cfg, 0, dali_threads=cores))
        try:
            rows[f"gpu {dec}"] = {**_run(gpu, jobs, rounds), "nvcomp_png_frames": gpu.info().get("nvcomp_png_frames")}
        except Exception as e:  # noqa: BLE001 - one option failing must not hide the others
            rows[f"gpu {dec}"] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            gpu.close()
        print(f"gpu {dec}: {rows[f'gpu {dec}']}", flush=True)
    return rows


def _goal_line(rows: dict[str, Any]) -> str:
    cpu_rows = [r for k, r in rows.items() if k.startswith("cpu") and "fps" in r]
    gpu_rows = {k: r for k, r in rows.items() if k.startswith("gpu") and "fps" in r}
    if not gpu_rows or not cpu_rows:
        return "SKIP: 4K PNG transcode on a GPU host: no GPU row"
    base = max(cpu_rows, key=lambda r: r["fps"])
    k, best = max(gpu_rows.items(), key=lambda kv: kv[1]["fps"])
    ratio, cpu_ratio = best["fps"] / base["fps"], best["cpu_s_per_frame"] / base["cpu_s_per_frame"]
    verdict = "PASS" if ratio >= 2 and cpu_ratio <= 0.5 else "FAIL"
    return (
        f"{verdict}: 4K PNG transcode on a GPU host ({k}): {ratio:.2f}x the CPU path's f/s (>= 2x), "
        f"{cpu_ratio:.2f}x its CPU-s/frame (<= 0.5x)"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", type=Path, default=Path("/tmp/gpupipe-png-bench"))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    paths, origin = _frames(a.root, a.frames)
    print(f"frames: {len(paths)} x 4K PNG, {origin}", flush=True)
    jobs = [plan_job(i, read_frame(p), OutputSpec("jpeg", None, 90)) for i, p in enumerate(paths)]
    rows = _cpu_rows(jobs, cores, a.rounds)
    from ..gpu import gpu_available

    ok, why = gpu_available(0)
    if ok:
        rows.update(_gpu_rows(jobs, cores, a.rounds))
    else:
        print(f"GPU rows NOT RUN: {why}")
    print(_goal_line(rows))
    if a.out:
        a.out.write_text(json.dumps({"cores": cores, "frames": origin, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
