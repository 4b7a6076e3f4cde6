"""Which frames of a video clip a caller asks for: telling clips from frame files, and selecting a
clip's frames by index (a Python slice) or by time (a frame rate from a start time), as
``gpupipe encode clip.mp4 --frames 0:90`` and ``--fps 30 --start 2 --duration 3`` do.

Files are told apart by content, as frame files are everywhere in gpupipe (:func:`image_kind`:
PNG and JPEG by their first bytes); a file that is neither is a clip when FFmpeg can probe it
(:func:`clip_of`). By time, frame ``k`` of a selection is the clip's frame at ``t = start + k /
fps`` (computed, never accumulated, so long runs do not drift): the last frame whose timestamp is
at most ``t``, as a browser shows at ``currentTime = t``, which is how a renderer's composition
running at ``fps`` samples its source clip.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import FrameError, FrameOutOfRange
from .frames import Clip, VideoFrame, probe_clip, sniff
from .frames.files import FileRefused, open_regular, read_upto

__all__ = ["VIDEO_SUFFIXES", "ClipFrame", "FrameSelection", "clip_of", "image_kind", "parse_frames"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".ogv")
"""File name endings (any case) taken for clips even when FFmpeg cannot probe them, so that their
error says why the clip does not open (not that they are no PNG or JPEG)."""


def image_kind(path: str | os.PathLike[str]) -> str | None:
    """``"png"`` or ``"jpeg"`` when the regular file at ``path`` starts like one; ``None`` otherwise,
    and for what cannot be opened as a regular file (never blocks on a FIFO)."""
    try:
        with open_regular(path) as (fd, _st):
            return sniff(read_upto(fd, 8))
    except FileRefused:
        return None


def clip_of(path: str | os.PathLike[str]) -> Clip | FrameError | None:
    """The probed :class:`~gpupipe.frames.Clip` at ``path`` when it is a video clip; the probe's
    :class:`~gpupipe.errors.FrameError` for a file named like a clip (:data:`VIDEO_SUFFIXES`) that
    does not probe; ``None`` for a PNG or JPEG file and for anything else (a frame file's reader
    reports its errors)."""
    if image_kind(path) is not None:
        return None
    try:
        return probe_clip(path, os.fspath(path))
    except FrameError as e:
        return e if os.fspath(path).lower().endswith(VIDEO_SUFFIXES) else None


def parse_frames(text: str) -> int | slice:
    """``--frames`` text: an index (``5``, ``-1``) or a slice ``START:STOP[:STEP]`` with Python's
    meaning (``0:90``, ``:90``, ``-10:``, ``::3``). ``ValueError`` naming what is wrong."""
    parts = text.strip().split(":")
    if len(parts) > 3 or not text.strip():
        raise ValueError(f"expected N or START:STOP[:STEP] (Python slice), got {text!r}")
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"expected whole numbers in N or START:STOP[:STEP], got {text!r}") from None
    if len(nums) == 1:
        if nums[0] is None:
            raise ValueError(f"expected N or START:STOP[:STEP] (Python slice), got {text!r}")
        return nums[0]
    if len(nums) == 3 and nums[2] == 0:
        raise ValueError(f"a slice step cannot be zero, got {text!r}")
    return slice(*nums)


@dataclass(frozen=True)
class ClipFrame:
    """One selected frame of a clip: its :class:`~gpupipe.VideoFrame` (``None`` with ``error``: an
    index that names no frame), its display ``index`` when known, and ``t``: the time asked for
    (by time), or the frame's own timestamp from the clip's first frame (by index)."""

    source: VideoFrame | None
    index: int | None
    t: float | None
    error: FrameError | None = None


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of each clip: ``frames`` (an index or a slice, Python's meaning over the clip's
    frame count), or ``fps`` frames a second from ``start`` for ``duration`` seconds (default: to the
    clip's end); neither: every frame. ``ValueError`` for a bad combination or value."""

    frames: int | slice | None = None
    fps: float | None = None
    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.frames is not None and self.fps is not None:
            raise ValueError("choose frames by index (--frames) or by time (--fps), not both")
        if self.fps is None and (self.start != 0.0 or self.duration is not None):
            raise ValueError("--start and --duration select by time: give --fps too")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"--fps must be a positive number of frames a second, got {self.fps:g}")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise ValueError(f"--start must be 0 or more seconds, got {self.start:g}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"--duration must be a positive number of seconds, got {self.duration:g}")

    def frames_of(self, path: str | os.PathLike[str], clip: Clip) -> list[ClipFrame]:
        """The selected frames of ``clip`` (probed from ``path``), in order; a selection that holds no
        frame of it is one :class:`ClipFrame` with a :class:`~gpupipe.errors.FrameOutOfRange` saying so."""
        label = os.fspath(path)
        if self.fps is not None:
            picked = self._by_time(path, clip, self.fps)
            what = f"t={self.start:g} s is past the end of the clip (duration {clip.duration:.6g} s)"
        else:
            picked = self._by_index(path, clip)
            what = f"--frames {_slice_text(self.frames)} selects no frame of the clip ({clip.frame_count} frames)"
        return picked or [ClipFrame(None, None, None, FrameOutOfRange(label, what))]

    def _by_index(self, path: str | os.PathLike[str], clip: Clip) -> list[ClipFrame]:
        count = clip.frame_count
        if isinstance(self.frames, int):
            i = self.frames + count if self.frames < 0 else self.frames
            indices: range | list[int] = [i] if i >= 0 else []
        else:
            indices = range(*(self.frames or slice(None)).indices(count))
        return [ClipFrame(VideoFrame(path, index=i), i, _timestamp(clip, i)) for i in indices]

    def _by_time(self, path: str | os.PathLike[str], clip: Clip, fps: float) -> list[ClipFrame]:
        """Times ``start + k / fps`` up to ``start + duration``, and not past the clip's end (as ``ffmpeg -t``)."""
        end = clip.duration if self.duration is None else min(clip.duration, self.start + self.duration)
        n = max(0, math.ceil((end - self.start) * fps - 1e-9))
        out = []
        for k in range(n):
            t = self.start + k / fps
            try:
                index: int | None = clip.index_at(t, os.fspath(path))
            except FrameError:
                index = None  # lost by a truncated file: the frame's read says so
            out.append(ClipFrame(VideoFrame(path, t=t), index, t))
        return out


def _slice_text(frames: int | slice | None) -> str:
    if isinstance(frames, slice):
        parts = ["" if v is None else str(v) for v in (frames.start, frames.stop, frames.step)]
        return ":".join(parts if frames.step is not None else parts[:2])
    return str(frames)


def _timestamp(clip: Clip, index: int) -> float | None:
    """Frame ``index``'s timestamp in seconds from the first frame, when the container lists it."""
    return clip.micros(index) / 1e6 if index < len(clip.pts) else None
