"""Video clips for the video benchmark, and the renderer's extraction of their frames to files.

:func:`make_clip` renders FFmpeg's ``testsrc2`` with grain (the ``noise`` filter, as the image
frames of :mod:`~gpupipe.tools.ffmpeg_frames` have it) and encodes it as H.264 (``libx264``) or
HEVC (``libx265``) at CRF 18, so that the grain survives as in camera footage (a 4K frame
extracts to a PNG of ~13 MB)::

    ffmpeg -f lavfi -i testsrc2=size=3840x2160:rate=30,noise=alls=12:allf=t+u -frames:v N \\
        -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p clip.mp4

:func:`extract_frames` is what renderers do today before they can inline a clip's frames: run
``ffmpeg`` over the clip and write every frame to a file, PNG at ``-compression_level 1`` (when
the source may carry alpha) or JPEG at ``-q:v 2`` (otherwise), through the renderer's filter
chain (:data:`RENDERER_FILTERS`; hyperframes 0.8, read from its source).

Both use the ``ffmpeg`` binary ``exe`` where there is one (:func:`~gpupipe.tools.ffmpeg_frames.find_ffmpeg`).
Without it (``exe=None``; the GPU machine has none) they use the same FFmpeg libraries through
PyAV, in this process: the same lavfi source and encoders for the clips, and for the extraction
the same decoder, RGB conversion and PNG or MJPEG encoder, frame-threaded as ``ffmpeg`` runs
them. :func:`tool_name` says which.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from ..errors import FfmpegFailed
from .ffmpeg_frames import ffmpeg_version

__all__ = [
    "CLIP_ENCODERS",
    "CLIP_FPS",
    "CLIP_GRAIN",
    "RENDERER_FILTERS",
    "ExtractKind",
    "can_encode",
    "extract_frames",
    "make_clip",
    "remove",
    "scratch_dir",
    "tool_name",
]

ExtractKind = Literal["png", "png-default", "jpeg"]
"""``png``: the renderer's PNG extraction (``-compression_level 1``); ``png-default``: the same at
FFmpeg's default PNG compression (what a plain ``ffmpeg -i clip frame_%05d.png`` does); ``jpeg``:
the renderer's JPEG extraction (``-q:v 2``)."""

CLIP_FPS = 30
CLIP_GRAIN = 12
"""The ``noise`` strength of the clips: the image frames' (``gpupipe.tools.bench.FFMPEG_GRAIN``)."""
CLIP_ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    "h264": ("libx264", {"preset": "veryfast", "crf": "18"}),
    "hevc": ("libx265", {"preset": "superfast", "crf": "18", "x265-params": "log-level=error"}),
}
"""Codec name -> (FFmpeg encoder, its options). CRF 18 keeps the grain (a 4K H.264 frame ~1.3 MB)."""

RENDERER_FILTERS = (
    "settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps={fps}:start_time=0:round=up,setparams=colorspace=bt709,"
    "setparams=color_primaries=bt709:color_trc=iec61966-2-1,scale=flags=neighbor+accurate_rnd,format=gbrp"
)
"""The renderer's filter chain, up to its RGB conversion; PNG then takes ``format=rgb24``, JPEG
``scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p`` (``-q:v 2``)."""
_TAILS = {
    "png": ",format=rgb24",
    "png-default": ",format=rgb24",
    "jpeg": ",scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p",
}
_BT709 = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}
"""ffmpeg's output options that tag a clip BT.709 (``make_clip(bt709=True)``)."""
_EXT = {"png": "png", "png-default": "png", "jpeg": "jpg"}
_OPTIONS = {"png": ["-compression_level", "1"], "png-default": [], "jpeg": ["-q:v", "2"]}


def can_encode(codec: str, exe: str | None) -> bool:
    """Whether ``codec``'s encoder (:data:`CLIP_ENCODERS`) is in the ``ffmpeg`` binary ``exe``, or in PyAV without one."""
    name = CLIP_ENCODERS[codec][0]
    if exe is not None:
        try:
            out = subprocess.run([exe, "-hide_banner", "-encoders"], check=False, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return any(line.split()[1:2] == [name] for line in out.stdout.splitlines())
    import av

    return name in av.codecs_available


def tool_name(exe: str | None) -> str:
    """What runs FFmpeg here: the ``ffmpeg`` binary's version line, or PyAV's and its FFmpeg's (in this process)."""
    if exe is not None:
        return ffmpeg_version(exe) or "ffmpeg"
    import av

    return f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}) in this process: no ffmpeg binary"


