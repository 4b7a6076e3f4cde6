"""The Node client (clients/node/gpupipe.mjs) and one real-browser injection, against a live service.

Both run the system ``node``; the browser test also needs Chromium (Debian's ``chromium``) and
``puppeteer-core`` in clients/node: ``bash scripts/setup_browser_tests.sh`` installs them. Where those
are missing the tests skip, unless ``E2E_BROWSER_REQUIRED=1`` (set by .ci/run, which runs that
script) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from gpupipe.samples import encode_frame, make_frame, write_clip  # noqa: E402

from serve_util import ChangingWhileRead, LiveServer, cpu_pipeline, service  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "clients" / "node"
REQUIRED = os.environ.get("E2E_BROWSER_REQUIRED") == "1"  # read at import: the autouse fixture only clears GPUPIPE_*


SETUP = "bash scripts/setup_browser_tests.sh"


def _need(what: str, ok: bool) -> None:
    if not ok:
        if REQUIRED:
            pytest.fail(f"{what} is missing ({SETUP} installs it), and E2E_BROWSER_REQUIRED=1")
        pytest.skip(f"{what} is missing: {SETUP} installs it")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if p := shutil.which(name):
            return p
    return None


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    px = make_frame(640, 360, index=2, seed=9)
    (root / "f0.png").write_bytes(encode_frame(px, "png"))
    (root / "f1.jpg").write_bytes(encode_frame(px, "jpeg"))
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "changing.png").write_bytes((root / "f0.png").read_bytes())
    write_clip(root / "clip.mp4", frames=48, size=(320, 180), fps=30)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.png").write_bytes((root / "f0.png").read_bytes())
    os.symlink(outside / "x.png", root / "escape.png")
    return root


def _node_test(srv: LiveServer, frames: Path, test_file: str, pattern: str | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("GPUPIPE_")}, "GPUPIPE_URL": srv.url,
            "GPUPIPE_TEST_ROOT": str(frames), **env}
    only = [f"--test-name-pattern={pattern}"] if pattern else []
    return subprocess.run(["node", "--test", *only, f"test/{test_file}"], cwd=NODE_DIR, env=full, capture_output=True, text=True,
                          timeout=180)


def test_node_client_against_a_live_service(frames, monkeypatch):
    """The client over TCP and over a Unix socket, and its errors without a service (refused, timed out)."""
    _need("node", shutil.which("node") is not None)
    ChangingWhileRead("changing.png").install(monkeypatch)  # its first request is answered 503 + Retry-After
    with tempfile.TemporaryDirectory(prefix="gpn", dir="/tmp") as short:  # a Unix socket's path fits in ~100 bytes
        sock = Path(short) / "gp.sock"
        with LiveServer(service(cpu_pipeline(), frames)) as srv, LiveServer(service(cpu_pipeline(), frames), socket_path=sock):
            r = _node_test(srv, frames, "client.test.mjs", GPUPIPE_TEST_SOCKET=str(sock))
            changed = srv.service.metrics.registry.get_sample_value("gpupipe_http_requests_total", {"endpoint": "/v1/uri", "status": "503"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "# pass 16" in out and "# skipped 0" in out, out
    assert changed == 1  # the client's first request met the change, and it retried


def test_one_frame_injected_into_headless_chromium(frames):
    _need("node", shutil.which("node") is not None)
    chromium = _chromium()
    _need("chromium", chromium is not None)
    _need("puppeteer-core", (NODE_DIR / "node_modules" / "puppeteer-core").is_dir())
    with LiveServer(service(cpu_pipeline(), frames)) as srv:
        r = _node_test(srv, frames, "browser.test.mjs", "by data URI and by URL", CHROMIUM=str(chromium))
        served = srv.service.metrics.registry.get_sample_value("gpupipe_http_requests_total", {"endpoint": "/v1/image", "status": "200"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "# pass 1" in out and "# fail 0" in out, out
    assert served == 3  # the page itself loaded the URL-mode frames from the service: two files and a video's frame


def test_url_mode_frames_drawn_into_a_canvas_in_headless_chromium(frames):
    """A page of another loopback origin draws ``<img crossOrigin="anonymous">`` from ``/v1/image`` into a canvas
    and reads it back (the default ``serve.cors_origins: loopback``); with CORS off it cannot."""
    _need("node", shutil.which("node") is not None)
    chromium = _chromium()
    _need("chromium", chromium is not None)
    _need("puppeteer-core", (NODE_DIR / "node_modules" / "puppeteer-core").is_dir())
    with LiveServer(service(cpu_pipeline(), frames)) as srv, LiveServer(service(cpu_pipeline(), frames, cors_origins=())) as off:
        r = _node_test(srv, frames, "browser.test.mjs", "canvas", CHROMIUM=str(chromium), GPUPIPE_URL_NO_CORS=off.url)
        served = srv.service.metrics.registry.get_sample_value("gpupipe_http_requests_total", {"endpoint": "/v1/image", "status": "200"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "# pass 1" in out and "# fail 0" in out, out
    assert served == 2


def test_the_browser_tests_set_up_with_one_documented_command():
    """The set-up is one script, which .ci/run runs and the README names (not only an error message)."""
    script = ROOT / "scripts" / "setup_browser_tests.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "PUPPETEER_SKIP_DOWNLOAD=1 npm ci" in text and "chromium" in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert SETUP in (ROOT / ".ci" / "run").read_text()
    assert SETUP in (ROOT / "README.md").read_text()


def test_the_browser_bench_video_row_shows_a_clips_frames_in_url_mode(tmp_path):
    """``browser_bench``'s video row: a fresh service and a Chromium worker showing a clip's frames by time in URL
    mode, with the frames declared first; each frame is decoded once, none fails."""
    _need("node", shutil.which("node") is not None)
    chromium = _chromium()
    _need("chromium", chromium is not None)
    _need("puppeteer-core", (NODE_DIR / "node_modules" / "puppeteer-core").is_dir())
    from gpupipe.tools.browser_bench import _row, run_one

    clip = write_clip(tmp_path / "clip.mp4", frames=6, size=(320, 180), fps=30)
    times = [i / 30 for i in range(6)]
    res = run_one("video source", "h264", [clip] * 6, tmp_path, mode="video", size="160x90", workers=1, passes=1,
                  budget_mib=64, cache_mib=0, chromium=str(chromium), work=tmp_path, times=times, schedule=True)
    assert res.errors == 0 and res.passes[0]["frames"] == 6
    assert res.server_loads == 6  # every frame decoded once, by read-ahead or by its request
    assert _row(res).startswith("| 4K H.264 clip | video source | 1 |")


def test_the_readmes_video_snippet_is_valid_javascript(tmp_path):
    """The README's "Frames from video" Node snippet parses (``node --check``) and uses the client's calls."""
    _need("node", shutil.which("node") is not None)
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Frames from video") :].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```js\n(.*?)^```", section, re.S | re.M)
    assert "img.src = gp.imageUrl({src: 'clip.mp4', t: time, size: '1920x1080'})" in section
    assert "the GPU decoder is written but unverified on a device" in section
    (tmp_path / "snippet.mjs").write_text(block)
    r = subprocess.run(["node", "--check", str(tmp_path / "snippet.mjs")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for call in ("gp.imageUrl({ src: 'clip.mp4', t: time", "gp.schedule(times.map((t) => ({ src: 'clip.mp4', t }))",
                 "gp.uri({ src: 'clip.mp4', frame: 60 })"):
        assert call in block, call
