"""The ``gpupipe`` command line: ``encode``, ``extract``, ``info``, ``demo``, ``bench`` and ``serve``."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .cache import CacheStats
from .clip_frames import FrameSelection, clip_of, parse_frames
from .config import MAX_GPU_INDEX, Config, MiB, load_config
from .errors import ConfigError, FrameError, GpupipeError
from .frames import VideoFrame
from .vocabulary import BACKENDS, choose, parse_wxh

if TYPE_CHECKING:
    from .pipeline import FramePipeline


def _plain_help(params: list[Any]) -> list[Any]:
    """Help that shows the metavars the options declare and no Python type names: typer prints
    ``<bool>`` beside flags (``--help`` included) and ``<list[Path]>`` beside variadic arguments."""
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag:
            p.metavar = ""
        elif isinstance(p, TyperArgument):
            p.display_type_rich = _no_type  # type: ignore[method-assign]
    return params


def _no_type(ctx: Any) -> None:
    return None


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Video frames to data:image/...;base64 URIs on NVIDIA GPUs or the CPU, in a memory-bounded cache.",
)
err = Console(stderr=True)

PROGRESS_INTERVAL_S = 5.0
"""Seconds between plain progress lines when stderr is not a terminal."""

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File name endings (any case) that ``encode DIR`` picks up."""

_F = TypeVar("_F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- errors and option checks


def _fail(message: str, prefix: str = "error") -> NoReturn:
    """Print ``prefix: message`` as one line on stderr (a multi-line message, such as one quoting
    ffmpeg's output, joined with `` | ``) and exit with status 2 (a usage or input error)."""
    text = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    err.print(f"[red]{prefix}:[/red] {escape(text)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _user_errors(fn: _F) -> _F:
    """Turn the errors a user can cause (bad config, unusable backend, unreadable or unwritable
    paths) into one line on stderr and exit status 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # stdout closed early (`| head`): the runner exits quietly
            raise
        except ConfigError as e:
            _fail(str(e), "config error")
        except (GpupipeError, OSError) as e:
            _fail(str(e))

    return wrapper  # type: ignore[return-value]


def _check_gpu(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_GPU_INDEX:
        _fail(f"--gpu: expected a GPU index between 0 and {MAX_GPU_INDEX}, got {value}")
    return value


def _backend_check(choices: tuple[str, ...]) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        if value.lower() not in choices:
            _fail(f"--backend: expected {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
        return value.lower()

    return check


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_wxh(value)
    except ValueError:
        _fail(f"--size: expected WIDTHxHEIGHT such as 1280x720, got {value!r}")


def _backend_option() -> Any:
    """The ``--backend`` option of ``encode`` and ``demo``: one of :data:`~gpupipe.vocabulary.BACKENDS`, default the config's."""
    return typer.Option(
        None,
        "--backend",
        "-b",
        callback=_backend_check(BACKENDS),
        metavar="NAME",
        help=f"{' | '.join(BACKENDS)} (default: config).",
    )


def _load(config: Path | None, gpu: int | None, backend: str | None) -> Config:
    try:
        cfg = load_config(config, gpu)
    except ConfigError as e:
        _fail(str(e), "config error")
    chosen = choose(backend, BACKENDS)
    if chosen is not None:
        from dataclasses import replace

        cfg = replace(cfg, backend=chosen)
    return cfg


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"gpupipe {__version__}")
        raise typer.Exit()


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning as one line on stderr, ``warning: CATEGORY: message``, instead of Python's file,
    line and source line. The warning filters still decide which are shown (each once, by default)."""
    err.print(f"[yellow]warning:[/yellow] {category.__name__}: {escape(str(message))}", soft_wrap=True, highlight=False)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """For one command: show warnings with :func:`_show_warning`, then restore what was there."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Video frames to data:image/...;base64 URIs on NVIDIA GPUs or the CPU, in a memory-bounded cache."""
    ctx.with_resource(_warnings_as_lines())


# --------------------------------------------------------------------------- output helpers


def _wide_console() -> Console:
    """stdout, at least 110 columns wide when it is not a terminal (pipes, logs, CI) unless
    ``COLUMNS`` sets the width."""
    con = Console()
    return con if con.is_terminal or os.environ.get("COLUMNS") else Console(width=max(con.width, 110))


class _BarProgress:
    """A rich progress bar on a terminal stderr (none for fewer than 8 steps)."""

    def __init__(self, total: int, rate_unit: str) -> None:
        self.total, self.rate_unit, self.done = total, rate_unit, 0
        self._t0 = time.perf_counter()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=total < 8,
        )
        self._task = self._bar.add_task("working", total=total, rate="")

    def update(self, done: int) -> None:
        self.done = done
        secs = time.perf_counter() - self._t0
        self._bar.update(self._task, completed=done, rate=f"{done / secs:.1f} {self.rate_unit}" if secs > 0 else "")

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def __enter__(self) -> _BarProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]


