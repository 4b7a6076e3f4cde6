"""What a video clip holds, read from its container without decoding it whole: :class:`Clip` and :func:`probe_clip`.

A clip's frames are numbered in display order from 0. The probe demuxes every packet of the
clip's first video stream (no decoding) to list their timestamps in display order and which
frames are keyframes, and decodes the first frame only, for its real size, pixel format (alpha,
bit depth) and rotation. With PyAV (FFmpeg), whose import waits until a clip is probed.

Times follow the browser: ``t`` seconds from the stream's first frame show the last frame whose
timestamp is at most ``t`` (:meth:`Clip.index_at`). Both are compared in whole microseconds, as
Chromium's media pipeline compares them (it rescales timestamps to microseconds), so that
``t = i / fps`` computed in floating point lands on frame ``i`` and not on the one before.

Probes are remembered per resolved path and :class:`~gpupipe.frames.keys.FileIdentity` (the
last :data:`PROBES_KEPT`), so a clip changed on disk is probed again. Errors are the frame's
:class:`~gpupipe.errors.FrameError`, named by the caller's label; they never quote the file.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import FrameDecodeError, FrameError, FrameNotFound, FrameNotRegularFile, FrameOutOfRange, codec_reason
from .files import file_kind
from .keys import FileIdentity

__all__ = ["PROBES_KEPT", "Clip", "decoder_state_bytes", "probe_clip", "rotate_quarter_turns"]

log = logging.getLogger("gpupipe.frames")

PROBES_KEPT = 64
"""How many clips' probes are kept (least recently used dropped first): a probe holds a few bytes per frame."""

_US = 1_000_000


