"""Measure the resident memory one frame's encode really takes, beside gpupipe's estimate of it.

Run as a script in a fresh process (``python footprint_probe.py FRAME_DIR``): for each frame
and output setting it resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), encodes
the frame once on one CPU thread through the same read/plan/run path the pipeline uses, and
prints one JSON line per case: ``{"case", "measured", "estimate"}`` in bytes, where ``measured``
is the peak RSS (``VmHWM``) above the RSS before the encode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CASES = [
    # (frame file, output format, size)
    ("noise.png", "passthrough", None),
    ("noise.png", "jpeg", None),
    ("noise.png", "auto", (1280, 720)),
    ("noise.png", "png", None),
    ("rgba.png", "auto", (1280, 720)),
    ("gray16.png", "jpeg", None),
    ("noise.jpg", "passthrough", None),
    ("noise.jpg", "jpeg", None),
    ("noise.jpg", "auto", (1280, 720)),
    ("exif6.jpg", "auto", None),
]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(frame_dir: Path) -> None:
    from gpupipe import FrameEncoder
    from gpupipe.config import Config

    enc = FrameEncoder(Config(workers=1), backend="cpu")
    # Warm every codec and the URI builder once so that their one-time allocations are not counted.
    for name, fmt, size in CASES:
        enc.encode(frame_dir / name, output=fmt, size=size)
    for name, fmt, size in CASES:
        path = frame_dir / name
        spec = enc.spec(fmt, size)
        (estimate, _header) = enc.footprint(path, spec)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        (result,) = enc.encode_jobs(enc.read_many([path]), spec)
        measured = _status_kib("VmHWM") - before
        assert isinstance(result, str), result
        del result
        print(json.dumps({"case": f"{name} {fmt} {size}", "measured": measured, "estimate": estimate}), flush=True)
    enc.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
