"""``POST /v1/extract``: a clip's frames written as image files by the service (:func:`gpupipe.extract.extract_clip`),
so that many renderer workers share one GPU, one decoder pool and one byte budget.

The body is a JSON object with :class:`~gpupipe.extract.ExtractRequest`'s fields: ``clip`` and
``out_dir`` (required), ``pattern``, ``fps`` (a number or ``"30000/1001"``), ``start``,
``duration``, ``size`` (``[w, h]`` or ``"WxH"``), ``jpeg_qscale``, ``jpeg_quality``,
``start_number``, ``atomic``, ``fps_start`` (a number, default 0), ``max_frames``,
``colour_matrix`` (``"stream"``, ``"bt709"``, ``"bt601"``), ``png_compression_level``. Both paths are confined as ``src=`` is (:class:`~gpupipe.serve.roots.Roots`):
the clip must resolve inside a ``--root``; ``out_dir`` must not hold ``..``, and its parent (the
folder itself when ``atomic`` is false) must resolve inside a root. A relative ``out_dir`` is taken
under the first root.

The extraction runs on the encoder of the lane that serves the clip, its work and its decoder counted in
that lane's byte budget (:func:`~gpupipe.extract.extract_clip`'s ``budget``): it waits for room as
requests do, and answers 503 ``BudgetTimeout`` when none comes in time.

Answers 200 with :meth:`ExtractResult.as_dict <gpupipe.extract.ExtractResult.as_dict>`; 400 for a
malformed body, 403 for a path outside the roots, 404 for a clip under no root, and 422
``{"error", "type": "ExtractError" | "NothingToExtract", "src": clip}`` when the extraction fails.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import ExtractError
from ..extract import ExtractRequest, extract_clip
from ..video.decoder import COLOUR_MATRICES
from ..vocabulary import parse_wxh
from .errors import BadParameter, PathRefused
from .handlers import service_of
from .lanes import route
from .roots import MAX_SRC_CHARS, Roots

__all__ = ["EXTRACT_FIELDS", "extract_request", "handle_extract"]

EXTRACT_FIELDS = (
    "clip",
    "out_dir",
    "pattern",
    "fps",
    "start",
    "duration",
    "size",
    "jpeg_qscale",
    "jpeg_quality",
    "start_number",
    "atomic",
    "fps_start",
    "max_frames",
    "colour_matrix",
    "png_compression_level",
)


def _number(body: dict[str, Any], key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadParameter(f"{key} must be a number")
    return float(v)


def _int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadParameter(f"{key} must be an integer")
    return v


def _fps(v: Any) -> Fraction | None:
    if v is None:
        return None
    try:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)) or len(str(v)) > 40:
            raise ValueError
        fps = Fraction(v)
    except (ValueError, ZeroDivisionError):
        raise BadParameter('fps must be a positive number or a ratio such as "30000/1001"') from None
    if fps <= 0:
        raise BadParameter('fps must be a positive number or a ratio such as "30000/1001"')
    return fps


def _size(v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    try:
        if isinstance(v, str):
            return parse_wxh(v)
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
            return int(v[0]), int(v[1])
    except ValueError:
        pass
    raise BadParameter('size must be "WxH" or [width, height]')


def _out_dir(roots: Roots, value: Any, atomic: bool) -> Path:
    """``out_dir`` resolved and confined: its parent (itself when not atomic) inside a root."""
    if not isinstance(value, str) or not value or len(value) > MAX_SRC_CHARS or "\x00" in value:
        raise BadParameter("out_dir must be a folder path under a --root")
    if ".." in value.replace("\\", "/").split("/"):
        raise PathRefused("out_dir may not contain '..'", value)
    path = Path(value if os.path.isabs(value) else os.path.join(roots.paths[0], value))
    if not path.name:
        raise BadParameter("out_dir must name a folder")
    anchor = os.path.realpath(path.parent if atomic else path)
    if not roots.inside(anchor):
        raise PathRefused("out_dir resolves outside every --root", value)
    return Path(anchor) / path.name if atomic else Path(anchor)


def extract_request(body: Any, roots: Roots) -> ExtractRequest:
    """The :class:`ExtractRequest` a body asks for, its paths confined under ``roots`` (see the module docstring)."""
    if not isinstance(body, dict):
        raise BadParameter('the body must be a JSON object: {"clip", "out_dir", ...}')
    unknown = sorted(set(body) - set(EXTRACT_FIELDS))
    if unknown:
        raise BadParameter(f"unknown field {str(unknown[0])[:40]!r} (known: {', '.join(EXTRACT_FIELDS)})")
    clip = roots.resolve(body.get("clip"))  # type: ignore[arg-type]  # resolve() checks the type
    atomic = body.get("atomic", True)
    if not isinstance(atomic, bool):
        raise BadParameter("atomic must be true or false")
    pattern = body.get("pattern", "frame_%05d.jpg")
    if not isinstance(pattern, str):
        raise BadParameter("pattern must be a string")
    start = _number(body, "start")
    quality = _int(body, "jpeg_quality")
    start_number = _int(body, "start_number")
    fps_start = _number(body, "fps_start")
    matrix = body.get("colour_matrix", "stream")
    if matrix not in COLOUR_MATRICES:
        raise BadParameter(f"colour_matrix must be one of {', '.join(COLOUR_MATRICES)}")
    return ExtractRequest(
        clip=Path(clip),
        out_dir=_out_dir(roots, body.get("out_dir"), atomic),
        pattern=pattern,
        fps=_fps(body.get("fps")),
        start=0.0 if start is None else start,
        duration=_number(body, "duration"),
        size=_size(body.get("size")),
        jpeg_qscale=_int(body, "jpeg_qscale"),
        jpeg_quality=95 if quality is None else quality,
        start_number=1 if start_number is None else start_number,
        atomic=atomic,
        fps_start=0.0 if fps_start is None else fps_start,
        max_frames=_int(body, "max_frames"),
        colour_matrix=matrix,
        png_compression_level=_int(body, "png_compression_level"),
    )


async def handle_extract(request: web.Request) -> web.Response:
    """``POST /v1/extract``: run the extraction on the lane that serves the clip's frames (see the module docstring)."""
    svc = service_of(request)
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter('the body must be a JSON object: {"clip", "out_dir", ...}') from None
    req = extract_request(body, svc.roots)
    lane = svc.lanes[route(os.fspath(req.clip), len(svc.lanes))]
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(
            svc.batch_pool, lambda: extract_clip(req, encoder=lane.pipeline.encoder, budget=lane.pipeline.cache)
        )
    except ExtractError as e:
        return web.json_response({"error": e.reason, "type": type(e).__name__, "src": body.get("clip")}, status=422)
    return web.json_response(result.as_dict())
