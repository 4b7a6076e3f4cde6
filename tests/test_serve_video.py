"""Frames of video clips from the frame service: ``frame=`` and ``t=`` beside a ``src`` that names a clip, on
``/v1/uri`` and ``/v1/image``, in schedules, through the Python client; their errors, ETags, access-log lines
and metrics. The clips are small (48 frames of 320x180), made with PyAV."""

from __future__ import annotations

import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from PIL import Image  # noqa: E402
from video_clips import pyav_frames  # noqa: E402

from gpupipe import VideoFrame  # noqa: E402
from gpupipe.errors import FrameNotFound, FrameOutOfRange  # noqa: E402
from gpupipe.samples import encode_frame, make_frame, write_clip  # noqa: E402
from gpupipe.serve.client import FrameClient, ServeError  # noqa: E402
from gpupipe.uri import build_uri  # noqa: E402

from serve_util import LiveServer, cpu_pipeline, error_body, get, service  # noqa: E402
from test_serve import metric, metrics  # noqa: E402
from test_serve_lifecycle import SchedulingPipeline, _all_handles  # noqa: E402
from waits import wait_until  # noqa: E402

FRAMES, FPS = 48, 30


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A root with a 48-frame 30 fps H.264 clip (keyframes every 16 frames), images, a file that is neither,
    a truncated clip, and a link to a clip outside the root."""
    root = tmp_path_factory.mktemp("videos")
    write_clip(
        root / "clip.mp4",
        frames=FRAMES,
        size=(320, 180),
        fps=FPS,
        options={"g": "16", "bf": "2"},
        container_options={"movflags": "+faststart"},
    )
    px = make_frame(320, 180, index=1, seed=5)
    (root / "f0.png").write_bytes(encode_frame(px, "png"))
    (root / "f1.jpg").write_bytes(encode_frame(px, "jpeg"))
    (root / "notes.txt").write_bytes(b"SECRET-TOKEN-42 is not a video")
    data = (root / "clip.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    outside = tmp_path_factory.mktemp("outside")
    write_clip(outside / "private.mp4", frames=4, size=(64, 36))
    os.symlink(outside / "private.mp4", root / "escape.mp4")
    return root


@pytest.fixture(scope="module")
def ref(root) -> list[np.ndarray]:
    """PyAV's own decode of clip.mp4, frame by frame in display order."""
    return pyav_frames(root / "clip.mp4")


@pytest.fixture
def live(root):
    with LiveServer(service(cpu_pipeline(), root)) as srv:
        yield srv


