"""``python -m gpupipe.tools.hwdec``: measure DALI's hardware JPEG decoder settings and print the choice.

4K and 1080p synthetic JPEG frames (q90) are transcoded to JPEG at their own size on the GPU
backend at ``hw_decoder_load`` 0, 0.65 and 1.0, and with the preallocation hints at the frames'
size (:mod:`gpupipe.gpu.hwdec_bench`). Prints a markdown table (frames/s, host CPU-ms per frame),
the chosen setting as the ``gpu_path`` config it would be, and writes JSON with ``--out``.
gpupipe's default stays DALI's own (``hw_decoder_load: null``) until a run's figures are recorded
in ``docs/gpu.md``. Exit status 0, or 3 when no GPU is usable (nothing measured; with
``--cpu-smoke`` the CPU stand-ins run the code path instead, and their figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["format_table", "main"]

RESOLUTIONS = {"4k": (3840, 2160), "1080p": (1920, 1080)}


def format_table(rows: list[dict[str, Any]], choice: dict[str, Any]) -> str:
    """The markdown table of ``rows`` and the line naming ``choice``."""
    lines = [
        "| resolution | setting | frames | f/s | CPU-ms/frame | all encoded |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['resolution']} | {r['setting']} | {r['frames']} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.2f} | "
            f"{'yes' if r['all_encoded'] else 'NO'} |"
        )
    load = "null" if choice["hw_decoder_load"] is None else f"{choice['hw_decoder_load']:g}"
    hints = " with preallocate_width_hint/preallocate_height_hint at the frame size" if choice["hints"] else ""
    lines += [
        "",
        f"chosen: {choice['setting']} (gpu_path.hw_decoder_load: {load}{hints}); its worst resolution reaches "
        f"{choice['worst_share']:.0%} of that resolution's best f/s. gpupipe's default stays DALI's own until this is recorded.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m gpupipe.tools.hwdec", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32, help="frames per batch (8 distinct, repeated); default 32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the rows and the choice as JSON here")
    ap.add_argument("--cpu-smoke", action="store_true", help="no GPU: run the CPU stand-ins at 64x36 (code path only)")
    args = ap.parse_args(argv)
    from ..gpu import gpu_available
    from ..gpu.hwdec_bench import choose, hw_decoder_benchmark, settings_for
    from ..samples import encode_frame, make_frame

    ok, why = gpu_available(0)
    if not ok and not args.cpu_smoke:
        print(f"SKIP: hardware JPEG decoder settings: no GPU ({why})")
        return 3
    sizes = RESOLUTIONS if ok else {"4k": (64, 36), "1080p": (32, 18)}
    distinct = min(8, max(1, args.frames))
    frames = {
        res: [encode_frame(make_frame(w, h, index=i, seed=11), "jpeg", quality=90) for i in range(distinct)]
        * -(-args.frames // distinct)
        for res, (w, h) in sizes.items()
    }
    frames = {k: v[: args.frames] for k, v in frames.items()}
    rows = hw_decoder_benchmark(frames, settings_for(), repeats=args.repeats, device_id=0 if ok else None)
    choice = choose(rows)
    print(format_table(rows, choice))
    if args.out is not None:
        args.out.write_text(json.dumps({"gpu": ok, "rows": rows, "choice": choice}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
