"""The ``gpupipe`` command line: ``encode``, ``info``, ``demo`` and ``bench``."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .config import MiB, load_config
from .errors import ConfigError, FrameError, GpupipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Video frames to data:image/...;base64 URIs on NVIDIA GPUs or the CPU, in a memory-bounded cache.")
err = Console(stderr=True)


def _parse_size(value: Optional[str]) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    try:
        w, h = value.lower().split("x")
        size = (int(w), int(h))
        if size[0] < 1 or size[1] < 1:
            raise ValueError
        return size
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT such as 1280x720, got {value!r}") from None


def _load(config: Optional[Path], gpu: Optional[int], backend: Optional[str]):
    try:
        cfg = load_config(config, gpu)
    except ConfigError as e:
        err.print(f"[red]config error:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if backend:
        from dataclasses import replace

        cfg = replace(cfg, backend=backend)
    return cfg


def _wide_console() -> Console:
    """stdout, at least 110 columns wide when it is not a terminal (pipes, logs, CI)."""
    con = Console()
    return con if con.is_terminal else Console(width=max(con.width, 110))


def _progress(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(), console=err, transient=True, disable=total < 8 or not err.is_terminal,
    )


def _stats_rows(table: Table, stats) -> None:
    table.add_row("cache entries", f"{stats.entries} / {stats.max_entries}")
    table.add_row("cache MiB", f"{stats.bytes / MiB:.1f} / {stats.max_bytes / MiB:.0f} (peak {stats.peak_bytes / MiB:.1f})")
    table.add_row("hits / joined / misses", f"{stats.hits} / {stats.joined} / {stats.misses} (hit ratio {stats.hit_ratio:.1%})")
    table.add_row("evictions", f"{stats.evictions} ({stats.evicted_bytes / MiB:.1f} MiB), oversize rejects {stats.oversize_rejects}")
    if stats.admission_waits or stats.admission_timeouts:
        table.add_row("budget waits", f"{stats.admission_waits} (timeouts {stats.admission_timeouts})")


@app.command()
def encode(
    paths: List[Path] = typer.Argument(..., help="Frame files (PNG or JPEG; the format is sniffed from the bytes)."),
    output: str = typer.Option(None, "--output", "-o", help="auto | passthrough | jpeg | png (default: config)."),
    size: Optional[str] = typer.Option(None, "--size", help="Fit inside WIDTHxHEIGHT, aspect kept, never upscaled."),
    quality: Optional[int] = typer.Option(None, "--quality", "-q", min=1, max=100, help="JPEG quality (default: config)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: $GPUPIPE_CONFIG or built-in)."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="GPU index whose config section and device to use."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="auto | gpu | cpu (default: config)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write JSON lines here instead of stdout."),
) -> None:
    """Encode frames to data URIs: one JSON line per frame {source, mime, bytes, uri}."""
    from .pipeline import open_pipeline

    cfg = _load(config, gpu, backend)
    try:
        pipe = open_pipeline(config=cfg, backend=cfg.backend)
        pipe.spec = pipe.encoder.spec(output, _parse_size(size), quality)
    except (GpupipeError, ValueError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    sink = open(out, "w", encoding="utf-8") if out else sys.stdout
    failures: list[FrameError] = []
    bytes_in = bytes_out = 0
    chunk = max(cfg.batch_size, 1)
    t0 = time.perf_counter()
    try:
        with pipe, _progress(len(paths)) as prog:
            task = prog.add_task("encoding", total=len(paths), rate="")
            for start in range(0, len(paths), chunk):
                part = paths[start : start + chunk]
                for src, res in zip(part, pipe.get_many(part)):
                    if isinstance(res, FrameError):
                        failures.append(res)
                        continue
                    try:
                        bytes_in += src.stat().st_size
                    except OSError:
                        pass
                    mime = res[5 : res.index(";")]
                    bytes_out += len(res)
                    sink.write(json.dumps({"source": str(src), "mime": mime, "bytes": len(res), "uri": res}) + "\n")
                done = start + len(part)
                prog.update(task, completed=done, rate=f"{done / (time.perf_counter() - t0):.1f} frames/s")
            stats = pipe.stats()
            backend_name = pipe.encoder.backend
    finally:
        if out:
            sink.close()
    secs = time.perf_counter() - t0
    t = Table(title=f"gpupipe encode ({backend_name} backend)", show_header=False)
    t.add_row("frames", f"{len(paths)} ({len(failures)} failed)")
    t.add_row("MB in / out", f"{bytes_in / 1e6:.1f} / {bytes_out / 1e6:.1f}")
    t.add_row("frames/s", f"{len(paths) / secs:.1f} ({secs:.2f} s)")
    _stats_rows(t, stats)
    err.print(t)
    for f in failures:
        err.print(f"[red]failed:[/red] {escape(str(f))}", soft_wrap=True, highlight=False)
    if failures:
        raise typer.Exit(1)


@app.command()
def info(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config to resolve."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="GPU index whose section to resolve."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Versions, which backends are usable and why, and the resolved config."""
    from .info import environment_report

    rep = environment_report(_load(config, gpu, None))
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
    t.add_row("allocator", rep["allocator"])
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
    import yaml

    con.print("[bold]resolved config[/bold] (sizes in bytes)")
    con.print(escape(yaml.safe_dump(rep["config"], sort_keys=False).rstrip()))