def picture(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


# --------------------------------------------------------------------------- frames by index and by time


def test_frames_by_index_and_by_time_are_the_clips_own_frames(live, ref):
    """PNG output is lossless: each frame equals PyAV's decode; ``t = i / fps`` is frame ``i``, and a time
    between two frames is the earlier one (the last frame whose timestamp is <= t)."""
    for i in (0, 1, 15, 16, 17, 33, FRAMES - 1):
        status, h, body = get(live.port, f"/v1/image?src=clip.mp4&frame={i}&format=png")
        assert status == 200 and h["content-type"] == "image/png", body[:200]
        assert np.array_equal(picture(body), ref[i]), i
        for t in (repr(i / FPS), repr((i + 0.6) / FPS)):
            status, _, by_time = get(live.port, f"/v1/image?src=clip.mp4&t={t}&format=png")
            assert status == 200 and by_time == body, (i, t)


def test_video_frames_come_out_as_jpeg_fitted_and_as_data_uris(live):
    status, h, body = get(live.port, "/v1/image?src=clip.mp4&t=0.5&size=160x160")
    assert status == 200 and h["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (160, 90)
    status, h, uri = get(live.port, "/v1/uri?src=clip.mp4&t=0.5&size=160x160")
    assert status == 200 and h["content-type"].startswith("text/plain")
    assert uri.decode() == build_uri("image/jpeg", body)


def test_t_accepts_decimals_as_javascript_and_python_write_them(live):
    first = get(live.port, "/v1/image?src=clip.mp4&frame=0")[2]
    one = get(live.port, "/v1/image?src=clip.mp4&frame=1")[2]
    for t in ("0", "0.0", "0.", ".01", "1e-7", "3.3333333333333335e-2", "0.03333333333333333"):
        status, _, body = get(live.port, f"/v1/image?src=clip.mp4&t={t}")
        assert status == 200, (t, body)
        assert body == (one if float(t) >= 1 / FPS - 1e-6 else first), t


def test_etags_name_the_resolved_frame(live):
    """``t`` and ``frame`` of the same frame share one ETag (the cache key holds the resolved index), which
    revalidates with 304 either way; another frame or other output settings have another tag."""
    _, a, _ = get(live.port, "/v1/image?src=clip.mp4&frame=15")
    _, b, _ = get(live.port, "/v1/image?src=clip.mp4&t=0.5")
    _, c, _ = get(live.port, "/v1/image?src=clip.mp4&frame=16")
    _, d, _ = get(live.port, "/v1/image?src=clip.mp4&frame=15&size=64x64")
    assert a["etag"] == b["etag"] and len({a["etag"], c["etag"], d["etag"]}) == 3
    status, h, body = get(live.port, "/v1/image?src=clip.mp4&t=0.51", {"If-None-Match": a["etag"]})
    assert status == 304 and body == b"" and h["etag"] == a["etag"]
    status, _, _ = get(live.port, "/v1/uri?src=clip.mp4&frame=15", {"If-None-Match": a["etag"]})
    assert status == 304


def test_frames_asked_in_order_decode_forward_without_seeking(root):
    pipe = cpu_pipeline()
    with LiveServer(service(pipe, root)) as srv:
        for i in range(20):
            assert get(srv.port, f"/v1/image?src=clip.mp4&frame={i}")[0] == 200
        st = pipe.encoder.videos.stats()
        assert st.seeks == 0 and st.decoded == 20 and st.open == 1


def test_concurrent_requests_for_one_clips_frames(root, ref):
    with LiveServer(service(cpu_pipeline(), root, max_batch_delay=0.02)) as srv, ThreadPoolExecutor(8) as pool:
        order = list(range(0, FRAMES, 3))[::-1]
        answers = list(pool.map(lambda i: get(srv.port, f"/v1/image?src=clip.mp4&frame={i}&format=png"), order))
    for i, (status, _, body) in zip(order, answers):
        assert status == 200 and np.array_equal(picture(body), ref[i]), i


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "query,status,etype,says",
    [
        ("src=clip.mp4&frame=1&t=0.1", 400, "BadParameter", "not both"),
        ("src=clip.mp4&frame=-1", 400, "BadParameter", "frame must be"),
        ("src=clip.mp4&frame=1.5", 400, "BadParameter", "frame must be"),
        ("src=clip.mp4&frame=abc", 400, "BadParameter", "frame must be"),
        ("src=clip.mp4&frame=", 400, "BadParameter", "frame must be"),
        ("src=clip.mp4&frame=%C2%B2", 400, "BadParameter", "frame must be"),  # a superscript two is no index
        ("src=clip.mp4&frame=1&frame=2", 400, "BadParameter", "frame is given 2 times"),
        ("src=clip.mp4&t=abc", 400, "BadParameter", "t must be"),
        ("src=clip.mp4&t=-0.5", 400, "BadParameter", "t must be 0 or more"),
        ("src=clip.mp4&t=nan", 400, "BadParameter", "t must be"),
        ("src=clip.mp4&t=inf", 400, "BadParameter", "t must be"),
        ("src=clip.mp4&t=1e999", 400, "BadParameter", "t must be a finite"),
        ("src=clip.mp4&t=1_0", 400, "BadParameter", "t must be"),
        ("src=clip.mp4&t=%201", 400, "BadParameter", "t must be"),
        ("src=clip.mp4&t=1&t=2", 400, "BadParameter", "t is given 2 times"),
        ("src=f0.png&frame=3", 400, "BadParameter", "src is a PNG image"),
        ("src=f1.jpg&t=0", 400, "BadParameter", "src is a JPEG image"),
        ("src=clip.mp4", 400, "BadParameter", "add frame= "),
        ("src=clip.mp4&format=jpeg", 400, "BadParameter", "48 frames, 1.6 s"),
        ("src=clip.mp4&frame=48", 404, "FrameOutOfRange", "(48 frames)"),
        ("src=clip.mp4&t=1.7", 404, "FrameOutOfRange", "duration 1.6 s"),
        ("src=notes.txt&frame=0", 422, "FrameDecodeError", "not a video"),
        ("src=notes.txt", 422, "FrameDecodeError", ""),
        ("src=cut.mp4&frame=40", 422, "FrameDecodeError", "truncated"),
        ("src=gone.mp4&frame=0", 404, "FrameNotFound", ""),
        ("src=escape.mp4&frame=0", 403, "PathRefused", ""),
        ("src=../outside/private.mp4&t=0", 403, "PathRefused", ""),
    ],
)
@pytest.mark.parametrize("endpoint", ["/v1/uri", "/v1/image"])
def test_video_errors_are_json_naming_the_parameter_or_the_clip(live, endpoint, query, status, etype, says):
    got, h, body = get(live.port, f"{endpoint}?{query}")
    assert h["content-type"].startswith("application/json"), body[:100]
    d = error_body(body)
    assert (got, d["type"]) == (status, etype), d
    assert says in d["error"], d
    assert b"SECRET" not in body and b"Traceback" not in body
    if not query.startswith("src=clip.mp4&") or status != 400:
        assert d["src"] == query.split("&")[0][4:]


def test_a_clip_changed_on_disk_gets_a_new_etag(live, root):
    p = root / "changing.mp4"
    write_clip(p, frames=4, size=(64, 36), seed=1)
    _, a, body_a = get(live.port, "/v1/image?src=changing.mp4&frame=2&format=png")
    write_clip(p, frames=4, size=(64, 36), seed=2)
    _, b, body_b = get(live.port, "/v1/image?src=changing.mp4&frame=2&format=png")
    assert a["etag"] != b["etag"] and body_a != body_b


# --------------------------------------------------------------------------- schedules


def _post(port: int, body: object) -> tuple[int, dict]:
    status, _, out = get(port, "/v1/schedules", method="POST", body=json.dumps(body).encode())
    return status, json.loads(out)


def test_schedules_take_video_frames_beside_frame_files(root):
    """Objects ``{"src", "frame"}`` / ``{"src", "t"}`` beside path strings; a missing clip is left out and named
    once (by src), however many of its frames were given."""
    pipe = cpu_pipeline(cls=SchedulingPipeline)
    clip = str((root / "clip.mp4").resolve())
    sources = [
        {"src": "clip.mp4", "frame": 0},
        "f0.png",
        {"src": "clip.mp4", "t": 0.5},
        {"src": "gone.mp4", "frame": 1},
        {"src": "gone.mp4", "t": 0},
        {"src": "clip.mp4", "frame": 47},
    ]
    with LiveServer(service(pipe, root)) as srv:
        status, d = _post(srv.port, {"sources": sources, "size": "160x90"})
        assert status == 201, d
        assert (d["sources"], d["missing"], d["missing_count"]) == (6, ["gone.mp4"], 1)
        (h,) = _all_handles([pipe])
        assert h.sources == [
            VideoFrame(clip, index=0),
            str((root / "f0.png").resolve()),
            VideoFrame(clip, t=0.5),
            VideoFrame(clip, index=47),
        ]


@pytest.mark.parametrize(
    "item,says",
    [
        ({"src": "clip.mp4"}, 'sources[1]: a video frame needs "frame"'),
        ({"src": "clip.mp4", "frame": 1, "t": 0.1}, "sources[1]: give one of"),
        ({"src": "clip.mp4", "frame": -1}, "sources[1]: frame must be"),
        ({"src": "clip.mp4", "frame": True}, "sources[1]: frame must be"),
        ({"src": "clip.mp4", "frame": 2.0}, "sources[1]: frame must be"),
        ({"src": "clip.mp4", "frame": "x"}, "sources[1]: frame must be"),
        ({"src": "clip.mp4", "t": "soon"}, "sources[1]: t must be"),
        ({"src": "clip.mp4", "t": None, "frame": None}, 'sources[1]: a video frame needs "frame"'),
        ({"src": "clip.mp4", "t": -1}, "sources[1]: t must be 0 or more"),
        ({"src": "clip.mp4", "frame": 1, "speed": 2}, "sources[1]: unknown field 'speed'"),
        ({"frame": 1}, "sources[1]: src must be"),
        (["clip.mp4", 1], "sources must be a non-empty list"),
        (7, "sources must be a non-empty list"),
        ({"src": "f0.png", "frame": 1}, "src is a PNG image"),
    ],
)
def test_bad_video_sources_refuse_the_whole_schedule(root, item, says):
    pipe = cpu_pipeline(cls=SchedulingPipeline)
    with LiveServer(service(pipe, root)) as srv:
        status, d = _post(srv.port, {"sources": [{"src": "clip.mp4", "frame": 0}, item]})
        assert (status, d["type"]) == (400, "BadParameter") and says in d["error"], d
    assert _all_handles([pipe]) == []


def test_a_scheduled_clip_is_read_ahead_and_requests_hit(root):
    pipe = cpu_pipeline()
    with LiveServer(service(pipe, root)) as srv:
        status, d = _post(srv.port, {"sources": [{"src": "clip.mp4", "frame": i} for i in range(12)]})
        assert status == 201, d
        wait_until(lambda: pipe.stats().prefetched >= 12, what="read-ahead of the clip")
        for i in range(12):
            assert get(srv.port, f"/v1/image?src=clip.mp4&t={i / FPS!r}")[0] == 200
        assert pipe.stats().loads == 12  # every request a hit on what read-ahead decoded
        assert pipe.encoder.videos.stats().seeks == 0


# --------------------------------------------------------------------------- the Python client, logs and metrics


def test_python_client_frames_of_a_clip(live, root):
    url = f"http://127.0.0.1:{live.port}"
    with FrameClient(url) as fc:
        assert fc.uri("clip.mp4", frame=3) == fc.uri("clip.mp4", t=0.1) == fc.uri("clip.mp4", t=3 / FPS)
        data, ctype = fc.image("clip.mp4", frame=3, format="png", size=(64, 64))
        assert ctype == "image/png" and Image.open(io.BytesIO(data)).size == (64, 36)
        assert fc.image_url("a b.mp4", t=0.1, size=(1, 2)) == f"{url}/v1/image?src=a+b.mp4&t=0.1&size=1x2"
        assert fc.image_url("c.mp4", frame=7) == f"{url}/v1/image?src=c.mp4&frame=7"
        with pytest.raises(FrameOutOfRange, match="48 frames") as e:
            fc.uri("clip.mp4", frame=99)
        assert e.value.frame == "clip.mp4"
        with pytest.raises(FrameNotFound):
            fc.uri("gone.mp4", t=0)
        with pytest.raises(ServeError) as e2:
            fc.uri("clip.mp4")
        assert e2.value.status == 400 and "add frame=" in str(e2.value)
        with pytest.raises(ValueError, match="not both"):
            fc.uri("clip.mp4", frame=1, t=0.1)
        with fc.schedule(
            ["f0.png", VideoFrame("clip.mp4", index=2), VideoFrame("clip.mp4", t=0.2), {"src": "gone.mp4", "t": 1}]
        ) as s:
            assert (s.missing, s.missing_count) == (("gone.mp4",), 1)


def test_access_log_and_metrics_name_video_requests(live, caplog):
    with caplog.at_level(logging.INFO, "gpupipe.serve.access"):
        get(live.port, "/v1/uri?src=clip.mp4&frame=2")
        get(live.port, "/v1/image?src=clip.mp4&t=0.25")
        get(live.port, "/v1/image?src=clip.mp4&frame=480")
        get(live.port, "/v1/image?src=f0.png")
        wait_until(lambda: len([r for r in caplog.records if r.name == "gpupipe.serve.access"]) >= 4, what="log lines")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gpupipe.serve.access"]
    assert [(d["path"], d["status"], d["src"], d["frame"], d["t"]) for d in lines] == [
        ("/v1/uri", 200, "clip.mp4", 2, None),
        ("/v1/image", 200, "clip.mp4", None, 0.25),
        ("/v1/image", 404, "clip.mp4", 480, None),
        ("/v1/image", 200, "f0.png", None, None),
    ]
    m = metrics(live.port)
    name = "gpupipe_http_video_frame_requests_total"
    assert metric(m, name, endpoint="/v1/uri", by="frame", status="200") == 1
    assert metric(m, name, endpoint="/v1/image", by="t", status="200") == 1
    assert metric(m, name, endpoint="/v1/image", by="frame", status="404") == 1
    assert metric(m, name) == 3


# --------------------------------------------------------------------------- POST /v1/extract


def test_extract_endpoint_writes_the_frames_under_a_root(live, root):
    body = {
        "clip": "clip.mp4",
        "out_dir": "ex1",
        "fps": "30000/1001",
        "start": 0.2,
        "duration": 0.5,
        "jpeg_qscale": 2,
        "size": "160x160",
    }
    status, _, data = get(live.port, "/v1/extract", method="POST", body=json.dumps(body).encode())
    assert status == 200, data
    answer = json.loads(data)
    assert answer["count"] == len(answer["paths"]) > 0 and answer["backend"] == "cpu"
    assert [Path(p).parent for p in answer["paths"]] == [root / "ex1"] * answer["count"]
    assert Image.open(answer["paths"][0]).size == (160, 90)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"clip": "clip.mp4", "out_dir": "../out"}, 403, "'..'"),
        ({"clip": "clip.mp4", "out_dir": "/tmp/gpupipe-outside-root"}, 403, "outside every --root"),
        ({"clip": "escape.mp4", "out_dir": "ex2"}, 403, "outside every --root"),
        ({"clip": "gone.mp4", "out_dir": "ex2"}, 404, "no such file"),
        ({"clip": "clip.mp4", "out_dir": "ex2", "colour": 1}, 400, "unknown field"),
        ({"clip": "clip.mp4", "out_dir": "ex2", "fps": 0}, 400, "fps"),
        ({"clip": "clip.mp4", "out_dir": "ex2", "colour_matrix": "bt2020"}, 400, "colour_matrix"),
        ({"clip": "clip.mp4", "out_dir": "ex2", "pattern": "x.jpg"}, 422, "bad pattern"),
        ({"clip": "notes.txt", "out_dir": "ex2"}, 422, "not a video"),
        ({"clip": "clip.mp4", "out_dir": "ex2", "fps": 30, "start": 9}, 422, "no frame selected"),
    ],
)
def test_extract_endpoint_errors(live, root, body, status, says):
    got, _, data = get(live.port, "/v1/extract", method="POST", body=json.dumps(body).encode())
    err = error_body(data)
    assert got == status and says in err["error"], err
    assert "SECRET" not in err["error"]
    assert not (root / "ex2").exists()


def test_python_client_extract(live, root, tmp_path):
    from fractions import Fraction

    from gpupipe.errors import ExtractError, NothingToExtract

    with FrameClient(f"http://127.0.0.1:{live.port}") as fc:
        result = fc.extract("clip.mp4", "ex3", fps=Fraction(30), start=0.1, duration=0.4, pattern="f_%03d.png", fps_start=0.1)
        assert [p.name for p in result.paths] == [f"f_{i:03d}.png" for i in range(1, 10)]
        assert result.source_frames == tuple(range(6, 15))  # -ss rebases, then start_time: source 0.2 s on
        seg = fc.extract("clip.mp4", "ex5", fps=30, start=0.1, duration=0.4, max_frames=5, start_number=7, colour_matrix="bt709")
        assert seg.source_frames == (3, 4, 5, 6, 7) and seg.paths[0].name == "frame_00007.jpg"  # start_time=0: 0.1 s on
        with pytest.raises(ExtractError, match="exists already") as e:
            fc.extract("clip.mp4", "ex3")
        assert e.value.clip == "clip.mp4"
        with pytest.raises(NothingToExtract):
            fc.extract(root / "clip.mp4", root / "ex4", fps=30, start=5)
