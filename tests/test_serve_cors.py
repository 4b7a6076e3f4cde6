"""CORS of the frame service (``serve.cors_origins``) over real loopback HTTP: which pages may read
its answers (``<img crossOrigin>`` drawn into a canvas, ``fetch``), preflights, and the config key."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from gpupipe.config import ServeConfig, load_config  # noqa: E402
from gpupipe.errors import ConfigError  # noqa: E402
from gpupipe.samples import encode_frame, make_frame  # noqa: E402

from serve_util import LiveServer, cpu_pipeline, get, service  # noqa: E402

ACAO = "access-control-allow-origin"


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    (root / "f0.png").write_bytes(encode_frame(make_frame(64, 36, index=0, seed=1), "png"))
    return root


@pytest.fixture(scope="module")
def loopback(frames):
    with LiveServer(service(cpu_pipeline(), frames)) as srv:  # the default: serve.cors_origins = loopback
        yield srv


@pytest.mark.parametrize("origin", [
    "http://localhost:3000", "http://localhost", "https://localhost:8443", "http://127.0.0.1:8080", "http://127.5.6.7",
    "http://[::1]:5173", "null",
])
def test_loopback_origins_are_reflected(loopback, origin):
    for path in ("/v1/image?src=f0.png", "/v1/uri?src=f0.png", "/v1/image?src=missing.png", "/healthz"):
        status, h, _ = get(loopback.port, path, {"Origin": origin})
        assert h[ACAO] == origin, (path, h)
        assert "Origin" in [v.strip() for v in h["vary"].split(",")]
        assert {"ETag", "X-Gpupipe-Ignored-Params"} <= {v.strip() for v in h["access-control-expose-headers"].split(",")}
        assert "access-control-allow-credentials" not in h


@pytest.mark.parametrize("origin", [
    "http://example.com", "https://localhost.example.com", "http://127.0.0.1.example.com", "http://10.0.0.1:3000",
    "http://localhost:3000/", "http://user@localhost", "ftp://localhost", "file://", "http://[::2]", "", "*",
])
def test_other_origins_get_no_cors_headers(loopback, origin):
    status, h, body = get(loopback.port, "/v1/image?src=f0.png", {"Origin": origin})
    assert status == 200 and body  # the answer itself is unchanged: CORS only decides what a page may read
    assert ACAO not in h and "access-control-expose-headers" not in h
    assert "Origin" in h["vary"]  # the answer depends on Origin, so caches must key on it


def test_requests_without_origin_are_unchanged(loopback):
    status, h, _ = get(loopback.port, "/v1/image?src=f0.png")
    assert status == 200 and ACAO not in h


def test_preflight(loopback):
    status, h, body = get(loopback.port, "/v1/image?src=f0.png", method="OPTIONS", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "if-none-match"})
    assert status == 204 and body == b""
    assert h[ACAO] == "http://localhost:3000"
    assert {m.strip() for m in h["access-control-allow-methods"].split(",")} == {"GET", "HEAD"}  # the path's own
    assert {m.strip() for m in h["allow"].split(",")} == {"GET", "HEAD", "OPTIONS"}
    allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
    assert {"content-type", "if-none-match"} <= allowed
    assert int(h["access-control-max-age"]) > 0
    for path, method in (("/v1/uri", "GET"), ("/v1/schedules", "POST"), ("/v1/schedules/abc", "DELETE")):
        status, h, _ = get(loopback.port, path, method="OPTIONS", headers={
            "Origin": "null", "Access-Control-Request-Method": method, "Access-Control-Request-Headers": "content-type"})
        assert status == 204 and h[ACAO] == "null", path
        assert method in h["access-control-allow-methods"] and "Content-Type" in h["access-control-allow-headers"]
    status, h, _ = get(loopback.port, "/v1/uri", method="OPTIONS", headers={
        "Origin": "http://example.com", "Access-Control-Request-Method": "GET"})
    assert ACAO not in h and "access-control-allow-methods" not in h


def test_star_allows_any_origin(frames):
    with LiveServer(service(cpu_pipeline(), frames, cors_origins="*")) as srv:
        for origin in ("http://example.com", "null", "http://localhost:1"):
            _, h, _ = get(srv.port, "/v1/image?src=f0.png", {"Origin": origin})
            assert h[ACAO] == "*"
        _, h, _ = get(srv.port, "/v1/image?src=f0.png")
        assert h[ACAO] == "*"


def test_a_list_allows_exactly_those_origins(frames):
    with LiveServer(service(cpu_pipeline(), frames, cors_origins=("https://render.example.com", "http://localhost:3000"))) as srv:
        for origin, allowed in [("https://render.example.com", True), ("http://localhost:3000", True),
                                ("http://localhost:3001", False), ("null", False), ("https://render.example.com:443", False)]:
            _, h, _ = get(srv.port, "/v1/uri?src=f0.png", {"Origin": origin})
            assert h.get(ACAO) == (origin if allowed else None), origin
            assert "Origin" in h["vary"]


def test_an_empty_list_sends_no_cors_headers(frames):
    with LiveServer(service(cpu_pipeline(), frames, cors_origins=())) as srv:
        status, h, _ = get(srv.port, "/v1/image?src=f0.png", {"Origin": "http://localhost:3000"})
        assert status == 200 and not [k for k in h if k.startswith("access-control-")] and "vary" not in h
        status, h, _ = get(srv.port, "/v1/image?src=f0.png", method="OPTIONS", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
        assert status == 405 and ACAO not in h


# --------------------------------------------------------------------------- the config key


def _load(tmp_path: Path, value: str) -> ServeConfig:
    p = tmp_path / "c.yaml"
    p.write_text(f"defaults:\n  serve:\n    cors_origins: {value}\n")
    return load_config(p).serve


def test_cors_origins_key(tmp_path):
    assert ServeConfig().cors_origins == "loopback"
    assert _load(tmp_path, "loopback").cors_origins == "loopback"
    assert _load(tmp_path, "'*'").cors_origins == "*"
    assert _load(tmp_path, "[]").cors_origins == ()
    got = _load(tmp_path, "[https://render.example.com, 'http://localhost:3000', 'null', 'http://[::1]:8080', app://renderer]")
    assert got.cors_origins == ("https://render.example.com", "http://localhost:3000", "null", "http://[::1]:8080", "app://renderer")
    assert load_config(None).to_dict()["serve"]["cors_origins"] == "loopback"


@pytest.mark.parametrize("value", [
    "yes", "http://localhost:3000", "null", "3", "true", "{a: 1}", "['*']", "[loopback]", "['http://localhost:3000/']",
    "['http://localhost:3000/app']", "['HTTP://Localhost:3000']", "['localhost:3000']", "['http://localhost:99999']",
    "[3]", "['']", "['http://a b']", "['http://localhost:3000?x']", "['http://u@localhost']",
    "[" + ", ".join(f"'http://h{i}.example.com'" for i in range(1001)) + "]",
])
def test_bad_cors_origins_name_their_key(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, value)
    assert e.value.key is not None and e.value.key.startswith("defaults.serve.cors_origins"), e.value
