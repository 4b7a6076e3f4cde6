#!/usr/bin/env python3
"""The memory soak on its own: peak RSS against budget × 1.15 + base, and the cache's peak against its budget.

    python scripts/soak.py                                   # 4K, 1000 requests, 4 threads, 1500 MiB, CPU path
    python scripts/soak.py --threads 4 8 16 --budget-mib 512 1500     # the matrix in docs/BENCHMARKS.md
    python scripts/soak.py --resolution 1080p --distinct --threads 16 --budget-mib 128 --output jpeg --size 1280x720
    python scripts/soak.py --video-clips 4 --resolution 1080p --distinct --threads 8 --budget-mib 96 --requests 96
    GPUPIPE_MALLOC_TUNE=0 python scripts/soak.py             # the same with glibc's allocator defaults

Each (threads, budget) cell runs in a fresh process, so that one cell's memory does not raise the next one's base.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _originals(args: argparse.Namespace, work: Path) -> list[Path]:
    if args.frames_dir:
        return sorted(p for p in Path(args.frames_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if args.synthetic:
        from gpupipe.samples import write_samples

        return write_samples(work / "synthetic", sizes=(args.resolution,), kinds=(args.kind,), count=6)[(args.resolution, args.kind)]
    from gpupipe.tools.ffmpeg_frames import extract_frames
    from gpupipe.samples import SAMPLE_SIZES

    w, h = SAMPLE_SIZES[args.resolution]
    return extract_frames(work / f"ffmpeg-{args.resolution}", w, h, 6, kind=args.kind, grain=12)


def _video_frames(args: argparse.Namespace, work: Path) -> tuple[list, int]:
    """``--video-clips N``: N H.264 clips at the resolution (written once), requested as a renderer
    compositing them all plays them: frame i of every clip, then frame i + 1. The sources, and one
    clip's size in bytes."""
    from gpupipe import VideoFrame
    from gpupipe.samples import SAMPLE_SIZES, write_clip

    frames = max(1, -(-args.requests // args.video_clips))
    work.mkdir(parents=True, exist_ok=True)
    clips = []
    for c in range(args.video_clips):
        path = work / f"clip-{args.resolution}-{frames}f-{c}.mp4"
        if not path.exists():
            write_clip(path, frames=frames, size=SAMPLE_SIZES[args.resolution], distinct=3, seed=c,
                       options={"preset": "ultrafast", "g": "12", "bf": "2"})
        clips.append(path)
    return [VideoFrame(p, index=i) for i in range(frames) for p in clips], clips[0].stat().st_size


def run_cell(args: argparse.Namespace, threads: int, budget_mib: int) -> dict:
    """One soak in this process; the result as a dict (without the RSS samples unless --json)."""
    from gpupipe import FrameEncoder
    from gpupipe.config import Config
    from gpupipe.vocabulary import MiB
    from gpupipe.memory import allocator_tuning
    from gpupipe.tools.soak import alias_frames, run_soak
    from gpupipe.vocabulary import parse_wxh

    work = Path(tempfile.gettempdir()) / "gpupipe-soak"
    work.mkdir(parents=True, exist_ok=True)
    budget = budget_mib * MiB
    if args.video_clips:
        frames, frame_bytes = _video_frames(args, work)
    else:
        originals = _originals(args, work)
        frame_bytes = originals[0].stat().st_size
        unique = max(args.requests if args.distinct else 8, int(2 * budget // (frame_bytes * 4 // 3)))
        frames = alias_frames(originals, unique, work / f"alias-{originals[0].parent.name}")
    with FrameEncoder(Config(), backend=args.backend) as enc:
        r = run_soak(
            enc, frames, budget_bytes=budget, requests=args.requests, threads=threads, sample_hz=50,
            output=args.output, size=parse_wxh(args.size) if args.size else None, distinct=args.distinct,
        )
        d = r.to_dict()
        d.update(backend=enc.backend, allocator=allocator_tuning(), frame_bytes=frame_bytes, cache_peak=r.cache_peak)
        if args.video_clips:
            d.update(decoders=enc.videos.stats().__dict__)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[4])
    ap.add_argument("--budget-mib", type=int, nargs="+", default=[1500])
    ap.add_argument("--resolution", choices=["1080p", "4k"], default="4k")
    ap.add_argument("--kind", choices=["png", "jpeg"], default="png")
    ap.add_argument("--output", default=None, help="auto | passthrough | jpeg | png (default: the config's)")
    ap.add_argument("--size", default=None, help="WxH to fit inside")
    ap.add_argument("--distinct", action="store_true", help="each request a new frame (no hits): the most pressure")
    ap.add_argument("--synthetic", action="store_true", help="synthetic frames instead of ffmpeg's")
    ap.add_argument("--frames-dir", help="use the PNG/JPEG frames in this folder")
    ap.add_argument("--video-clips", type=int, default=0,
                    help="request frames of this many H.264 clips (gpupipe.VideoFrame) instead of image files")
    ap.add_argument("--json", type=Path, help="write every cell's full result (with RSS samples) here")
    ap.add_argument("--cell", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: run one cell, print JSON
    args = ap.parse_args()
    if args.cell:
        d = run_cell(args, *args.cell)
        if not args.json:
            d.pop("samples")
        print(json.dumps(d))
        return
    if args.video_clips:  # written here, so that no cell's base RSS holds the encoder's memory
        _video_frames(args, Path(tempfile.gettempdir()) / "gpupipe-soak")
    cells = []
    child = [a for a in sys.argv[1:]]
    for budget in args.budget_mib:
        for threads in args.threads:
            out = subprocess.run([sys.executable, __file__, *child, "--cell", str(threads), str(budget)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"soak cell threads={threads} budget={budget} MiB failed:\n{out.stderr}")
            cells.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        args.json.write_text(json.dumps(cells, indent=1))
    from gpupipe.vocabulary import MiB

    c0 = cells[0]
    what = f"{args.video_clips} H.264 clips of" if args.video_clips else f"{args.kind} frames of"
    print(f"backend {c0['backend']}; allocator: {c0['allocator']}; {args.resolution} {what} {c0['frame_bytes'] / 1e6:.1f} MB; "
          f"output {c0['output']} {c0['size'] or ''}; {'distinct frames' if args.distinct else 'render with seek-backs'}")
    print("Base RSS: after the device probe (its own cost in 'probe') and one warm request. MiB.")
    print("| threads | budget MiB | requests | probe | base RSS | peak RSS (above base) | target | cache peak | s | ok |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|")
    for d in cells:
        print(f"| {d['threads']} | {d['budget_bytes'] // MiB} | {d['requests']} | {d['probe_rss'] / MiB:.0f} | {d['base_rss'] / MiB:.0f} | "
              f"{d['peak_rss'] / MiB:.0f} ({(d['peak_rss'] - d['base_rss']) / MiB:.0f}) | {d['target_rss'] / MiB:.0f} | "
              f"{d['cache_peak'] / MiB:.0f} | {d['seconds']:.1f} | {'yes' if d['ok'] else 'NO'} |")
    sys.exit(0 if all(d["ok"] for d in cells) else 1)


if __name__ == "__main__":
    main()
