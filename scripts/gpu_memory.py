#!/usr/bin/env python3
"""Where a GPU process's host memory goes: RSS after each start-up step, then while batches run.

    python scripts/gpu_memory.py [--rounds 6] [--batch 16] [--json OUT]

Steps, in one process: ``import gpupipe``; the device probe (CuPy, DALI, nvImageCodec imported, a
CUDA context); ``FrameEncoder(backend="gpu")``; ``warm_up()``; then ``--rounds`` batches of
``--batch`` 4K frames fitted to 1920x1080 JPEG, for each source: JPEG (nvJPEG / the hardware
decoder), PNG with ``png_device: cpu`` (the CPU path) and PNG with ``png_device: gpu`` (DALI decodes
on its CPU threads). Results are dropped after each batch, so growth across rounds is memory the
libraries keep (pools, pipeline buffers), not the cache's. Prints a markdown table (MiB).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import replace
from pathlib import Path

import psutil

MiB = 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    proc = psutil.Process()
    rows: list[tuple[str, float, float]] = []
    t0 = time.perf_counter()

    def note(step: str) -> None:
        gc.collect()
        rows.append((step, proc.memory_info().rss / MiB, time.perf_counter() - t0))

    note("interpreter")
    import gpupipe
    from gpupipe.gpu import gpu_available
    from gpupipe.samples import write_samples

    note("import gpupipe")
    ok, why = gpu_available(0)
    note(f"device probe ({'usable' if ok else why})")
    if not ok:
        raise SystemExit(f"no usable GPU: {why}")
    samples = write_samples(sizes=("4k",), kinds=("png", "jpeg"), count=4)
    cfg = replace(gpupipe.load_config(gpu=0), batch_size=8)
    for png_device in ("cpu", "gpu"):
        enc = gpupipe.FrameEncoder(replace(cfg, png_device=png_device), backend="gpu")
        note(f"FrameEncoder(gpu, png_device={png_device})")
        enc.warm_up()
        note("warm_up()")
        kinds = ("jpeg", "png") if png_device == "cpu" else ("png",)
        for kind in kinds:
            frames = (samples[("4k", kind)] * a.batch)[: a.batch]
            for r in range(a.rounds):
                out = enc.encode_batch(frames, "jpeg", (1920, 1080))
                bad = [o for o in out if not isinstance(o, str)]
                del out
                note(f"4K {kind} -> 1080p JPEG, png_device={png_device}, round {r + 1}{' (' + str(len(bad)) + ' failed)' if bad else ''}")
        enc.close()
        note(f"closed (png_device={png_device})")
    try:
        from nvidia.dali import backend as dali_backend

        dali_backend.ReleaseUnusedMemory()  # type: ignore[attr-defined]
        note("DALI ReleaseUnusedMemory()")
    except Exception as e:  # noqa: BLE001 - a report
        note(f"DALI ReleaseUnusedMemory failed: {e}")
    print("| step | RSS MiB | s |\n|---|---:|---:|")
    for step, rss, s in rows:
        print(f"| {step} | {rss:.0f} | {s:.1f} |")
    if a.json:
        a.json.write_text(json.dumps([{"step": s, "rss_mib": r, "t": t} for s, r, t in rows], indent=1))


if __name__ == "__main__":
    main()
