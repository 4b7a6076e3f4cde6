"""``gpupipe-ffmpeg``: an ``ffmpeg`` front for renderers that shell out to ffmpeg for image sequences.

Point a renderer's ffmpeg setting at it (hyperframes: ``HYPERFRAMES_FFMPEG_PATH``). It has one
job: recognise the frame-extraction command lines it knows, run them through
:func:`gpupipe.extract.extract_clip` (or a running ``gpupipe serve``), and hand every other
command, unchanged, to the real ffmpeg.

Recognised forms
----------------
Every extraction form hyperframes 0.8.170 issues for a clip window (``extractVideoFramesRange``
in ``@hyperframes/engine``'s ``videoFrameExtractor.ts``, an SDR source sampled at the output
rate; its segmented form for VFR sources, long windows and frame ranges), one argument per
token::

    [-c:v DEC] -noaccurate_seek -ss S -i CLIP -t D -vf CHAIN [-frames:v N] [-start_number K] -q:v Q -y DIR/frame_%05d.jpg
    [-c:v DEC] -noaccurate_seek -ss S -i CLIP -t D -vf CHAIN [-frames:v N] [-start_number K] -q:v 0 -compression_level L -y DIR/frame_%05d.png

where ``DEC`` is ``libvpx-vp9``, ``libvpx`` or ``prores`` (the decoder hyperframes names for
VP9/VP8 with alpha and ProRes; gpupipe's probe picks the same one, and the front checks that the
clip is of that codec, else ffmpeg runs the command and says why), ``Q`` is 1-31 (hyperframes
sends ``ceil((100 - quality) / 3)``, 2 by default), ``L`` 0-9, and ``CHAIN`` is, with ``F`` an
integer or ``num/den`` (the composition's rate)::

    settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps=F:start_time=0:round=up,[setparams=colorspace=bt709|smpte170m,]
    setparams=color_primaries=bt709:color_trc=iec61966-2-1[,JPEG_TAIL]

``setparams=colorspace=`` is hyperframes' guess for an untagged clip (``bt709`` from 720 lines
up, ``smpte170m`` below; absent for a tagged clip): the request's ``colour_matrix`` (``bt709``,
``bt601``), forced whatever the tag, as ffmpeg forces it. ``JPEG_TAIL``, present exactly when the
output is ``.jpg``/``.jpeg``, is
``scale=flags=neighbor+accurate_rnd,format=gbrp,scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p``.
Also recognised, as ffmpeg reads them: the options in any order within their place (input
options before ``-i``, output options after it, global options anywhere); ``-ss``/``-t`` left
out (from 0, to the clip's end); ``-f image2``; ``.jpeg``; and the global options
``-hide_banner``, ``-nostdin``, ``-nostats``, ``-loglevel``/``-v LEVEL``. ``S`` and ``D`` are
seconds (``4``, ``0.5``), read as ffmpeg reads them (to the microsecond, further digits
dropped). The output pattern holds exactly one ``%d`` or ``%0Nd`` and no other ``%``.

The request says what the command says: ``start=S`` with the fps filter's ``fps_start=0`` (output
``k`` is the frame shown at ``S + k/F``), ``duration=D``, ``max_frames=N``, ``start_number=K``,
``jpeg_qscale=Q`` or ``png_compression_level=L``. On the CPU the files are FFmpeg's own encoders'
(:mod:`gpupipe.cpu.ffmpeg_image`): the same pixels as the real ffmpeg's, sizes within 0.1 %.

A recognised command becomes an :class:`~gpupipe.extract.ExtractRequest` with
``atomic=False``: the files appear in ``DIR`` one by one, each complete, as ffmpeg writes them.

Everything else goes to the real ffmpeg
---------------------------------------
Any other command, and any recognised one carrying an option or value not listed above, is
``exec``'d unchanged on the real ffmpeg: the same argv, stdin, stdout, stderr and exit status.
That covers the rest of what hyperframes runs through the same binary: ``-version``,
``-hide_banner -filters``, ``-encoders``, encoder probes, the final encode, audio, ``psnr``
checks, its other extraction forms (``-hwaccel``, HDR tone maps, one final frame with ``-ss``
after ``-i``), and older releases' forms (``-vf fps=F``).

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
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import ConfigError, FfmpegUnavailable

if TYPE_CHECKING:
    from .extract import ExtractRequest

__all__ = [
    "EXEC_MARK",
    "Extraction",
    "FrontSettings",
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
    r"(?:setparams=colorspace=(?P<guess>bt709|smpte170m),)?"
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
_INPUT_VALUED = frozenset({"-ss", "-c:v"})
_OUTPUT_VALUED = frozenset({"-t", "-vf", "-q:v", "-compression_level", "-start_number", "-f", "-frames:v"})
_DECODERS = {"libvpx-vp9": "vp9", "libvpx": "vp8", "prores": "prores"}
"""The input decoders hyperframes names (``-c:v``) and the codec each decodes."""
_MATRICES = {"bt709": "bt709", "smpte170m": "bt601", None: "stream"}


@dataclass(frozen=True)
class Extraction:
    """A recognised extraction: the request it becomes and the ``-loglevel`` it asked for (ffmpeg's number)."""

    request: ExtractRequest
    loglevel: int = _INFO
    decoder: str | None = None
    """The input decoder the command names (``-c:v``), checked against the clip before extracting."""


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
    return Extraction(request, level, shape[1].get("-c:v"))


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
    if start is None:
        return "-ss is not plain seconds"
    if "-c:v" in inp and inp["-c:v"] not in _DECODERS:
        return "-c:v names a decoder other than libvpx-vp9, libvpx or prores"
    duration = None if "-t" not in out else _seconds(out["-t"] or "")
    if "-t" in out and duration is None:
        return "-t is not plain seconds"
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
    if fmt == "jpeg" and (q is None or not q.isdigit() or not 1 <= int(q) <= 31 or "-compression_level" in out):
        return "JPEG without -q:v 1-31, or with -compression_level"
    level = out.get("-compression_level")
    if fmt == "png" and (not (q or "0").isdigit() or (level is not None and not (level.isdigit() and int(level) <= 9))):
        return "PNG with a -q:v that is not a number or a -compression_level not 0-9"
    start_number = out.get("-start_number") or "1"
    if not start_number.isdigit():
        return "-start_number is not a number"
    frames = out.get("-frames:v")
    if frames is not None and not (frames.isdigit() and int(frames) > 0):
        return "-frames:v is not a positive number"

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
        fps_start=0.0,
        max_frames=int(frames) if frames is not None else None,
        colour_matrix=_MATRICES[chain["guess"]],  # type: ignore[arg-type]  # the regex allows these only
        png_compression_level=int(level) if fmt == "png" and level is not None else None,
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


def find_real_ffmpeg(explicit: str | None, path: str | None) -> str:
    """The real ffmpeg: ``explicit`` (``$GPUPIPE_REAL_FFMPEG``), else the first ``ffmpeg`` on ``path``
    (``$PATH``) that is not this front. Raises :class:`~gpupipe.errors.FfmpegUnavailable` when
    there is none, or when ``explicit`` names the front itself."""
    if explicit and explicit.strip():
        if _is_front(explicit.strip()):
            raise FfmpegUnavailable(f"GPUPIPE_REAL_FFMPEG={explicit!r} is gpupipe-ffmpeg itself; point it at the real ffmpeg")
        return explicit.strip()
    for folder in (path or os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", "ffmpeg")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and not _is_front(candidate):
            return candidate
    raise FfmpegUnavailable("no real ffmpeg: set GPUPIPE_REAL_FFMPEG, or put ffmpeg on PATH (other than gpupipe-ffmpeg)")


@dataclass(frozen=True)
class FrontSettings:
    """The front's environment (every variable read once, through :func:`gpupipe.env.env`).

    ``real_ffmpeg``: ``GPUPIPE_REAL_FFMPEG``; ``fit``: ``GPUPIPE_EXTRACT_FIT`` parsed
    (:func:`parse_fit`); ``url``/``socket``: ``GPUPIPE_URL``/``GPUPIPE_SOCKET``, the service to ask;
    ``log``: ``GPUPIPE_FFMPEG_LOG``; ``looped``: :data:`EXEC_MARK` is set (the front was reached
    from itself)."""

    real_ffmpeg: str | None = None
    fit: tuple[int, int] | None = None
    url: str | None = None
    socket: str | None = None
    log: str | None = None
    looped: bool = False

    @classmethod
    def from_env(cls) -> FrontSettings:
        """The settings in this process's environment; :class:`ConfigError` for a malformed ``GPUPIPE_EXTRACT_FIT``."""
        from .env import env

        return cls(
            real_ffmpeg=env("GPUPIPE_REAL_FFMPEG"),
            fit=parse_fit(env("GPUPIPE_EXTRACT_FIT")),
            url=env("GPUPIPE_URL"),
            socket=env("GPUPIPE_SOCKET"),
            log=env("GPUPIPE_FFMPEG_LOG"),
            looped=env("GPUPIPE_FFMPEG_FRONT_EXEC") is not None,
        )


def _log(settings: FrontSettings, record: dict[str, Any]) -> None:
    """Append ``record`` as a JSON line to ``$GPUPIPE_FFMPEG_LOG`` (when set; a log that cannot be written is skipped)."""
    target = settings.log
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


def _exec_real(argv: Sequence[str], settings: FrontSettings, level: int) -> NoReturn:
    """Replace this process with the real ffmpeg on ``argv``, its environment marked with :data:`EXEC_MARK`
    (exit 1 with a message when there is none)."""
    try:
        real = find_real_ffmpeg(settings.real_ffmpeg, os.environ.get("PATH"))
    except FfmpegUnavailable as e:
        _say(level, LOG_LEVELS["fatal"], str(e))
        sys.exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(real, [real, *argv], {**os.environ, EXEC_MARK: "1"})
    except OSError as e:
        _say(level, LOG_LEVELS["fatal"], f"cannot run the real ffmpeg {real!r}: {e.strerror}")
        sys.exit(1)


def _check_decoder(what: Extraction) -> None:
    """``ValueError`` when the command's ``-c:v`` decoder is not for the clip's codec (ffmpeg would fail)."""
    if what.decoder is None:
        return
    from .frames.clip import probe_clip

    codec = probe_clip(what.request.clip, str(what.request.clip)).codec
    if codec != _DECODERS[what.decoder]:
        raise ValueError(f"-c:v {what.decoder} for a {codec} clip")


def _extract(request: ExtractRequest, settings: FrontSettings) -> tuple[int, str]:
    """Run ``request`` on the service the settings name, or in this process: ``(frames, how)``."""
    url, sock = settings.url, settings.socket
    if url or sock:
        from .serve.client import FrameClient

        r = request
        with FrameClient(url or "http://127.0.0.1", socket_path=sock or None, timeout=3600.0) as client:
            result = client.extract(
                r.clip.absolute(),
                r.out_dir.absolute(),
                pattern=r.pattern,
                fps=r.fps,
                start=r.start,
                duration=r.duration,
                size=r.size,
                jpeg_qscale=r.jpeg_qscale,
                jpeg_quality=r.jpeg_quality,
                start_number=r.start_number,
                atomic=r.atomic,
                fps_start=r.fps_start or 0.0,
                max_frames=r.max_frames,
                colour_matrix=r.colour_matrix,
                png_compression_level=r.png_compression_level,
            )
        return len(result.paths), f"gpupipe serve ({result.backend}, {result.decoder})"
    from .extract import extract_clip

    local = extract_clip(request)
    return len(local.paths), f"{local.backend}, {local.decoder}"


def run(argv: Sequence[str], settings: FrontSettings) -> int:
    """The front on ``argv`` (ffmpeg's arguments): 0 after a recognised extraction; otherwise it
    ``exec``'s the real ffmpeg and does not return (1 when there is none, or a loop)."""
    if settings.looped:
        print("[gpupipe-ffmpeg] the real ffmpeg it was to run is gpupipe-ffmpeg again; set GPUPIPE_REAL_FFMPEG", file=sys.stderr)
        return 1
    what = parse_command(argv, fit=settings.fit)
    if isinstance(what, PassThrough):
        _log(settings, {"action": "pass", "reason": what.reason, "argv": list(argv)})
        _say(what.loglevel, _VERBOSE, f"to the real ffmpeg: {what.reason}")
        _exec_real(argv, settings, what.loglevel)
    started = time.perf_counter()
    try:
        _check_decoder(what)
        frames, how = _extract(what.request, settings)
    except Exception as e:  # noqa: BLE001 - whatever gpupipe fails on, the real ffmpeg gets the command (module docstring)
        reason = f"{type(e).__name__}: {e}"
        _log(settings, {"action": "pass", "reason": f"gpupipe failed ({reason})", "argv": list(argv)})
        _say(what.loglevel, _VERBOSE, f"gpupipe failed ({reason}); running the real ffmpeg")
        _exec_real(argv, settings, what.loglevel)
    seconds = time.perf_counter() - started
    _log(settings, {"action": "extract", "argv": list(argv), "frames": frames, "by": how, "seconds": round(seconds, 3)})
    _say(what.loglevel, _INFO, f"{frames} frames of {str(what.request.clip)!r} written by gpupipe ({how}) in {seconds:.2f} s")
    return 0


def main() -> NoReturn:
    """The ``gpupipe-ffmpeg`` console script."""
    try:
        settings = FrontSettings.from_env()
    except ConfigError as e:
        print(f"[gpupipe-ffmpeg] {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(run(sys.argv[1:], settings))


if __name__ == "__main__":
    main()
