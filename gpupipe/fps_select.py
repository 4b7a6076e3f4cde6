"""Which source frame each output frame shows, as FFmpeg's extraction command selects them: :func:`select_frames`.

The command this reproduces is the one the hyperframes renderer runs per clip window::

    ffmpeg -noaccurate_seek -ss S -i CLIP -t D \\
        -vf "settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps=N:start_time=T:round=up,..." \\
        [-frames:v M] frame_%05d.jpg

hyperframes 0.8.170 passes ``T = 0`` (output ``k`` is the frame shown at ``S + k/N``); ``T = S``
(an earlier reading of it) gives the frame shown at ``2S + k/N``. Both are expressible: ``start``
is ``-ss S``, ``fps_start`` the filter's ``start_time`` (``None``: equal to ``start``).

Read from FFmpeg's own code (``fftools`` input seeking, ``vf_fps.c``, ``vf_trim.c``) and checked
against the FFmpeg binary frame by frame (tests/test_extract.py), its selection is:

1. ``-ss S`` before ``-i`` rebases the timeline: every timestamp loses ``S`` (parsed to whole
   microseconds, as ``av_parse_time`` truncates) plus the container's start time, rescaled to the
   stream's time base. ``-noaccurate_seek`` keeps the frames decoded from the keyframe before the
   seek point; they only ever fill slots before the first frame, so which keyframe it is never
   changes the selection.
2. ``settb=intb/2,setpts=PTS-lte(TB,0.001)`` doubles the time base's resolution and moves each
   timestamp (and the end of the stream) one half tick earlier when half a tick is at most 1 ms.
3. ``fps=N:start_time=T:round=up`` applies ``start_time`` to the *rebased* timeline: output ``k``
   shows the last frame whose timestamp, offset by ``T`` and rounded up to the output grid, is at
   most slot ``k`` (the first frame when none is), so output ``k`` is the frame shown at
   ``S + T + k/N`` seconds of the source (FFmpeg 9.0.2: ``-ss 0.5 ... start_time=0.5`` on a 30 fps
   clip starts at source frame 30, ``-ss 0.5 ... start_time=0`` at frame 15). The filter writes every slot before the last frame's (those go
   out before it sees the end of the stream), and later slots while they are below the end of the
   stream (the last frame's timestamp plus its duration, nudged as in 2.), rounded up to the output
   grid *without* the ``start_time`` offset.
4. ``-t D`` (an output option) stops the output twice over: the trim FFmpeg inserts counts ``D``
   (rounded to the nearest slot) from the first written slot, ``ceil(T·N)``; the muxer stops at
   ``D`` seconds of output time counted from 0, so ``T >= D`` writes nothing.
5. ``-frames:v M`` (an output option) keeps the first ``M`` outputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

__all__ = ["select_frames"]

_US = 1_000_000


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def _round_half_away(x: Fraction) -> int:
    """FFmpeg's ``AV_ROUND_NEAR_INF``: to the nearest integer, halves away from zero."""
    n = abs(x)
    r = (n.numerator * 2 + n.denominator) // (n.denominator * 2)
    return r if x >= 0 else -r


def _parse_time_us(seconds: float) -> int:
    """``seconds`` as FFmpeg's ``av_parse_time`` reads its shortest decimal form: whole microseconds, truncated."""
    return math.trunc(Fraction(repr(float(seconds))) * _US)


