"""A clip's frames written as image files, selected as FFmpeg's ``fps`` filter selects them: :func:`extract_clip`.

It stands in for the renderer's extraction command (``ffmpeg -noaccurate_seek -ss S -i CLIP -t D
-vf "...fps=N:start_time=T:round=up,[setparams=colorspace=M,]..." [-frames:v K] -start_number B
-q:v 2 frame_%05d.jpg``): the same files, names and count, each showing the same source frame
(:func:`~gpupipe.fps_select.select_frames`; hyperframes passes ``T = 0``, so output ``k`` is the
frame shown at ``S + k/N``), in the same colours. Frames are decoded in display order by one
decoder of the encoder's pool (PyAV, or NVDEC on the GPU backend), fitted, encoded a bounded
batch at a time, and written under the request's pattern.

**Colour and encoders.** The YUV->RGB matrix is the stream's, or forced (``colour_matrix``, as
``setparams=colorspace=`` forces it); the range is the stream's. Frames decoded on the host are
converted and encoded as hyperframes' ffmpeg chain does it (:mod:`gpupipe.cpu.ffmpeg_image`):
JPEG from RGB made with ``scale=flags=neighbor+accurate_rnd,format=gbrp``, then full-range BT.601
4:2:0 point-sampled and FFmpeg's own ``mjpeg`` encoder at ``-q:v`` (the same pixels as the
``ffmpeg`` binary's files, sizes within 0.1 %); PNG from the default conversion with FFmpeg's
``png`` encoder (the same pixels). Without ``jpeg_qscale`` a JPEG is Pillow's at
``jpeg_quality``. Frames decoded on the GPU (NVDEC) are encoded there (nvJPEG/nvImageCodec,
``jpeg_qscale`` mapped by :func:`jpeg_quality_for`); NVDEC cannot force a matrix, so a forced
one sends the clip to the CPU decoder. **Unverified on a GPU**: its parity with FFmpeg.

**Atomic.** With ``atomic=True`` the files are written into a partial sibling folder
(``.NAME.partial-XXXX``), which is renamed onto ``out_dir`` once complete; a failure removes it
and leaves no ``out_dir``. With ``atomic=False`` they go into the existing ``out_dir`` one by one,
each written under a temporary name and renamed, so a file is complete when it appears (a
failure leaves the files written before it).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import pybase64

from .config import Config
from .cpu.ffmpeg_image import encoder_for_thread
from .encoder import FrameEncoder
from .errors import BudgetTimeout, ExtractError, FrameError, NothingToExtract
from .fps_select import select_frames
from .frames import Frame, VideoFrame
from .frames.clip import Clip, probe_clip
from .video.decoder import COLOUR_MATRICES, ColourMatrix, Conversion
from .vocabulary import QUALITY_MAX, QUALITY_MIN

__all__ = ["QSCALE_QUALITY", "ExtractRequest", "ExtractResult", "extract_clip", "jpeg_quality_for", "select_frames"]

QSCALE_QUALITY: dict[int, int] = {1: 92, 2: 92, 3: 83, 4: 73, 5: 68, 6: 64, 8: 59, 10: 53, 12: 48, 15: 35, 20: 26, 25: 23, 31: 20}
"""FFmpeg's MJPEG ``-q:v`` to the Pillow (libjpeg) quality of the same fidelity (see :func:`jpeg_quality_for`)."""

_PATTERN = re.compile(r"%(\d*)d")
_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


