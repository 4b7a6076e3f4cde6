"""Request parameters: a frame request's query, and the output settings it carries.

A parameter other than :data:`FRAME_PARAMS`, or one of them given twice or with a bad value, is a
:class:`~gpupipe.serve.errors.BadParameter` (400).

The same settings come as fields of a schedule's JSON body (:func:`frame_params` over
``body.get``), where ``size`` may also be a ``[width, height]`` list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from ..vocabulary import OUTPUT_FORMATS, parse_wxh
from .errors import BadParameter

__all__ = [
    "FRAME_PARAMS",
    "MAX_SIDE",
    "FrameParams",
    "FrameQuery",
    "frame_params",
    "parse_query",
]

FRAME_PARAMS: Mapping[str, str] = {
    "src": "the frame: a path relative to a --root, or an absolute path inside one (required)",
    "format": "auto, passthrough, jpeg or png (default: the config's output.format)",
    "size": "WIDTHxHEIGHT to fit the frame into, such as 1920x1080 (default: the config's output.size)",
    "quality": "JPEG quality, 1 to 100 (default: the config's output.jpeg_quality)",
}
"""The parameters of a frame request, with what each means."""
MAX_SIDE = 65535  # the largest width or height a request may ask for


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
    if isinstance(value, bool):
        raise BadParameter("quality must be an integer from 1 to 100")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 3:
            raise BadParameter(f"quality must be an integer from 1 to 100, got {value[:20]!r}")
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 100:
        raise BadParameter(f"quality must be an integer from 1 to 100, got {str(value)[:20]!r}")
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
    """The frame request in ``query``; :class:`BadParameter` for a missing ``src``, an unknown
    parameter, one given twice, or a bad value."""
    unknown = sorted(set(query) - set(FRAME_PARAMS))
    if unknown:
        raise BadParameter(f"unknown query parameter {unknown[0][:40]!r} (known: {', '.join(FRAME_PARAMS)})")
    src = _one(query, "src")
    if not src:
        raise BadParameter("src is required: a frame path relative to a --root, or an absolute path inside one")
    return FrameQuery(src, frame_params(lambda n: _one(query, n)))
