"""Small video clips for the video-source tests, written once per session with PyAV, and PyAV's own decode of them.

Each clip is 320x180 (the rotated one 8 frames): H.264 with B-frames and a keyframe every 16
frames, VP9 with alpha (``yuva420p``), ProRes 4444 (``yuva444p10le``), H.264 with irregular
timestamps (variable frame rate), HEVC 10-bit, and H.264 with a 90° display rotation.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from gpupipe.samples import write_clip

VFR_STEPS_MS = [33, 41, 20, 57, 33, 25, 48, 33, 21, 60, 33, 38]


def vfr_pts(n: int) -> list[int]:
    """Irregular timestamps in milliseconds: the frames' gaps cycle through ``VFR_STEPS_MS``."""
    out = [0]
    for i in range(n - 1):
        out.append(out[-1] + VFR_STEPS_MS[i % len(VFR_STEPS_MS)])
    return out


CLIPS = {
    "h264": ("h264.mp4", {"frames": 64, "options": {"bf": "3", "g": "16", "keyint_min": "16", "sc_threshold": "0"}}),
    "vp9_alpha": ("vp9a.webm", {"frames": 32, "codec": "libvpx-vp9", "pix_fmt": "yuva420p", "options": {"g": "12"}}),
    "prores4444": ("prores.mov", {"frames": 12, "codec": "prores_ks", "pix_fmt": "yuva444p10le", "options": {"profile": "4444"}}),
    "vfr": ("vfr.mp4", {"frames": 48, "options": {"bf": "2", "g": "12"}, "pts": vfr_pts(48), "time_base": Fraction(1, 1000)}),
    "hevc10": (
        "hevc10.mp4",
        {"frames": 24, "codec": "hevc", "pix_fmt": "yuv420p10le", "options": {"x265-params": "log-level=error"}},
    ),
    "rotated": ("rot.mp4", {"frames": 8, "rotation": 90}),
}


def write_clips(directory: Path) -> dict[str, Path]:
    """Every clip of :data:`CLIPS` under ``directory``, by name."""
    return {name: write_clip(directory / file, **kw) for name, (file, kw) in CLIPS.items()}


def pyav_frames(path: Path) -> list[np.ndarray]:
    """Every frame of the clip in display order as PyAV decodes it in one pass (RGB, or RGBA with
    alpha; VP9 alpha with libvpx-vp9), the rotation applied as ``ffmpeg`` applies it."""
    import av

    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        alpha_vp9 = s.metadata.get("alpha_mode") == "1"
        ctx = av.CodecContext.create("libvpx-vp9", "r") if alpha_vp9 else s.codec_context
        frames = []
        for p in c.demux(s):
            if p.size:
                frames += ctx.decode(p)
        frames += ctx.decode(None)
        for f in frames:
            alpha = any(comp.is_alpha for comp in f.format.components)
            a = f.to_ndarray(format="rgba" if alpha else "rgb24")
            out.append(np.ascontiguousarray(np.rot90(a, round(f.rotation / 90) % 4)))
    return out


def frame_times(path: Path) -> list[float]:
    """Each frame's timestamp in seconds from the first, display order."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.size)
        return [float((p - pts[0]) * s.time_base) for p in pts]
