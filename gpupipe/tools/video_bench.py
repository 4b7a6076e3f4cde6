"""The ``video`` section of ``gpupipe bench``: a clip's frames as URIs, straight from the clip or extracted first.

For each clip (1080p and 4K; H.264 and HEVC; :mod:`~gpupipe.tools.video_clips` makes them, grainy
``testsrc2``), in the same run, every path renders all N frames in order, as a renderer asks for
them: one pipeline ``get`` per frame with the clip's timeline declared (``pipe.schedule``, so
read-ahead works ahead), on a fresh cache each run.

- ``extract-png``: today's first half. ``ffmpeg`` writes every frame to a PNG file (the
  renderer's command for sources that may carry alpha, ``-compression_level 1``), then
  ``extract-png+passthrough`` inlines those files as they are, and ``extract-png+fitted`` has
  gpupipe transcode them to JPEG fitted to 1920×1080. The renderer's JPEG extraction (``-q:v 2``,
  for opaque sources) is measured too (``extract-jpeg+passthrough``; not in the quick run), and
  so is PNG at FFmpeg's default compression (``extract-png-default+passthrough``, a plain
  ``ffmpeg -i clip frame_%05d.png``; not in the quick run), for reference.
- ``video-cpu-fitted`` / ``video-cpu-source``: :class:`gpupipe.VideoFrame` on the CPU backend
  (PyAV decodes), JPEG fitted to 1920×1080 and at the clip's own size.
- ``video-gpu-fitted`` / ``video-gpu-source``: the same on the GPU backend (NVDEC decodes into
  device memory; resize, nvImageCodec JPEG and base64 on the device), where a GPU is usable.
- ``pyav-loop``: the in-order contract's yardstick (:func:`plain_pyav_loop`): a plain PyAV loop
  that decodes the clip in order, converts each frame to RGB, JPEG-encodes it with Pillow at the
  same quality and base64-encodes it with pybase64 into a data URI, at the clip's size. The
  contract: ``video-cpu-source`` within 1.5× its CPU-s per frame, with no seek.

Figures per path: frames/s (N over the wall time of the pass; for the extraction paths, the
extraction's plus the pass's) and CPU-seconds per frame (this process's user + sys time, all
threads, plus, for ``ffmpeg``, the child's from ``getrusage(RUSAGE_CHILDREN)``). The extraction
runs once per clip (a 4K clip's takes minutes on 2 cores); each pass over the files or the clip
runs ``repeats`` times after a 2-frame warm-up, medians reported. Each path's row also records
the decoder's seeks and decoded frames, and on the GPU whether NVDEC decoded (or why not).

The goals (:mod:`gpupipe.tools.goals`): the CPU path at least 5× fewer CPU-s per 4K frame than
``extract-png+passthrough``; on an H100/H200, 4K H.264 to fitted JPEG URIs at >= 300 frames/s, at
<= 5 CPU-ms per frame, and >= 20× the frames/s of ``extract-png+passthrough`` on the same machine;
every clip's ``video-cpu-source`` within 1.5× ``pyav-loop``'s CPU-s per frame, with no seek.
"""

from __future__ import annotations

import io
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import FrameCache
from ..encoder import FrameEncoder
from ..frames import VideoFrame
from ..pipeline import FramePipeline
from ..plan import OutputSpec
from ..vocabulary import MiB
from .video_clips import ExtractKind, can_encode, extract_frames, make_clip, remove, scratch_dir, tool_name

__all__ = [
    "CODECS",
    "FULL_FRAMES",
    "OUTPUTS",
    "QUICK_FRAMES",
    "VIDEO_BATCH",
    "VIDEO_SIZES",
    "VideoBenchSettings",
    "plain_pyav_loop",
    "run_video_bench",
]

