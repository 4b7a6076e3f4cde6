"""Request parameters: which query parameters gpupipe reserves, and the output settings they carry.

:data:`RESERVED_PARAMS` is the one list of the query parameters gpupipe gives a meaning to, now
or in a coming version (the README's "Serving frames" repeats it; a test keeps the two equal).
Every other query parameter is ignored, so that a page's cache-buster (``&_=123``, ``&v=2``)
does not break URL mode; the handlers name the ignored ones in the :data:`IGNORED_HEADER`
response header. A reserved parameter given twice, or with a bad value, is a
:class:`~gpupipe.serve.errors.BadParameter` (400) naming it. ``frame`` and ``t`` pick a frame of
the video clip ``src`` names (:class:`~gpupipe.serve.refs.FrameRef`).

The same settings come as fields of a schedule's JSON body (:func:`frame_params` over
``body.get``), where ``size`` may also be a ``[width, height]`` list; its ``sources``
(:func:`schedule_sources`) are frame paths (strings) and video frames (``{"src": "clip.mp4",
"frame": 12}`` or ``{"src": "clip.mp4", "t": 0.4}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from multidict import MultiMapping

from ..vocabulary import MAX_SIDE, OUTPUT_FORMATS, QUALITY_MAX, QUALITY_MIN, parse_wxh
from .errors import BadParameter
from .refs import FrameRef, parse_frame, parse_t

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
    "schedule_sources",
]

FRAME_PARAMS: Mapping[str, str] = {
    "src": "the frame: a path relative to a --root, or an absolute path inside one (required)",
    "format": "auto, passthrough, jpeg or png (default: the config's output.format)",
    "size": "WIDTHxHEIGHT to fit the frame into, such as 1920x1080 (default: the config's output.size)",
    "quality": "JPEG quality, 1 to 100 (default: the config's output.jpeg_quality)",
}
"""The parameters of a frame request, with what each means."""
VIDEO_PARAMS: Mapping[str, str] = {
    "t": "with a src that names a video clip: its frame at t seconds from the first frame, a decimal such as 1.5"
    " (the last frame whose timestamp is <= t, as a browser shows at currentTime = t)",
    "frame": "with a src that names a video clip: its frame by display index, from 0",
}
"""Parameters that pick one frame of a video clip: exactly one of them beside a ``src`` that names a clip."""
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
    """A frame request's parameters: the frame (``src``, and ``frame`` or ``t`` for a video's) and its output settings."""

    ref: FrameRef
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

    Raises :class:`BadParameter` for a missing ``src``, a reserved parameter given twice, a bad
    value, or both ``frame`` and ``t``.
    """
    src = _one(query, "src")
    if not src:
        raise BadParameter("src is required: a frame path relative to a --root, or an absolute path inside one")
    ref = FrameRef(src, parse_frame(_one(query, "frame")), parse_t(_one(query, "t")))
    return FrameQuery(ref, frame_params(lambda n: _one(query, n)))


_SOURCE_FIELDS = ("src", "frame", "t")
_SOURCES_SHAPE = (
    'sources must be a non-empty list of frame paths ("f.png") and video frames '
    '({"src": "clip.mp4", "frame": 12} or {"src": "clip.mp4", "t": 0.4})'
)


def schedule_sources(value: Any) -> list[FrameRef]:
    """A schedule body's ``sources``: each a frame path (a string) or a video frame (an object with
    ``src`` and exactly one of ``frame``, a display index, and ``t``, seconds).

    :class:`BadParameter` for anything else, naming the first bad entry (``sources[3]: ...``).
    """
    if not isinstance(value, list) or not value:
        raise BadParameter(_SOURCES_SHAPE)
    out: list[FrameRef] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(FrameRef(item))
            continue
        try:
            if not isinstance(item, dict):
                raise BadParameter(_SOURCES_SHAPE)
            unknown = sorted(set(item) - set(_SOURCE_FIELDS))
            if unknown:
                raise BadParameter(f"unknown field {str(unknown[0])[:40]!r} (known: {', '.join(_SOURCE_FIELDS)})")
            src = item.get("src")
            if not isinstance(src, str):
                raise BadParameter("src must be a path (a string)")
            ref = FrameRef(src, parse_frame(item.get("frame")), parse_t(item.get("t")))
            if not ref.video:
                raise BadParameter(
                    'a video frame needs "frame" (a display index) or "t" (seconds); a frame file is a plain string'
                )
        except BadParameter as e:
            raise BadParameter(f"sources[{i}]: {e.message}") from None
        out.append(ref)
    return out


def ignored_params(names: Iterable[str]) -> tuple[str, ...]:
    """The distinct parameter names among ``names`` that gpupipe does not reserve, sorted."""
    return tuple(sorted(set(names) - set(RESERVED_PARAMS)))


def ignored_header_value(names: Sequence[str]) -> str:
    """The :data:`IGNORED_HEADER` value naming ``names`` (``"_, v"``): each percent-encoded (so that a
    comma or a control character in a name cannot change the list) and cut to 40 characters;
    the first 16, then ``...``."""
    shown = [quote(n[:_MAX_NAME], safe="") or '""' for n in names[:_MAX_NAMES]]
    return ", ".join(shown + (["..."] if len(names) > _MAX_NAMES else []))