@dataclass(frozen=True)
class ExtractRequest:
    """What to extract: ``clip``'s frames into ``out_dir``, named by ``pattern``.

    ``pattern``: a file name (no folder) with exactly one printf ``%d`` or ``%0Nd`` (``%%`` for a
    literal ``%``); its extension (``.jpg``/``.jpeg``/``.png``) picks the format. ``fps``: the
    output rate (FFmpeg's ``fps=N:round=up``); ``None`` writes every source frame from ``start``.
    ``start``: seconds, FFmpeg's ``-noaccurate_seek -ss S`` before ``-i``. ``fps_start``: the fps
    filter's ``start_time`` (seconds of the timeline ``-ss`` rebased; ``None`` means ``start``).
    With the default 0 (hyperframes' command) output ``k`` is the frame shown at ``start + k/fps``;
    ``fps_start=start`` gives ``2·start + k/fps`` (see :mod:`gpupipe.fps_select`). ``duration``:
    FFmpeg's ``-t D`` (an output duration). ``max_frames``: FFmpeg's ``-frames:v`` (at most that
    many files). ``size``: fit inside ``(width, height)``, aspect kept, never enlarged.
    ``colour_matrix``: the YUV->RGB matrix, ``stream`` (its tag) or forced ``bt709``/``bt601``
    (FFmpeg's ``setparams=colorspace=bt709``/``smpte170m``). ``jpeg_qscale``: FFmpeg's ``-q:v``
    (1-31; FFmpeg's own encoder on the CPU, see the module docstring); else ``jpeg_quality``
    (1-100, Pillow). ``png_compression_level``: PNG's zlib level (``None``: the config's
    ``output.png_compress_level``). ``start_number``: the first file's number (FFmpeg's
    ``-start_number``). ``atomic``: see the module docstring; ``True`` needs ``out_dir`` not to
    exist, ``False`` needs it to be an existing folder.
    """

    clip: Path
    out_dir: Path
    pattern: str = "frame_%05d.jpg"
    fps: Fraction | None = None
    start: float = 0.0
    duration: float | None = None
    size: tuple[int, int] | None = None
    jpeg_qscale: int | None = None
    jpeg_quality: int = 95
    start_number: int = 1
    atomic: bool = True
    fps_start: float | None = 0.0
    max_frames: int | None = None
    colour_matrix: ColourMatrix = "stream"
    png_compression_level: int | None = None


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract_clip` wrote: ``paths`` in output order, the display-order ``source_frames``
    each shows, the ``backend`` (``cpu``/``gpu``) and ``decoder`` (``pyav``, ``nvdec``, ``pyav
    (<why NVDEC did not>)``, or ``reused`` when the pool's decoder for the clip was open already),
    and the wall ``seconds`` taken."""

    paths: tuple[Path, ...]
    source_frames: tuple[int, ...]
    backend: str
    decoder: str
    seconds: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: paths as strings, and ``count``."""
        return {
            "count": len(self.paths),
            "paths": [str(p) for p in self.paths],
            "source_frames": list(self.source_frames),
            "backend": self.backend,
            "decoder": self.decoder,
            "seconds": self.seconds,
        }


def jpeg_quality_for(qscale: int) -> int:
    """The Pillow JPEG quality for FFmpeg's MJPEG ``-q:v qscale`` (1-31; ``ValueError`` outside),
    from :data:`QSCALE_QUALITY`, linear between its entries.

    Measured on a grainy 1920x1080 frame (:func:`gpupipe.samples.make_frame`, sensor noise
    sigma 5), FFmpeg 9.0.2 (imageio-ffmpeg) with hyperframes' conversion to full-range BT.601
    4:2:0 against Pillow 4:2:0 from RGB, matched on luma PSNR against the source (the chroma
    conversion caps full-colour PSNR near 33.7 dB for both, so it cannot tell qualities apart)::

        -q:v   FFmpeg bytes  luma dB   Pillow q  bytes    luma dB
        1, 2       338,609   40.57         92    441,605   40.55   (mjpeg clamps 1 to its qmin, 2)
        3          163,420   38.79         83    227,862   38.84
        4           89,461   38.03         73    145,191   38.04
        5           64,280   37.73         68    121,713   37.76
        8           44,510   37.31         59     91,587   37.31
        10          41,377   37.08         53     79,172   37.06
        15          36,403   36.50         35     55,522   36.50
        20          33,094   35.93         26     50,803   35.99
        31          29,769   35.11         20     47,864   35.21

    At equal fidelity Pillow's files are 30-60 % larger (libjpeg's default tables against
    FFmpeg's per-frame rate control), which costs disk and base64 bytes, not picture."""
    if isinstance(qscale, bool) or not isinstance(qscale, int) or not 1 <= qscale <= 31:
        raise ValueError(f"jpeg_qscale must be an int from 1 to 31; got {qscale!r}")
    if qscale in QSCALE_QUALITY:
        return QSCALE_QUALITY[qscale]
    lo = max(k for k in QSCALE_QUALITY if k < qscale)
    hi = min(k for k in QSCALE_QUALITY if k > qscale)
    a, b = QSCALE_QUALITY[lo], QSCALE_QUALITY[hi]
    return round(a + (b - a) * (qscale - lo) / (hi - lo))


def output_name(pattern: str, number: int) -> str:
    """``pattern`` with its ``%d``/``%Nd``/``%0Nd`` replaced by ``number`` zero-padded to ``N`` digits
    (and ``%%`` by ``%``), as FFmpeg's ``av_get_frame_filename`` names image files."""
    parts = pattern.split("%%")
    for i, part in enumerate(parts):
        parts[i] = _PATTERN.sub(lambda m: f"{number:0{int(m.group(1) or 0)}d}", part)
    return "%".join(parts)


def _check_pattern(label: str, pattern: str) -> str:
    """The output format (``jpeg``/``png``) ``pattern`` names; :class:`ExtractError` for a bad one."""
    if not pattern or "/" in pattern or os.sep in pattern or pattern in (".", ".."):
        raise ExtractError(label, f"bad pattern {pattern!r}: a file name without a folder")
    rest = pattern.replace("%%", "")
    if len(_PATTERN.findall(rest)) != 1 or rest.count("%") != 1:
        raise ExtractError(label, f"bad pattern {pattern!r}: it needs exactly one %d or %0Nd (and %% for a literal %)")
    fmt = _FORMATS.get(os.path.splitext(pattern)[1].lower())
    if fmt is None:
        raise ExtractError(label, f"bad pattern {pattern!r}: its extension must be .jpg, .jpeg or .png")
    return fmt


def _check_request(req: ExtractRequest, label: str) -> tuple[str, int]:
    """``(format, jpeg quality)`` for a valid request; :class:`ExtractError` naming what is wrong."""
    fmt = _check_pattern(label, req.pattern)
    if req.fps is not None and not (req.fps > 0 and math.isfinite(req.fps)):
        raise ExtractError(label, f"fps must be positive; got {req.fps}")
    if not math.isfinite(req.start) or req.start < 0:
        raise ExtractError(label, f"start must be 0 or more seconds; got {req.start!r}")
    if req.duration is not None and (not math.isfinite(req.duration) or req.duration <= 0):
        raise ExtractError(label, f"duration must be a positive number of seconds; got {req.duration!r}")
    if req.size is not None and (len(req.size) != 2 or min(req.size) < 1):
        raise ExtractError(label, f"size must be two positive integers; got {req.size!r}")
    if req.start_number < 0:
        raise ExtractError(label, f"start_number must be 0 or more; got {req.start_number}")
    if req.fps_start is not None and (not math.isfinite(req.fps_start) or req.fps_start < 0):
        raise ExtractError(label, f"fps_start must be 0 or more seconds; got {req.fps_start!r}")
    if req.max_frames is not None and req.max_frames < 1:
        raise ExtractError(label, f"max_frames must be 1 or more; got {req.max_frames}")
    if req.colour_matrix not in COLOUR_MATRICES:
        raise ExtractError(label, f"colour_matrix must be one of {', '.join(COLOUR_MATRICES)}; got {req.colour_matrix!r}")
    if req.png_compression_level is not None and not 0 <= req.png_compression_level <= 9:
        raise ExtractError(label, f"png_compression_level must be 0 to 9; got {req.png_compression_level}")
    try:
        quality = jpeg_quality_for(req.jpeg_qscale) if req.jpeg_qscale is not None else req.jpeg_quality
    except ValueError as e:
        raise ExtractError(label, str(e)) from None
    if not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise ExtractError(label, f"jpeg_quality must be from {QUALITY_MIN} to {QUALITY_MAX}; got {quality}")
    return fmt, quality


def _container_start(clip: Clip) -> Fraction:
    """The container's start time in seconds (FFmpeg rebases ``-ss`` on it)."""
    import av

    with av.open(clip.path, metadata_errors="ignore") as container:
        start = container.start_time
    return Fraction(start or 0, 1_000_000)


def _selection(req: ExtractRequest, clip: Clip, label: str) -> list[int]:
    tb = clip.time_base
    selected = select_frames(
        [p * tb for p in clip.pts],
        req.fps,
        req.start,
        req.duration,
        end=clip.end_pts * tb,
        time_base=tb,
        origin=_container_start(clip),
        fps_start=req.fps_start,
        max_frames=req.max_frames,
    )
    if not selected:
        raise NothingToExtract(label, f"no frame selected: the clip lasts {clip.duration:.6g} s (start {req.start:g} s)")
    return selected


def _runs(selected: list[int], start_number: int) -> Iterator[tuple[int, list[int]]]:
    """``(source index, output numbers)`` for each run of outputs showing the same frame, in order."""
    i = 0
    while i < len(selected):
        j = i
        while j < len(selected) and selected[j] == selected[i]:
            j += 1
        yield selected[i], [start_number + k for k in range(i, j)]
        i = j


class WorkBudget(Protocol):
    """Where an extraction's work in flight is counted: a byte budget's reservation
    (:meth:`FrameCache.reserve <gpupipe.cache.FrameCache.reserve>`), held while one batch is decoded,
    encoded and written; it may wait for room and raise :class:`~gpupipe.errors.BudgetTimeout`.
    ``max_bytes`` is its size (batches are made to fit it)."""

    max_bytes: int

    def reserve(self, nbytes: int, *, label: str = ...) -> AbstractContextManager[int]: ...


@dataclass(frozen=True)
class _Batching:
    frames: int  # distinct frames per batch
    per_frame: int  # bytes one frame's work holds at most (the encode's hold plus its encoded bytes)
    decoder: int  # bytes the clip's open decoder holds


def _batching(
    encoder: FrameEncoder, clip_path: Path, index: int, fmt: str, size: tuple[int, int] | None, budget_bytes: int
) -> _Batching:
    """Frames per batch (the encoder's batch size, fewer when that many would not fit ``budget_bytes``)
    and what one frame's work and the open decoder hold."""
    spec = encoder.spec(fmt, size)
    est, header = encoder.footprint(VideoFrame(clip_path, index=index), spec)
    host = est[0] if isinstance(est, tuple) else est
    per_frame = max(1, host + header.source_bytes)
    batch = max(encoder.config.batch_size, encoder.config.workers or os.cpu_count() or 1)
    room = max(1, budget_bytes - header.scratch_bytes)
    return _Batching(max(1, min(batch, room // per_frame)), per_frame, header.scratch_bytes)


def _write(path: Path, data: bytes, atomic_dir: bool) -> None:
    if atomic_dir:
        path.write_bytes(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _decoder_name(encoder: FrameEncoder, before: dict[str, int]) -> str:
    if encoder.backend != "gpu":
        return "pyav"
    after = encoder.counters()
    if after.get("nvdec_opened", 0) > before.get("nvdec_opened", 0):
        return "nvdec"
    for k, v in after.items():
        if k.startswith("nvdec_fallback_") and v > before.get(k, 0):
            return f"pyav ({k.removeprefix('nvdec_fallback_')})"
    return "reused"


def _prepare_dir(req: ExtractRequest, label: str) -> Path:
    """The folder the files are written into (a fresh partial folder when atomic)."""
    out = Path(req.out_dir)
    if req.atomic:
        if os.path.lexists(out):
            raise ExtractError(label, f"output folder {out} exists already")
        if not out.parent.is_dir():
            raise ExtractError(label, f"output folder's parent {out.parent} is not a folder")
        try:
            return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        except OSError as e:
            raise ExtractError(label, f"cannot create a folder in {out.parent}: {e.strerror or e}") from None
    if not out.is_dir():
        raise ExtractError(label, f"output folder {out} does not exist (atomic=False writes into an existing folder)")
    return out


def extract_clip(
    request: ExtractRequest,
    *,
    encoder: FrameEncoder | None = None,
    config: Config | None = None,
    budget: WorkBudget | None = None,
) -> ExtractResult:
    """Write the request's frames; returns what was written (see :class:`ExtractResult`).

    Decodes in display order (one decoder, no re-seek), fits, encodes and writes a batch at a time:
    at most the encoder's ``batch_size`` (or worker count) distinct frames, fewer when their
    footprint would pass the cache's byte budget. A frame shown by several outputs is encoded once.
    ``encoder`` (left open) or a new one from ``config`` (closed before returning).

    ``budget`` (``gpupipe serve`` passes its cache): each batch's work, and the state of the decoder
    the extraction opens, is reserved in it while the batch runs, so that the extraction shares the
    byte budget with the cache and the requests in flight; that decoder is closed at the end (its
    state counts nowhere once the reservation is gone). Without it nothing is counted.

    Raises :class:`~gpupipe.errors.ExtractError` naming the clip: a bad pattern or option, an
    output folder that exists (atomic) or is missing (non-atomic), a clip that cannot be probed or
    decoded (missing, not a video, truncated before a selected frame), a write that fails;
    :class:`~gpupipe.errors.NothingToExtract` when no frame is selected (nothing is created);
    :class:`~gpupipe.errors.BudgetTimeout` when ``budget`` found no room in time (nothing is left).
    """
    t0 = time.perf_counter()
    label = os.fspath(request.clip)
    fmt, quality = _check_request(request, label)
    try:
        clip = probe_clip(request.clip, label)
    except FrameError as e:
        raise ExtractError(label, e.reason) from None
    selected = _selection(request, clip, label)
    own = encoder is None
    enc = encoder if encoder is not None else FrameEncoder(config)
    try:
        before = enc.counters()
        paths = _extract(request, enc, selected, fmt, quality, label, budget)
        decoder = _decoder_name(enc, before)
        return ExtractResult(tuple(paths), tuple(selected), enc.backend, decoder, time.perf_counter() - t0)
    finally:
        if own:
            enc.close()


def _conversion(req: ExtractRequest, enc: FrameEncoder, fmt: str) -> Conversion:
    """How the frames are converted to RGB: the request's matrix; the chroma point-sampled as
    hyperframes' JPEG chain does (``scale=flags=neighbor+accurate_rnd``) where FFmpeg's encoder will
    write them (the CPU backend, ``jpeg_qscale``). NVDEC honours the default conversion only."""
    point = fmt == "jpeg" and req.jpeg_qscale is not None and enc.backend == "cpu"
    return Conversion(req.colour_matrix, point_chroma=point)


def _encode(req: ExtractRequest, enc: FrameEncoder, frames: list[Frame | FrameError], fmt: str, quality: int) -> list[Any]:
    """Encoded bytes (or the frame's error) for each frame read: FFmpeg's encoders for host pixels
    where they match the command (PNG, or JPEG at ``jpeg_qscale``), else the backend's encoder."""
    ffmpeg = fmt == "png" or req.jpeg_qscale is not None
    level = req.png_compression_level if req.png_compression_level is not None else enc.config.output.png_compress_level
    out: list[Any] = list(frames)
    rest: list[int] = []
    for i, fr in enumerate(frames):
        if isinstance(fr, FrameError):
            continue
        if ffmpeg and fr.pixels is not None and not fr.pixels.on_device:
            out[i] = encoder_for_thread("jpeg" if fmt == "jpeg" else "png", req.jpeg_qscale or 2, level).encode(fr.pixels.array)
        else:
            rest.append(i)
    if rest:
        spec = enc.spec(fmt, req.size, quality)
        for i, uri in zip(rest, enc.encode_jobs([frames[i] for i in rest], spec)):
            out[i] = uri if isinstance(uri, FrameError) else pybase64.b64decode(uri[uri.index(",") + 1 :], validate=False)
    return out


def _extract(
    req: ExtractRequest,
    enc: FrameEncoder,
    selected: list[int],
    fmt: str,
    quality: int,
    label: str,
    budget: WorkBudget | None,
) -> list[Path]:
    work = _prepare_dir(req, label)
    final = Path(req.out_dir)
    written: list[Path] = []
    scope = enc.videos.scope(None, fit=req.size, conversion=_conversion(req, enc, fmt))
    try:
        runs = list(_runs(selected, req.start_number))
        plan = _batching(
            enc, req.clip, selected[0], fmt, req.size, enc.config.cache.max_bytes if budget is None else budget.max_bytes
        )
        for at in range(0, len(runs), plan.frames):
            part = runs[at : at + plan.frames]
            held = nullcontext(0) if budget is None else budget.reserve(plan.decoder + plan.per_frame * len(part), label=label)
            with held:
                frames = enc.read_many([VideoFrame(req.clip, index=i) for i, _ in part], clips=scope)
                results = _encode(req, enc, frames, fmt, quality)
                del frames
                written += _write_batch(req, part, results, work, label)
                del results
                if budget is not None and at + plan.frames >= len(runs):
                    scope.close_opened()  # inside the last reservation: the decoder's state is never uncounted
        if req.atomic:
            if os.path.lexists(final):
                raise ExtractError(label, f"output folder {final} appeared while extracting")
            os.rename(work, final)
    except BudgetTimeout:  # the budget stayed full: retryable, not the request's fault
        _discard(work, req.atomic)
        raise
    except FrameError as e:
        _discard(work, req.atomic)
        raise ExtractError(label, e.reason) from None
    except OSError as e:
        _discard(work, req.atomic)
        raise ExtractError(label, f"cannot write the frames into {final}: {e.strerror or e}") from None
    except BaseException:
        _discard(work, req.atomic)
        raise
    finally:
        if budget is not None:
            scope.close_opened()
    return written


def _write_batch(
    req: ExtractRequest, part: list[tuple[int, list[int]]], results: list[Any], work: Path, label: str
) -> list[Path]:
    """Write one batch's encoded frames (each under every output number that shows it); their final paths."""
    written: list[Path] = []
    for (index, numbers), data in zip(part, results):
        if isinstance(data, FrameError):
            raise ExtractError(label, f"frame {index}: {data.reason}")
        for n in numbers:
            name = output_name(req.pattern, n)
            _write(work / name, data, req.atomic)
            written.append(Path(req.out_dir) / name)
    return written


def _discard(work: Path, atomic: bool) -> None:
    if atomic:
        shutil.rmtree(work, ignore_errors=True)
