"""``gpupipe-ffmpeg``: an ``ffmpeg`` front for renderers that shell out to ffmpeg for image sequences.

Point a renderer's ffmpeg setting at it (hyperframes: ``HYPERFRAMES_FFMPEG_PATH``). It has one
job: recognise the frame-extraction command lines it knows, run them through
:func:`gpupipe.extract.extract_clip` (or a running ``gpupipe serve``), and hand every other
command, unchanged, to the real ffmpeg.

Recognised forms
----------------
Those hyperframes 0.8.170 issues for a clip window (``extractVideoFramesRange`` in
``@hyperframes/engine``'s ``videoFrameExtractor.ts``, an SDR source sampled at the output rate),
one argument per token, in this order::

    -noaccurate_seek -ss S -i CLIP -t D -vf CHAIN -q:v Q -y DIR/frame_%05d.jpg
    -noaccurate_seek -ss S -i CLIP -t D -vf CHAIN -q:v 0 -compression_level L -y DIR/frame_%05d.png

where ``CHAIN`` is, with ``F`` an integer or ``num/den`` and ``G`` absent, ``bt709`` or
``smpte170m`` (hyperframes' guess of an untagged clip's matrix)::

    settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps=F:start_time=0:round=up,[setparams=colorspace=G,]
    setparams=color_primaries=bt709:color_trc=iec61966-2-1[,JPEG_TAIL]

and ``JPEG_TAIL`` (present exactly when the output is ``.jpg``/``.jpeg``) is
``scale=flags=neighbor+accurate_rnd,format=gbrp,scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p``.
Also recognised, as ffmpeg reads them: the options in any order within their place (input
options before ``-i``, output options after it, global options anywhere); ``-ss``/``-t`` left out
(start 0, to the clip's end), ``-ss`` only together with ``-noaccurate_seek``; ``-start_number N``;
``-f image2``; and the global options ``-hide_banner``, ``-nostdin``, ``-nostats``,
``-loglevel``/``-v LEVEL``. Times are seconds (``12``, ``0.5``), read as ffmpeg reads them
(to the microsecond, further digits dropped). ``Q`` is 2..31 (ffmpeg's ``-q:v``, passed on as
:attr:`~gpupipe.extract.ExtractRequest.jpeg_qscale`); the output pattern holds exactly one ``%d``
or ``%0Nd`` and no other ``%``.

A recognised command becomes an :class:`~gpupipe.extract.ExtractRequest` with
``atomic=False``: the files appear in ``DIR`` one by one, each complete, as ffmpeg writes them.
PNG's ``-compression_level`` is not passed on (the pixels are the same; the file sizes differ).

Everything else goes to the real ffmpeg
---------------------------------------
Any other command, and any recognised one carrying an option or value not listed above, is
``exec``'d unchanged on the real ffmpeg: the same argv, stdin, stdout, stderr and exit status.
That covers the rest of what hyperframes runs through the same binary: ``-version``,
``-hide_banner -filters``, ``-encoders``, encoder probes, the final encode, audio, ``psnr``
checks, its other extraction forms (``-c:v libvpx-vp9`` for alpha, ``-hwaccel``, HDR tone maps,
one final frame with ``-ss`` after ``-i``, segments with ``-frames:v``), and older releases'
forms (``-vf fps=F``).

The real ffmpeg is ``$GPUPIPE_REAL_FFMPEG``, else the first ``ffmpeg`` on ``PATH`` that is not
this front (a link to it, or a script that runs ``gpupipe.ffmpeg_front``). The front marks the
environment of what it ``exec``'s (``GPUPIPE_FFMPEG_FRONT_EXEC``); started with that mark, it was
reached from itself and stops (exit 1) instead of looping.

Failures go to ffmpeg too
-------------------------
When a recognised extraction fails in gpupipe (the clip is missing or not a video, the folder is
missing, the service refuses it, no frame is selected, a decode fails), the front runs the real
ffmpeg on the same argv: ffmpeg then says what is wrong in its own words and exit status, and
where gpupipe was wrong and ffmpeg is not, the render goes on. Every recognised form carries
``-y``, so ffmpeg overwrites whatever gpupipe had written, and gpupipe writes only files that
ffmpeg writes too (the same selection).

Where it runs, and what it says
-------------------------------
With ``GPUPIPE_URL`` (``http://host:port``) or ``GPUPIPE_SOCKET`` (a Unix socket) set, the
extraction is asked of that ``gpupipe serve`` (``POST /v1/extract``), so that many renderer
workers share one GPU and one byte budget; the clip and ``DIR`` must lie under its roots.
Without either it runs in this process (:func:`~gpupipe.extract.extract_clip`, the GPU where
usable). ``GPUPIPE_EXTRACT_FIT=WxH`` writes the frames fitted inside ``W``x``H`` (aspect kept):
the opt-in for clips shown smaller than their source.

On stderr the front writes one line per extraction at ffmpeg's ``info`` level or above (the
default) and the reason for a pass-through at ``verbose`` and above; a pass-through's stderr is
otherwise the real ffmpeg's alone. ``GPUPIPE_FFMPEG_LOG=FILE`` appends a JSON line per
invocation to ``FILE``: ``{"action": "extract"|"pass", "argv": [...], ...}``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import ConfigError, FfmpegUnavailable, GpupipeError

if TYPE_CHECKING:
    from .extract import ExtractRequest

__all__ = [
    "EXEC_MARK",
    "Extraction",
    "PassThrough",
    "find_real_ffmpeg",
    "main",
    "parse_command",
    "parse_fit",
    "run",
]

EXEC_MARK = "GPUPIPE_FFMPEG_FRONT_EXEC"
"""Set in the environment of what the front ``exec``'s: seen on entry, the front was reached from itself."""

