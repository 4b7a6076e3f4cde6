#!/usr/bin/env python3
"""The 4K memory soak on its own: peak RSS against budget × 1.15 + base.

    python scripts/soak.py                       # 1000 requests, 4 threads, 1500 MiB, CPU path
    GPUPIPE_MALLOC_TUNE=0 python scripts/soak.py  # the same with glibc's allocator defaults
    python scripts/soak.py --backend gpu --requests 2000 --budget-mib 3000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from gpupipe import FrameEncoder
from gpupipe.config import MiB
from gpupipe.memory import allocator_tuning
from gpupipe.soak import alias_frames, run_soak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--budget-mib", type=int, default=1500)
    ap.add_argument("--synthetic", action="store_true", help="synthetic frames instead of ffmpeg's")
    ap.add_argument("--json", type=Path, help="write the full result (with RSS samples) here")
    args = ap.parse_args()
    work = Path(tempfile.gettempdir()) / "gpupipe-soak"
    if args.synthetic:
        from gpupipe.samples import write_samples

        originals = write_samples(work / "synthetic", sizes=("4k",), kinds=("png",), count=6)[("4k", "png")]
    else:
        from gpupipe.ffmpeg_frames import extract_frames

        originals = extract_frames(work / "ffmpeg", 3840, 2160, 6, kind="png", grain=12)
    budget = args.budget_mib * MiB
    unique = max(8, int(2 * budget // (originals[0].stat().st_size * 4 // 3)))
    frames = alias_frames(originals, unique, work / "alias")
    with FrameEncoder(backend=args.backend) as enc:
        r = run_soak(enc, frames, budget_bytes=budget, requests=args.requests, threads=args.threads, sample_hz=50)
        backend = enc.backend
    d = r.to_dict()
    if args.json:
        args.json.write_text(json.dumps(d, indent=1))
    c = r.cache
    print(f"backend {backend}; allocator: {allocator_tuning()}")
    print(f"{r.requests} requests over {r.unique_frames} distinct 4K frames, {r.threads} threads, budget {budget / MiB:.0f} MiB, {r.seconds:.1f} s")
    print(f"base RSS {r.base_rss / MiB:.0f} MiB, peak RSS {r.peak_rss / MiB:.0f} MiB, target {r.target_rss / MiB:.0f} MiB: {'within' if r.ok else 'OVER'}")
    print(f"cache {c['bytes'] / MiB:.0f} MiB in {c['entries']} entries, hit ratio {c['hit_ratio']:.1%}, {c['evictions']} evictions, invariant violations {r.invariant_violations}")


if __name__ == "__main__":
    main()
