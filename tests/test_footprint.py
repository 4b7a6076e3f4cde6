"""In-flight estimates from frame headers: never below the resident memory an encode really takes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gpupipe.errors import FrameDecodeError, FrameTooLarge
from gpupipe.footprint import cpu_footprint, gpu_footprint
from gpupipe.frames import parse_header, read_header
from gpupipe.plan import OutputSpec

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_estimates_never_under_count_resident_memory(noisy_1080p):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak-RSS mark")
    out = subprocess.run(
        [sys.executable, str(HERE / "footprint_probe.py"), str(noisy_1080p / "layouts")],
        capture_output=True, text=True, timeout=240, check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 10, out.stdout + out.stderr
    for r in rows:
        assert r["measured"] > 0, r
        assert r["estimate"] >= r["measured"], f"under-counted: {r}"
        # and not absurdly over: an estimate 4x reality would starve concurrency
        assert r["estimate"] <= 4 * r["measured"] + 16 * 2**20, f"over-counted: {r}"


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    b = io.BytesIO()
    Image.new(mode, (w, h)).save(b, "PNG")
    return b.getvalue()


def _jpeg_with_big_app_segments(w: int, h: int, app_bytes: int) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(b, "JPEG")
    data = b.getvalue()
    seg = b"\xff\xe2" + (65535).to_bytes(2, "big") + b"\0" * 65533
    return data[:2] + seg * (app_bytes // 65537 + 1) + data[2:]


def test_header_of_png_and_jpeg():
    h = parse_header("x", _png(640, 360, "RGBA"))
    assert (h.kind, h.width, h.height, h.channels, h.sample_bytes) == ("png", 640, 360, 4, 1)
    h = parse_header("x", _png(64, 36, "I;16"))
    assert (h.channels, h.sample_bytes) == (1, 2)
    h = parse_header("x", _jpeg_with_big_app_segments(64, 48, 0))
    assert (h.kind, h.width, h.height) == ("jpeg", 64, 48)


def test_jpeg_frame_header_behind_large_app_segments(tmp_path):
    data = _jpeg_with_big_app_segments(64, 48, 300_000)
    p = tmp_path / "big_app.jpg"
    p.write_bytes(data)
    h = read_header(p, "big_app.jpg")
    assert (h.width, h.height, h.source_bytes) == (64, 48, len(data))
    assert read_header(data, "mem").width == 64


def test_read_header_gives_the_frame_errors(tmp_path):
    with pytest.raises(FrameDecodeError, match="IHDR"):
        read_header(b"\x89PNG\r\n\x1a\n\0\0", "trunc")
    with pytest.raises(FrameDecodeError, match="not a PNG or JPEG"):
        read_header(b"GIF89a....", "gif")
    with pytest.raises(FrameTooLarge, match="max_pixels"):
        read_header(_png(100, 100), "big", max_pixels=99 * 100)
    with pytest.raises(FrameTooLarge, match="max_source_bytes"):
        read_header(_png(100, 100), "big", max_bytes=10)
    with pytest.raises(FrameDecodeError, match="empty image"):
        read_header(b"\x89PNG\r\n\x1a\n" + b"\0\0\0\x0dIHDR" + b"\0" * 17, "empty")


def test_passthrough_estimate_is_source_and_uri_only():
    h = parse_header("x", _png(3840, 2160))
    est = cpu_footprint(h, OutputSpec("passthrough"))
    assert h.source_bytes < est < 3 * h.source_bytes + 100
    transcode = cpu_footprint(h, OutputSpec("jpeg"))
    assert transcode > 3840 * 2160 * 4  # at least the decoded bitmap


def test_gpu_estimate_reports_device_bytes():
    h = parse_header("x", _jpeg_with_big_app_segments(3840, 2160, 0))
    host, device = gpu_footprint(h, OutputSpec("jpeg", (1920, 1080)))
    assert device >= 3840 * 2160 * 3 and host > h.source_bytes
    host, device = gpu_footprint(h, OutputSpec("passthrough"), passthrough_on_device=True)
    assert device > 2 * h.source_bytes
    host_only, none = gpu_footprint(h, OutputSpec("passthrough"))
    assert none == 0 and host_only == cpu_footprint(h, OutputSpec("passthrough"))
