"""``gpupipe serve``: build one pipeline per GPU of the config (or the CPU pipeline), then serve them.

The pipelines: every GPU index in the config's ``gpus:`` section (GPU 0 when it names none)
that is usable here, each with its own section's budgets; where none is (or ``backend: cpu``),
one CPU pipeline with the ``defaults``. A ``cache.max_bytes: auto`` budget is the box's share for
the whole service, so it is split evenly across the pipelines. Serving settings come from
the ``defaults`` section (``serve.*``).

Listening: TCP on ``host:port`` (loopback by default), or a Unix socket created with mode 0600.
An existing socket at that path is replaced only when it is stale (a connection to it is
refused); anything else there (a live server's socket, a file, a directory, a symlink) is
left as it is and the command fails with :class:`~gpupipe.errors.SocketInUse`. A path where no
socket can be created (a missing folder, one that may not be written, a path too long) fails
with :class:`~gpupipe.errors.SocketPathError` naming the path and why, before any pipeline
starts. On the way out the server removes only the socket it created.

SIGTERM or SIGINT stops accepting connections, lets requests in flight finish (at most
``grace`` seconds), closes the pipelines and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from ..config import CACHE_BYTES_FLOOR, Config, configured_gpus, load_config
from ..errors import BackendUnavailable, SocketInUse, SocketPathError
from ..pipeline import open_pipeline
from .access_log import JsonAccessLogger, access_log
from .app import create_app
from .lanes import Lane
from .pressure import default_threshold
from .roots import Roots
from .service import FrameService

__all__ = ["build_lanes", "build_service", "run", "serve"]

log = logging.getLogger("gpupipe.serve")

_PROBE_TIMEOUT = 2.0  # seconds to wait for a server on an existing --socket to accept


def _lane_configs(config_path: str | os.PathLike[str] | None) -> tuple[list[tuple[str, Config, str]], Config]:
    """``[(name, config, backend)]`` for each pipeline, and the ``defaults`` config."""
    base = load_config(config_path, None)
    lanes: list[tuple[str, Config, str]] = []
    if base.backend != "cpu":
        from ..gpu import gpu_available

        wanted = configured_gpus(config_path) or [0]
        reasons = []
        for i in wanted:
            ok, why = gpu_available(i)
            if ok:
                lanes.append((f"gpu{i}", load_config(config_path, i), "gpu"))
            else:
                reasons.append(f"GPU {i}: {why}")
        if not lanes and base.backend == "gpu":
            raise BackendUnavailable("backend: gpu, but no GPU of the config is usable (" + "; ".join(reasons) + ")")
        if reasons and lanes:
            log.warning("skipping unusable GPUs: %s", "; ".join(reasons))
    if not lanes:
        lanes.append(("cpu", base, "cpu"))
    n = len(lanes)
    if n > 1:
        lanes = [
            (
                name,
                replace(cfg, cache=replace(cfg.cache, max_bytes=max(CACHE_BYTES_FLOOR, cfg.cache.max_bytes // n)))
                if cfg.cache.max_bytes_auto
                else cfg,
                b,
            )
            for name, cfg, b in lanes
        ]
    return lanes, base


def build_lanes(config_path: str | os.PathLike[str] | None = None) -> tuple[list[Lane], Config]:
    """The service's pipelines (see the module docstring) and the ``defaults`` config; the caller closes them.

    Each pipeline's encoder is warmed up (:meth:`FrameEncoder.warm_up <gpupipe.FrameEncoder.warm_up>`:
    on a GPU, CUDA, DALI's pipelines, nvJPEG and nvImageCodec started) before this returns, so the
    service listens, and ``/healthz`` answers, only once no request has start-up left to pay.
    """
    specs, base = _lane_configs(config_path)
    lanes: list[Lane] = []
    try:
        for name, cfg, backend in specs:
            pipe = open_pipeline(config=cfg, backend=backend)
            lanes.append(Lane(name, pipe))
            seconds = pipe.encoder.warm_up()
            log.info("%s: %s backend ready (warm-up %.2f s)", name, pipe.encoder.backend, seconds)
    except BaseException:
        for lane in lanes:
            lane.pipeline.close()
        raise
    return lanes, base


def build_service(lanes: Sequence[Lane], roots: Roots, config: Config) -> FrameService:
    """A :class:`FrameService` over ``lanes`` with ``config``'s serving and memory-pressure settings."""
    threshold = config.cache.pressure_available
    if threshold is None:
        threshold = default_threshold()
    return FrameService(
        lanes, roots, config.serve, pressure_threshold=threshold, pressure_interval=config.cache.pressure_interval
    )