VIDEO_SIZES: dict[str, tuple[int, int]] = {"1080p": (1920, 1080), "4k": (3840, 2160)}
CODECS = ("h264", "hevc")
FULL_FRAMES = 60
QUICK_FRAMES = 6
OUTPUTS: dict[str, OutputSpec] = {
    "fitted": OutputSpec("jpeg", (1920, 1080), 90),
    "source": OutputSpec("jpeg", None, 90),
}
"""The video source's outputs: JPEG fitted to 1920×1080 (the renderer's ``size``), and at the clip's size."""
VIDEO_BATCH = 16
"""The encoders' ``batch_size`` in the video section: read-ahead decodes and encodes this many frames at a time."""
_BUDGET = 2048 * MiB
_QUICK_BUDGET = 512 * MiB
_WARM_FRAMES = 2


@dataclass(frozen=True)
class VideoBenchSettings:
    """How a video section runs: ``frames`` per clip, timed ``repeats`` of each pass, the cache
    ``budget_bytes``, the ``ffmpeg`` binary (``None``: PyAV in this process), and whether the
    renderer's JPEG extraction is measured too."""

    frames: int
    repeats: int
    budget_bytes: int
    ffmpeg: str | None
    jpeg_extraction: bool

    @classmethod
    def for_run(cls, quick: bool, repeats: int | None, use_ffmpeg: bool = True) -> VideoBenchSettings:
        from .ffmpeg_frames import find_ffmpeg

        return cls(
            frames=QUICK_FRAMES if quick else FULL_FRAMES,
            repeats=repeats or (1 if quick else 2),
            budget_bytes=_QUICK_BUDGET if quick else _BUDGET,
            ffmpeg=find_ffmpeg() if use_ffmpeg else None,
            jpeg_extraction=not quick,
        )


@dataclass(frozen=True)
class _Pass:
    wall: float
    cpu: float


def _timed(fn: Callable[[], Any]) -> _Pass:
    """Wall and CPU seconds of ``fn``: this process's (all threads) plus its waited-for children's."""
    c0 = time.process_time()
    k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (k1.ru_utime - k0.ru_utime) + (k1.ru_stime - k0.ru_stime)
    return _Pass(wall, time.process_time() - c0 + children)


def plain_pyav_loop(clip: Path, quality: int, frames: int | None = None) -> int:
    """The first ``frames`` (``None``: all) of ``clip`` as JPEG data URIs the plain way, in order: PyAV
    decodes (FFmpeg's default threading), ``to_ndarray`` converts to RGB, Pillow encodes at
    ``quality``, pybase64 encodes. Returns how many URIs it built (each dropped at once)."""
    import av
    import pybase64
    from PIL import Image

    n = 0
    with av.open(str(clip)) as c:
        for frame in c.decode(video=0):
            if frames is not None and n >= frames:
                break
            buf = io.BytesIO()
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(buf, "JPEG", quality=quality)
            uri = "data:image/jpeg;base64," + pybase64.b64encode(buf.getbuffer()).decode("ascii")
            n += bool(uri)
    return n


def _plain_passes(clip: Path, n: int, st: VideoBenchSettings) -> dict[str, Any]:
    """``repeats`` timed runs of :func:`plain_pyav_loop` over ``clip``'s first ``n`` frames; medians."""
    quality = OUTPUTS["source"].quality
    plain_pyav_loop(clip, quality, _WARM_FRAMES)
    return _medians([_timed(lambda: plain_pyav_loop(clip, quality, n)) for _ in range(st.repeats)], n)


def _medians(runs: list[_Pass], n: int) -> dict[str, Any]:
    """Frames/s and CPU-s per frame of ``n`` frames from the median wall and CPU time of ``runs``, and the runs."""
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    return {"fps": n / wall, "cpu_s_per_frame": cpu / n, "wall_s": [r.wall for r in runs], "cpu_s": [r.cpu for r in runs]}