LOG_LEVELS = {
    "quiet": -8,
    "panic": 0,
    "fatal": 8,
    "error": 16,
    "warning": 24,
    "info": 32,
    "verbose": 40,
    "debug": 48,
    "trace": 56,
}
"""ffmpeg's ``-loglevel`` names and their numbers (``info``, 32, is ffmpeg's default)."""
_INFO, _VERBOSE = LOG_LEVELS["info"], LOG_LEVELS["verbose"]

_TIME = re.compile(r"(\d+)(?:\.(\d*))?")
_RATE = re.compile(r"([1-9]\d*)(?:/([1-9]\d*))?")
_CHAIN = re.compile(
    r"settb=intb/2,setpts=PTS-lte\(TB\\,0\.001\),fps=(?P<fps>[^:,]+):start_time=0:round=up,"
    r"(?:setparams=colorspace=(?:bt709|smpte170m),)?"
    r"setparams=color_primaries=bt709:color_trc=iec61966-2-1"
    r"(?P<jpeg>,scale=flags=neighbor\+accurate_rnd,format=gbrp,"
    r"scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p)?"
)
_PATTERN = re.compile(r"%(0\d+)?d")
_PROTOCOL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_Options = dict[str, str | None]  # an option's value, None for a flag
_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}

_GLOBAL_FLAGS = frozenset({"-y", "-hide_banner", "-nostdin", "-nostats"})
_GLOBAL_VALUED = frozenset({"-loglevel", "-v"})
_INPUT_FLAGS = frozenset({"-noaccurate_seek"})
_INPUT_VALUED = frozenset({"-ss"})
_OUTPUT_VALUED = frozenset({"-t", "-vf", "-q:v", "-compression_level", "-start_number", "-f"})


@dataclass(frozen=True)
class Extraction:
    """A recognised extraction: the request it becomes and the ``-loglevel`` it asked for (ffmpeg's number)."""

    request: ExtractRequest
    loglevel: int = _INFO


@dataclass(frozen=True)
class PassThrough:
    """A command for the real ffmpeg, and why it is not an extraction the front runs."""

    reason: str
    loglevel: int = _INFO


