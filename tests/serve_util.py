"""Helpers for the frame-service tests: a live server on a free loopback port, pipelines, frames."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import struct
import threading
import types
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gpupipe.cache import FrameCache
from gpupipe.config import Config, ServeConfig
from gpupipe.encoder import FrameEncoder
from gpupipe.pipeline import FramePipeline
from gpupipe.serve.app import create_app
from gpupipe.serve.lanes import Lane
from gpupipe.serve.service import FrameService
from gpupipe.serve.roots import Roots
from gpupipe.serve.server import serve

MiB = 1024**2


def cpu_pipeline(max_bytes: int = 256 * MiB, *, batch_size: int = 8, max_pixels: int = 8192 * 8192, cls: type = FramePipeline,
                 max_entries: int = 256, **kw: Any) -> FramePipeline:
    """A real CPU pipeline with its own cache (no floor on ``max_bytes``: the cache takes any budget)."""
    cfg = replace(Config(), backend="cpu", batch_size=batch_size, max_pixels=max_pixels, workers=2)
    enc = FrameEncoder(cfg, backend="cpu")
    return cls(enc, FrameCache(max_entries, max_bytes, admission_timeout=kw.pop("admission_timeout", 60.0)), **kw)


class GatedPipeline(FramePipeline):
    """A real pipeline whose ``lease_many`` (the service's batch call) waits for ``gate`` first and records
    each batch's sources."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def lease_many(self, sources):  # type: ignore[override]
        self.batches.append([str(s) for s in sources])
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("test gate never opened")
        return super().lease_many(sources)


class LiveServer:
    """``gpupipe.serve.server.serve`` on 127.0.0.1 with a free port, in a thread with its own event loop."""

    def __init__(self, service: FrameService, *, socket_path: Path | None = None, grace: float = 5.0) -> None:
        self.service = service
        self.socket_path = socket_path
        self.grace = grace
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-server", daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(where: str) -> None:
                self.url = where
                self._ready.set()

            await serve(create_app(self.service), host="127.0.0.1", port=0, socket_path=self.socket_path, grace=self.grace,
                        ready=ready, stop=self._stop)

        try:
            asyncio.run(go())
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._ready.set()

    def start(self) -> "LiveServer":
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service(pipelines: list[FramePipeline] | FramePipeline, roots: list[Path] | Path, **kw: Any) -> FrameService:
    """A :class:`FrameService` over ``pipelines`` (lanes ``cpu0``, ``cpu1``, ...); ``kw`` sets ServeConfig fields
    and the service's keyword arguments."""
    pipes = pipelines if isinstance(pipelines, list) else [pipelines]
    roots = roots if isinstance(roots, list) else [roots]
    serve_fields = {k: kw.pop(k) for k in list(kw) if k in ServeConfig.__dataclass_fields__}
    lanes = [Lane(f"cpu{i}", p) for i, p in enumerate(pipes)]
    return FrameService(lanes, Roots(roots), ServeConfig(**serve_fields), **kw)


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None,
        timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: ``(status, headers with lower-case names, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def error_body(body: bytes) -> dict[str, Any]:
    d = json.loads(body)
    assert set(d) == {"error", "type", "src"}, d
    return d


def noise_png(path: Path, w: int, h: int, seed: int) -> bytes:
    """A PNG of random pixels (compresses poorly, so a small frame makes a large URI)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=1)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def png_with_padding(path: Path, pad_bytes: int) -> bytes:
    """A small valid PNG carrying a private ancillary chunk of ``pad_bytes`` zero bytes (a large file, cheap to make)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "PNG")
    data = buf.getvalue()
    iend = data.rindex(b"IEND") - 4
    body = b"\x00" * pad_bytes
    chunk = struct.pack(">I", len(body)) + b"prVt" + body + struct.pack(">I", zlib.crc32(b"prVt" + body) & 0xFFFFFFFF)
    out = data[:iend] + chunk + data[iend:]
    path.write_bytes(out)
    return out


class ChangingWhileRead:
    """Makes ``os.fstat`` of one file (by name, in every thread) report a new ``st_mtime_ns`` on each of its
    next ``times`` calls, as if the file were being rewritten while read; ``install`` with pytest's monkeypatch."""

    def __init__(self, name: str, times: int = 5) -> None:
        self.name = name
        self.left = times
        self._lock = threading.Lock()
        self._real = os.fstat

    def install(self, monkeypatch: Any) -> "ChangingWhileRead":
        monkeypatch.setattr(os, "fstat", self._fstat)
        return self

    def _fstat(self, fd: int) -> Any:
        st = self._real(fd)
        try:
            target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == self.name
        except OSError:
            target = False
        if not target:
            return st
        with self._lock:
            if self.left <= 0:
                return st
            self.left -= 1
            bump = self.left + 1
        d = {k: getattr(st, k) for k in ("st_mode", "st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")}
        d["st_mtime_ns"] += bump
        return types.SimpleNamespace(**d)