def _render(encoder: FrameEncoder, sources: Sequence[Any], spec: OutputSpec, budget: int) -> None:
    """Every source in order through a fresh pipeline and cache, its order declared as a schedule."""
    cache: Any = FrameCache(len(sources) + 16, budget)
    pipe = FramePipeline(encoder, cache, output=spec.format, size=spec.size, quality=spec.quality)
    with pipe.schedule(sources):
        for s in sources:
            pipe.get(s)


def _passes(encoder: FrameEncoder, sources: Sequence[Any], spec: OutputSpec, st: VideoBenchSettings) -> dict[str, Any]:
    """``repeats`` timed renders of ``sources`` after a warm-up render of their first frames; medians."""
    encoder.videos.release()
    _render(encoder, sources[:_WARM_FRAMES], spec, st.budget_bytes)
    before = encoder.videos.stats()
    runs = []
    for _ in range(st.repeats):
        encoder.videos.release()  # each render opens its decoder, as a fresh render does
        runs.append(_timed(lambda: _render(encoder, sources, spec, st.budget_bytes)))
    after = encoder.videos.stats()
    return {
        **_medians(runs, len(sources)),
        "seeks": (after.seeks - before.seeks) / st.repeats,
        "decoded": (after.decoded - before.decoded) / st.repeats,
    }


def _after_extraction(extract: _Pass, step: dict[str, Any], n: int) -> dict[str, Any]:
    """An extraction path's figures: the extraction once, then the median pass over its files."""
    wall = extract.wall + n / step["fps"]
    return {
        "fps": n / wall,
        "cpu_s_per_frame": extract.cpu / n + step["cpu_s_per_frame"],
        "extract_s": extract.wall,
        "extract_cpu_s_per_frame": extract.cpu / n,
        "step_fps": step["fps"],
        "step_cpu_s_per_frame": step["cpu_s_per_frame"],
    }


def _gpu_decoder(before: dict[str, int], after: dict[str, int]) -> str:
    """What decoded on the GPU backend between two counter snapshots: NVDEC, or the CPU and why."""
    opened = after.get("nvdec_opened", 0) - before.get("nvdec_opened", 0)
    fell = {
        k.removeprefix("nvdec_fallback_"): v - before.get(k, 0)
        for k, v in after.items()
        if k.startswith("nvdec_fallback_") and v > before.get(k, 0)
    }
    if opened and not fell:
        return "nvdec"
    if fell:
        return "pyav (NVDEC fallback: " + ", ".join(f"{k} x{v}" for k, v in sorted(fell.items())) + ")"
    return "unknown (no decoder opened)"


