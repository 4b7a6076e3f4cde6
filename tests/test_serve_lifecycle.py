"""The frame service's schedules (with and without ``FramePipeline.schedule``), SIGTERM, and
memory-pressure shedding."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from gpupipe.pipeline import FramePipeline  # noqa: E402
from gpupipe.samples import encode_frame, make_frame  # noqa: E402
from gpupipe.serve.lanes import route  # noqa: E402
from gpupipe.serve.schedules import MAX_SCHEDULES  # noqa: E402
from gpupipe.serve.client import FrameClient, ServeError  # noqa: E402
from gpupipe.serve.pressure import PressureMonitor, default_threshold  # noqa: E402

from serve_util import MiB, LiveServer, cpu_pipeline, error_body, get, service  # noqa: E402
from waits import wait_until  # noqa: E402
from test_serve import metric, metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    for i in range(8):
        (root / f"f{i}.png").write_bytes(encode_frame(make_frame(256, 144, index=i, seed=5), "png"))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.png").write_bytes((root / "f0.png").read_bytes())
    os.symlink(outside / "x.png", root / "escape.png")
    return root


# --------------------------------------------------------------------------- schedules


class _Handle:
    """What ``FramePipeline.schedule`` returns: a handle with ``close()`` (and a context manager)."""

    def __init__(self, owner: "SchedulingPipeline", sources: list[Any]) -> None:
        self.owner = owner
        self.sources = sources
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "_Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_OPENED: list[_Handle] = []


class SchedulingPipeline(FramePipeline):
    """A real pipeline with the ``schedule(sources) -> handle`` method of the timeline-aware cache."""

    def schedule(self, sources):
        h = _Handle(self, list(sources))
        _OPENED.append(h)
        return h


def _all_handles(pipes: list[FramePipeline]) -> list[_Handle]:
    """Handles opened on ``pipes`` or on their views (same encoder), in order."""
    encoders = [p.encoder for p in pipes]
    return [h for h in _OPENED if any(h.owner.encoder is e for e in encoders)]


def test_schedules_open_and_close_on_every_pipeline_in_order(frames):
    pipes = [cpu_pipeline(cls=SchedulingPipeline), cpu_pipeline(cls=SchedulingPipeline)]
    order = [f"f{i}.png" for i in (0, 1, 2, 3, 4, 5, 6, 7, 3, 2, 1, 0)]
    with LiveServer(service(pipes, frames)) as srv:
        body = json.dumps({"sources": order, "format": "jpeg", "size": "640x360", "quality": 80}).encode()
        status, _, out = get(srv.port, "/v1/schedules", method="POST", body=body, headers={"Content-Type": "application/json"})
        assert status == 201
        d = json.loads(out)
        assert d["sources"] == len(order) and isinstance(d["id"], str) and len(d["id"]) >= 16
        handles = _all_handles(pipes)
        assert handles and not any(h.closed for h in handles)
        real = [str((frames / n).resolve()) for n in order]
        for i, p in enumerate(pipes):
            mine = [h for h in handles if h.owner.encoder is p.encoder]
            assert [s for h in mine for s in h.sources] == [r for r in real if route(r, 2) == i]
            assert all(h.owner.spec.format == "jpeg" and h.owner.spec.size == (640, 360) and h.owner.spec.quality == 80 for h in mine)
        assert metric(metrics(srv.port), "gpupipe_schedules_open") == 1
        status, _, out = get(srv.port, f"/v1/schedules/{d['id']}", method="DELETE")
        assert status == 200 and json.loads(out) == {"id": d["id"], "closed": True}
        assert all(h.closed for h in handles)
        status, _, out = get(srv.port, f"/v1/schedules/{d['id']}", method="DELETE")
        assert status == 404 and error_body(out)["type"] == "ScheduleNotFound"


def test_schedules_still_open_are_closed_when_the_server_stops(frames):
    pipe = cpu_pipeline(cls=SchedulingPipeline)
    with LiveServer(service(pipe, frames)) as srv, FrameClient(srv.url) as fc:
        fc.schedule(["f0.png", "f1.png"])
        with fc.schedule(["f2.png"]) as s:
            assert s.id
        assert [h.closed for h in _all_handles([pipe])] == [False, True]
    assert all(h.closed for h in _all_handles([pipe]))


@pytest.mark.parametrize("body,status,etype", [
    (b"not json", 400, "BadParameter"),
    (b"[1, 2]", 400, "BadParameter"),
    (b"{}", 400, "BadParameter"),
    (b'{"sources": []}', 400, "BadParameter"),
    (b'{"sources": [1, 2]}', 400, "BadParameter"),
    (b'{"sources": ["f0.png"], "speed": 2}', 400, "BadParameter"),
    (b'{"sources": ["f0.png"], "size": "huge"}', 400, "BadParameter"),
    (b'{"sources": ["f0.png"], "quality": 0}', 400, "BadParameter"),
    (b'{"sources": ["f0.png", "escape.png"]}', 403, "PathRefused"),
    (b'{"sources": ["f0.png", "../f1.png"]}', 403, "PathRefused"),
    (b'{"sources": ["f0.png", "missing.png", "escape.png"]}', 403, "PathRefused"),
    (b'{"sources": ["missing.png", "gone.png", "missing.png"]}', 404, "FrameNotFound"),
])
def test_bad_schedules_are_refused_whole(frames, body, status, etype):
    pipe = cpu_pipeline(cls=SchedulingPipeline)
    with LiveServer(service(pipe, frames)) as srv:
        got, _, out = get(srv.port, "/v1/schedules", method="POST", body=body)
        assert got == status and error_body(out)["type"] == etype
    assert _all_handles([pipe]) == []


def test_a_schedule_leaves_out_missing_frames_and_names_them(frames):
    """One missing frame does not cost the rest of the timeline its schedule: the others are scheduled, in
    order, and the answer names the missing ones (each once, at most 100, with their count)."""
    from gpupipe.serve.schedules import MAX_MISSING_LISTED

    pipe = cpu_pipeline(cls=SchedulingPipeline)
    order = ["f0.png", "gone.png", "f1.png", "missing.png", "f0.png", "gone.png", "f2.png"]
    with LiveServer(service(pipe, frames)) as srv:
        status, _, out = get(srv.port, "/v1/schedules", method="POST", body=json.dumps({"sources": order}).encode())
        d = json.loads(out)
        assert status == 201, d
        assert (d["sources"], d["missing"], d["missing_count"]) == (7, ["gone.png", "missing.png"], 2)
        (h,) = _all_handles([pipe])
        assert h.sources == [str((frames / n).resolve()) for n in ("f0.png", "f1.png", "f0.png", "f2.png")]
        many = ["f3.png"] + [f"nope/{i}.png" for i in range(250)]
        with FrameClient(srv.url) as fc, fc.schedule(many) as sched:
            assert sched.missing == tuple(many[1 : 1 + MAX_MISSING_LISTED]) and sched.missing_count == 250
        status, _, out = get(srv.port, "/v1/schedules", method="POST", body=json.dumps({"sources": many[1:]}).encode())
        d = error_body(out)
        assert status == 404 and d["type"] == "FrameNotFound" and d["src"] == "nope/0.png"
        assert "'nope/0.png', 'nope/1.png'" in d["error"] and "and 150 more" in d["error"]
    assert MAX_MISSING_LISTED == 100


def test_open_schedules_are_bounded(frames, monkeypatch):
    monkeypatch.setattr("gpupipe.serve.schedules.MAX_SCHEDULES", 2)
    pipe = cpu_pipeline(cls=SchedulingPipeline)
    with LiveServer(service(pipe, frames)) as srv, FrameClient(srv.url) as fc:
        fc.schedule(["f0.png"])
        fc.schedule(["f1.png"])
        with pytest.raises(ServeError) as e:
            fc.schedule(["f2.png"])
        assert e.value.status == 429
    assert MAX_SCHEDULES >= 2


# --------------------------------------------------------------------------- SIGTERM


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPIPE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in sys.path if p])
    return env


def test_sigterm_finishes_requests_in_flight_then_exits_0(frames, tmp_path):
    cfg = tmp_path / "serve.yaml"
    # A request waits up to max_batch_delay for its batch to fill: long enough to be in flight at SIGTERM.
    cfg.write_text("defaults:\n  backend: cpu\n  serve: {max_batch_delay: 1.0}\n  cache: {pressure_available: 0}\n")
    proc = subprocess.Popen([sys.executable, "-m", "gpupipe", "serve", "--root", str(frames), "--port", "0", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("gpupipe serve: listening on http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(get, port, "/v1/uri?src=f3.png")
            wait_until(lambda: json.loads(get(port, "/healthz")[2])["queue_depth"] == 1, what="a request in flight")
            proc.send_signal(signal.SIGTERM)
            status, _, body = pending.result(timeout=30)
        assert status == 200 and body.startswith(b"data:image/png;base64,")
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):
            get(port, "/healthz", timeout=5)
        err = proc.stderr.read()
        access = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
        assert {"path": "/v1/uri", "status": 200, "cache": "miss", "src": "f3.png"}.items() <= next(
            a for a in access if a["path"] == "/v1/uri").items()
        assert "stopping" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_serve_refuses_a_missing_root_and_a_bad_config(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpupipe", "serve", "--root", str(tmp_path / "nope"), "--port", "0"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "not a directory" in r.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("defaults:\n  serve: {max_queue: 0}\n")
    r = subprocess.run([sys.executable, "-m", "gpupipe", "serve", "--root", str(tmp_path), "--port", "0", "--config", str(cfg)],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "serve.max_queue" in r.stderr


# --------------------------------------------------------------------------- --socket PATH


@pytest.fixture
def short_dir():
    """A directory with a short path (a Unix socket's path must fit in ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="gps", dir="/tmp" if os.path.isdir("/tmp") else None) as d:
        yield Path(d)


def _serve_socket(frames: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpupipe", "serve", "--root", str(frames), "--socket", str(path)],
                          capture_output=True, text=True, env=_env(), timeout=120)


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_serve_socket_on_something_else_leaves_it_untouched(frames, short_dir, kind):
    path = short_dir / "gp.sock"
    if kind == "file":
        path.write_bytes(b"precious data")
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_bytes(b"kept")
    else:
        (short_dir / "target").write_bytes(b"target data")
        os.symlink(short_dir / "target", path)
    r = _serve_socket(frames, path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not a socket" in r.stderr and "untouched" in r.stderr, r.stderr
    if kind == "file":
        assert path.read_bytes() == b"precious data"
    elif kind == "directory":
        assert (path / "inside").read_bytes() == b"kept"
    else:
        assert path.is_symlink() and (short_dir / "target").read_bytes() == b"target data"


def test_serve_socket_where_none_can_be_created_names_the_path_and_why(frames, short_dir):
    path = short_dir / "no-such-folder" / "gp.sock"
    r = _serve_socket(frames, path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"--socket '{path}': cannot create the socket there: the folder '{path.parent}' does not exist" in r.stderr, r.stderr
    assert "Errno" not in r.stderr and not path.parent.exists()
    (short_dir / "file").write_bytes(b"x")
    for bad, why in ((short_dir / "file" / "gp.sock", "is not a folder"), (short_dir / ("s" * 120), "bytes long")):
        with pytest.raises(RuntimeError, match="SocketPathError") as e:
            LiveServer(service(cpu_pipeline(), frames), socket_path=bad).start()
        assert str(bad) in str(e.value) and why in str(e.value)


def test_serve_socket_refuses_a_live_socket_and_replaces_a_stale_one(frames, short_dir):
    path = short_dir / "gp.sock"
    with LiveServer(service(cpu_pipeline(), frames), socket_path=path):
        r = _serve_socket(frames, path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "a server is listening on it" in r.stderr, r.stderr
        with FrameClient(socket_path=str(path)) as fc:  # the first server still owns its socket
            assert fc.health()["status"] == "ok"
    assert not path.exists()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening, closed: nobody answers there
    stale.close()
    assert path.exists()
    with LiveServer(service(cpu_pipeline(), frames), socket_path=path):
        with FrameClient(socket_path=str(path)) as fc:
            assert fc.health()["status"] == "ok"
    assert not path.exists()


def test_a_server_removes_only_its_own_socket(frames, short_dir):
    """A socket path replaced while the server runs (by hand) is not removed when it stops."""
    path = short_dir / "gp.sock"
    with LiveServer(service(cpu_pipeline(), frames), socket_path=path):
        os.unlink(path)
        path.write_bytes(b"someone else's")
    assert path.read_bytes() == b"someone else's"


# --------------------------------------------------------------------------- memory pressure


def _fill(pipe: FramePipeline, frames: Path, n: int = 8) -> list[str]:
    paths = [str(frames / f"f{i}.png") for i in range(n)]
    assert all(isinstance(u, str) for u in pipe.get_many(paths))
    return paths


def test_pressure_sheds_least_recent_entries_then_recovers(frames, caplog):
    pipe = cpu_pipeline()
    _fill(pipe, frames)
    entry = pipe.stats().bytes // 8
    avail = [100 * MiB]
    mon = PressureMonitor([pipe.cache], threshold=4 * entry, read=lambda: avail[0])
    assert not mon.check().pressure and len(pipe.cache) == 8
    lru_first = pipe.cache.keys()
    avail[0] = 3 * entry  # short by one entry: shed it plus half the threshold (two more)
    with caplog.at_level(logging.INFO, "gpupipe.serve.pressure"):
        r = mon.check()
        assert r.pressure and r.entries == 3 and mon.shed_entries == 3 and mon.sheds == 1
        assert pipe.cache.keys() == lru_first[3:]
        assert r.bytes == 8 * entry - pipe.stats().bytes
        assert any(rec.levelno == logging.WARNING and "memory pressure started" in rec.getMessage() for rec in caplog.records)
        avail[0] = 5 * entry
        assert not mon.check().pressure
        assert any("memory pressure over" in rec.getMessage() for rec in caplog.records)
    _fill(pipe, frames)  # the budget is unchanged: the cache fills again
    assert len(pipe.cache) == 8 and pipe.stats().evictions == 0


def test_pressure_sheds_across_pipelines_in_proportion(frames):
    a, b = cpu_pipeline(), cpu_pipeline()
    _fill(a, frames, 8)
    _fill(b, frames, 4)
    entry = a.stats().bytes // 8
    mon = PressureMonitor([a.cache, b.cache], threshold=2 * entry, read=lambda: entry)  # want 2 entries' bytes
    r = mon.check()
    assert r.entries >= 2 and len(a.cache) < 8 and len(b.cache) < 4
    mon.read = lambda: 0
    while len(a.cache) + len(b.cache):
        assert mon.check().pressure
    assert mon.check().entries == 0  # nothing left to shed: it says so and goes on


def test_service_reports_pressure_in_metrics_and_health(frames):
    pipe = cpu_pipeline()
    avail = [1 << 40]
    svc = service(pipe, frames, pressure_threshold=64 * MiB, pressure_interval=0.05, pressure_read=lambda: avail[0])
    with LiveServer(svc) as srv:
        for i in range(4):
            assert get(srv.port, f"/v1/uri?src=f{i}.png")[0] == 200
        avail[0] = 0
        wait_until(lambda: metric(metrics(srv.port), "gpupipe_memory_pressure") == 1 and len(pipe.cache) == 0, what="shedding")
        m = metrics(srv.port)
        assert metric(m, "gpupipe_pressure_shed_entries_total") == 4 and metric(m, "gpupipe_pressure_shed_bytes_total") > 0
        assert json.loads(get(srv.port, "/healthz")[2])["memory_pressure"] is True
        avail[0] = 1 << 40
        wait_until(lambda: metric(metrics(srv.port), "gpupipe_memory_pressure") == 0, what="recovery")
        assert get(srv.port, "/v1/uri?src=f0.png")[0] == 200 and len(pipe.cache) == 1


def test_default_pressure_threshold():
    assert default_threshold(64 * 1024 * MiB) == 64 * 1024 * MiB // 20
    assert default_threshold(1024 * MiB) == 128 * MiB


def test_serve_help_documents_endpoints_errors_and_keys():
    from typer.testing import CliRunner

    from gpupipe.cli import app

    r = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "140", "NO_COLOR": "1"})
    assert r.exit_code == 0
    for needed in ("/v1/uri", "/v1/image", "/v1/schedules", "/metrics", "/healthz", "--root", "--host", "--port", "--socket",
                   "--config", "--grace", "403", "503", "504", "serve.max_batch_delay", "serve.max_queue", "cache.max_bytes: auto",
                   "cache.pressure_available", "SIGTERM", "&frame=N or &t=SECONDS", "FrameOutOfRange"):
        assert needed in r.output, needed