def parse_fit(value: str | None) -> tuple[int, int] | None:
    """``GPUPIPE_EXTRACT_FIT``'s ``WxH`` as ``(W, H)``; ``None`` when unset or empty; :class:`ConfigError` otherwise."""
    if value is None or not value.strip():
        return None
    m = re.fullmatch(r"\s*([1-9]\d{0,5})[xX]([1-9]\d{0,5})\s*", value)
    if m is None:
        raise ConfigError(f"GPUPIPE_EXTRACT_FIT={value!r}: expected WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    return int(m.group(1)), int(m.group(2))


def _seconds(text: str) -> float | None:
    """A time as ffmpeg's ``av_parse_time`` reads ``S[.frac]``: whole microseconds, further digits dropped."""
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    micros = int(m.group(1)) * 1_000_000 + int(((m.group(2) or "") + "000000")[:6])
    return micros / 1_000_000


def _loglevel(text: str) -> int | None:
    """ffmpeg's ``-loglevel [flags+]level`` as a number, or ``None`` where ffmpeg would refuse it."""
    level = text.rsplit("+", maxsplit=1)[-1]
    if level in LOG_LEVELS:
        return LOG_LEVELS[level]
    return int(level) if re.fullmatch(r"-?\d+", level) else None


def _split(argv: Sequence[str]) -> tuple[_Options, _Options, _Options, str] | str:  # noqa: PLR0911 - a return per misfit
    """``(global, input, output options, output)``, or why the command is not of the recognised shape."""
    glob: _Options = {}
    inp: _Options = {}
    out: _Options = {}
    args = list(argv)
    if not args or args[-1].startswith("-"):
        return "no output file last"
    output = args.pop()
    i = 0
    place = inp
    while i < len(args):
        tok = args[i]
        value: str | None = None
        if tok in _GLOBAL_VALUED or tok in _INPUT_VALUED or tok in _OUTPUT_VALUED or tok == "-i":
            if i + 1 >= len(args):
                return f"{tok} without a value"
            value = args[i + 1]
            i += 2
        elif tok in _GLOBAL_FLAGS or tok in _INPUT_FLAGS:
            i += 1
        else:
            return f"argument {tok!r}" if tok.startswith("-") else f"a second output or stray argument {tok!r}"
        if tok == "-i":
            if "-i" in glob:
                return "more than one input"
            glob["-i"] = value
            place = out
            continue
        target = glob if tok in _GLOBAL_FLAGS or tok in _GLOBAL_VALUED else place
        allowed = (_INPUT_FLAGS | _INPUT_VALUED) if target is inp else _OUTPUT_VALUED if target is out else None
        if allowed is not None and tok not in allowed:
            return f"{tok} {'before' if target is inp else 'after'} -i"
        if tok in target:
            return f"{tok} given twice"
        target[tok] = value
    if "-i" not in glob:
        return "no input"
    return glob, inp, out, output


def parse_command(argv: Sequence[str], *, fit: tuple[int, int] | None = None) -> Extraction | PassThrough:
    """What the front does with ffmpeg's arguments ``argv`` (without the program name): an
    :class:`Extraction` for a recognised form (see the module docstring; ``fit`` becomes its
    ``size``), else a :class:`PassThrough` saying what was not recognised. Pure: reads no file."""
    level = _INFO
    for flag, value in itertools.pairwise(argv):
        if flag in _GLOBAL_VALUED:
            parsed = _loglevel(value)
            if parsed is None:
                return PassThrough(f"{flag} {value!r} not understood", level)
            level = parsed
    shape = _split(argv)
    if isinstance(shape, str):
        return PassThrough(shape, level)
    request = _recognise(*shape, fit)
    if isinstance(request, str):
        return PassThrough(request, level)
    return Extraction(request, level)


def _recognise(  # noqa: PLR0911, PLR0912 - one return per rule of the documented forms
    glob: _Options, inp: _Options, out: _Options, output: str, fit: tuple[int, int] | None
) -> ExtractRequest | str:
    """The request a command of the right shape makes, or why it is still not recognised."""
    clip = glob["-i"] or ""
    if "-y" not in glob:
        return "no -y (ffmpeg would ask before overwriting)"
    if clip in ("", "-") or _PROTOCOL.match(clip):
        return "the input is not a local file"
    if "-ss" in inp and "-noaccurate_seek" not in inp:
        return "-ss without -noaccurate_seek"
    start = _seconds(inp.get("-ss") or "0")
    duration = None if "-t" not in out else _seconds(out["-t"] or "")
    if start is None or ("-t" in out and duration is None):
        return "-ss or -t is not plain seconds"
    if out.get("-f", "image2") != "image2":
        return "-f is not image2"
    path = Path(output)
    fmt = _FORMATS.get(path.suffix)
    if fmt is None or _PROTOCOL.match(output):
        return "the output is not a local .jpg/.jpeg/.png pattern"
    if len(_PATTERN.findall(path.name)) != 1 or output.count("%") != 1:
        return "the output pattern does not hold exactly one %d"
    chain = _CHAIN.fullmatch(out.get("-vf") or "")
    if chain is None:
        return "the -vf chain is not hyperframes' extraction chain"
    rate = _RATE.fullmatch(chain["fps"])
    if rate is None:
        return "the fps rate is not N or N/D"
    if (chain["jpeg"] is not None) != (fmt == "jpeg"):
        return "the chain's colour conversion does not match the output format"
    q = out.get("-q:v")
    if fmt == "jpeg" and (q is None or not q.isdigit() or not 2 <= int(q) <= 31 or "-compression_level" in out):
        return "JPEG without -q:v 2..31, or with -compression_level"
    if fmt == "png" and not all(v.isdigit() for v in (q or "0", out.get("-compression_level") or "0")):
        return "PNG with a -q:v or -compression_level that is not a number"
    start_number = out.get("-start_number") or "1"
    if not start_number.isdigit():
        return "-start_number is not a number"

    from .extract import ExtractRequest

    return ExtractRequest(
        clip=Path(clip),
        out_dir=path.parent,
        pattern=path.name,
        fps=Fraction(int(rate[1]), int(rate[2] or 1)),
        start=start,
        duration=duration,
        size=fit,
        jpeg_qscale=int(q) if fmt == "jpeg" and q is not None else None,
        start_number=int(start_number),
        atomic=False,
    )


def _is_front(path: str) -> bool:
    """Whether the executable at ``path`` is this front: the running script, a link to it, or a
    script that starts ``gpupipe.ffmpeg_front`` (a console script, a wrapper)."""
    try:
        real = os.path.realpath(path)
        if sys.argv and sys.argv[0] and os.path.exists(sys.argv[0]) and os.path.samefile(real, sys.argv[0]):
            return True
        with open(real, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and (b"gpupipe.ffmpeg_front" in head or b"gpupipe-ffmpeg" in head)


def find_real_ffmpeg(environ: Mapping[str, str]) -> str:
    """The real ffmpeg: ``$GPUPIPE_REAL_FFMPEG``, else the first ``ffmpeg`` on ``$PATH`` that is not
    this front. Raises :class:`~gpupipe.errors.FfmpegUnavailable` when there is none, or when
    ``GPUPIPE_REAL_FFMPEG`` names the front itself."""
    explicit = environ.get("GPUPIPE_REAL_FFMPEG", "").strip()
    if explicit:
        if _is_front(explicit):
            raise FfmpegUnavailable(f"GPUPIPE_REAL_FFMPEG={explicit!r} is gpupipe-ffmpeg itself; point it at the real ffmpeg")
        return explicit
    for folder in environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", "ffmpeg")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and not _is_front(candidate):
            return candidate
    raise FfmpegUnavailable("no real ffmpeg: set GPUPIPE_REAL_FFMPEG, or put ffmpeg on PATH (other than gpupipe-ffmpeg)")


def _log(environ: Mapping[str, str], record: dict[str, Any]) -> None:
    """Append ``record`` as a JSON line to ``$GPUPIPE_FFMPEG_LOG`` (when set; a log that cannot be written is skipped)."""
    target = environ.get("GPUPIPE_FFMPEG_LOG")
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "pid": os.getpid(), **record}) + "\n")
    except OSError:
        pass


