"""A frame of a video clip as a frame source: :class:`VideoFrame`.

``VideoFrame(path, index=i)`` is frame ``i`` of the clip in display order (from 0);
``VideoFrame(path, t=s)`` is the frame a browser shows at ``currentTime = s``: the last frame
whose timestamp is at most ``s`` seconds after the stream's first frame (see
:meth:`Clip.index_at <gpupipe.frames.clip.Clip.index_at>`; variable frame rates included).

Its cache key (:class:`~gpupipe.frames.keys.SourceKey`, kind ``"video"``) holds the clip's
resolved path and :class:`~gpupipe.frames.keys.FileIdentity`, and in ``part`` the frame's
*resolved* index, so ``t`` and ``index`` for the same frame share one entry and a clip changed
on disk gets new keys. Resolving ``t`` needs the clip's timestamps: :meth:`VideoFrame.key`
probes the clip (once per file identity, :func:`~gpupipe.frames.clip.probe_clip`); a clip that
cannot be probed keeps ``t`` unresolved in its key, and its error comes from :meth:`header`.

It reads decoded pixels (:class:`~gpupipe.frames.source.Pixels`, RGB, or RGBA for a clip with
alpha, upright), through the :class:`~gpupipe.frames.source.ClipReader` it is lent (the
encoder's pool of open decoders); its :meth:`read_order` groups a clip's frames so that they
are decoded in display order by one task.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable
from dataclasses import dataclass
from numbers import Real

from .clip import Clip, decoder_state_bytes, probe_clip
from .headers import Header
from .keys import FileIdentity, SourceKey
from .source import ClipReader, Frame, FrameSource, Limits

__all__ = ["VIDEO_KIND", "VideoFrame"]

VIDEO_KIND = "video"
"""The :attr:`SourceKey.kind <gpupipe.frames.keys.SourceKey.kind>` of a video frame's key."""


@dataclass(frozen=True, slots=True)
class VideoFrame(FrameSource):
    """Frame ``index`` (display order, from 0), or the frame shown at ``t`` seconds, of the video at ``path``.

    Exactly one of ``index`` and ``t`` is given. ``index`` is a non-negative ``int``; ``t`` a
    finite number of seconds, not negative (``ValueError``). Frozen and hashable: equal
    arguments make equal objects (a frame given by ``t`` and the same frame by ``index`` are
    different objects with the same cache key). An index or time past the clip's end fails
    with :class:`~gpupipe.errors.FrameOutOfRange`.
    """

    path: str | os.PathLike[str]
    index: int | None = None
    t: float | None = None

    def __init__(self, path: str | os.PathLike[str], *, index: int | None = None, t: float | None = None) -> None:
        if (index is None) == (t is None):
            raise ValueError("VideoFrame takes exactly one of index= and t=")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a video's path is a str or os.PathLike, not {type(path).__name__}")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"index must be an int, got {type(index).__name__}")
            if index < 0:
                raise ValueError(f"index must be 0 or more, got {index}")
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, Real):
                raise TypeError(f"t must be a number of seconds, got {type(t).__name__}")
            t = float(t)
            if not math.isfinite(t):
                raise ValueError(f"t must be a finite number of seconds, got {t}")
            if t < 0:
                raise ValueError(f"t must be 0 or more seconds, got {t:g}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "t", t)

    # ------------------------------------------------------------------ the FrameSource contract

    def key(self) -> SourceKey:
        """The clip's resolved path and identity, and the resolved frame index (``part``).

        Stats the file; with ``t``, probes the clip (remembered per file identity). A clip that
        cannot be stat'ed or probed gets a key with no identity or an unresolved ``t=`` part:
        its error comes from :meth:`header`.
        """
        try:
            st = os.stat(self.path)
            resolved = os.path.realpath(self.path)
        except (OSError, ValueError):
            return SourceKey(VIDEO_KIND, os.path.abspath(self.path), self._part(None), None)
        identity = FileIdentity.of(st)
        index = self.index
        if index is None:
            try:
                index = self.resolve(probe_clip(self.path, self.label()))
            except Exception:  # noqa: BLE001 - the same error comes back from header(), per frame
                index = None
        return SourceKey(VIDEO_KIND, resolved, self._part(index), identity)

    def _part(self, index: int | None) -> str:
        return str(index) if index is not None else f"t={self.t!r}"

    def label(self, key: SourceKey | None = None) -> str:
        where = f"#{self.index}" if self.index is not None else f"@{self.t:g}s"
        return f"{os.fspath(self.path)}{where}"

    def memo(self) -> Hashable:
        return (os.fspath(self.path), self.index, self.t)

    def read_order(self) -> tuple[Hashable, int] | None:
        """Frames of one clip form a group, read in display order (a frame given by ``t`` is placed
        once its clip is probed; one that cannot be resolved is read on its own)."""
        try:
            clip = probe_clip(self.path, self.label())
            return (clip.path, clip.identity), self.resolve(clip)
        except Exception:  # noqa: BLE001 - its read reports the error
            return None

    def header(self, label: str, limits: Limits) -> Header:
        """The decoded frame's header from the clip's probe: its display size, RGB or RGBA, and
        (``scratch_bytes``) one decoded frame in the stream's own format plus one open decoder's
        state (:func:`~gpupipe.frames.clip.decoder_state_bytes`), which the decoding of this frame
        may hold besides its picture."""
        clip = probe_clip(self.path, label, limits.max_pixels)
        self.resolve(clip, label)
        return _header(clip)

    def read(self, label: str, limits: Limits, clips: ClipReader | None = None) -> Frame:
        """The decoded frame, through ``clips`` (an encoder's pool of open decoders: read it with
        :meth:`FrameEncoder.read <gpupipe.FrameEncoder.read>`); ``ValueError`` without one."""
        if clips is None:
            raise ValueError("a video frame is decoded through a ClipReader: read it with FrameEncoder.read()")
        clip = probe_clip(self.path, label, limits.max_pixels)
        index = self.resolve(clip, label)
        return Frame(label, b"", _header(clip), clip.identity, clips.decode(clip, index, label))

    # ------------------------------------------------------------------ helpers

    def resolve(self, clip: Clip, label: str | None = None) -> int:
        """This frame's index in ``clip``; raises :class:`~gpupipe.errors.FrameOutOfRange` past its end
        (:class:`~gpupipe.errors.FrameDecodeError` for a frame a truncated file lost)."""
        name = self.label() if label is None else label
        if self.t is not None:
            index = clip.index_at(self.t, name)
        else:
            assert self.index is not None
            index = self.index
        clip.check_index(index, name)
        return index


def _header(clip: Clip) -> Header:
    """The header of any decoded frame of ``clip``."""
    w, h = clip.display_size
    channels = clip.channels
    return Header(
        kind="pixels",
        width=w,
        height=h,
        channels=channels,
        sample_bytes=1,
        source_bytes=w * h * channels,
        orientation=1,
        may_have_alpha=clip.alpha,
        scratch_bytes=clip.frame_bytes() + decoder_state_bytes(clip),
    )
