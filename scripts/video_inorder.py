#!/usr/bin/env python3
"""In-order cost of video frames: gpupipe's video source against a plain PyAV loop, in the same run.

    python scripts/video_inorder.py                      # 1080p H.264, 120 frames, JPEG q90, CPU path
    python scripts/video_inorder.py --size 3840x2160 --frames 60

The plain loop decodes the clip in order with PyAV, converts each frame to RGB, JPEG-encodes it
with Pillow at the same quality and builds the data URI with pybase64. gpupipe gets the same
frames in order through a pipeline, one ``get`` per frame (as a renderer asks), then again with
the timeline declared (``pipe.schedule``: read-ahead decodes ahead in batches). Reports wall and
CPU seconds per frame, their ratio to the plain loop (the contract: within 1.5x), and the
decoder's seeks and decoded frames (the contract: about one decode per frame, no re-seek), and
the minor page faults per frame (fresh memory mappings: what gpupipe's mmap threshold costs).
The plain loop runs first, before any gpupipe encoder has tuned the allocator.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def timed(fn):
    r0, w, c = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
    out = fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return out, time.perf_counter() - w, time.process_time() - c, r1.ru_minflt - r0.ru_minflt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--rounds", type=int, default=3, help="best of this many runs of each")
    args = ap.parse_args()

    import gpupipe
    from gpupipe.samples import write_clip
    from gpupipe.tools.video_bench import plain_pyav_loop
    from gpupipe.vocabulary import parse_wxh

    w, h = parse_wxh(args.size)
    path = Path(tempfile.gettempdir()) / f"gpupipe-inorder-{w}x{h}-{args.frames}.mp4"
    if not path.exists():
        write_clip(path, frames=args.frames, size=(w, h), distinct=6, options={"preset": "veryfast", "g": "60", "bf": "3"})
    sources = [gpupipe.VideoFrame(path, index=i) for i in range(args.frames)]
    rows = []

    def one_by_one(schedule: bool) -> tuple[int, int]:
        encoder = gpupipe.FrameEncoder(backend="cpu")
        cache: gpupipe.FrameCache = gpupipe.FrameCache(256, 1500 * 2**20)
        with gpupipe.FramePipeline(encoder, cache, output="jpeg", quality=args.quality) as pipe:
            handle = pipe.schedule(sources) if schedule else None
            for s in sources:
                pipe.get(s)
            if handle is not None:
                handle.close()
            st = pipe.encoder.videos.stats()
            return st.seeks, st.decoded

    for name, fn in (
        ("plain PyAV loop", lambda: ("-", plain_pyav_loop(path, args.quality))),
        ("gpupipe, get() per frame", lambda: one_by_one(False)),
        ("gpupipe, schedule declared", lambda: one_by_one(True)),
    ):
        best = min((timed(fn) for _ in range(args.rounds)), key=lambda r: r[1])
        rows.append((name, *best))
    base_wall, base_cpu = rows[0][2], rows[0][3]
    print(f"{w}x{h} H.264, {args.frames} frames in order, JPEG q{args.quality}; best of {args.rounds}")
    print("| path | wall ms/frame | CPU ms/frame | wall vs plain | CPU vs plain | seeks | decoded | page faults/frame |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (seeks, decoded), wall, cpu, faults in rows:
        print(
            f"| {name} | {wall / args.frames * 1e3:.1f} | {cpu / args.frames * 1e3:.1f} | {wall / base_wall:.2f}x | "
            f"{cpu / base_cpu:.2f}x | {seeks} | {decoded} | {faults / args.frames:.0f} |"
        )


if __name__ == "__main__":
    main()