class _PlainProgress:
    """Progress for a stderr that is not a terminal (a log, a pipe, CI): a plain line such as
    ``encoded 40/120 frames, 12.3 fps`` at most every ``interval`` seconds, and the final count when
    the work ends; nothing for runs shorter than ``interval``."""

    def __init__(
        self,
        total: int,
        verb: str,
        unit: str,
        rate_unit: str,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.verb, self.unit, self.rate_unit = total, verb, unit, rate_unit
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.clock = clock
        self.stream = stream
        self.done = 0
        self.shown: int | None = None  # the count the last line showed
        self._t0 = self._last = clock()

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self._show(now)

    def _show(self, now: float) -> None:
        self.shown = self.done
        secs = now - self._t0
        rate = f", {self.done / secs:.1f} {self.rate_unit}" if secs > 0 else ""
        print(f"{self.verb} {self.done}/{self.total} {self.unit}{rate}", file=self.stream or sys.stderr, flush=True)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        """A last line with the final count, once any line was shown, so the last line never reads as a stop."""
        if self.shown is not None and self.shown != self.done and exc[0] is None:
            self._show(self.clock())


def _progress(total: int, verb: str, unit: str, rate_unit: str) -> _BarProgress | _PlainProgress:
    """A bar when stderr is a terminal, else plain progress lines every few seconds."""
    if err.is_terminal:
        return _BarProgress(total, rate_unit)
    return _PlainProgress(total, verb, unit, rate_unit)


def _stats_rows(table: Table, stats: CacheStats) -> None:
    table.add_row("cache entries", f"{stats.entries} / {stats.max_entries}")
    table.add_row("cache MiB", f"{stats.bytes / MiB:.1f} / {stats.max_bytes / MiB:.0f} (peak {stats.peak_bytes / MiB:.1f})")
    table.add_row("hits / joined / misses", f"{stats.hits} / {stats.joined} / {stats.misses} (hit ratio {stats.hit_ratio:.1%})")
    table.add_row(
        "evictions", f"{stats.evictions} ({stats.evicted_bytes / MiB:.1f} MiB), oversize rejects {stats.oversize_rejects}"
    )
    if stats.admission_waits or stats.admission_timeouts:
        table.add_row("budget waits", f"{stats.admission_waits} (timeouts {stats.admission_timeouts})")


def _json_safe_as_is(text: str) -> bool:
    """Whether ``json.dumps`` would write ``text`` unchanged between its quotes: printable ASCII
    (0x20-0x7e) without ``"`` or ``\\``. Base64 data URIs always are; checking is ~10x cheaper than
    ``json.dumps``."""
    if not text.isascii() or '"' in text or "\\" in text:
        return False
    if not text:
        return True
    codes = np.frombuffer(text.encode("ascii"), np.uint8)
    return int(codes.min()) >= 0x20 and int(codes.max()) < 0x7F


def _write_uri_line(sink: TextIO, fields: dict[str, Any], uri: str) -> None:
    """Write ``{**fields, "uri": uri}`` as one JSON line, the same text ``json.dumps`` gives, without
    re-encoding the (often 30+ MB) URI when it needs no escaping."""
    if not _json_safe_as_is(uri):
        sink.write(json.dumps({**fields, "uri": uri}) + "\n")
        return
    head = json.dumps(fields)
    sink.write(head[:-1] + (', "uri": "' if fields else '"uri": "'))
    sink.write(uri)
    sink.write('"}\n')


# --------------------------------------------------------------------------- commands


def _expand_inputs(args: Iterable[Path], stdin: TextIO | None = None) -> list[Path]:
    """Frame paths from the command line: a directory gives its PNG/JPEG files (sorted by name, not
    recursive), ``-`` the paths on stdin (one per line, blank lines skipped), anything else itself."""
    out: list[Path] = []
    for a in args:
        if str(a) == "-":
            stream = stdin if stdin is not None else sys.stdin
            raw = getattr(stream, "buffer", None)
            lines = [os.fsdecode(b).rstrip("\r\n") for b in raw] if raw is not None else [s.rstrip("\r\n") for s in stream]
            got = [Path(s) for s in lines if s.strip()]
            if not got:
                _fail("-: no paths on stdin (expected one frame path per line)")
            out.extend(got)
        elif a.is_dir():
            found = sorted((p for p in a.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()), key=lambda p: p.name)
            if not found:
                _fail(f"{a}: directory has no {', '.join(FRAME_SUFFIXES)} files")
            out.extend(found)
        else:
            out.append(a)
    return out


@dataclass(frozen=True)
class _Job:
    """One line of ``encode``'s output: a frame file, or a video clip's frame (``fields`` carry its
    ``frame`` and ``t``); ``error`` when it failed before being asked for (an index before a clip's start)."""

    path: Path
    source: Path | VideoFrame | None
    fields: dict[str, Any]
    error: FrameError | None = None


def _encode_jobs(inputs: list[Path], selection: FrameSelection, selecting: str | None) -> list[_Job]:
    """A job per frame file, and per selected frame of each video clip among ``inputs`` (every frame
    without a selection). ``selecting`` names the option that asked for clips' frames, if one did."""
    jobs: list[_Job] = []
    clips = 0
    for path in inputs:
        clip = clip_of(path)
        if clip is None:
            jobs.append(_Job(path, path, {"source": str(path)}))
        elif isinstance(clip, FrameError):
            clips += 1
            jobs.append(_Job(path, None, {"source": str(path)}, clip))
        else:
            clips += 1
            for f in selection.frames_of(path, clip):
                jobs.append(_Job(path, f.source, {"source": str(path), "frame": f.index, "t": f.t}, f.error))
    if selecting and not clips:
        _fail(f"{selecting} selects frames of video clips, but no input is one (PNG and JPEG files are one frame each)")
    return jobs


def _encode_jobs_to(
    sink: TextIO, pipe: FramePipeline, jobs: list[_Job], chunk: int, prog: _BarProgress | _PlainProgress
) -> tuple[list[FrameError], int, int]:
    """Encode ``jobs`` in chunks of ``chunk``, writing a JSON line each to ``sink``; returns the failures
    and the bytes read (each input file once) and written."""
    failures: list[FrameError] = []
    read: set[Path] = set()
    bytes_in = bytes_out = 0
    for first in range(0, len(jobs), chunk):
        part = jobs[first : first + chunk]
        results = iter(pipe.get_many([j.source for j in part if j.source is not None]))
        for job in part:
            res = next(results) if job.source is not None else job.error
            if not isinstance(res, str):
                assert res is not None  # a job without a source carries its error
                failures.append(res)
                sink.write(json.dumps({**job.fields, "error": res.reason, "type": type(res).__name__}) + "\n")
                continue
            if job.path not in read:
                read.add(job.path)
                with contextlib.suppress(OSError):
                    bytes_in += job.path.stat().st_size
            bytes_out += len(res)
            _write_uri_line(sink, {**job.fields, "mime": res[5 : res.index(";")], "bytes": len(res)}, res)
        prog.update(first + len(part))
    return failures, bytes_in, bytes_out


@app.command(cls=_Command)
@_user_errors
def encode(
    paths: list[Path] = typer.Argument(
        ...,
        help="Frame files (PNG or JPEG; the format is sniffed from the bytes), video clips (every frame, or those --frames or --fps select), directories (their PNG/JPEG files, sorted by name) or - (paths on stdin, one per line).",
    ),
    output: str = typer.Option(
        None, "--output", "-o", metavar="FORMAT", help="auto | passthrough | jpeg | png (default: config)."
    ),
    size: str | None = typer.Option(None, "--size", metavar="WxH", help="Fit inside WIDTHxHEIGHT, aspect kept, never upscaled."),
    quality: int | None = typer.Option(
        None, "--quality", "-q", min=1, max=100, metavar="N", help="JPEG quality (default: config)."
    ),
    frames_opt: str | None = typer.Option(
        None,
        "--frames",
        metavar="N|START:STOP[:STEP]",
        help="Frames of each video clip by display index, with Python's slice meaning (5, 0:90, 0:90:3, -10:); default: every frame.",
    ),
    fps: float | None = typer.Option(
        None,
        "--fps",
        metavar="FPS",
        help="Frames of each video clip by time instead: FPS a second from --start, as a renderer's composition samples its source (ffmpeg -ss START -t DURATION -vf fps=FPS): the frame shown at t = START + k/FPS.",
    ),
    start: float = typer.Option(0.0, "--start", metavar="SECONDS", help="With --fps: the first time, in seconds (default 0)."),
    duration: float | None = typer.Option(
        None, "--duration", metavar="SECONDS", help="With --fps: how many seconds (default: to the clip's end)."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", metavar="FILE", help="YAML config (default: $GPUPIPE_CONFIG or built-in)."
    ),
    gpu: int | None = typer.Option(
        None, "--gpu", callback=_check_gpu, metavar="N", help="GPU index whose config section and device to use."
    ),
    backend: str | None = _backend_option(),
    out: Path | None = typer.Option(None, "--out", metavar="FILE", help="Write JSON lines here instead of stdout."),
) -> None:
    """Encode frames to data URIs: one JSON line per frame, in order: {source, mime, bytes, uri} ({source, frame, t, mime, bytes, uri} for a video clip's frame), or {source, error, type} for a frame that failed."""
    from .pipeline import open_pipeline

    wanted = _parse_size(size)
    try:
        picked = parse_frames(frames_opt) if frames_opt is not None else None
    except ValueError as e:
        _fail(f"--frames: {e}")
    try:
        selection = FrameSelection(picked, fps, start, duration)
    except ValueError as e:
        _fail(str(e))
    cfg = _load(config, gpu, backend)
    jobs = _encode_jobs(
        _expand_inputs(paths), selection, "--frames" if frames_opt is not None else "--fps" if fps is not None else None
    )
    try:
        sink = open(out, "w", encoding="utf-8") if out else sys.stdout  # noqa: SIM115 - closed after the last line
    except OSError as e:
        _fail(f"--out: cannot write {out}: {e.strerror or e}")
    try:
        try:
            pipe = open_pipeline(config=cfg, backend=cfg.backend)
            pipe.spec = pipe.encoder.spec(output, wanted, quality)
        except (GpupipeError, ValueError) as e:
            _fail(str(e))
        t0 = time.perf_counter()
        with pipe, _progress(len(jobs), "encoded", "frames", "fps") as prog:
            failures, bytes_in, bytes_out = _encode_jobs_to(sink, pipe, jobs, max(cfg.batch_size, 1), prog)
            stats = pipe.stats()
            backend_name = pipe.encoder.backend
    finally:
        if out:
            sink.close()
    secs = time.perf_counter() - t0
    t = Table(title=f"gpupipe encode ({backend_name} backend)", show_header=False)
    t.add_row("frames", f"{len(jobs)} ({len(failures)} failed)")
    t.add_row("MB in / out", f"{bytes_in / 1e6:.1f} / {bytes_out / 1e6:.1f}")
    t.add_row("frames/s", f"{len(jobs) / secs:.1f} ({secs:.2f} s)")
    _stats_rows(t, stats)
    err.print(t)
    for f in failures:
        err.print(f"[red]failed:[/red] {escape(str(f))}", soft_wrap=True, highlight=False)
    if failures:
        raise typer.Exit(1)


def _parse_fps(value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        fps = Fraction(value)
    except (ValueError, ZeroDivisionError):
        fps = Fraction(0)
    if fps <= 0:
        _fail(f"--fps: expected a positive rate such as 30 or 30000/1001, got {value!r}")
    return fps


@app.command(cls=_Command)
@_user_errors
def extract(
    clip: Path = typer.Argument(..., metavar="CLIP", help="The video clip."),
    out_dir: Path = typer.Argument(..., metavar="OUT_DIR", help="Folder to create (it must not exist)."),
    pattern: str = typer.Option(
        "frame_%05d.jpg", "--pattern", metavar="NAME", help="File names: one %d or %0Nd; .jpg/.jpeg/.png."
    ),
    fps: str | None = typer.Option(
        None, "--fps", metavar="RATE", help="Output rate (30, 30000/1001); default every source frame."
    ),
    start: float = typer.Option(0.0, "--start", min=0.0, metavar="S", help="ffmpeg's -noaccurate_seek -ss S."),
    fps_start: float | None = typer.Option(
        0.0, "--fps-start", min=0.0, metavar="T", help="The fps filter's start_time=T (default 0: frame k at S + k/RATE)."
    ),
    duration: float | None = typer.Option(None, "--duration", metavar="D", help="ffmpeg's -t D (output duration)."),
    frames: int | None = typer.Option(None, "--frames", min=1, metavar="N", help="ffmpeg's -frames:v N (at most N files)."),
    colour_matrix: str = typer.Option(
        "stream", "--colour-matrix", metavar="M", help="YUV->RGB matrix: stream (its tag), bt709 or bt601 (forced)."
    ),
    png_level: int | None = typer.Option(
        None, "--png-compression", min=0, max=9, metavar="L", help="PNG zlib level (ffmpeg's -compression_level)."
    ),
    size: str | None = typer.Option(None, "--size", metavar="WxH", help="Fit inside WxH (aspect kept, never enlarged)."),
    quality: int | None = typer.Option(None, "--quality", min=1, max=100, metavar="Q", help="JPEG quality (default 95)."),
    qscale: int | None = typer.Option(None, "--qscale", min=1, max=31, metavar="N", help="ffmpeg's -q:v N instead of --quality."),
    start_number: int = typer.Option(1, "--start-number", min=0, metavar="N", help="Number of the first file."),
    backend: str | None = _backend_option(),
    config: Path | None = typer.Option(None, "--config", "-c", metavar="FILE", help="YAML config."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write a clip's frames as image files, selected as ffmpeg -ss S ... fps=RATE:start_time=T:round=up selects them (atomically)."""
    from .encoder import FrameEncoder
    from .extract import ExtractRequest, extract_clip

    if quality is not None and qscale is not None:
        _fail("--quality and --qscale exclude each other")
    if duration is not None and duration <= 0:
        _fail(f"--duration: expected a positive number of seconds, got {duration:g}")
    if colour_matrix not in ("stream", "bt709", "bt601"):
        _fail(f"--colour-matrix: expected stream, bt709 or bt601, got {colour_matrix!r}")
    req = ExtractRequest(
        clip,
        out_dir,
        pattern,
        _parse_fps(fps),
        start,
        duration,
        _parse_size(size),
        qscale,
        95 if quality is None else quality,
        start_number,
        fps_start=fps_start,
        max_frames=frames,
        colour_matrix=colour_matrix,  # type: ignore[arg-type]  # checked above
        png_compression_level=png_level,
    )
    with FrameEncoder(_load(config, None, backend)) as enc:
        result = extract_clip(req, encoder=enc)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    n = len(result.paths)
    rate = n / result.seconds if result.seconds > 0 else 0.0
    typer.echo(f"{n} frames -> {out_dir} ({result.backend}, {result.decoder}) in {result.seconds:.2f} s, {rate:.1f} frames/s")


@app.command(cls=_Command)
@_user_errors
def info(
    config: Path | None = typer.Option(None, "--config", "-c", metavar="FILE", help="YAML config to resolve."),
    gpu: int | None = typer.Option(None, "--gpu", callback=_check_gpu, metavar="N", help="GPU index whose section to resolve."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Versions, which backends are usable and why, and the resolved config (--json: as data, sizes in bytes)."""
    from .info import config_rows, environment_report
    from .memory import NOT_APPLIED

    cfg = _load(config, gpu, None)
    rep = environment_report(cfg)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    con = _wide_console()
    t = Table(title=f"gpupipe {rep['gpupipe']}", show_header=False)
    t.add_row("python", rep["python"])
    t.add_row("platform", escape(rep["platform"]))
    for k, v in rep["versions"].items():
        t.add_row(k, v or "[dim]not installed[/dim]")
    t.add_row("URI builder", rep["uri_builder"])
    t.add_row("PNG encoder", escape(rep["png_encoder"]))
    t.add_row("PNG decoder (CPU path)", escape(rep["png_decoder"]))
    alloc = escape(rep["allocator"]["reason"])
    t.add_row("allocator", f"[yellow]{alloc}[/yellow]" if alloc.startswith(NOT_APPLIED) else alloc)
    con.print(t)
    b = Table(title="backends")
    b.add_column("backend")
    b.add_column("usable")
    b.add_column("why")
    for name, d in rep["backends"].items():
        b.add_row(name, "yes" if d["usable"] else "[red]no[/red]", escape(d["reason"]))
    sel = rep["selected_backend"]
    b.add_row(f"[bold]selected: {sel['backend']}[/bold]", "", escape(sel["reason"]))
    con.print(b)
    detail = rep["backends"]["gpu"].get("detail")
    if detail:
        g = Table(title="GPU device and staging", show_header=False)
        for k, v in detail.items():
            g.add_row(escape(str(k)), escape(json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
        con.print(g)
    c = Table(title="resolved config", show_header=False)
    for label, value in config_rows(cfg):
        c.add_row(label, escape(value))
    con.print(c)


@app.command(cls=_Command)
@_user_errors
def demo(
    backend: str | None = _backend_option(),
    config: Path | None = typer.Option(None, "--config", "-c", metavar="FILE", help="YAML config."),
    cache_mb: int = typer.Option(
        128, "--cache-mb", min=64, metavar="MIB", help="Cache byte budget in MiB for the demo (small, to show eviction)."
    ),
    frames: int = typer.Option(6, "--frames", min=2, metavar="N", help="Sample frames per clip."),
    requests: int = typer.Option(40, "--requests", min=1, metavar="N", help="Frame requests per clip and setting."),
    samples_dir: Path | None = typer.Option(
        None,
        "--samples-dir",
        metavar="DIR",
        help="Folder for the sample frames, kept and reused by later runs (default: $GPUPIPE_SAMPLES or a folder in the temp dir; with --ffmpeg, gpupipe-ffmpeg in the temp dir).",
    ),
    real: bool = typer.Option(False, "--ffmpeg", help="Use frames encoded by ffmpeg (imageio-ffmpeg) instead of synthetic ones."),
) -> None:
    """Make sample frames (1080p and 4K, PNG and JPEG) and play a render through the cache."""
    from dataclasses import replace

    from .cache import FrameCache
    from .demo import SETTINGS, PlayResult, play, render_trace
    from .encoder import FrameEncoder
    from .pipeline import FramePipeline

    cfg = _load(config, None, backend)
    cfg = replace(cfg, cache=replace(cfg.cache, max_bytes=cache_mb * MiB))
    encoder = FrameEncoder(cfg, backend=cfg.backend)  # before the samples: an unusable backend fails fast
    folder = _demo_samples_dir(samples_dir, real)
    try:
        clips = _demo_clips(folder, frames, real)
    except BaseException:
        encoder.close()
        raise
    mb = sum(p.stat().st_size for _, paths in clips for p in paths) / 1e6
    err.print(
        f"sample frames: {mb:.0f} MB in {escape(str(folder))} (kept for the next run; --samples-dir chooses the folder)",
        soft_wrap=True,
        highlight=False,
    )
    cache: FrameCache = FrameCache(cfg.cache.max_entries, cfg.cache.max_bytes)
    total = len(clips) * len(SETTINGS) * requests
    plan = f"{len(clips)} clips x {len(SETTINGS)} settings x {requests} requests"
    con = _wide_console()
    head = Table.grid(padding=(0, 2))
    head.add_row("backend", f"[bold]{encoder.backend}[/bold]")
    why = encoder.backend_reason
    head.add_row("why", escape("asked for, with --backend or the config's backend" if why == "requested" else why))
    head.add_row("cache", f"{cache_mb} MiB, {cfg.cache.max_entries} entries; emptied before each row")
    head.add_row("requests", f"{total} = {plan}, sequential with seek-backs")
    con.print(head)
    rows: list[tuple[str, str, bool, PlayResult]] = []
    with encoder, _progress(total, "played", f"requests ({plan})", "requests/s") as prog:
        for name, paths in clips:
            trace = render_trace(len(paths), requests, seed=len(name))
            for label, size, scheduled in SETTINGS:
                pipe = FramePipeline(encoder, cache, size=size)
                r = play(pipe, paths, trace, on_request=prog.advance, schedule=scheduled, cold=True)
                rows.append((name, label, scheduled, r))
    con.print(_playback_table(rows, requests, ffmpeg=real))
    summary = Table(title="cache, all rows together", show_header=False)
    _stats_rows(summary, cache.stats())
    con.print(summary)


def _playback_table(rows: list[tuple[str, str, bool, Any]], requests: int, *, ffmpeg: bool) -> Table:
    """The demo's results in at most 80 columns: a heading row per clip, then a row per setting
    (a ``failed`` column only when a request failed). ``hit ratio`` is the cache's own measure
    over the row's requests, so that the rows add up to the summary's."""
    failed = any(r.failures for *_, r in rows)
    frames = "ffmpeg frames" if ffmpeg else "sample frames"
    t = Table(
        title=f"render playback: {requests} requests per row ({frames})",
        caption="hit ratio: requests answered without an encode of their own (cached, or an encode under way, "
        "read-ahead included); encodes: frames encoded, read-ahead included",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    t.add_column("clip, output", overflow="fold")
    t.add_column("eviction")
    for col in ("frames/s", "MB served", "hit ratio", "encodes", *(("failed",) if failed else ())):
        t.add_column(col, justify="right")
    last = None
    for name, label, scheduled, r in rows:
        if name != last:
            t.add_row(f"[bold]{escape(name)}[/bold]")
            last = name
        cells = [f"  {label}", "next use" if scheduled else "LRU", f"{r.fps:.1f}", f"{r.uri_bytes / 1e6:.0f}"]
        cells += [f"{r.hit_ratio:.0%}", str(r.encodes), *((str(r.failures),) if failed else ())]
        t.add_row(*cells)
    return t


def _demo_samples_dir(samples_dir: Path | None, real: bool) -> Path:
    """Where the demo's sample frames go: ``--samples-dir``, else a folder in the temp dir."""
    if samples_dir is not None:
        return samples_dir
    if real:
        return Path(tempfile.gettempdir()) / "gpupipe-ffmpeg"
    from .samples import default_sample_dir

    return default_sample_dir()


def _demo_clips(base: Path, frames: int, real: bool) -> list[tuple[str, list[Path]]]:
    """The demo's clips, ``(name, frame paths)``, written (or reused) under ``base``, with a line
    saying how many frames go where, then progress (a bar on a terminal, else a line every few
    seconds)."""
    if real:
        from .tools.ffmpeg_frames import FrameKind, extract_frames

        kinds: tuple[FrameKind, ...] = ("png", "jpeg", "png-alpha")
        cells = [(label, wh, kind) for label, wh in (("1080p", (1920, 1080)), ("4k", (3840, 2160))) for kind in kinds]
        total = len(cells) * frames
        err.print(f"writing {total} frames with ffmpeg to {escape(str(base))}", soft_wrap=True, highlight=False)
        clips = []
        with _progress(total, "wrote", "frames", "frames/s") as prog:
            for label, (w, h), kind in cells:
                clips.append((f"{label} {kind}", extract_frames(base, w, h, frames, kind=kind, grain=12)))
                prog.advance(frames)
        return clips
    from .samples import write_samples

    sizes, kinds = ("1080p", "4k"), ("png", "jpeg")
    total = len(sizes) * len(kinds) * frames
    err.print(
        f"writing {total} sample frames (1080p and 4K, PNG and JPEG) to {escape(str(base))}; frames already there are reused",
        soft_wrap=True,
        highlight=False,
    )
    with _progress(total, "wrote", "sample frames", "frames/s") as prog:
        written = write_samples(base, sizes=sizes, kinds=kinds, count=frames, on_frame=prog.advance)
    return [(f"{size} {kind}", paths) for (size, kind), paths in written.items()]


@app.command(cls=_Command)
@_user_errors
def bench(
    backend: str = typer.Option(
        "all",
        "--backend",
        "-b",
        callback=_backend_check(("cpu", "gpu", "all")),
        metavar="NAME",
        help="cpu | gpu | all (every backend usable here).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Small matrix that finishes in under a minute on 2 cores."),
    out: Path = typer.Option(Path("results"), "--out", metavar="DIR", help="Results folder (JSON, markdown, charts)."),
    repeats: int = typer.Option(0, "--repeats", metavar="N", help="Timed repeats per workload (0: default for the mode)."),
    ffmpeg: bool = typer.Option(
        True, "--ffmpeg/--synthetic", help="Frames encoded by ffmpeg (default) or the synthetic generator."
    ),
    soak: bool = typer.Option(True, "--soak/--no-soak", help="Run the 4K memory soak."),
    goals: bool = typer.Option(
        False,
        "--goals",
        help="Only the rows the GPU goals need (4K JPEG/PNG transcode, resize-1080p, passthrough both ways); check with `python -m gpupipe.tools.goals OUT/bench.json`.",
    ),
    max_seconds: float = typer.Option(
        0,
        "--max-seconds",
        min=0,
        metavar="SECONDS",
        help="Start no new row after this many seconds (0: no limit); the report says where it stopped.",
    ),
    video: bool = typer.Option(
        False,
        "--video",
        help="Only the video section: 1080p/4K H.264 and HEVC clips as URIs straight from the clip (CPU, and GPU where usable) against ffmpeg extracting them to PNG first; with --quick, 6 frames per clip. Goals: `python -m gpupipe.tools.goals OUT/bench.json`.",
    ),
    gpu_profile: Path | None = typer.Option(
        None,
        "--gpu-profile",
        metavar="DIR",
        help="Write a cProfile dump (pstats) of each GPU per-stage row's end-to-end transcode here, every stage thread merged.",
    ),
) -> None:
    """Throughput, host CPU cost (CPU-s/frame) and per-stage benchmark of the CPU (and GPU) path; writes results/ with charts."""
    from .tools.bench import run_bench

    run_bench(
        backend=backend,
        quick=quick,
        out=out,
        repeats=repeats or None,
        use_ffmpeg=ffmpeg,
        soak=soak,
        console=_wide_console(),
        goals=goals,
        max_seconds=max_seconds or None,
        video=video,
        gpu_profile=gpu_profile,
    )


@app.command(cls=_Command)
def serve(
    root: list[Path] = typer.Option(
        ...,
        "--root",
        metavar="DIR",
        help="Directory frames are served from; repeat for several. Paths resolve (symlinks included) inside one, or are refused (403).",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        metavar="FILE",
        help="YAML config: budgets per GPU (gpus:), serve.* and cache.* keys (default: $GPUPIPE_CONFIG or built-in).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on; loopback by default (0.0.0.0 in a container)."
    ),
    port: int = typer.Option(
        8765, "--port", min=0, max=65535, metavar="PORT", help="TCP port (0: any free port; the ready line says which)."
    ),
    socket: Path | None = typer.Option(
        None,
        "--socket",
        metavar="PATH",
        help="Serve on this Unix socket instead of TCP (created with mode 0600). A stale socket there is replaced;"
        " a live server's socket, or anything that is not a socket, is left alone (exit 2).",
    ),
    grace: float = typer.Option(
        10.0, "--grace", min=0.0, metavar="SECONDS", help="Seconds requests in flight get to finish after SIGTERM."
    ),
) -> None:
    """Serve frames over HTTP to every renderer worker of the box: one pipeline and budget per GPU.

    \b
    GET /v1/uri?src=PATH  the data URI (text/plain); options:
        &format=auto|passthrough|jpeg|png  &size=WxH  &quality=N
        &frame=N or &t=SECONDS  a frame of the video clip PATH (by index,
        or the one shown at t: the last whose timestamp is <= t)
    GET /v1/image?src=PATH[...]  the image bytes, for <img src>
        (image/jpeg|png, Content-Length, ETag, Cache-Control)
    POST /v1/schedules  {"sources": [PATH, {"src": CLIP, "frame": N},
        {"src": CLIP, "t": SECONDS}, ...], "format", "size", "quality"}
        -> {"id"}; DELETE /v1/schedules/ID withdraws it
    GET /metrics  Prometheus text;  GET /healthz

    \b
    Errors are JSON {error, type, src}: 400 bad parameter,
    403 outside every --root (symlinks resolved) or '..', 404 not found
    (or a video frame past the clip's end: FrameOutOfRange),
    413 too large, 422 undecodable,
    503 + Retry-After (queue or byte budget full, or the frame changed
    while read: ask again), 504 past the time limit. A client that
    hangs up mid-answer is logged and counted as 499.

    \b
    Config keys: serve.max_batch_delay, serve.max_queue,
    serve.request_timeout, serve.send_timeout, serve.cors_origins
    (CORS: loopback, '*' or a list of origins); cache.max_bytes: auto
    (sized from the cgroup limit or RAM); cache.pressure_available and
    cache.pressure_interval (shed cached entries while memory is short).
    SIGTERM: stop accepting, finish requests in flight (--grace), exit 0.
    One JSON access-log line per request on stderr.
    """
    from .serve.server import run

    try:
        code = run(roots=root, config_path=config, host=host, port=port, socket_path=socket, grace=grace)
    except (GpupipeError, ValueError, OSError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def main() -> None:  # pragma: no cover - console script entry
    """The ``gpupipe`` console script: log records at WARNING and above go to stderr (one line
    each); warnings are shown as ``warning: ...`` lines by each command."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