def _check(fps: Fraction | None, start: float, duration: float | None, fps_start: float, max_frames: int | None) -> None:
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    for name, value in (("start", start), ("fps_start", fps_start)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds, 0 or more; got {value!r}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be 0 or more; got {max_frames!r}")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise ValueError(f"duration must be a positive number of seconds; got {duration!r}")


def select_frames(
    pts: Sequence[float | Fraction],
    fps: Fraction | None,
    start: float,
    duration: float | None,
    *,
    end: float | Fraction | None = None,
    time_base: Fraction | None = None,
    origin: float | Fraction = 0,
    fps_start: float | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Pure: the source frame index (display order) of each output frame, with FFmpeg's count.

    ``pts``: the frames' timestamps in seconds, ascending (display order); ``end``: where the
    stream ends (default: the last timestamp plus the last interval between two, or 1/30 s for a
    single frame). ``time_base``: the stream's time base (timestamps are whole ticks of it; default
    one microsecond), which sets FFmpeg's half-tick nudge. ``origin``: the container's start time
    in seconds (FFmpeg rebases ``-ss`` on it).

    With ``fps`` (the output rate), output ``k`` is the frame FFmpeg's
    ``-noaccurate_seek -ss start ... -t duration -vf settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps=fps:start_time=fps_start:round=up``
    writes at position ``k`` (see the module docstring: the frame shown at
    ``start + fps_start + k/fps`` of the source, until the stream's end or ``duration`` seconds of
    output time from 0); ``fps_start`` ``None`` is ``start``. The result never decreases. Without
    ``fps``: every frame whose timestamp lies in ``[start, start + duration)`` seconds after
    ``origin``, each once (``fps_start`` unused). ``max_frames``: FFmpeg's ``-frames:v``, the
    first that many outputs at most.

    ``ValueError`` for unsorted or empty ``pts``, ``fps <= 0``, a negative or non-finite ``start``
    or ``fps_start``, a ``duration`` that is not positive, or a negative ``max_frames``.
    """
    fps_start = start if fps_start is None else fps_start
    _check(fps, start, duration, fps_start, max_frames)
    selected = _select(pts, fps, start, duration, end, time_base, origin, fps_start)
    return selected if max_frames is None else selected[:max_frames]


def _select(
    pts: Sequence[float | Fraction],
    fps: Fraction | None,
    start: float,
    duration: float | None,
    end: float | Fraction | None,
    time_base: Fraction | None,
    origin: float | Fraction,
    fps_start: float,
) -> list[int]:
    if not pts:
        raise ValueError("pts is empty: a clip has at least one frame")
    tb = Fraction(time_base) if time_base is not None else Fraction(1, _US)
    ticks = [round(Fraction(p) / tb) for p in pts]
    if any(b < a for a, b in itertools.pairwise(ticks)):
        raise ValueError("pts must be in display order (ascending)")
    if end is None:
        step = ticks[-1] - ticks[-2] if len(ticks) > 1 else max(1, round(Fraction(1, 30) / tb))
        end_ticks = ticks[-1] + max(step, 1)
    else:
        end_ticks = max(round(Fraction(end) / tb), ticks[-1] + 1)
    origin_us = round(Fraction(origin) * _US)
    if fps is None:
        lo = Fraction(_parse_time_us(start) + origin_us, _US)
        hi = lo + Fraction(_parse_time_us(duration), _US) if duration is not None else None
        return [i for i, t in enumerate(ticks) if lo <= t * tb and (hi is None or t * tb < hi)]
    return _fps_select(ticks, end_ticks, tb, Fraction(fps), (start, fps_start), duration, origin_us)


def _fps_select(
    ticks: list[int],
    end_ticks: int,
    tb: Fraction,
    fps: Fraction,
    starts: tuple[float, float],
    duration: float | None,
    origin_us: int,
) -> list[int]:
    start, fps_start = starts
    # 1. -ss: timestamps rebased by the seek point (microseconds, then the stream's ticks, rounded)
    offset = _round_half_away((_parse_time_us(start) + origin_us) * Fraction(1, _US) / tb)
    # 2. settb=intb/2, setpts=PTS-lte(TB,0.001)
    in_tb = tb / 2
    nudge = 1 if in_tb <= Fraction(1, 1000) else 0

    def rebased(t: int) -> int:
        return 2 * (t - offset) - nudge

    # 3. fps=N:start_time=T:round=up (vf_fps.c: config_props, read_frame, update_eof_pts)
    first_us = math.trunc(fps_start * _US)  # a double cast to int64
    in_off = _ceil(Fraction(first_us, _US) / in_tb)
    out_off = _ceil(Fraction(first_us, _US) * fps)
    outs = [out_off + _ceil((rebased(t) - in_off) * in_tb * fps) for t in ticks]
    # slots before the last frame's are written before the end of the stream is seen; later ones
    # while they are below the end, rounded up without the start_time offset
    stop = max(outs[-1], _ceil(rebased(end_ticks) * in_tb * fps))
    # 4. -t D: the output's trim (D from its first frame, rounded to a slot) and the muxer's limit (D from 0)
    if duration is not None:
        d = Fraction(_parse_time_us(duration), _US) * fps
        stop = min(stop, out_off + _round_half_away(d), _ceil(d))
    selected: list[int] = []
    i = 0
    for slot in range(out_off, stop):
        while i + 1 < len(outs) and outs[i + 1] <= slot:
            i += 1
        selected.append(i)
    return selected