def make_clip(folder: Path, size: tuple[int, int], frames: int, codec: str, exe: str | None, *, bt709: bool = False) -> Path:
    """A grainy ``testsrc2`` clip of ``frames`` frames at ``size`` in ``codec`` (see the module
    docstring), written once under ``folder`` and reused. ``bt709``: the stream is tagged BT.709
    (matrix, primaries, transfer; limited range), as HD and UHD cameras and encoders tag theirs;
    otherwise it carries no colour tags."""
    w, h = size
    enc, opts = CLIP_ENCODERS[codec]
    tag = "-bt709" if bt709 else ""
    path = folder / f"testsrc2-grain{CLIP_GRAIN}-{w}x{h}-{codec}-{frames}f-crf{opts['crf']}{tag}.mp4"
    folder.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp.mp4")
    source = f"testsrc2=size={w}x{h}:rate={CLIP_FPS},noise=alls={CLIP_GRAIN}:allf=t+u"
    if exe is not None:
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i", source]
        cmd += ["-frames:v", str(frames), "-c:v", enc]
        for k, v in opts.items():
            cmd += [f"-{k}", v]
        cmd += ["-pix_fmt", "yuv420p"] + (["-tag:v", "hvc1"] if codec == "hevc" else [])
        for k, v in _BT709.items() if bt709 else ():
            cmd += [f"-{k}", v]
        _run([*cmd, str(tmp)])
    else:
        _pyav_clip(tmp, w, h, frames, enc, opts, bt709=bt709)
    tmp.replace(path)
    return path


def extract_frames(clip: Path, out_dir: Path, kind: ExtractKind, exe: str | None) -> list[Path]:
    """Every frame of ``clip`` written to ``out_dir`` (emptied first) as the renderer writes them:
    PNG (``-compression_level 1``) or JPEG (``-q:v 2``); see the module docstring."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    pattern = out_dir / f"frame_%05d.{_EXT[kind]}"
    if exe is not None:
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-noaccurate_seek", "-ss", "0", "-i", str(clip)]
        cmd += ["-vf", RENDERER_FILTERS.format(fps=CLIP_FPS) + _TAILS[kind]]
        cmd += _OPTIONS[kind]
        _run([*cmd, str(pattern)])
    else:
        _pyav_extract(clip, pattern, kind)
    paths = sorted(out_dir.glob(f"frame_*.{_EXT[kind]}"))
    if not paths:
        raise FfmpegFailed(f"no frames extracted from {clip}")
    return paths


def _run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise FfmpegFailed(f"ffmpeg did not finish: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise FfmpegFailed(f"ffmpeg exited {proc.returncode}: {' '.join(cmd)}\n{(proc.stderr or '').strip()[-2000:]}")


def _pyav_clip(path: Path, w: int, h: int, frames: int, enc: str, opts: dict[str, str], *, bt709: bool = False) -> None:
    """The clip of :func:`make_clip` through PyAV: the lavfi graph's frames, encoded by ``enc``."""
    import av
    from av.video.frame import PictureType, VideoFrame

    graph = av.filter.Graph()
    src = graph.add("testsrc2", f"size={w}x{h}:rate={CLIP_FPS}")
    noise = graph.add("noise", f"alls={CLIP_GRAIN}:allf=t+u")
    fmt = graph.add("format", "yuv420p")
    sink = graph.add("buffersink")
    src.link_to(noise)
    noise.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream(enc, rate=CLIP_FPS, options=dict(opts))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if enc == "libx265":
            stream.codec_tag = "hvc1"
        if bt709:
            ctx = stream.codec_context
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # AVCOL_SPC/PRI/TRC_BT709
            ctx.color_range = 1  # AVCOL_RANGE_MPEG (limited)
        for i in range(frames):
            frame = graph.pull()
            assert isinstance(frame, VideoFrame)  # the graph ends in a video buffersink
            frame.pts, frame.time_base = i, Fraction(1, CLIP_FPS)
            # lavfi's sources mark every frame I, which libx264 takes as a forced keyframe; the ffmpeg
            # command line clears the mark before encoding, so the encoder places keyframes itself
            frame.pict_type = PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _pyav_extract(clip: Path, pattern: Path, kind: ExtractKind) -> None:
    """The extraction of :func:`extract_frames` through PyAV: decode (threaded), RGB (PNG) or full-range
    4:2:0 (JPEG) conversion, and FFmpeg's PNG or MJPEG encoder, frame-threaded, one file per frame."""
    import av

    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        png = kind != "jpeg"
        enc: Any = av.CodecContext.create("png" if png else "mjpeg", "w")
        enc.width, enc.height = stream.codec_context.width, stream.codec_context.height
        enc.pix_fmt = "rgb24" if png else "yuvj420p"
        enc.time_base = Fraction(1, CLIP_FPS)
        enc.thread_type, enc.thread_count = "FRAME", 0
        if kind == "png":
            enc.options = {"compression_level": "1"}
        elif kind == "jpeg":
            enc.qscale = 2
        n = 0

        def write(packets: list[Any]) -> None:
            nonlocal n
            for p in packets:
                n += 1
                Path(str(pattern) % n).write_bytes(bytes(p))

        for i, frame in enumerate(c.decode(stream)):
            f = frame.reformat(format=enc.pix_fmt, src_colorspace="ITU709", dst_color_range="JPEG" if kind == "jpeg" else None)
            f.pts, f.time_base = i, enc.time_base
            write(enc.encode(f))
        write(enc.encode(None))


def scratch_dir(name: str) -> Path:
    """A folder for extracted frames under the temp dir (``$TMPDIR``), named ``name``."""
    return Path(tempfile.gettempdir()) / "gpupipe-bench" / "video" / name


def remove(folder: Path) -> None:
    """Delete extracted frames (a 4K clip's PNG files take ~0.8 GB per 60 frames)."""
    shutil.rmtree(folder, ignore_errors=True)
