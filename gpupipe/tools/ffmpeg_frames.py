"""Real frames, encoded by ffmpeg itself, for the demo and the benchmarks.

Renderers get their frames from ffmpeg, so the figures that matter are measured on frames
ffmpeg wrote. :func:`extract_frames` renders a test video with one of ffmpeg's ``lavfi``
sources (``testsrc2`` or ``mandelbrot``) and extracts it the way a renderer would::

    ffmpeg -f lavfi -i testsrc2=size=3840x2160:rate=24 -frames:v N -f image2 frame_%05d.png
    ffmpeg ... -q:v 2 -f image2 frame_%05d.jpg                     # high-quality JPEG

plus an alpha variant for the PNG path (RGBA: a 35 %-opaque frame with an opaque centre
region, as a composited overlay layer would look). The ffmpeg binary is the one that
``imageio-ffmpeg`` ships (it installs from the package index, so a fresh machine has it),
else ``ffmpeg`` on ``PATH``. Extracted frames are cached per ``(source, size, kind, count,
fps)`` in a folder, so repeated benchmark runs reuse them.

Without ffmpeg, :func:`frames_or_synthetic` falls back to :mod:`gpupipe.samples`' synthetic
generator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from ..env import env
from ..errors import FfmpegFailed, FfmpegUnavailable

__all__ = [
    "FfmpegFailed",
    "FfmpegUnavailable",
    "FrameKind",
    "VideoSource",
    "default_frame_dir",
    "extract_frames",
    "ffmpeg_version",
    "find_ffmpeg",
    "frames_or_synthetic",
    "require_ffmpeg",
]

FrameKind = Literal["png", "jpeg", "png-alpha"]
VideoSource = Literal["testsrc2", "mandelbrot"]

KINDS: tuple[str, ...] = ("png", "jpeg", "png-alpha")
SOURCES: tuple[str, ...] = ("testsrc2", "mandelbrot")
_EXT = {"png": "png", "jpeg": "jpg", "png-alpha": "png"}
_MANIFEST = "manifest.json"
# Alpha variant: the whole frame at 35 % opacity, with an opaque centre region overlaid on it.
_ALPHA_GRAPH = (
    "[0:v]format=rgba,split[a][b];[a]colorchannelmixer=aa=0.35[bg];"
    "[b]crop=iw/2:ih/2[fg];[bg][fg]overlay=W/4:H/4:format=auto,format=rgba[out]"
)


def find_ffmpeg() -> str | None:
    """The path of an ffmpeg binary, or ``None``.

    Prefers the binary that ``imageio-ffmpeg`` ships (``imageio_ffmpeg.get_ffmpeg_exe()``,
    which also honours ``$IMAGEIO_FFMPEG_EXE``), then ``ffmpeg`` on ``PATH``.
    """
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    except Exception:  # noqa: BLE001 - not installed, or its binary is missing (RuntimeError)
        pass
    return shutil.which("ffmpeg")


def require_ffmpeg() -> str:
    """The path of an ffmpeg binary; raises :class:`FfmpegUnavailable` saying how to get one."""
    exe = find_ffmpeg()
    if exe is None:
        raise FfmpegUnavailable("no ffmpeg found: pip install imageio-ffmpeg (or 'gpupipe[bench]'), or put ffmpeg on PATH")
    return exe


def ffmpeg_version(exe: str | None = None) -> str | None:
    """ffmpeg's version line (e.g. ``"ffmpeg version 7.0.2 ..."``) without the copyright, or ``None`` if absent."""
    exe = exe or find_ffmpeg()
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (out.stdout or "").splitlines()[:1]
    if not first:
        return None
    return first[0].split(" Copyright")[0].strip()


def default_frame_dir() -> Path:
    """Where extracted frames are cached: ``$GPUPIPE_FFMPEG_FRAMES`` or a folder in the temp dir."""
    return Path(env("GPUPIPE_FFMPEG_FRAMES") or Path(tempfile.gettempdir()) / "gpupipe-ffmpeg-frames")


def _command(
    exe: str, width: int, height: int, count: int, kind: str, source: str, fps: int, pattern: str, grain: int = 0
) -> list[str]:
    graph = f"{source}=size={width}x{height}:rate={fps}"
    if grain:  # temporal + uniform noise: compresses like camera footage, not flat test graphics
        graph += f",noise=alls={grain}:allf=t+u"
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    cmd += ["-f", "lavfi", "-i", graph, "-frames:v", str(count)]
    if kind == "png":
        cmd += ["-pix_fmt", "rgb24"]
    elif kind == "jpeg":
        cmd += ["-pix_fmt", "yuvj420p", "-q:v", "2"]
    else:  # png-alpha
        cmd += ["-filter_complex", _ALPHA_GRAPH, "-map", "[out]", "-pix_fmt", "rgba"]
    cmd += ["-f", "image2", pattern]
    return cmd