@dataclass(frozen=True, eq=False)
class Clip:
    """A video clip as its container declares it, and its first frame shows.

    ``path``: the resolved path; ``identity``: the file's identity when probed. ``codec``: the
    FFmpeg codec name (``h264``, ``hevc``, ``vp9``, ``prores``, ...); ``decoder``: the FFmpeg
    decoder to use when it is not the codec's default (``libvpx-vp9`` for VP9 with alpha, whose
    native decoder drops the alpha plane). ``width``/``height``: the stored frame size;
    ``rotation``: counter-clockwise quarter turns to show it upright (0–3, from the display
    matrix, as browsers apply it); ``pix_fmt``, ``bit_depth`` and ``alpha`` describe the decoded
    frames. ``time_base`` (seconds per timestamp unit) and ``pts``: the timestamps of the frames
    in the file, in display order; ``keyframes``: the display indices of keyframes, ascending;
    ``end_pts``: where the clip ends. ``frame_count``: the frames the container declares (more
    than ``len(pts)`` for a truncated file whose index lists frames it lost); ``readable``: how
    many frames, from the first, have all their data in the file.
    """

    path: str
    identity: FileIdentity | None
    codec: str
    decoder: str | None
    width: int
    height: int
    rotation: int
    pix_fmt: str
    bit_depth: int
    alpha: bool
    time_base: Fraction
    pts: array[int]
    keyframes: tuple[int, ...]
    end_pts: int
    frame_count: int
    readable: int

    def __post_init__(self) -> None:
        first = self.pts[0]
        object.__setattr__(self, "_us", array("q", (_to_us(p - first, self.time_base) for p in self.pts)))

    @property
    def duration(self) -> float:
        """Seconds from the first frame's timestamp to the end of the clip."""
        return float((self.end_pts - self.pts[0]) * self.time_base)

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` once the rotation is applied."""
        return (self.height, self.width) if self.rotation % 2 else (self.width, self.height)

    @property
    def channels(self) -> int:
        """4 (RGBA) for a clip with alpha, else 3 (RGB)."""
        return 4 if self.alpha else 3

    def micros(self, index: int) -> int:
        """Frame ``index``'s timestamp from the first frame's, in whole microseconds (rounded)."""
        us: array[int] = self.__dict__["_us"]
        return us[index]

    def index_at(self, t: float, label: str) -> int:
        """The frame a browser shows at ``currentTime = t``: the last one whose timestamp is at most ``t``.

        ``t`` and the timestamps are compared in whole microseconds. ``t`` up to the clip's
        :attr:`duration` (inclusive: a browser clamps there) shows a frame; later raises
        :class:`~gpupipe.errors.FrameOutOfRange` naming the duration. A time past the frames a
        truncated file still holds raises :class:`~gpupipe.errors.FrameDecodeError`.
        """
        us = round(t * _US)
        times: array[int] = self.__dict__["_us"]
        if us > max(_to_us(self.end_pts - self.pts[0], self.time_base), times[-1]):
            raise FrameOutOfRange(label, f"t={t:g} s is past the end of the clip (duration {self.duration:.6g} s)")
        index = max(0, bisect.bisect_right(times, us) - 1)
        if index == len(times) - 1 and self.frame_count > len(times) and index + 1 >= self.readable:
            self.check_index(index + 1, label)
        return index

    def check_index(self, index: int, label: str) -> None:
        """Raise :class:`~gpupipe.errors.FrameOutOfRange` (naming the frame count) for an index past
        the end, and :class:`~gpupipe.errors.FrameDecodeError` for a frame the file stops before."""
        if index >= self.frame_count:
            raise FrameOutOfRange(label, f"frame {index} is past the end of the clip ({self.frame_count} frames)")
        if index >= self.readable:
            raise FrameDecodeError(label, f"truncated clip: its data stops before frame {self.readable} of {self.frame_count}")

    def display_index(self, pts: int) -> int | None:
        """The display index of the frame with timestamp ``pts``, or ``None`` when no frame has it."""
        i = bisect.bisect_left(self.pts, pts)
        return i if i < len(self.pts) and self.pts[i] == pts else None

    def keyframe_before(self, index: int) -> int:
        """The display index of the last keyframe at or before ``index`` (0 when none)."""
        k = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[k] if k >= 0 else 0

    def frame_bytes(self) -> int:
        """Bytes of one decoded frame in the stream's own pixel format (all planes)."""
        return _frame_bytes(self.pix_fmt, self.width, self.height, self.bit_depth, self.alpha)


def _to_us(ticks: int, time_base: Fraction) -> int:
    """``ticks`` of ``time_base`` in whole microseconds, rounded half up (as FFmpeg's ``av_rescale_q``)."""
    num = ticks * time_base.numerator * _US
    den = time_base.denominator
    return (num + den // 2) // den if num >= 0 else -((-num + den // 2) // den)


def _frame_bytes(pix_fmt: str, width: int, height: int, bit_depth: int, alpha: bool) -> int:
    sample = 2 if bit_depth > 8 else 1
    if "444" in pix_fmt or pix_fmt.startswith(("rgb", "bgr", "gbr")):
        planes = 3.0
    elif "422" in pix_fmt:
        planes = 2.0
    else:
        planes = 1.5
    return int(width * height * sample * (planes + (1 if alpha else 0)))


def decoder_state_bytes(clip: Clip) -> int:
    """The bound gpupipe uses for what one open CPU decoder of ``clip`` holds: 9 frames in the
    stream's own pixel format at its stored size (reference frames, the frame being decoded, the
    one handed out and the last one skipped unconverted), the converted frame whose buffer it reuses (RGB or RGBA at the stored
    size: :mod:`gpupipe.video.rgb`), plus 2 MiB for the demuxer and codec context.

    Measured with PyAV 18.1 (FFmpeg 8.1), H.264 decoded with its default slice threading: an open
    decoder added 23.5 MiB of resident memory at 1080p (bound 25.7 MiB) and 42 MiB at 4K (bound
    96.9 MiB). With the reused converted frame, 30 frames decoded in order (``veryfast``, 3
    B-frames): 28.9 MiB at 1080p (bound 31.7 MiB), 87.8 MiB at 4K (bound 120.7 MiB).
    """
    return 9 * clip.frame_bytes() + clip.width * clip.height * clip.channels + 2 * 1024 * 1024


def rotate_quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns (0–3) for a display-matrix rotation in degrees (PyAV's
    ``VideoFrame.rotation``, counter-clockwise), rounded to the nearest quarter."""
    return round(degrees / 90.0) % 4


# --------------------------------------------------------------------------- probing

_lock = threading.Lock()
_probes: OrderedDict[tuple[str, FileIdentity], Clip] = OrderedDict()


def probe_clip(path: str | os.PathLike[str], label: str, max_pixels: int | None = None) -> Clip:
    """The :class:`Clip` at ``path`` (a probe remembered for the file's current identity).

    Raises :class:`~gpupipe.errors.FrameNotFound` (missing or unreadable;
    :class:`~gpupipe.errors.FrameNotRegularFile` for what is not a regular file, never opened),
    :class:`~gpupipe.errors.FrameDecodeError` (not a video, no video stream, no frame that
    decodes) or :class:`~gpupipe.errors.FrameTooLarge` (frames over ``max_pixels``).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FrameNotFound(label, "no such file") from None
    except (OSError, ValueError) as e:
        raise FrameNotFound(label, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    what = file_kind(st.st_mode)
    if what is not None:
        raise FrameNotRegularFile(label, f"is {what}, not a regular file")
    resolved = os.path.realpath(path)
    key = (resolved, FileIdentity.of(st))
    with _lock:
        clip = _probes.get(key)
        if clip is not None:
            _probes.move_to_end(key)
    if clip is None:
        clip = _probe(resolved, key[1], label)
        with _lock:
            _probes[key] = clip
            while len(_probes) > PROBES_KEPT:
                _probes.popitem(last=False)
    if max_pixels is not None and clip.width * clip.height > max_pixels:
        from .headers import check_pixels

        check_pixels(label, clip.width, clip.height, max_pixels)
    return clip


def _probe(resolved: str, identity: FileIdentity, label: str) -> Clip:
    import av

    try:
        container = av.open(resolved, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise FrameDecodeError(label, f"not a video file FFmpeg can read: {codec_reason(e.strerror or str(e))}") from None
    try:
        return _probe_open(container, resolved, identity, label)
    except FrameError:
        raise
    except av.FFmpegError as e:
        raise FrameDecodeError(label, f"cannot probe the video: {codec_reason(e.strerror or str(e))}") from None
    finally:
        container.close()


def _probe_open(container: Any, resolved: str, identity: FileIdentity, label: str) -> Clip:
    import av

    if not container.streams.video:
        raise FrameDecodeError(label, "not a video: the file has no video stream")
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise FrameDecodeError(label, "not a video: FFmpeg reads it as a still image")
    stream = container.streams.video[0]
    sizes = {e.timestamp: e.size for e in stream.index_entries} if len(stream.index_entries) > 1 else {}
    declared = len(stream.index_entries) if sizes else 0
    packets: list[tuple[int, bool, int]] = []  # pts, keyframe, duration
    complete = 0
    try:
        for p in container.demux(stream):
            if p.size == 0 or p.is_discard:
                continue
            if p.pts is None:
                raise FrameDecodeError(label, "the video stream has packets without timestamps")
            packets.append((p.pts, p.is_keyframe, p.duration or 0))
            want = sizes.get(p.dts if p.dts is not None else p.pts)
            if want is None or p.size >= want:
                complete = len(packets)
    except av.FFmpegError as e:  # a damaged or truncated file: the packets before the damage count
        log.debug("%s: demuxing stopped after %d packets: %s", label, len(packets), e)
    if not packets:
        raise FrameDecodeError(label, "the video stream holds no frames")
    first = _first_frame(container, stream, label)
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])
    pts = array("q", (packets[i][0] for i in order))
    keyframes = tuple(d for d, i in enumerate(order) if packets[i][1])
    lost = {packets[i][0] for i in range(complete, len(packets))}
    readable = next((d for d, p in enumerate(pts) if p in lost), len(pts))
    step = packets[order[-1]][2] or (pts[-1] - pts[-2] if len(pts) > 1 else 1)
    end = pts[-1] + max(step, 1)
    frame_count = len(pts)
    if declared > len(pts) or lost:  # the file stops short of what its index declares
        frame_count = max(declared, len(pts))
        if stream.duration:
            end = max(end, (stream.start_time or 0) + stream.duration)
    components = first.format.components
    alpha = any(c.is_alpha for c in components)
    return Clip(
        path=resolved,
        identity=identity,
        codec=stream.codec_context.name,
        decoder=_alpha_decoder(stream),
        width=first.width,
        height=first.height,
        rotation=rotate_quarter_turns(first.rotation),
        pix_fmt=first.format.name,
        bit_depth=max(c.bits for c in components),
        alpha=alpha,
        time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, _US),
        pts=pts,
        keyframes=keyframes or (0,),
        end_pts=end,
        frame_count=frame_count,
        readable=readable,
    )


def _alpha_decoder(stream: Any) -> str | None:
    """The decoder that keeps the stream's alpha when FFmpeg's default one drops it: ``libvpx-vp9``
    (or ``libvpx``) for VP9 (VP8) in WebM with ``alpha_mode: 1``."""
    if stream.metadata.get("alpha_mode") != "1":
        return None
    return {"vp9": "libvpx-vp9", "vp8": "libvpx"}.get(stream.codec_context.name)


def _first_frame(container: Any, stream: Any, label: str) -> Any:
    """The clip's first decoded frame (with the decoder that keeps alpha)."""
    import av

    name = _alpha_decoder(stream)
    try:
        container.seek(0, stream=stream)
        ctx: Any = av.CodecContext.create(name, "r") if name else stream.codec_context
        for p in container.demux(stream):
            for f in ctx.decode(p):
                return f
        for f in ctx.decode(None):
            return f
    except av.FFmpegError as e:
        raise FrameDecodeError(label, f"cannot decode the clip's first frame: {codec_reason(e.strerror or str(e))}") from None
    raise FrameDecodeError(label, "no frame of the clip decodes")


def forget_probes() -> None:
    """Drop every remembered probe (tests)."""
    with _lock:
        _probes.clear()
