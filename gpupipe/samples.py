"""Deterministic sample frames that compress like real video frames.

Each frame has smooth gradients (sky/ground), moving shapes with hard edges, text-like
stripes and low-amplitude sensor noise, so PNGs land near real frame sizes (a 4K PNG is
~15–25 MB) and JPEGs behave like camera or render output. The same ``(width, height,
index, seed)`` always gives the same pixels.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from .env import env
from .vocabulary import RESOLUTIONS

__all__ = ["SAMPLE_SIZES", "default_sample_dir", "encode_frame", "make_frame", "write_clip", "write_samples"]

SAMPLE_SIZES = RESOLUTIONS


def make_frame(width: int, height: int, index: int = 0, seed: int = 0, alpha: bool = False) -> np.ndarray:
    """An ``height``×``width``×3 (or ×4 with ``alpha``) uint8 frame; frame ``index`` of a moving scene."""
    rng = np.random.default_rng(seed * 100_003 + index)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    t = index / 24.0
    r = 40 + 150 * y + 40 * np.sin(6.0 * x + t)
    g = 60 + 120 * (1 - y) * (0.6 + 0.4 * np.cos(4.0 * x - t))
    b = 90 + 140 * x * (1 - y) + 20 * np.sin(9.0 * y + 2 * t)
    img = np.stack(np.broadcast_arrays(r, g, b), axis=-1)
    img += rng.normal(0.0, 5.0, size=img.shape).astype(np.float32)  # sensor noise
    frame = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(frame)
    s = min(width, height)
    for k in range(6):  # moving shapes with hard edges
        cx = int((0.15 + 0.7 * ((k * 0.37 + t * 0.05 * (k + 1)) % 1.0)) * width)
        cy = int((0.2 + 0.6 * ((k * 0.61) % 1.0)) * height)
        rad = int(s * (0.04 + 0.02 * k))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if k % 2:
            draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=color, outline=(0, 0, 0), width=max(1, s // 300))
        else:
            draw.rectangle((cx - rad, cy - rad // 2, cx + rad, cy + rad // 2), fill=color)
    line_h = max(2, s // 120)
    for row in range(8):  # "captions": high-frequency detail
        yy = int(height * 0.82) + row * line_h * 2
        if yy + line_h >= height:
            break
        xs = rng.integers(0, width // 2, 12)
        for x0 in xs:
            draw.rectangle((int(x0), yy, int(x0) + int(rng.integers(s // 60, s // 12)), yy + line_h), fill=(245, 245, 245))
    out = np.asarray(frame)
    if alpha:
        a = np.full((height, width, 1), 255, np.uint8)
        a[: height // 3, : width // 3] = 128  # a translucent overlay region
        out = np.concatenate([out, a], axis=-1)
    return out


def encode_frame(pixels: np.ndarray, kind: Literal["png", "jpeg"], quality: int = 92) -> bytes:
    """PNG (zlib level 6, as ffmpeg and browsers write them) or JPEG bytes of ``pixels``."""
    img = Image.fromarray(pixels)
    buf = io.BytesIO()
    if kind == "png":
        img.save(buf, "PNG", compress_level=6)
    else:
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def default_sample_dir() -> Path:
    """Where sample frames are cached: ``$GPUPIPE_SAMPLES`` or a folder in the temp dir."""
    return Path(env("GPUPIPE_SAMPLES") or Path(tempfile.gettempdir()) / "gpupipe-samples")


def write_samples(
    directory: str | os.PathLike[str] | None = None,
    sizes: tuple[str, ...] = ("1080p", "4k"),
    kinds: tuple[str, ...] = ("png", "jpeg"),
    count: int = 12,
    seed: int = 0,
    on_frame: Callable[[], None] | None = None,
) -> dict[tuple[str, str], list[Path]]:
    """Write (or reuse) ``count`` frames per size and kind; ``{(size, kind): [paths]}``.

    ``on_frame`` is called after each frame is written or found already there (progress)."""
    root = Path(directory) if directory is not None else default_sample_dir()
    out: dict[tuple[str, str], list[Path]] = {}
    for size in sizes:
        w, h = SAMPLE_SIZES[size]
        for kind in kinds:
            d = root / f"{size}-{kind}-s{seed}"
            d.mkdir(parents=True, exist_ok=True)
            ext = "png" if kind == "png" else "jpg"
            paths = []
            for i in range(count):
                p = d / f"frame_{i + 1:05d}.{ext}"
                if not p.exists():
                    tmp = p.with_suffix(".tmp")
                    tmp.write_bytes(encode_frame(make_frame(w, h, i, seed), "png" if kind == "png" else "jpeg"))
                    tmp.replace(p)
                paths.append(p)
                if on_frame is not None:
                    on_frame()
            out[(size, kind)] = paths
    return out


def write_clip(
    path: str | os.PathLike[str],
    *,
    frames: int = 48,
    size: tuple[int, int] = (320, 180),
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    container_options: dict[str, str] | None = None,
    distinct: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a video clip of :func:`make_frame` frames with PyAV (FFmpeg); returns its path.

    ``codec`` and ``pix_fmt`` are FFmpeg's (``libx264``/``yuv420p``, ``libvpx-vp9``/``yuva420p`` for
    alpha, ``prores_ks``/``yuva444p10le`` with ``options={"profile": "4444"}``, ``hevc``/
    ``yuv420p10le``); an alpha format gets frames with a translucent region. ``options`` go to the
    encoder (``{"bf": "3", "g": "16"}``). ``pts`` in ``time_base`` units give each frame's
    timestamp (a variable frame rate); ``rotation`` sets the display matrix (degrees,
    counter-clockwise); ``container_options`` go to the muxer (``{"movflags": "+faststart"}``).
    ``distinct`` pictures are made and cycled (default: one per frame), which is faster for large
    frames. The container follows the file name (``.mp4``, ``.webm``, ``.mov``, ``.mkv``).
    """
    import av

    out = Path(path)
    alpha = any(c.is_alpha for c in av.VideoFormat(pix_fmt).components)
    w, h = size
    count = frames if distinct is None else max(1, min(distinct, frames))
    pictures = [make_frame(w, h, i, seed, alpha=alpha) for i in range(count)]
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    container = av.open(str(tmp), "w", options=container_options or {})
    try:
        stream: Any = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pictures[i % count], format="rgba" if alpha else "rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    finally:
        container.close()
    tmp.replace(out)
    return out
