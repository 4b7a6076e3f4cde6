"""Output planning: for each frame, passthrough or transcode, to which format and size.

Both backends receive the same :class:`Job` list, so the CPU and GPU paths make the same
decisions and produce the same kind of URI for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Frame, check_complete
from .vocabulary import OutputFormat, Target

__all__ = ["Job", "OutputSpec", "fit_size", "passes_through", "plan_job"]


@dataclass(frozen=True)
class OutputSpec:
    """What the caller asked for: ``format`` (auto|passthrough|jpeg|png), ``size`` (fit inside) and JPEG ``quality``."""

    format: OutputFormat = "auto"
    size: tuple[int, int] | None = None
    quality: int = 90
    png_compress_level: int = 1

    def key(self) -> tuple:
        """The part of a cache key that depends on the output settings."""
        return (self.format, self.size, self.quality if self.format != "passthrough" else None, self.png_compress_level)


@dataclass(frozen=True)
class Job:
    """One frame's work order.

    ``passthrough``: base64 the source bytes as they are. Otherwise decode (EXIF orientation
    applied; a frame read as pixels is decoded already), resize to ``out_size`` if it differs from the display size, and encode to
    ``target``: ``jpeg``, ``png``, or ``auto`` (JPEG unless the decoded frame has non-opaque
    alpha, then PNG).
    """

    index: int
    frame: Frame
    passthrough: bool
    target: Target
    out_size: tuple[int, int]
    quality: int
    png_compress_level: int

    @property
    def needs_resize(self) -> bool:
        return self.out_size != self.frame.display_size


def fit_size(width: int, height: int, size: tuple[int, int] | None) -> tuple[int, int]:
    """Dimensions of a ``width``×``height`` image scaled down to fit inside ``size``, aspect kept.

    Never scales up; each side is at least 1 pixel.
    """
    if size is None:
        return width, height
    bw, bh = size
    if width <= bw and height <= bh:
        return width, height
    scale = min(bw / width, bh / height)
    return max(1, min(bw, round(width * scale))), max(1, min(bh, round(height * scale)))


def passes_through(display_size: tuple[int, int], orientation: int, spec: OutputSpec, *, encoded: bool = True) -> bool:
    """Whether a frame of this display size and EXIF orientation is passed through
    unchanged under ``spec``: always for ``passthrough``; for ``auto`` when it already fits
    ``spec.size`` and needs no rotation. Never for decoded pixels (``encoded=False``): they have
    no encoded bytes to pass."""
    if not encoded:
        return False
    if spec.format == "passthrough":
        return True
    return spec.format == "auto" and orientation == 1 and fit_size(*display_size, spec.size) == display_size


def plan_job(index: int, frame: Frame, spec: OutputSpec) -> Job:
    """Decide how ``frame`` becomes a URI under ``spec``.

    ``auto`` passes the source through when it already fits ``spec.size`` (PNG and JPEG are
    both valid outputs); ``jpeg``/``png`` always re-encode; ``passthrough`` never touches the
    bytes (and ignores ``size``). A passthrough frame whose stream visibly stops early raises
    :class:`~gpupipe.errors.FrameDecodeError`.

    Decoded pixels (a video's frame) are always encoded: under ``auto`` and ``passthrough`` to
    JPEG, or to PNG when the clip has alpha; fitted to ``spec.size`` under every format.
    """
    disp = frame.display_size
    out_size = fit_size(disp[0], disp[1], spec.size)
    if frame.pixels is not None:
        fmt = spec.format if spec.format in ("jpeg", "png") else "png" if frame.may_have_alpha else "jpeg"
        return Job(index, frame, False, "png" if fmt == "png" else "jpeg", out_size, spec.quality, spec.png_compress_level)
    if passes_through(disp, frame.orientation, spec):
        check_complete(frame)
        return Job(index, frame, True, "png" if frame.kind == "png" else "jpeg", disp, spec.quality, spec.png_compress_level)
    target: Target = "png" if spec.format == "png" else "jpeg" if spec.format == "jpeg" else "auto"
    if target == "auto" and not frame.may_have_alpha:
        target = "jpeg"
    return Job(index, frame, False, target, out_size, spec.quality, spec.png_compress_level)
