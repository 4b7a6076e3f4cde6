"""Frames encoded by ffmpeg itself (gpupipe.tools.ffmpeg_frames), at a small size."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from gpupipe.tools import ffmpeg_frames as ff

FFMPEG = ff.find_ffmpeg()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg (pip install imageio-ffmpeg)")

W, H, N = 320, 180, 3


@needs_ffmpeg
def test_version_names_ffmpeg():
    v = ff.ffmpeg_version()
    assert v is not None and v.startswith("ffmpeg version"), v
    assert "Copyright" not in v


@needs_ffmpeg
@pytest.mark.parametrize(
    "kind,source,fmt,mode",
    [
        ("png", "testsrc2", "PNG", "RGB"),
        ("jpeg", "testsrc2", "JPEG", "RGB"),
        ("png-alpha", "testsrc2", "PNG", "RGBA"),
        ("jpeg", "mandelbrot", "JPEG", "RGB"),
    ],
)
def test_extract_frames(tmp_path, kind, source, fmt, mode):
    paths = ff.extract_frames(tmp_path, W, H, N, kind=kind, source=source)
    assert [p.name for p in paths] == [f"frame_{i:05d}.{'jpg' if kind == 'jpeg' else 'png'}" for i in (1, 2, 3)]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        with Image.open(p) as im:
            assert im.format == fmt
            assert im.size == (W, H)
            assert im.mode == mode
            im.load()
            if kind == "png-alpha":
                alpha = np.asarray(im.getchannel("A"))
                assert alpha.min() < 255, "alpha variant must have non-opaque pixels"
                assert alpha.max() == 255, "alpha variant keeps an opaque region"
                assert 0.5 < (alpha < 255).mean() < 0.9
    # A moving test source: frames differ.
    assert paths[0].read_bytes() != paths[-1].read_bytes()


@needs_ffmpeg
def test_extracted_frames_are_cached_and_rebuilt_when_damaged(tmp_path):
    first = ff.extract_frames(tmp_path, W, H, 2, kind="png")
    mtimes = [p.stat().st_mtime_ns for p in first]
    again = ff.extract_frames(tmp_path, W, H, 2, kind="png")
    assert again == first and [p.stat().st_mtime_ns for p in again] == mtimes  # reused, not rewritten
    # A different key is a different folder.
    other = ff.extract_frames(tmp_path, W, H, 2, kind="jpeg")
    assert other[0].parent != first[0].parent
    # A damaged cache entry (a truncated file) is detected and regenerated.
    with open(first[1], "r+b") as f:
        f.truncate(100)
    fixed = ff.extract_frames(tmp_path, W, H, 2, kind="png")
    assert fixed[1].stat().st_size > 100
    with Image.open(fixed[1]) as im:
        im.load()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no work folders left behind


@needs_ffmpeg
def test_ffmpeg_frames_encode_through_gpupipe(tmp_path):
    from gpupipe import FrameEncoder
    from gpupipe.config import Config

    paths = ff.extract_frames(tmp_path, W, H, 1, kind="png-alpha")
    with FrameEncoder(Config(), backend="cpu") as enc:
        uri = enc.encode(paths[0], output="auto", size=(160, 90))
    assert uri.startswith("data:image/png;base64,")  # transparency keeps PNG under auto


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        ff.extract_frames(tmp_path, W, H, N, kind="gif")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ff.extract_frames(tmp_path, W, H, N, source="smptebars")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ff.extract_frames(tmp_path, 321, H, N)
    with pytest.raises(ValueError):
        ff.extract_frames(tmp_path, W, H, 0)


def test_missing_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ff, "find_ffmpeg", lambda: None)
    with pytest.raises(ff.FfmpegUnavailable, match="imageio-ffmpeg"):
        ff.extract_frames(tmp_path, W, H, N)
    assert ff.ffmpeg_version() is None
    # The synthetic fallback still gives frames of the requested size.
    paths, origin = ff.frames_or_synthetic(tmp_path, W, H, 2, kind="png-alpha")
    assert origin.startswith("synthetic")
    with Image.open(paths[0]) as im:
        assert im.size == (W, H) and im.mode == "RGBA"
    assert os.path.basename(paths[1]) == "frame_00002.png"