def _say(level: int, at: int, text: str) -> None:
    if level >= at:
        print(f"[gpupipe-ffmpeg] {text}", file=sys.stderr, flush=True)


def _exec_real(argv: Sequence[str], environ: Mapping[str, str], level: int) -> NoReturn:
    """Replace this process with the real ffmpeg on ``argv`` (exit 1 with a message when there is none)."""
    try:
        real = find_real_ffmpeg(environ)
    except FfmpegUnavailable as e:
        _say(level, LOG_LEVELS["fatal"], str(e))
        sys.exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(real, [real, *argv], {**environ, EXEC_MARK: "1"})
    except OSError as e:
        _say(level, LOG_LEVELS["fatal"], f"cannot run the real ffmpeg {real!r}: {e.strerror}")
        sys.exit(1)


def _extract(request: ExtractRequest, environ: Mapping[str, str]) -> tuple[int, str]:
    """Run ``request`` on the service named by the environment, or in this process: ``(frames, how)``."""
    url, sock = environ.get("GPUPIPE_URL"), environ.get("GPUPIPE_SOCKET")
    if url or sock:
        from .serve.client import FrameClient

        absolute = replace(request, clip=request.clip.absolute(), out_dir=request.out_dir.absolute())
        with FrameClient(url or "http://127.0.0.1", socket_path=sock or None, timeout=3600.0) as client:
            result = client.extract(absolute)
        return len(result.paths), f"gpupipe serve ({result.backend}, {result.decoder})"
    from .extract import extract_clip

    local = extract_clip(request)
    return len(local.paths), f"{local.backend}, {local.decoder}"


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """The front on ``argv`` (ffmpeg's arguments): 0 after a recognised extraction; otherwise it
    ``exec``'s the real ffmpeg and does not return (1 when there is none, or a loop)."""
    if environ.get(EXEC_MARK):
        print("[gpupipe-ffmpeg] the real ffmpeg it was to run is gpupipe-ffmpeg again; set GPUPIPE_REAL_FFMPEG", file=sys.stderr)
        return 1
    try:
        fit = parse_fit(environ.get("GPUPIPE_EXTRACT_FIT"))
    except ConfigError as e:
        print(f"[gpupipe-ffmpeg] {e}", file=sys.stderr)
        return 1
    what = parse_command(argv, fit=fit)
    if isinstance(what, PassThrough):
        _log(environ, {"action": "pass", "reason": what.reason, "argv": list(argv)})
        _say(what.loglevel, _VERBOSE, f"to the real ffmpeg: {what.reason}")
        _exec_real(argv, environ, what.loglevel)
    started = time.perf_counter()
    try:
        frames, how = _extract(what.request, environ)
    except (GpupipeError, OSError) as e:
        reason = f"{type(e).__name__}: {e}"
        _log(environ, {"action": "pass", "reason": f"gpupipe failed ({reason})", "argv": list(argv)})
        _say(what.loglevel, _VERBOSE, f"gpupipe failed ({reason}); running the real ffmpeg")
        _exec_real(argv, environ, what.loglevel)
    seconds = time.perf_counter() - started
    _log(environ, {"action": "extract", "argv": list(argv), "frames": frames, "by": how, "seconds": round(seconds, 3)})
    _say(what.loglevel, _INFO, f"{frames} frames of {str(what.request.clip)!r} written by gpupipe ({how}) in {seconds:.2f} s")
    return 0


def main() -> NoReturn:
    """The ``gpupipe-ffmpeg`` console script."""
    sys.exit(run(sys.argv[1:], os.environ))


if __name__ == "__main__":
    main()