def _clip_row(
    res: str,
    codec: str,
    clip: Path,
    encoders: dict[str, FrameEncoder],
    st: VideoBenchSettings,
    say: Callable[[str], None],
) -> dict[str, Any]:
    n = st.frames
    row: dict[str, Any] = {"resolution": res, "codec": codec, "frames": n, "clip_mb": clip.stat().st_size / 1e6}
    paths: dict[str, Any] = {}
    cpu = encoders["cpu"]
    kinds: tuple[ExtractKind, ...] = ("png", "jpeg", "png-default") if st.jpeg_extraction else ("png",)
    for kind in kinds:
        folder = scratch_dir(f"{clip.stem}-{kind}")
        try:
            files: list[Path] = []

            def extract(kind: ExtractKind = kind, folder: Path = folder, files: list[Path] = files) -> None:
                files[:] = extract_frames(clip, folder, kind, st.ffmpeg)

            ex = _timed(extract)
            if len(files) != n:
                raise RuntimeError(f"the extraction wrote {len(files)} frames of {n}")
            row[f"{kind}_mb"] = sum(p.stat().st_size for p in files) / len(files) / 1e6
            paths[f"extract-{kind}"] = {"fps": n / ex.wall, "cpu_s_per_frame": ex.cpu / n}
            paths[f"extract-{kind}+passthrough"] = _after_extraction(ex, _passes(cpu, files, OutputSpec("passthrough"), st), n)
            if kind == "png":
                paths["extract-png+fitted"] = _after_extraction(ex, _passes(cpu, files, OUTPUTS["fitted"], st), n)
        finally:
            remove(folder)
    sources = [VideoFrame(clip, index=i) for i in range(n)]
    paths["pyav-loop"] = _plain_passes(clip, n, st)
    for backend in ("cpu", "gpu"):
        if backend not in encoders:
            continue
        enc = encoders[backend]
        for out, spec in OUTPUTS.items():
            before = enc.counters()
            m = _passes(enc, sources, spec, st)
            if backend == "gpu":
                after = enc.counters()
                m["decoder"] = _gpu_decoder(before, after)
                m["device_jpeg_frames"] = after.get("video_device_jpeg", 0) - before.get("video_device_jpeg", 0)
            paths[f"video-{backend}-{out}"] = m
    row["paths"] = paths
    base = paths["extract-png+passthrough"]
    for name, m in paths.items():
        if name.startswith("video-"):
            m["cpu_s_vs_extract_png"] = base["cpu_s_per_frame"] / m["cpu_s_per_frame"] if m["cpu_s_per_frame"] > 0 else None
            m["fps_vs_extract_png"] = m["fps"] / base["fps"]
    plain, src = paths["pyav-loop"], paths["video-cpu-source"]
    src["cpu_vs_pyav_loop"] = src["cpu_s_per_frame"] / plain["cpu_s_per_frame"] if plain["cpu_s_per_frame"] > 0 else None
    src["wall_vs_pyav_loop"] = plain["fps"] / src["fps"]
    say(
        f"video {res:5} {codec:4} "
        + "  ".join(
            f"{k} {v['fps']:.1f} f/s {v['cpu_s_per_frame'] * 1e3:.0f} CPU-ms/f"
            for k, v in paths.items()
            if k in ("extract-png+passthrough", "video-cpu-fitted", "video-gpu-fitted")
        )
    )
    return row


def run_video_bench(
    encoders: dict[str, FrameEncoder],
    settings: VideoBenchSettings,
    work: Path,
    *,
    gpu_reason: str,
    gpu_device: str | None = None,
    say: Callable[[str], None] = print,
    out_of_time: Callable[[], bool] = lambda: False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The video section's results (see the module docstring) for ``encoders`` (``cpu``, and ``gpu``
    where usable; ``gpu_reason`` says why not, ``gpu_device`` names the device). Clips are made once
    under ``work/clips``. ``on_row`` is called with the section after each clip's row (to save it)."""
    st = settings
    section: dict[str, Any] = {
        "frames": st.frames,
        "repeats": st.repeats,
        "budget_mib": st.budget_bytes / MiB,
        "outputs": {k: {"format": v.format, "size": v.size, "quality": v.quality} for k, v in OUTPUTS.items()},
        "backends": [b for b in ("cpu", "gpu") if b in encoders],
        "gpu": {"ran": "gpu" in encoders, "reason": gpu_reason, "device": gpu_device},
        "ffmpeg": tool_name(st.ffmpeg),
        "rows": [],
        "notes": [],
    }
    clips_dir = work / "clips"
    codecs = [c for c in CODECS if can_encode(c, st.ffmpeg)]  # each asks the ffmpeg binary once
    for codec in CODECS:
        if codec not in codecs:
            section["notes"].append(
                f"{codec}: no encoder ({'the ffmpeg binary' if st.ffmpeg else 'PyAV'} lacks it): rows skipped"
            )
    for res, size in VIDEO_SIZES.items():
        for codec in codecs:
            if out_of_time():
                section["stopped_early"] = f"time limit reached before the video row {res} {codec}"
                say(section["stopped_early"])
                return section
            clip = make_clip(clips_dir, size, st.frames, codec, st.ffmpeg)
            section["rows"].append(_clip_row(res, codec, clip, encoders, st, say))
            if on_row is not None:
                on_row(section)
    return section
