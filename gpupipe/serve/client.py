"""A Python client of ``gpupipe serve``, for renderers in other processes (standard library only).

::

    from gpupipe.serve.client import FrameClient

    with FrameClient("http://127.0.0.1:8765") as fc:          # or FrameClient(socket_path="/run/gpupipe.sock")
        uri = fc.uri("clip/frame_00001.png", size=(1920, 1080))
        frame = fc.uri("clip.mp4", t=0.4, size=(1920, 1080))      # a video clip's frame: by t= (seconds) or frame= (index)
        with fc.schedule(["clip/frame_00001.png", {"src": "clip.mp4", "frame": 12}]):
            ...

Frame errors arrive as the library's own types, as in-process: 404 raises
:class:`~gpupipe.errors.FrameNotFound` (:class:`~gpupipe.errors.FrameOutOfRange` for a video's
frame past the clip's end), 422 :class:`~gpupipe.errors.FrameDecodeError`, 413
:class:`~gpupipe.errors.FrameTooLarge`; every other error status raises :class:`ServeError`
with the service's ``status``, ``type`` and message.

A 503 answer (the queue or byte budget was full, or the frame's file changed while it was read)
is asked again after its ``Retry-After`` (at most :data:`MAX_RETRY_WAIT` seconds), ``retries``
times; then it raises :class:`~gpupipe.errors.FrameChanged` for a changed frame, else
:class:`ServeError`. The Node client (``clients/node/gpupipe.mjs``) retries the same way.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from ..errors import (
    ExtractError,
    FrameChanged,
    FrameDecodeError,
    FrameNotFound,
    FrameOutOfRange,
    FrameTooLarge,
    GpupipeError,
    NothingToExtract,
)
from ..frames import VideoFrame

if TYPE_CHECKING:
    from ..extract import ExtractResult

__all__ = ["MAX_RETRY_WAIT", "FrameClient", "RemoteSchedule", "ScheduleSource", "ServeError", "fetch_uri"]

MAX_RETRY_WAIT = 10.0  # seconds: the longest Retry-After a retry waits for

ScheduleSource = str | Mapping[str, Any] | VideoFrame
"""A schedule's source: a frame path; a video frame as the service takes it (``{"src": "clip.mp4",
"frame": 12}`` or ``{"src": ..., "t": 0.4}``); or a :class:`~gpupipe.VideoFrame` whose path is
relative to a root (or absolute inside one)."""


class ServeError(GpupipeError):
    """An error answer of the frame service: ``status``, ``type`` (the service's error class) and ``src``."""

    def __init__(self, status: int, type_: str, message: str, src: str | None = None, retry_after: float | None = None):
        self.status = status
        self.type = type_
        self.src = src
        self.retry_after = retry_after
        super().__init__(f"{status} {type_}: {message}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def _size(size: tuple[int, int] | str | None) -> str | None:
    if size is None or isinstance(size, str):
        return size
    return f"{int(size[0])}x{int(size[1])}"


def _pick(frame: int | None, t: float | None) -> dict[str, Any]:
    """The query fields that pick a video's frame: ``frame`` (an index) or ``t`` (seconds, as ``repr`` writes them)."""
    if frame is not None and t is not None:
        raise ValueError("give one of frame= (a display index) and t= (seconds), not both")
    if frame is not None:
        return {"frame": int(frame)}
    if t is not None:
        return {"t": repr(float(t))}
    return {}


def _query(
    src: str,
    format: str | None,
    size: tuple[int, int] | str | None,
    quality: int | None,
    frame: int | None = None,
    t: float | None = None,
) -> str:
    q: dict[str, Any] = {"src": src, **_pick(frame, t)}
    if format is not None:
        q["format"] = format
    if size is not None:
        q["size"] = _size(size)
    if quality is not None:
        q["quality"] = int(quality)
    return urlencode(q)


class RemoteSchedule:
    """An open schedule on the service; :meth:`close` (or leaving the ``with`` block) withdraws it.

    ``missing``: the sources that exist under no root, which the service left out of it (the first
    100 of them, in order; ``missing_count`` counts them all). Requests for them answer 404.
    """

    def __init__(self, client: FrameClient, id_: str, missing: tuple[str, ...] = (), missing_count: int = 0) -> None:
        self.client = client
        self.id = id_
        self.missing = missing
        self.missing_count = missing_count
        self.closed = False

    def close(self) -> None:
        """Withdraw the schedule (once; a schedule the service no longer knows is already closed)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.client._request("DELETE", f"/v1/schedules/{self.id}")
        except ServeError as e:
            if e.status != 404:
                raise

    def __enter__(self) -> RemoteSchedule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameClient:
    """A keep-alive connection to ``gpupipe serve`` at ``url`` (or its Unix socket ``socket_path``).

    Thread-safe: requests on one client take turns on its connection; give each thread its own
    client for parallel requests. ``timeout`` is in seconds per request; ``retries`` is how many
    times a 503 answer is asked again (see the module docstring).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        *,
        socket_path: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        self.url = url.rstrip("/")
        self.socket_path = socket_path
        self.timeout = timeout
        self.retries = retries
        parts = urlsplit(self.url)
        if socket_path is None and parts.scheme != "http":
            raise ValueError(f"url must be http://host:port (or pass socket_path), got {url!r}")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.socket_path is not None:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One answer, 503 answers asked again up to ``retries`` times; raises the error of an error status."""
        retried = 0
        while True:
            status, hdrs, data = self._exchange(method, path, body)
            if status < 400:
                return status, hdrs, data
            if status != 503 or retried >= self.retries:
                raise _error(status, hdrs, data)
            retried += 1
            wait = _retry_after(hdrs)
            time.sleep(min(MAX_RETRY_WAIT, 1.0 if wait is None else wait))  # other threads may use the connection meanwhile

    def _exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        """One request on the kept-alive connection: ``(status, headers with lower-case names, body)``."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with self._lock:
            for attempt in (0, 1):
                conn = self._connection()
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    hdrs = {k.lower(): v for k, v in resp.getheaders()}
                    if resp.will_close:
                        self._drop()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    self._drop()
                    if attempt or method not in ("GET", "DELETE"):  # a kept-alive connection the server closed: retry once
                        raise
                except BaseException:
                    self._drop()
                    raise
        return resp.status, hdrs, data

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def uri(
        self,
        src: str,
        *,
        frame: int | None = None,
        t: float | None = None,
        format: str | None = None,
        size: tuple[int, int] | str | None = None,
        quality: int | None = None,
    ) -> str:
        """The data URI of frame ``src`` (a path under one of the service's roots); for a video clip,
        of its frame ``frame`` (display index, from 0) or the one shown at ``t`` seconds (one of the two)."""
        _, _, data = self._request("GET", "/v1/uri?" + _query(src, format, size, quality, frame, t))
        return data.decode("ascii")

    def image(
        self,
        src: str,
        *,
        frame: int | None = None,
        t: float | None = None,
        format: str | None = None,
        size: tuple[int, int] | str | None = None,
        quality: int | None = None,
    ) -> tuple[bytes, str]:
        """``(encoded image bytes, content type)`` of frame ``src`` (``frame``/``t``: as :meth:`uri`)."""
        _, hdrs, data = self._request("GET", "/v1/image?" + _query(src, format, size, quality, frame, t))
        return data, hdrs.get("content-type", "application/octet-stream")

    def image_url(
        self,
        src: str,
        *,
        frame: int | None = None,
        t: float | None = None,
        format: str | None = None,
        size: tuple[int, int] | str | None = None,
        quality: int | None = None,
    ) -> str:
        """The URL of frame ``src``'s image (``frame``/``t``: as :meth:`uri`), for a page's ``<img src>`` (TCP services only)."""
        if self.socket_path is not None:
            raise ValueError("a browser cannot load an image from a Unix socket; serve on TCP for URL mode")
        return f"{self.url}/v1/image?{_query(src, format, size, quality, frame, t)}"

    def schedule(
        self,
        sources: Iterable[ScheduleSource],
        *,
        format: str | None = None,
        size: tuple[int, int] | str | None = None,
        quality: int | None = None,
    ) -> RemoteSchedule:
        """Declare the order in which frames will be requested; returns the open :class:`RemoteSchedule`.

        ``sources``: frame paths and video frames (:data:`ScheduleSource`). Sources that exist under
        no root are left out (:attr:`RemoteSchedule.missing`, by ``src``); raises
        :class:`~gpupipe.errors.FrameNotFound` when none exists, :class:`ServeError` for a refused one (403).
        """
        body: dict[str, Any] = {"sources": [_schedule_item(s) for s in sources]}
        for k, v in (("format", format), ("size", _size(size)), ("quality", quality)):
            if v is not None:
                body[k] = v
        _, _, data = self._request("POST", "/v1/schedules", json.dumps(body).encode("utf-8"))
        answer = json.loads(data)
        missing = tuple(str(s) for s in answer.get("missing", ()))
        return RemoteSchedule(self, answer["id"], missing, int(answer.get("missing_count", len(missing))))

    def extract(
        self,
        clip: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        pattern: str = "frame_%05d.jpg",
        fps: Fraction | int | float | str | None = None,
        start: float = 0.0,
        duration: float | None = None,
        size: tuple[int, int] | str | None = None,
        jpeg_qscale: int | None = None,
        jpeg_quality: int = 95,
        start_number: int = 1,
        atomic: bool = True,
        fps_start: float = 0.0,
        max_frames: int | None = None,
        colour_matrix: str = "stream",
        png_compression_level: int | None = None,
    ) -> ExtractResult:
        """Have the service write ``clip``'s frames into ``out_dir`` (``POST /v1/extract``; the fields are
        :class:`~gpupipe.extract.ExtractRequest`'s; both paths under the service's roots, relative ones
        under its first root). Returns the :class:`~gpupipe.extract.ExtractResult` (the service's paths).

        Raises :class:`~gpupipe.errors.ExtractError` (:class:`~gpupipe.errors.NothingToExtract` when no
        frame is selected) naming the clip, :class:`~gpupipe.errors.FrameNotFound` for a clip under no
        root, :class:`ServeError` for a refused path (403) or a malformed request (400).
        """
        body: dict[str, Any] = {
            "clip": os.fspath(clip),
            "out_dir": os.fspath(out_dir),
            "pattern": pattern,
            "start": start,
            "jpeg_quality": jpeg_quality,
            "start_number": start_number,
            "atomic": atomic,
            "fps_start": fps_start,
            "colour_matrix": colour_matrix,
        }
        for k, v in (
            ("fps", str(fps) if isinstance(fps, Fraction) else fps),
            ("duration", duration),
            ("size", _size(size)),
            ("jpeg_qscale", jpeg_qscale),
            ("max_frames", max_frames),
            ("png_compression_level", png_compression_level),
        ):
            if v is not None:
                body[k] = v
        from ..extract import ExtractResult

        answer = json.loads(self._request("POST", "/v1/extract", json.dumps(body).encode("utf-8"))[2])
        return ExtractResult(
            tuple(Path(p) for p in answer["paths"]),
            tuple(int(i) for i in answer["source_frames"]),
            str(answer["backend"]),
            str(answer["decoder"]),
            float(answer["seconds"]),
        )

    def health(self) -> dict[str, Any]:
        """The service's ``/healthz`` answer."""
        return json.loads(self._request("GET", "/healthz")[2])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._drop()

    def __enter__(self) -> FrameClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _schedule_item(source: ScheduleSource) -> Any:
    """A schedule's source as its JSON body carries it."""
    if isinstance(source, VideoFrame):
        pick = {"frame": source.index} if source.index is not None else {"t": source.t}
        return {"src": os.fspath(source.path), **pick}
    if isinstance(source, Mapping):
        return dict(source)
    return source


def _error(status: int, headers: dict[str, str], data: bytes) -> Exception:
    try:
        body = json.loads(data)
        message, type_, src = str(body.get("error")), str(body.get("type")), body.get("src")
    except (ValueError, AttributeError):
        message, type_, src = data[:300].decode("utf-8", "replace"), "HTTPError", None
    frame = src if isinstance(src, str) else "?"
    if status == 404 and type_ == "FrameOutOfRange":
        return FrameOutOfRange(frame, message)
    if status == 404 and type_ not in {"ScheduleNotFound", "HTTPNotFound"}:
        return FrameNotFound(frame, message)
    if status == 422:
        kinds: dict[str, type[GpupipeError]] = {"ExtractError": ExtractError, "NothingToExtract": NothingToExtract}
        return kinds.get(type_, FrameDecodeError)(frame, message)
    if status == 413:
        return FrameTooLarge(frame, message)
    if status == 503 and type_ == "FrameChanged":
        return FrameChanged(frame, message)
    return ServeError(status, type_, message, src if isinstance(src, str) else None, _retry_after(headers))


def _retry_after(headers: dict[str, str]) -> float | None:
    """``Retry-After`` in seconds (``None`` when absent, negative, or an HTTP date)."""
    retry = headers.get("retry-after")
    try:
        seconds = float(retry) if retry is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def fetch_uri(
    src: str,
    *,
    frame: int | None = None,
    t: float | None = None,
    url: str = "http://127.0.0.1:8765",
    socket_path: str | None = None,
    format: str | None = None,
    size: tuple[int, int] | str | None = None,
    quality: int | None = None,
    timeout: float = 120.0,
) -> str:
    """The data URI of frame ``src`` (``frame``/``t``: a video clip's frame, as :meth:`FrameClient.uri`) from the
    service at ``url`` (one request; use :class:`FrameClient` for many)."""
    with FrameClient(url, socket_path=socket_path, timeout=timeout) as fc:
        return fc.uri(src, frame=frame, t=t, format=format, size=size, quality=quality)
