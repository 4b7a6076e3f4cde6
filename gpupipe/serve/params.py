"""Request parameters: which query parameters gpupipe reserves, and the output settings they carry.

:data:`RESERVED_PARAMS` is the one list of the query parameters gpupipe gives a meaning to, now
or in a coming version (the README's "Serving frames" repeats it; a test keeps the two equal).
Every other query parameter is ignored, so that a page's cache-buster (``&_=123``, ``&v=2``)
does not break URL mode; the handlers name the ignored ones in the :data:`IGNORED_HEADER`
response header. A reserved parameter given twice, or with a bad value, is a
:class:`~gpupipe.serve.errors.BadParameter` (400); ``t`` and ``frame`` (frames of video files,
not served yet) are an :class:`~gpupipe.serve.errors.UnsupportedParameter` (400).

The same settings come as fields of a schedule's JSON body (:func:`frame_params` over
``body.get``), where ``size`` may also be a ``[width, height]`` list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from multidict import MultiMapping

from ..vocabulary import MAX_SIDE, OUTPUT_FORMATS, QUALITY_MAX, QUALITY_MIN, parse_wxh
from .errors import BadParameter, UnsupportedParameter

__all__ = [
    "FRAME_PARAMS",
    "IGNORED_HEADER",
    "MAX_SIDE",
    "RESERVED_PARAMS",
    "VIDEO_PARAMS",
    "FrameParams",
    "FrameQuery",
    "frame_params",
    "ignored_header_value",
    "ignored_params",
    "parse_query",
]

FRAME_PARAMS: Mapping[str, str] = {
    "src": "the frame: a path relative to a --root, or an absolute path inside one (required)",
    "format": "auto, passthrough, jpeg or png (default: the config's output.format)",
    "size": "WIDTHxHEIGHT to fit the frame into, such as 1920x1080 (default: the config's output.size)",
    "quality": "JPEG quality, 1 to 100 (default: the config's output.jpeg_quality)",
}
"""The parameters of a frame request, with what each means."""
VIDEO_PARAMS: Mapping[str, str] = {
    "t": "a video frame by its time in seconds (reserved: not served yet)",
    "frame": "a video frame by its index (reserved: not served yet)",
}
"""Parameters reserved for frames of video files; answered 400 until they are served."""
RESERVED_PARAMS: tuple[str, ...] = (*FRAME_PARAMS, *VIDEO_PARAMS)
"""Every query parameter gpupipe gives a meaning to; all others are ignored."""

IGNORED_HEADER = "X-Gpupipe-Ignored-Params"
_MAX_NAMES = 16  # ignored parameters named in the header
_MAX_NAME = 40  # characters of each


@dataclass(frozen=True)
class FrameParams:
    """Validated output settings of a request (``None``: the config's)."""

    format: str | None = None
    size: tuple[int, int] | None = None
    quality: int | None = None


@dataclass(frozen=True)
class FrameQuery:
    """A frame request's parameters: ``src`` and its output settings."""

    src: str
    params: FrameParams


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        w, h = value
    elif isinstance(value, str) and len(value) <= 16:
        try:
            w, h = parse_wxh(value)
        except ValueError:
            raise BadParameter(f"size must be WIDTHxHEIGHT such as 1920x1080, got {value[:40]!r}") from None
    else:
        raise BadParameter(f"size must be WIDTHxHEIGHT such as 1920x1080, got {str(value)[:40]!r}")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise BadParameter(f"size must be between 1x1 and {MAX_SIDE}x{MAX_SIDE}, got {w}x{h}")
    return (w, h)


def _quality(value: Any) -> int | None:
    if value is None:
        return None
    bounds = f"quality must be an integer from {QUALITY_MIN} to {QUALITY_MAX}"
    if isinstance(value, bool):
        raise BadParameter(bounds)
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 3:
            raise BadParameter(f"{bounds}, got {value[:20]!r}")
        value = int(value)
    if not isinstance(value, int) or not QUALITY_MIN <= value <= QUALITY_MAX:
        raise BadParameter(f"{bounds}, got {str(value)[:20]!r}")
    return value


def _format(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in OUTPUT_FORMATS:
        raise BadParameter(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {str(value)[:40]!r}")
    return value.lower()


def frame_params(get: Callable[[str], Any]) -> FrameParams:
    """Output settings from a query (or a JSON body's fields); :class:`BadParameter` for bad ones."""
    return FrameParams(_format(get("format")), _size(get("size")), _quality(get("quality")))


def _one(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadParameter(f"{name} is given {len(values)} times")
    return values[0] if values else None


def parse_query(query: MultiMapping[str]) -> FrameQuery:
    """The frame request in ``query``; parameters outside :data:`RESERVED_PARAMS` are not looked at.

    Raises :class:`UnsupportedParameter` for ``t`` or ``frame``, :class:`BadParameter` for a
    missing ``src``, a reserved parameter given twice, or a bad value.
    """
    for name in VIDEO_PARAMS:
        if query.getall(name, []):
            raise UnsupportedParameter(f"{name} is reserved for frames of video files, which this gpupipe does not serve yet")
    src = _one(query, "src")
    if not src:
        raise BadParameter("src is required: a frame path relative to a --root, or an absolute path inside one")
    return FrameQuery(src, frame_params(lambda n: _one(query, n)))


def ignored_params(names: Iterable[str]) -> tuple[str, ...]:
    """The distinct parameter names among ``names`` that gpupipe does not reserve, sorted."""
    return tuple(sorted(set(names) - set(RESERVED_PARAMS)))


def ignored_header_value(names: Sequence[str]) -> str:
    """The :data:`IGNORED_HEADER` value naming ``names`` (``"_, v"``): each percent-encoded (so that a
    comma or a control character in a name cannot change the list) and cut to 40 characters;
    the first 16, then ``...``."""
    shown = [quote(n[:_MAX_NAME], safe="") or '""' for n in names[:_MAX_NAMES]]
    return ", ".join(shown + (["..."] if len(names) > _MAX_NAMES else []))
