"""The decoder contract (:class:`VideoDecoder`, with the :class:`Conversion` a frame is asked in) and
the seek rule every decoder follows (:func:`must_seek`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..frames.clip import Clip
from ..frames.source import Pixels

__all__ = ["DEFAULT_CONVERSION", "ColourMatrix", "Conversion", "DecoderOpener", "VideoDecoder", "must_seek"]

ColourMatrix = Literal["stream", "bt709", "bt601"]
"""The YUV->RGB matrix: the stream's own (its tag; untagged is BT.601, as FFmpeg takes it), or
forced, whatever the tag (FFmpeg's ``setparams=colorspace=bt709`` / ``smpte170m`` before its
conversion)."""

COLOUR_MATRICES: tuple[ColourMatrix, ...] = ("stream", "bt709", "bt601")


@dataclass(frozen=True)
class Conversion:
    """How a decoder turns a frame's YUV into RGB, asked per load (like the output size).

    ``matrix``: see :data:`ColourMatrix`; the range is always the stream's (limited when untagged).
    ``point_chroma``: the chroma upsampled by point sampling with exact rounding, as FFmpeg's
    ``scale=flags=neighbor+accurate_rnd,format=gbrp`` does it (hyperframes' extraction chain),
    instead of the default bilinear. A decoder that cannot honour a conversion other than
    :data:`DEFAULT_CONVERSION` refuses it (NVDEC: the clip falls back to the CPU decoder).
    """

    matrix: ColourMatrix = "stream"
    point_chroma: bool = False

    def __post_init__(self) -> None:
        if self.matrix not in COLOUR_MATRICES:
            raise ValueError(f"matrix must be one of {', '.join(COLOUR_MATRICES)}; got {self.matrix!r}")


DEFAULT_CONVERSION = Conversion()


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

    def frame(
        self, index: int, label: str, fit: tuple[int, int] | None = None, conversion: Conversion = DEFAULT_CONVERSION
    ) -> Pixels:
        """Frame ``index`` of the clip (display order), upright, RGB or RGBA (the clip's alpha),
        converted from YUV as ``conversion`` says.

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