def _cached(folder: Path, count: int) -> list[Path] | None:
    """The frames listed in ``folder``'s manifest if they are all there at the recorded sizes."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        files = manifest["files"]
        if len(files) != count:
            return None
        paths = []
        for name, size in files:
            p = folder / name
            if p.stat().st_size != size:
                return None
            paths.append(p)
        return paths
    except (OSError, ValueError, KeyError, TypeError):
        return None


def extract_frames(  # noqa: PLR0912 - one branch per option and per way ffmpeg can fail
    out_dir: str | os.PathLike[str] | None,
    width: int,
    height: int,
    count: int,
    kind: FrameKind = "png",
    source: VideoSource = "testsrc2",
    fps: int = 24,
    *,
    grain: int = 0,
    timeout: float = 600.0,
) -> list[Path]:
    """``count`` frames of an ffmpeg test video, as ffmpeg's ``image2`` muxer writes them.

    ``kind``: ``"png"`` (RGB PNG), ``"jpeg"`` (``-q:v 2``, 4:2:0) or ``"png-alpha"`` (RGBA PNG
    whose alpha is 35 % outside an opaque centre region). ``source``: ffmpeg's ``testsrc2`` or
    ``mandelbrot`` lavfi source. Frames land in ``out_dir/<source>-<W>x<H>-<kind>-<count>f-<fps>fps/``
    as ``frame_00001.png`` ...; a complete folder from an earlier call is reused. ``out_dir``
    ``None`` means :func:`default_frame_dir`. ``grain`` (0–100) adds ffmpeg's ``noise`` filter so that
    frames compress like camera footage (a 4K PNG of ``testsrc2`` is ~1 MB without it, ~14 MB with 12, a 4K JPEG 2.1 MB).

    Raises :class:`FfmpegUnavailable` without ffmpeg, :class:`FfmpegFailed` if ffmpeg fails,
    and ``ValueError`` for bad arguments (``width`` and ``height`` must be even: ``testsrc2``
    and 4:2:0 JPEG round odd sizes down).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
    for name, v in (("width", width), ("height", height), ("count", count), ("fps", fps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if width % 2 or height % 2:  # testsrc2 and 4:2:0 JPEG round odd sizes down
        raise ValueError(f"width and height must be even; got {width}x{height}")
    root = Path(out_dir) if out_dir is not None else default_frame_dir()
    if isinstance(grain, bool) or not isinstance(grain, int) or not 0 <= grain <= 100:
        raise ValueError(f"grain must be an integer from 0 to 100; got {grain!r}")
    folder = root / (f"{source}-{width}x{height}-{kind}-{count}f-{fps}fps" + (f"-grain{grain}" if grain else ""))
    hit = _cached(folder, count)
    if hit is not None:
        return hit

    exe = require_ffmpeg()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=root))
    try:
        pattern = str(work / f"frame_%05d.{_EXT[kind]}")
        cmd = _command(exe, width, height, count, kind, source, fps, pattern, grain)
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FfmpegFailed(f"ffmpeg did not finish within {timeout:g} s: {' '.join(cmd)}") from None
        names = sorted(p.name for p in work.glob(f"frame_*.{_EXT[kind]}"))
        if proc.returncode != 0 or len(names) != count:
            raise FfmpegFailed(
                f"ffmpeg exited {proc.returncode} with {len(names)} of {count} frames: {' '.join(cmd)}\n"
                f"{(proc.stderr or '').strip()[-2000:]}"
            )
        manifest = {
            "ffmpeg": ffmpeg_version(exe),
            "command": [*cmd[:-1], f"frame_%05d.{_EXT[kind]}"],
            "source": source,
            "size": [width, height],
            "kind": kind,
            "fps": fps,
            "grain": grain,
            "files": [[n, (work / n).stat().st_size] for n in names],
        }
        (work / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        if folder.exists():  # an incomplete or stale folder from an interrupted run
            shutil.rmtree(folder, ignore_errors=True)
        try:
            work.rename(folder)
        except OSError:  # another process won the race; use its copy if it is complete
            hit = _cached(folder, count)
            if hit is None:
                raise
            return hit
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    paths = _cached(folder, count)
    assert paths is not None
    return paths


def frames_or_synthetic(
    out_dir: str | os.PathLike[str] | None,
    width: int,
    height: int,
    count: int,
    kind: FrameKind = "png",
    source: VideoSource = "testsrc2",
    fps: int = 24,
    *,
    grain: int = 0,
    prefer_ffmpeg: bool = True,
) -> tuple[list[Path], str]:
    """``(paths, origin)``: ffmpeg frames from :func:`extract_frames`, or synthetic ones without ffmpeg.

    ``origin`` is the ffmpeg version line, or ``"synthetic (gpupipe.samples; no ffmpeg)"`` when
    the fallback generator (:func:`gpupipe.samples.make_frame`) wrote the frames. ``grain`` goes to
    :func:`extract_frames`; ``prefer_ffmpeg=False`` asks for the synthetic frames even where ffmpeg is.
    """
    if prefer_ffmpeg and find_ffmpeg() is not None:
        paths = extract_frames(out_dir, width, height, count, kind, source, fps, grain=grain)
        return paths, ffmpeg_version() or "ffmpeg"
    from ..samples import encode_frame, make_frame

    root = Path(out_dir) if out_dir is not None else default_frame_dir()
    folder = root / f"synthetic-{width}x{height}-{kind}-{count}f"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"frame_{i + 1:05d}.{_EXT[kind]}"
        if not p.exists():
            pixels = make_frame(width, height, i, seed=0, alpha=kind == "png-alpha")
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(encode_frame(pixels, "jpeg" if kind == "jpeg" else "png"))
            tmp.replace(p)
        paths.append(p)
    return paths, "synthetic (gpupipe.samples; no ffmpeg)"