def _live_socket(path: Path) -> str | None:
    """``None`` when nobody listens on the Unix socket at ``path`` (a connection is refused: a stale socket left
    by a server that did not stop cleanly), else why it must be left alone."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except TimeoutError:
        return "a server is listening on it (its backlog is full)"
    except OSError as e:
        return f"cannot tell whether a server is listening on it ({e.strerror or e})"
    finally:
        probe.close()
    return "a server is listening on it"


def _socket_path_error(path: Path, e: OSError) -> SocketPathError:
    """The error for a socket that cannot be created at ``path`` (``e``: why), naming the path and the reason."""
    folder = str(path.parent)
    if isinstance(e, FileNotFoundError):
        why = f"the folder {folder!r} does not exist"
    elif isinstance(e, NotADirectoryError):
        why = f"{folder!r} is not a folder"
    elif isinstance(e, PermissionError):
        why = f"no permission to create it in {folder!r}"
    elif e.errno is None and "too long" in str(e):
        why = f"the path is {len(os.fsencode(path))} bytes long; a Unix socket's path has at most about 100"
    else:
        why = e.strerror or str(e)
    return SocketPathError(f"--socket {str(path)!r}: cannot create the socket there: {why}")


def _check_socket_folder(path: Path) -> None:
    """Raise :class:`~gpupipe.errors.SocketPathError` when ``path``'s folder does not exist or is not a folder
    (checked before the pipelines start; creating the socket checks the rest)."""
    try:
        st = os.stat(path.parent)
    except OSError as e:
        raise _socket_path_error(path, e) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _socket_path_error(path, NotADirectoryError())


def _unix_socket(path: Path) -> tuple[socket.socket, tuple[int, int]]:
    """A listening-ready Unix socket at ``path``, created with mode 0600, and its ``(st_dev, st_ino)``.

    A stale socket at ``path`` (nobody listening) is replaced. Raises
    :class:`~gpupipe.errors.SocketInUse`, leaving ``path`` as it is, when something that is not a
    socket is there (a file, a directory, a symlink) or a server answers on the socket there;
    :class:`~gpupipe.errors.SocketPathError` when no socket can be created at ``path``.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # nothing there (creating the socket says why not, if it cannot)
    except OSError as e:
        raise _socket_path_error(path, e) from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(
                f"--socket {str(path)!r} exists and is not a socket; it is left untouched (remove it, or choose another path)"
            )
        why = _live_socket(path)
        if why is not None:
            raise SocketInUse(f"--socket {str(path)!r}: {why}; it is left untouched (stop that server, or choose another path)")
        log.info("replacing the stale socket %s (nobody listens on it)", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        st = os.lstat(path)
    except OSError as e:
        sock.close()
        raise _socket_path_error(path, e) from None
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock, (st.st_dev, st.st_ino)


def _remove_socket(path: Path, ident: tuple[int, int]) -> None:
    """Remove the socket this server created at ``path``; whatever has replaced it since is left alone."""
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError as e:
        log.debug("not removing %s: %s", path, e)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    socket_path: Path | None = None,
    grace: float = 10.0,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT (or ``stop`` is set); requests in flight get ``grace`` seconds. Returns 0."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    runner = web.AppRunner(app, access_log_class=JsonAccessLogger, access_log=access_log, shutdown_timeout=grace)
    await runner.setup()
    created: tuple[int, int] | None = None  # the (st_dev, st_ino) of the socket this server created
    installed: list[signal.Signals] = []
    try:
        if socket_path is not None:
            sock, created = _unix_socket(socket_path)
            site: web.BaseSite = web.SockSite(runner, sock)
            where = f"unix:{socket_path}"
        else:
            site = web.TCPSite(runner, host, port)
        await site.start()
        if socket_path is None:
            h, p = runner.addresses[0][:2]
            where = f"http://{'[' + h + ']' if ':' in h else h}:{p}"
            if not _is_loopback(host):
                log.warning("listening on %s, beyond loopback: anyone who can reach it can read every frame under --root", host)
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no signals here
                pass
        if ready is not None:
            ready(where)
        await stop.wait()
        log.info("stopping: no new connections; requests in flight get up to %g s", grace)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        if socket_path is not None and created is not None:
            _remove_socket(socket_path, created)
    return 0


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    svc = logging.getLogger("gpupipe.serve")
    svc.setLevel(logging.INFO)


def run(
    *,
    roots: Sequence[str | os.PathLike[str]],
    config_path: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    socket_path: str | os.PathLike[str] | None = None,
    grace: float = 10.0,
) -> int:
    """The ``gpupipe serve`` command: build the pipelines, serve until SIGTERM, return the exit code.

    Prints ``gpupipe serve: listening on URL (pipelines: ...)`` on stdout once it accepts
    connections. Raises :class:`~gpupipe.errors.ConfigError`, ``ValueError`` (a bad root),
    :class:`~gpupipe.errors.BackendUnavailable`, :class:`~gpupipe.errors.SocketInUse` or
    :class:`~gpupipe.errors.SocketPathError` before it listens.
    """
    _setup_logging()
    confined = Roots(roots)
    if socket_path is not None:
        _check_socket_folder(Path(socket_path))
    lanes, base = build_lanes(config_path)
    try:
        service = build_service(lanes, confined, base)
    except BaseException:
        for lane in lanes:
            lane.pipeline.close()
        raise
    app = create_app(service)
    names = ", ".join(f"{lane.name} ({lane.pipeline.cache.max_bytes / 2**20:.0f} MiB)" for lane in lanes)

    def ready(where: str) -> None:
        print(f"gpupipe serve: listening on {where} (pipelines: {names}; roots: {', '.join(confined.paths)})", flush=True)

    try:
        return asyncio.run(
            serve(app, host=host, port=port, socket_path=Path(socket_path) if socket_path else None, grace=grace, ready=ready)
        )
    finally:
        if not service.closed:  # the app never started (e.g. the port was taken)
            for lane in lanes:
                lane.pipeline.close()
