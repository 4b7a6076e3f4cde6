"""The decoder contract (:class:`VideoDecoder`) and the seek rule every decoder follows (:func:`must_seek`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..frames.clip import Clip
from ..frames.source import Pixels

__all__ = ["DecoderOpener", "VideoDecoder", "must_seek"]


class VideoDecoder(Protocol):
    """One open decoder of one clip (the CPU's :class:`~gpupipe.video.pyav_decoder.PyavDecoder`,
    the GPU's :class:`~gpupipe.gpu.nvdec.NvdecDecoder`). Not thread-safe: the pool lends it to one
    thread at a time.

    ``position`` is the display index of the next frame it would hand out without seeking
    (``None`` before the first decode and after an error). ``seeks`` and ``decoded`` count the
    seeks it made and the frames it decoded (handed out or skipped on the way).
    """

    @property
    def clip(self) -> Clip: ...
    @property
    def position(self) -> int | None: ...
    @property
    def seeks(self) -> int: ...
    @property
    def decoded(self) -> int: ...

    def frame(self, index: int, label: str, fit: tuple[int, int] | None = None) -> Pixels:
        """Frame ``index`` of the clip (display order), upright, RGB or RGBA (the clip's alpha).

        ``fit`` is the box the frame will be fitted into (:func:`~gpupipe.plan.fit_size` of its
        display size): a decoder may hand out the frame at that fitted size already (the CPU's
        converts and scales in one pass), or at the clip's size (the encoder fits it then).
        Follows :func:`must_seek`. Raises :class:`~gpupipe.errors.FrameDecodeError` (named
        ``label``) for a frame that cannot be decoded; the decoder stays usable.
        """
        ...

    def close(self) -> None:
        """Release the decoder (its memory, file and device state)."""
        ...


DecoderOpener = Callable[[Clip], VideoDecoder]
"""Opens a decoder for a clip; raises the clip's :class:`~gpupipe.errors.FrameError` when it cannot."""


def must_seek(clip: Clip, position: int | None, index: int) -> bool:
    """Whether a decoder at ``position`` seeks to reach frame ``index``, or decodes forward to it.

    It decodes forward when the frame is ahead (or is the next one) and no keyframe lies
    between: ``position <= index`` and the last keyframe at or before ``index`` is at or before
    ``position``. A frame behind the position, or far ahead (past a keyframe), is reached by
    seeking to the keyframe at or before it and decoding forward from there. A decoder with no
    position (just opened, or reset) seeks, unless the frame is in the first group of pictures.
    """
    if position is None:
        return clip.keyframe_before(index) > 0
    return index < position or clip.keyframe_before(index) > position
