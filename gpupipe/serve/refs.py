"""What a request names: a frame file, or one frame of a video clip (:class:`FrameRef`), and the
frame source it becomes once confined to the roots.

A request (``/v1/uri``, ``/v1/image``) or a schedule's source names its frame by ``src``. Beside a
``src`` that names a video clip, exactly one of ``frame`` (the display index, from 0) and ``t``
(seconds from the clip's first frame: the last frame whose timestamp is at most ``t``, as a
browser shows at ``currentTime = t``) picks the frame. Once ``src`` is confined
(:meth:`Roots.resolve <gpupipe.serve.roots.Roots.resolve>`), :meth:`FrameRef.source` builds the
library's source from the resolved real path: the path itself for a frame file, a
:class:`~gpupipe.VideoFrame` for a video's frame.

Whether a file is a video is told by its content, as a frame file's format is: ``frame`` or
``t`` beside a PNG or JPEG file is refused (:func:`refuse_image`, 400), and a request without
them whose file turns out to be a clip is told to add one (:func:`explain_clip`, 400) instead of
being answered "cannot decode" (422). Each costs a read of the file's first bytes, and only
where it can apply (a video request; a failed image request).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..clip_frames import image_kind
from ..errors import FrameChanged, FrameDecodeError
from ..frames import Source, VideoFrame, probe_clip
from .errors import BadParameter

__all__ = ["FrameRef", "explain_clip", "parse_frame", "parse_t", "refuse_image"]

_INDEX = re.compile(r"[0-9]{1,12}")
# A decimal as JavaScript's String(number) and Python's repr() write one: 1.5, 0.03333333333333333, 1e-7.
_DECIMAL = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_MAX_TEXT = 40  # characters of a value parsed (and quoted in an error)


def parse_frame(value: Any) -> int | None:
    """A ``frame`` value (query text, or a JSON integer): a display index from 0; ``None`` when absent.

    :class:`BadParameter` naming ``frame`` for anything but a whole number from 0.
    """
    if value is None:
        return None
    bad = f"frame must be a display index: a whole number from 0, got {str(value)[:_MAX_TEXT]!r}"
    if isinstance(value, str):
        if not _INDEX.fullmatch(value):
            raise BadParameter(bad)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadParameter(bad)
    return value


def parse_t(value: Any) -> float | None:
    """A ``t`` value (query text such as ``1.5`` or ``1e-3``, or a JSON number): seconds, finite and
    not negative; ``None`` when absent. :class:`BadParameter` naming ``t`` otherwise."""
    if value is None:
        return None
    shown = str(value)[:_MAX_TEXT]
    if isinstance(value, str):
        if len(value) > _MAX_TEXT or not _DECIMAL.fullmatch(value):
            raise BadParameter(f"t must be a number of seconds such as 1.5, got {shown!r}")
        seconds = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise BadParameter(f"t must be a number of seconds such as 1.5, got {shown!r}")
    if not math.isfinite(seconds):
        raise BadParameter(f"t must be a finite number of seconds, got {shown!r}")
    if seconds < 0:
        raise BadParameter(f"t must be 0 or more seconds, got {shown!r}")
    return seconds + 0.0  # -0.0 is 0.0


@dataclass(frozen=True)
class FrameRef:
    """A frame as a request names it: ``src``, and for a video clip's frame ``frame`` or ``t``.

    Giving both ``frame`` and ``t`` is a :class:`BadParameter`; values are parsed already
    (:func:`parse_frame`, :func:`parse_t`).
    """

    src: str
    frame: int | None = None
    t: float | None = None

    def __post_init__(self) -> None:
        if self.frame is not None and self.t is not None:
            raise BadParameter("give one of frame= (a display index) and t= (seconds), not both", self.src)

    @property
    def video(self) -> bool:
        """Whether it names a video clip's frame (``frame`` or ``t`` given)."""
        return self.frame is not None or self.t is not None

    def name(self) -> str:
        """How logs name it: ``src``, with ``#frame`` or ``@t`` (``clip.mp4#12``, ``clip.mp4@0.4``)."""
        if self.frame is not None:
            return f"{self.src}#{self.frame}"
        if self.t is not None:
            return f"{self.src}@{self.t!r}"
        return self.src

    def source(self, real: str) -> Source:
        """The library's source for it at ``real``, the confined real path of ``src``."""
        if self.frame is not None:
            return VideoFrame(real, index=self.frame)
        if self.t is not None:
            return VideoFrame(real, t=self.t)
        return real


def refuse_image(ref: FrameRef, real: str) -> None:
    """Raise :class:`BadParameter` when ``ref`` picks a video's frame of ``real`` (its real path) but
    the file is a PNG or JPEG image."""
    if ref.video and (kind := image_kind(real)) is not None:
        which = "frame=" if ref.frame is not None else "t="
        raise BadParameter(f"{which} picks a frame of a video clip, but src is a {kind.upper()} image: leave it out", ref.src)


def explain_clip(ref: FrameRef, real: str, err: BaseException) -> BaseException:
    """The error to answer for ``err``, the failure of the image request ``ref`` (at ``real``): a
    :class:`BadParameter` saying to add ``frame=`` or ``t=`` when the file is a video clip, else
    ``err`` itself. Probes the file (remembered per file identity) only when ``err`` says it did not
    decode and the file is not a PNG or JPEG."""
    if ref.video or not isinstance(err, FrameDecodeError) or isinstance(err, FrameChanged) or image_kind(real) is not None:
        return err
    try:
        clip = probe_clip(real, ref.src)
    except Exception:  # noqa: BLE001 - not a clip either: the frame's own error stands
        return err
    return BadParameter(
        f"src is a video clip ({clip.frame_count} frame{'' if clip.frame_count == 1 else 's'}, {clip.duration:.6g} s): "
        "add frame= (a display index from 0) or t= (seconds) to pick one of its frames",
        ref.src,
    )
