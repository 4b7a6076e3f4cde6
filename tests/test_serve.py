"""The frame service over real HTTP on a free loopback port: endpoints, errors, confinement, batching,
queue limits, time limits, concurrency within the budget, metrics, access log, Unix socket."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from gpupipe.errors import BudgetTimeout, FrameDecodeError, FrameNotFound  # noqa: E402
from gpupipe.samples import encode_frame, make_frame  # noqa: E402
from gpupipe.serve.lanes import route  # noqa: E402
from gpupipe.serve.client import FrameClient, ServeError, fetch_uri  # noqa: E402
from gpupipe.uri import build_uri  # noqa: E402

from serve_util import (  # noqa: E402
    MiB,
    ChangingWhileRead,
    GatedPipeline,
    LiveServer,
    cpu_pipeline,
    error_body,
    get,
    noise_png,
    png_with_padding,
    service,
)
from waits import wait_until  # noqa: E402


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """A root with PNG and JPEG frames, a corrupt one, and links in and out of the root."""
    root = tmp_path_factory.mktemp("frames")
    for i in range(3):
        px = make_frame(320, 180, index=i, seed=3)
        (root / f"f{i}.png").write_bytes(encode_frame(px, "png"))
        (root / f"f{i}.jpg").write_bytes(encode_frame(px, "jpeg"))
    (root / "sub").mkdir()
    (root / "sub" / "deep.png").write_bytes((root / "f0.png").read_bytes())
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes((root / "f1.png").read_bytes())
    os.symlink(outside / "secret.png", root / "escape.png")
    os.symlink(outside, root / "outdir")  # a linked directory that leads out of the root
    os.symlink(root / "f2.png", root / "alias.png")
    (root / "notes.png").write_bytes(b"SECRET-TOKEN-0123456789 is not an image")
    (root / "changing.png").write_bytes((root / "f0.png").read_bytes())
    return root


@pytest.fixture
def live(frames):
    with LiveServer(service(cpu_pipeline(), frames)) as srv:
        yield srv


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(m: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in m.items() if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))


# --------------------------------------------------------------------------- endpoints


def test_uri_is_the_frames_data_uri(live, frames):
    status, h, body = get(live.port, "/v1/uri?src=f0.png")
    assert status == 200
    assert h["content-type"].startswith("text/plain")
    assert int(h["content-length"]) == len(body)
    assert body.decode() == build_uri("image/png", (frames / "f0.png").read_bytes())  # auto, no size: passed through
    assert h["etag"].startswith('W/"')


def test_image_is_the_encoded_bytes_with_http_caching_headers(live, frames):
    status, h, body = get(live.port, "/v1/image?src=f1.jpg")
    assert status == 200
    assert body == (frames / "f1.jpg").read_bytes()
    assert h["content-type"] == "image/jpeg"
    assert int(h["content-length"]) == len(body)
    assert h["cache-control"] == "no-cache"
    etag = h["etag"]
    status, h2, body2 = get(live.port, "/v1/image?src=f1.jpg", {"If-None-Match": etag})
    assert status == 304 and body2 == b"" and h2["etag"] == etag
    status, _, body3 = get(live.port, "/v1/image?src=f1.jpg", {"If-None-Match": 'W/"other"'})
    assert status == 200 and body3 == body


def test_etag_changes_with_the_file_and_the_output_settings(live, tmp_path, frames):
    _, a, _ = get(live.port, "/v1/image?src=f0.png")
    _, b, _ = get(live.port, "/v1/image?src=f0.png&format=jpeg")
    _, c, _ = get(live.port, "/v1/image?src=f0.png&size=160x90")
    assert len({a["etag"], b["etag"], c["etag"]}) == 3
    p = frames / "changing.png"
    p.write_bytes((frames / "f0.png").read_bytes())
    _, d1, body1 = get(live.port, "/v1/image?src=changing.png")
    p.write_bytes((frames / "f1.png").read_bytes())
    _, d2, body2 = get(live.port, "/v1/image?src=changing.png")
    assert d1["etag"] != d2["etag"] and body1 != body2 and body2 == (frames / "f1.png").read_bytes()


@pytest.mark.parametrize("query,mime,size", [
    ("format=jpeg&size=160x90&quality=70", "image/jpeg", (160, 90)),
    ("format=png", "image/png", (320, 180)),
    ("format=auto&size=100x100", "image/jpeg", (100, 56)),
    ("format=passthrough&size=10x10", "image/png", (320, 180)),
])
def test_output_settings(live, query, mime, size):
    status, h, body = get(live.port, f"/v1/image?src=f2.png&{query}")
    assert status == 200 and h["content-type"] == mime
    assert Image.open(io.BytesIO(body)).size == size
    status, _, uri = get(live.port, f"/v1/uri?src=f2.png&{query}")
    assert uri.decode().startswith(f"data:{mime};base64,")


def test_paths_inside_the_root_absolute_nested_and_links_within(live, frames):
    for src in ("sub/deep.png", str(frames / "f0.png"), "alias.png", "./f0.png"):
        assert get(live.port, f"/v1/uri?src={src}")[0] == 200, src


def test_healthz(live):
    status, _, body = get(live.port, "/healthz")
    d = json.loads(body)
    assert status == 200 and d["status"] == "ok" and d["pipelines"] == [{"name": "cpu0", "backend": "cpu"}]
    from gpupipe.memory import allocator_status

    assert d["allocator"] == allocator_status().reason  # says "not applied: ..." and why where it is not


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("query,status,etype", [
    ("src=missing.png", 404, "FrameNotFound"),
    ("src=sub", 404, "FrameNotRegularFile"),
    ("src=bad.png", 422, "FrameDecodeError"),
    ("src=escape.png", 403, "PathRefused"),
    ("src=../outside/secret.png", 403, "PathRefused"),
    ("src=sub/../f0.png", 403, "PathRefused"),
    ("src=/etc/hostname", 403, "PathRefused"),
    ("src=/nonexistent/x.png", 403, "PathRefused"),
    ("", 400, "BadParameter"),
    ("src=", 400, "BadParameter"),
    ("src=f0.png&size=big", 400, "BadParameter"),
    ("src=f0.png&size=0x10", 400, "BadParameter"),
    ("src=f0.png&quality=101", 400, "BadParameter"),
    ("src=f0.png&quality=abc", 400, "BadParameter"),
    ("src=f0.png&format=gif", 400, "BadParameter"),
    ("src=f0.png&src=f1.png", 400, "BadParameter"),
    ("src=f0.png&format=jpeg&format=png", 400, "BadParameter"),
    ("src=f0.png&t=1.5", 400, "BadParameter"),
    ("src=f0.png&frame=3", 400, "BadParameter"),
    ("src=f0%00.png", 400, "BadParameter"),
])
@pytest.mark.parametrize("endpoint", ["/v1/uri", "/v1/image"])
def test_error_statuses_are_json_naming_the_frame(live, endpoint, query, status, etype):
    got, h, body = get(live.port, f"{endpoint}?{query}")
    assert got == status
    assert h["content-type"].startswith("application/json")
    d = error_body(body)
    assert d["type"] == etype
    src = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("src")
    if src and etype != "BadParameter":
        assert d["src"] == src


def test_query_parameters_gpupipe_does_not_reserve_are_ignored_and_named(live):
    """A page's cache-buster (``&_=123``, ``&v=2``) leaves the answer as it is and is named in a header, on every
    kind of answer; names are percent-encoded there, so none can add an item or a line."""
    from gpupipe.serve.params import IGNORED_HEADER, RESERVED_PARAMS

    assert {"src", "format", "size", "quality", "t", "frame"} == set(RESERVED_PARAMS)
    header = IGNORED_HEADER.lower()
    status, h, plain = get(live.port, "/v1/image?src=f1.jpg")
    assert status == 200 and header not in h
    etag = h["etag"]
    for endpoint in ("/v1/image", "/v1/uri"):
        status, h, body = get(live.port, f"{endpoint}?v=2&src=f1.jpg&_=123&_=124")
        assert status == 200 and h[header] == "_, v"
        assert body == (plain if endpoint == "/v1/image" else build_uri("image/jpeg", plain).encode())
    status, h, _ = get(live.port, "/v1/image?src=f1.jpg&_=1", {"If-None-Match": etag})
    assert status == 304 and h[header] == "_"
    status, h, body = get(live.port, "/v1/uri?src=missing.png&cb=9")
    assert status == 404 and error_body(body)["src"] == "missing.png" and h[header] == "cb"
    status, h, _ = get(live.port, "/v1/uri?src=f0.png&size=big&cb=9")
    assert status == 400 and h[header] == "cb"
    status, h, _ = get(live.port, "/v1/uri?src=f0.png&a%2Cb=1&%0D%0AX-Evil=1")
    assert status == 200 and h[header] == "%0D%0AX-Evil, a%2Cb" and "x-evil" not in h


def test_the_readme_lists_the_reserved_query_parameters():
    import re

    from gpupipe.serve.params import RESERVED_PARAMS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| parameter | meaning |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M) == list(RESERVED_PARAMS)


def test_a_linked_directory_leading_out_of_the_root_answers_alike_whether_or_not_the_file_exists(live, frames):
    answers = {}
    for src in ("outdir/secret.png", "outdir/missing.png", "outdir/sub/missing.png", "outdir"):
        for endpoint in ("/v1/uri", "/v1/image"):
            status, _, body = get(live.port, f"{endpoint}?src={src}")
            d = error_body(body)
            assert d.pop("src") == src
            answers[(src, endpoint)] = (status, d)
    refused = (403, {"error": "src resolves outside every --root", "type": "PathRefused"})
    assert all(a == refused for a in answers.values()), answers
    status, _, body = get(live.port, "/v1/uri?src=sub/missing.png")  # a plain missing file inside the root
    assert status == 404 and error_body(body)["type"] == "FrameNotFound"


def test_roots_try_every_root_and_refuse_a_link_out_alike(tmp_path):
    from gpupipe.errors import FrameNotFound as NotFound
    from gpupipe.serve.errors import PathRefused
    from gpupipe.serve.roots import Roots

    a, b, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    for d in (a, b, outside):
        d.mkdir()
    (outside / "x.png").write_bytes(b"x")
    os.symlink(outside, a / "link")
    (b / "link").mkdir()
    (b / "link" / "y.png").write_bytes(b"y")
    roots = Roots([a, b])
    assert roots.resolve("link/y.png") == os.path.realpath(b / "link" / "y.png")  # the second root holds it
    for src in ("link/x.png", "link/missing.png"):  # through a's link only: refused, existing or not
        with pytest.raises(PathRefused, match="outside every --root"):
            roots.resolve(src)
    with pytest.raises(NotFound):
        roots.resolve("nothing.png")


def test_error_bodies_show_no_file_content_and_no_inode_numbers(live, frames, monkeypatch):
    status, _, body = get(live.port, "/v1/uri?src=notes.png")
    d = error_body(body)
    assert status == 422 and d["type"] == "FrameDecodeError" and "not a PNG or JPEG" in d["error"]
    assert b"SECRET" not in body and b"TOKEN" not in body
    st = os.stat(frames / "changing.png")
    ChangingWhileRead("changing.png").install(monkeypatch)
    status, _, body = get(live.port, "/v1/uri?src=changing.png")
    d = error_body(body)
    assert "changed while being read" in d["error"]
    for secret in (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns):
        assert str(secret).encode() not in body, (secret, body)
    assert b"stat" not in body


def test_a_frame_changed_while_read_is_503_with_retry_after_then_served(live, frames, monkeypatch):
    ChangingWhileRead("changing.png").install(monkeypatch)
    status, h, body = get(live.port, "/v1/uri?src=changing.png")
    d = error_body(body)
    assert status == 503 and d["type"] == "FrameChanged" and d["src"] == "changing.png"
    assert int(h["retry-after"]) >= 1
    status, _, body = get(live.port, "/v1/uri?src=changing.png")
    assert status == 200 and body.decode() == build_uri("image/png", (frames / "changing.png").read_bytes())


def test_the_python_client_retries_a_frame_changed_while_read(live, frames, monkeypatch):
    from gpupipe.errors import FrameChanged

    want = build_uri("image/png", (frames / "changing.png").read_bytes())
    ChangingWhileRead("changing.png").install(monkeypatch)
    with FrameClient(f"http://127.0.0.1:{live.port}") as fc:
        assert fc.uri("changing.png") == want  # 503 + Retry-After, then served
    assert metric(metrics(live.port), "gpupipe_http_requests_total", endpoint="/v1/uri", status="503") == 1
    ChangingWhileRead("changing.png").install(monkeypatch)
    with FrameClient(f"http://127.0.0.1:{live.port}", retries=0) as fc, pytest.raises(FrameChanged) as e:
        fc.uri("changing.png", format="jpeg")  # not cached yet: read again
    assert e.value.frame == "changing.png" and isinstance(e.value, FrameDecodeError)


def test_frame_too_large_is_413(frames):
    with LiveServer(service(cpu_pipeline(max_pixels=1000), frames)) as srv:
        status, _, body = get(srv.port, "/v1/uri?src=f0.png")
    assert status == 413 and error_body(body)["type"] == "FrameTooLarge"


def test_unknown_route_and_method_are_json(live):
    status, _, body = get(live.port, "/v2/nothing")
    assert status == 404 and error_body(body)["type"] == "HTTPNotFound"
    status, h, body = get(live.port, "/v1/uri?src=f0.png", method="POST", body=b"")
    assert status == 405 and error_body(body)["type"] == "HTTPMethodNotAllowed" and "GET" in h["allow"]


class _Exploding(GatedPipeline):
    def lease_many(self, sources):  # type: ignore[override]
        raise RuntimeError("secret internal detail")


def test_an_unexpected_failure_is_500_without_a_stack_trace(frames, caplog):
    pipe = cpu_pipeline(cls=_Exploding)
    with LiveServer(service(pipe, frames)) as srv, caplog.at_level(logging.ERROR, "gpupipe.serve"):
        status, _, body = get(srv.port, "/v1/uri?src=f0.png")
    d = error_body(body)
    assert status == 500 and d["type"] == "InternalError"
    assert b"secret" not in body and b"Traceback" not in body and b"RuntimeError" not in body
    assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_queue_full_is_503_with_retry_after(frames):
    pipe = cpu_pipeline(cls=GatedPipeline, batch_size=1)
    svc = service(pipe, frames, max_queue=2, max_batch_delay=0.0, batch_slots=1)
    with LiveServer(svc) as srv, ThreadPoolExecutor(3) as pool:
        first = pool.submit(get, srv.port, "/v1/uri?src=f0.png")
        assert pipe.entered.wait(20)  # the first request's batch is running (held at the gate)
        queued = [pool.submit(get, srv.port, f"/v1/uri?src=f{i}.jpg") for i in (1, 2)]
        wait_until(lambda: svc.batcher.depth == 2, what="two queued requests")
        status, h, body = get(srv.port, "/v1/uri?src=f2.png")
        assert status == 503 and int(h["retry-after"]) >= 1 and error_body(body)["type"] == "QueueFull"
        m = metrics(srv.port)
        pipe.gate.set()
        assert [f.result()[0] for f in [first, *queued]] == [200, 200, 200]
    assert metric(m, "gpupipe_queue_full_rejects_total") == 1
    assert metric(m, "gpupipe_queue_depth") == 2
    assert metric(m, "gpupipe_http_requests_total", endpoint="/v1/uri", status="503") == 1


def test_request_time_limit_is_504_and_the_queue_is_released(frames):
    pipe = cpu_pipeline(cls=GatedPipeline, batch_size=1)
    svc = service(pipe, frames, request_timeout=0.3, max_batch_delay=0.0, batch_slots=1)
    with LiveServer(svc) as srv:
        status, _, body = get(srv.port, "/v1/uri?src=f0.png")  # its batch is held at the gate
        assert status == 504 and error_body(body)["type"] == "RequestTimeout" and error_body(body)["src"] == "f0.png"
        status, _, _ = get(srv.port, "/v1/uri?src=f1.png")  # waits in the queue behind it, then leaves it
        assert status == 504
        wait_until(lambda: svc.batcher.depth == 0, what="the timed-out request to leave the queue")
        pipe.gate.set()
        assert get(srv.port, "/v1/uri?src=f2.png")[0] == 200
        assert metric(metrics(srv.port), "gpupipe_request_timeouts_total") == 2


def test_budget_timeout_is_503(frames):
    """A frame whose work waited cache.admission_timeout for room in the budget is answered 503."""
    pipe = cpu_pipeline(max_bytes=2 * MiB, admission_timeout=0.2)
    with LiveServer(service(pipe, frames)) as srv, pipe.cache.reserve(2 * MiB - 1024):  # other work holds the budget
        status, h, body = get(srv.port, "/v1/uri?src=f0.png&format=png")
    assert status == 503 and error_body(body)["type"] == "BudgetTimeout" and "retry-after" in h


# --------------------------------------------------------------------------- batching and routing


def _queue_behind_one_request(frames, batch_size: int) -> tuple[GatedPipeline, list[str], dict[tuple[str, tuple], float]]:
    """Hold one request inside the pipeline, queue six more behind it, then let all through;
    returns the pipeline (its batches), the queued names and the metrics afterwards."""
    pipe = cpu_pipeline(cls=GatedPipeline, batch_size=batch_size)
    svc = service(pipe, frames, max_batch_delay=0.0, batch_slots=1)
    names = [f"f{i}.{e}" for i in range(3) for e in ("png", "jpg")]
    with LiveServer(svc) as srv, ThreadPoolExecutor(8) as pool:
        first = pool.submit(get, srv.port, "/v1/uri?src=sub/deep.png")
        assert pipe.entered.wait(20)
        rest = [pool.submit(get, srv.port, f"/v1/uri?src={n}") for n in names]
        wait_until(lambda: svc.batcher.depth == len(names), what="all requests queued")
        pipe.gate.set()
        assert all(f.result()[0] == 200 for f in [first, *rest])
        m = metrics(srv.port)
    return pipe, names, m


def test_requests_from_many_clients_are_coalesced_into_batches(frames):
    pipe, names, m = _queue_behind_one_request(frames, batch_size=8)
    assert [len(b) for b in pipe.batches] == [1, len(names)]
    assert sorted(pipe.batches[1]) == sorted(str(frames / n) for n in names)
    assert metric(m, "gpupipe_batches_total", pipeline="cpu0") == 2
    assert metric(m, "gpupipe_batch_size_sum", pipeline="cpu0") == 1 + len(names)


def test_a_batch_holds_at_most_batch_size_frames(frames):
    pipe, _, _ = _queue_behind_one_request(frames, batch_size=2)
    assert [len(b) for b in pipe.batches] == [1, 2, 2, 2]


def test_frames_are_routed_to_pipelines_by_a_stable_hash(frames, tmp_path):
    # The hash is of the real path, so which lane a name lands on depends on the temporary folder:
    # frames are added until they spread over both lanes (7 of them land on one lane 1.6 % of the time).
    names: list[str] = []
    while len(names) < 7 or len({route(str((tmp_path / n).resolve()), 2) for n in names}) < 2:
        names.append(f"c{len(names)}.png")
        (tmp_path / names[-1]).write_bytes((frames / f"f{len(names) % 3}.png").read_bytes())
    pipes = [cpu_pipeline(), cpu_pipeline()]
    with LiveServer(service(pipes, tmp_path)) as srv:
        for n in names:
            assert get(srv.port, f"/v1/uri?src={n}")[0] == 200
        m = metrics(srv.port)
    lanes = {str((tmp_path / n).resolve()): route(str((tmp_path / n).resolve()), 2) for n in names}
    assert set(lanes.values()) == {0, 1}
    for i, p in enumerate(pipes):
        held = {k.source.name for k in p.cache.keys()}
        assert held == {path for path, lane in lanes.items() if lane == i}
        assert metric(m, "gpupipe_cache_entries", pipeline=f"cpu{i}") == len(held)
    assert route("/a/b.png", 4) == route("/a/b.png", 4)


def test_cache_hits_skip_the_batcher_and_count_as_hits(live):
    assert get(live.port, "/v1/uri?src=f0.png")[0] == 200
    before = metrics(live.port)
    assert get(live.port, "/v1/uri?src=f0.png")[0] == 200
    after = metrics(live.port)
    assert metric(after, "gpupipe_batches_total") == metric(before, "gpupipe_batches_total")
    assert metric(after, "gpupipe_cache_hits_total") == metric(before, "gpupipe_cache_hits_total") + 1
    assert metric(after, "gpupipe_requests_by_cache_state_total", state="hit") == 1


def test_sixteen_concurrent_clients_within_the_byte_budget(tmp_path):
    """16 clients ask for 24 frames whose URIs add up to ~2.7x the budget: every answer is right, and
    cached entries + work in flight + URIs being sent stay within the budget but for the one window
    FrameCache.lease_many documents: a batch that loads leases the URIs it got beside its loads (hits,
    joined loads) when it returns, so one evicted meanwhile is uncounted until then (at most the
    2 batch slots x 4 frames of URIs; batches of 4 fit the budget in one part)."""
    root = tmp_path / "noise"
    root.mkdir()
    expected = {}
    for i in range(24):
        data = noise_png(root / f"n{i:02d}.png", 640, 360, seed=i)
        expected[f"n{i:02d}.png"] = build_uri("image/png", data)
    budget = 8 * MiB
    pipe = cpu_pipeline(max_bytes=budget, batch_size=4)
    errors: list[str] = []

    def client(k: int) -> int:
        with FrameClient(f"http://127.0.0.1:{srv.port}") as fc:
            n = 0
            for j in range(12):
                name = f"n{(k * 5 + j * 7) % 24:02d}.png"
                got = fc.uri(name) if j % 2 else None
                if got is None:
                    data, ctype = fc.image(name)
                    got = build_uri(ctype, data)
                if got != expected[name]:
                    errors.append(name)
                n += 1
            return n

    with LiveServer(service(pipe, root)) as srv, ThreadPoolExecutor(16) as pool:
        done = sum(pool.map(client, range(16)))
        m = metrics(srv.port)
    s = pipe.stats()
    assert sum(len(u) for u in expected.values()) > 2.5 * budget
    assert done == 16 * 12 and errors == []
    largest = max(len(u) for u in expected.values())
    assert s.peak_bytes <= budget + 2 * 4 * largest and s.evictions > 0 and s.bytes <= budget and s.held_bytes == 0
    assert metric(m, "gpupipe_http_requests_total", status="200") == 16 * 12
    assert metric(m, "gpupipe_cache_evicted_bytes_total") > 0


# --------------------------------------------------------------------------- metrics and logs


def test_metrics_cover_requests_latency_cache_batches_jobs_and_queue(live):
    get(live.port, "/v1/uri?src=f0.png")
    get(live.port, "/v1/uri?src=f0.png")
    get(live.port, "/v1/image?src=missing.png")
    m = metrics(live.port)
    assert metric(m, "gpupipe_http_requests_total", endpoint="/v1/uri", status="200") == 2
    assert metric(m, "gpupipe_http_requests_total", endpoint="/v1/image", status="404") == 1
    assert metric(m, "gpupipe_http_request_duration_seconds_count", endpoint="/v1/uri") == 2
    assert metric(m, "gpupipe_cache_hits_total", pipeline="cpu0", backend="cpu") == 1
    assert metric(m, "gpupipe_cache_misses_total", pipeline="cpu0") == 1
    assert metric(m, "gpupipe_cpu_jobs_total", pipeline="cpu0") == 1
    assert metric(m, "gpupipe_cache_bytes", pipeline="cpu0") > 0
    names = {n for n, _ in m}
    for needed in ("gpupipe_cache_evictions_total", "gpupipe_cache_evicted_bytes_total", "gpupipe_cache_inflight_bytes",
                   "gpupipe_cache_oversize_rejects_total", "gpupipe_batches_total", "gpupipe_batch_size_bucket",
                   "gpupipe_gpu_jobs_total", "gpupipe_gpu_fallbacks_total", "gpupipe_queue_depth",
                   "gpupipe_http_request_duration_seconds_bucket", "gpupipe_cache_max_bytes"):
        assert needed in names, needed


def test_one_json_access_log_line_per_request(live, caplog):
    with caplog.at_level(logging.INFO, "gpupipe.serve.access"):
        get(live.port, "/v1/uri?src=f1.png")
        get(live.port, "/v1/uri?src=f1.png")
        get(live.port, "/v1/image?src=escape.png")
        wait_until(lambda: len([r for r in caplog.records if r.name == "gpupipe.serve.access"]) >= 3, what="log lines")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gpupipe.serve.access"]
    assert [(d["path"], d["status"], d["cache"], d["src"]) for d in lines] == [
        ("/v1/uri", 200, "miss", "f1.png"), ("/v1/uri", 200, "hit", "f1.png"), ("/v1/image", 403, "-", "escape.png")]
    assert all(d["ms"] >= 0 and d["bytes"] > 0 for d in lines)


# --------------------------------------------------------------------------- slow clients, Unix socket, Python client


def test_a_client_that_stops_reading_is_disconnected(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    png_with_padding(root / "big.png", 12 * MiB)
    svc = service(cpu_pipeline(), root, send_timeout=0.5)
    with LiveServer(svc) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /v1/uri?src=big.png HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        wait_until(lambda: metric(metrics(srv.port), "gpupipe_send_timeouts_total") == 1, what="the send timeout")
        s.settimeout(10)
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        s.close()
        assert got < 12 * MiB * 4 // 3  # cut off before the whole URI
        assert get(srv.port, "/healthz")[0] == 200


@pytest.mark.parametrize("endpoint", ["/v1/uri", "/v1/image"])
def test_a_client_that_disconnects_mid_response_is_counted_as_499(tmp_path, caplog, endpoint):
    root = tmp_path / "big"
    root.mkdir()
    data = png_with_padding(root / "big.png", 12 * MiB)
    full = len(data) if endpoint == "/v1/image" else len(build_uri("image/png", data))
    with LiveServer(service(cpu_pipeline(), root)) as srv, caplog.at_level(logging.INFO):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(f"GET {endpoint}?src=big.png HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.settimeout(30)
        head = s.recv(64)
        assert head.startswith(b"HTTP/1.1 200")  # the body has begun
        s.close()  # unread data in the buffer: the kernel resets the connection
        wait_until(lambda: metric(metrics(srv.port), "gpupipe_http_requests_total", endpoint=endpoint, status="499") == 1,
                 what="the 499")
        m = metrics(srv.port)
        wait_until(lambda: any(r.name == "gpupipe.serve.access" and endpoint in r.getMessage() for r in caplog.records),
                 what="the access log line")
        assert get(srv.port, "/healthz")[0] == 200
    assert metric(m, "gpupipe_http_requests_total", status="500") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gpupipe.serve.access"]
    line = next(a for a in access if a["path"] == endpoint)
    assert line["status"] == 499 and 0 < line["bytes"] < full


def test_unix_socket_is_private_and_serves(frames, tmp_path):
    path = tmp_path / "gp.sock"
    with LiveServer(service(cpu_pipeline(), frames), socket_path=path):
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        with FrameClient(socket_path=str(path)) as fc:
            assert fc.uri("f0.png") == build_uri("image/png", (frames / "f0.png").read_bytes())
            assert fc.health()["status"] == "ok"
    assert not path.exists()


def test_python_client_raises_the_librarys_errors(live, frames):
    url = f"http://127.0.0.1:{live.port}"
    assert fetch_uri("f1.jpg", url=url) == build_uri("image/jpeg", (frames / "f1.jpg").read_bytes())
    with FrameClient(url) as fc:
        data, ctype = fc.image("f2.png", format="jpeg", size=(64, 64))
        assert ctype == "image/jpeg" and Image.open(io.BytesIO(data)).size == (64, 36)
        assert fc.image_url("a b.png", size=(1, 2)) == f"{url}/v1/image?src=a+b.png&size=1x2"
        with pytest.raises(FrameNotFound) as e:
            fc.uri("missing.png")
        assert e.value.frame == "missing.png"
        with pytest.raises(FrameDecodeError):
            fc.uri("bad.png")
        with pytest.raises(ServeError) as e2:
            fc.uri("escape.png")
        assert e2.value.status == 403 and e2.value.type == "PathRefused"
        sched = fc.schedule(["f0.png", "f1.jpg", "f0.png"])  # the real FramePipeline.schedule, over HTTP
        assert sched.id
        sched.close()
        assert fc.uri("f0.png")  # the connection survives error answers


def test_roots_must_be_directories(tmp_path):
    from gpupipe.serve.roots import Roots

    with pytest.raises(ValueError, match="not a directory"):
        Roots([tmp_path / "nope"])
    with pytest.raises(ValueError):
        Roots([])


def test_concurrent_identical_requests_share_one_encode(frames):
    pipe = cpu_pipeline()
    with LiveServer(service(pipe, frames)) as srv, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: get(srv.port, "/v1/uri?src=f1.png&format=jpeg&size=100x100"), range(8)))
    assert {r[0] for r in results} == {200} and len({r[2] for r in results}) == 1
    assert pipe.stats().loads == 1


def test_a_uri_being_sent_counts_against_the_budget_until_sent(tmp_path):
    """A slow client reads a 4K URI while its entry is evicted: the URI stays in the server's memory, so it
    keeps counting against the budget (held_bytes) until the last byte is written."""
    root = tmp_path / "big"
    root.mkdir()
    data = noise_png(root / "big.png", 3840, 2160, seed=3)
    uri_len = len(build_uri("image/png", data))
    budget = 96 * MiB
    pipe = cpu_pipeline(max_bytes=budget, admission_timeout=1.0)
    with LiveServer(service(pipe, root)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        try:
            s.sendall(b"GET /v1/uri?src=big.png HTTP/1.1\r\nHost: x\r\n\r\n")
            got = s.recv(4096)
            assert got.startswith(b"HTTP/1.1 200")
            wait_until(lambda: pipe.stats().entries == 1, "the URI to be cached")
            assert pipe.stats().held_bytes == 0  # counted once, as the entry
            pipe.cache.clear()  # evicted while the client still reads it
            st = pipe.stats()
            assert (st.bytes, st.held_bytes) == (0, uri_len)
            # Work that would not fit beside the URI being sent waits for it.
            with pytest.raises(BudgetTimeout):
                pipe.cache.get_or_load("other", lambda: "x", estimate=budget - uri_len + 1, label="other")
            total = len(got)
            while chunk := s.recv(1 << 20):
                total += len(chunk)
                if got.find(b"\r\n\r\n") >= 0 and total >= uri_len:
                    break
        finally:
            s.close()
        wait_until(lambda: pipe.stats().held_bytes == 0, "the lease to be released once sent")
    assert pipe.stats().held_bytes == 0 and pipe.stats().inflight_bytes == 0