@app.command()
def demo(
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="auto | gpu | cpu (default: config)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config."),
    cache_mb: int = typer.Option(128, "--cache-mb", min=64, help="Cache byte budget in MiB for the demo (small, to show eviction)."),
    frames: int = typer.Option(6, "--frames", min=2, help="Sample frames per clip."),
    requests: int = typer.Option(40, "--requests", min=1, help="Frame requests per clip and setting."),
    samples_dir: Optional[Path] = typer.Option(None, "--samples-dir", help="Where to write the sample frames (default: temp dir)."),
    real: bool = typer.Option(False, "--ffmpeg", help="Use frames encoded by ffmpeg (imageio-ffmpeg) instead of synthetic ones."),
) -> None:
    """Make sample frames (1080p and 4K, PNG and JPEG) and play a render through the cache."""
    from dataclasses import replace

    from .cache import FrameCache
    from .demo import SETTINGS, play, render_trace
    from .policy import SchedulePolicy
    from .encoder import FrameEncoder
    from .pipeline import FramePipeline

    cfg = _load(config, None, backend)
    cfg = replace(cfg, cache=replace(cfg.cache, max_bytes=cache_mb * MiB))
    with err.status("writing sample frames…"):
        clips = _demo_clips(samples_dir, frames, real)
    try:
        encoder = FrameEncoder(cfg, backend=cfg.backend)
    except GpupipeError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    cache: FrameCache = FrameCache(cfg.cache.max_entries, cfg.cache.max_bytes, policy=SchedulePolicy())
    con = _wide_console()
    con.print(f"backend: [bold]{encoder.backend}[/bold] ({escape(encoder.backend_reason)}); cache budget {cache_mb} MiB, {cfg.cache.max_entries} entries")
    t = Table(title="render playback (sequential with seek-backs)")
    for col in ("clip", "output", "requests", "failed", "frames/s", "MB served", "hit ratio"):
        t.add_column(col, justify="right" if col not in ("clip", "output") else "left")
    total = len(clips) * len(SETTINGS) * requests
    with encoder, _progress(total) as prog:
        task = prog.add_task("playing", total=total, rate="")
        for (name, paths) in clips:
            trace = render_trace(len(paths), requests, seed=len(name))
            for label, size, scheduled in SETTINGS:
                pipe = FramePipeline(encoder, cache, size=size)
                r = play(pipe, paths, trace, on_request=lambda: prog.advance(task), schedule=scheduled, cold=True)
                t.add_row(name, label, str(r.requests), str(r.failures), f"{r.fps:.1f}", f"{r.uri_bytes / 1e6:.0f}", f"{r.hit_ratio:.0%}")
    con.print(t)
    s = Table(title="cache", show_header=False)
    _stats_rows(s, cache.stats())
    con.print(s)


def _demo_clips(samples_dir: Optional[Path], frames: int, real: bool) -> list[tuple[str, list[Path]]]:
    if real:
        from .tools.ffmpeg_frames import extract_frames

        base = samples_dir or Path(tempfile.gettempdir()) / "gpupipe-ffmpeg"
        clips = []
        for label, (w, h) in (("1080p", (1920, 1080)), ("4k", (3840, 2160))):
            for kind in ("png", "jpeg", "png-alpha"):
                clips.append((f"{label} {kind} (ffmpeg)", extract_frames(base, w, h, frames, kind=kind, grain=12)))
        return clips
    from .samples import write_samples

    return [(f"{size} {kind}", paths) for (size, kind), paths in write_samples(samples_dir, count=frames).items()]


@app.command()
def bench(
    backend: str = typer.Option("all", "--backend", "-b", help="cpu | gpu | all (every backend usable here)."),
    quick: bool = typer.Option(False, "--quick", help="Small matrix that finishes in under a minute on 2 cores."),
    out: Path = typer.Option(Path("results"), "--out", help="Results folder (JSON, markdown, charts)."),
    repeats: int = typer.Option(0, "--repeats", help="Timed repeats per workload (0: default for the mode)."),
    ffmpeg: bool = typer.Option(True, "--ffmpeg/--synthetic", help="Frames encoded by ffmpeg (default) or the synthetic generator."),
    soak: bool = typer.Option(True, "--soak/--no-soak", help="Run the 4K memory soak."),
    goals: bool = typer.Option(False, "--goals", help="Only the rows the GPU goals need (4K JPEG/PNG transcode, resize-1080p, passthrough both ways); check with `python -m gpupipe.tools.goals OUT/bench.json`."),
    max_seconds: float = typer.Option(0, "--max-seconds", min=0, help="Start no new row after this many seconds (0: no limit); the report says where it stopped."),
) -> None:
    """Throughput, host CPU cost (CPU-s/frame) and per-stage benchmark of the CPU (and GPU) path; writes results/ with charts."""
    from .tools.bench import run_bench

    run_bench(backend=backend, quick=quick, out=out, repeats=repeats or None, use_ffmpeg=ffmpeg, soak=soak,
              console=_wide_console(), goals=goals, max_seconds=max_seconds or None)


def main() -> None:  # pragma: no cover - console script entry
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
