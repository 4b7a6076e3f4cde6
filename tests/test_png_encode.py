"""PNG encoding on the CPU path (gpupipe/cpu/encode.py): fpng where installed, Pillow otherwise.

Whatever writes the PNG, Pillow must decode it to exactly the image's pixels (alpha included),
and every mode or level fpng does not serve goes to Pillow.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpupipe.cpu import encode as enc
from gpupipe.samples import make_frame

fpng = pytest.importorskip("fpng", reason="fpng is not installed (PNG is then written by Pillow)")


def _decode(data: memoryview) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(data)), formats=["PNG"]))


@pytest.mark.parametrize("alpha", [False, True])
def test_fpng_round_trips_exactly(alpha: bool) -> None:
    pixels = make_frame(320, 240, 3, alpha=alpha)
    data = enc.encode_png(Image.fromarray(pixels), 1)
    assert bytes(data[:8]) == b"\x89PNG\r\n\x1a\n"
    out = _decode(data)
    assert out.shape == pixels.shape and np.array_equal(out, pixels)
    # and it is fpng's output, not Pillow's (Pillow writes a different stream)
    assert bytes(data) == fpng.fpng_ext.encode_ndarray(np.ascontiguousarray(pixels))


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(1, 40),
    h=st.integers(1, 30),
    channels=st.sampled_from([3, 4]),
    seed=st.integers(0, 2**16),
)
def test_fpng_any_small_size_round_trips(w: int, h: int, channels: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    assert np.array_equal(_decode(enc.encode_png(Image.fromarray(pixels), 1)), pixels)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1"])
def test_other_modes_use_pillow(mode: str) -> None:
    img = Image.fromarray(make_frame(64, 48, 0)).convert(mode)
    data = enc.encode_png(img, 1)
    ref = io.BytesIO()
    img.save(ref, "PNG", compress_level=1)
    assert bytes(data) == ref.getvalue()


@pytest.mark.parametrize("level", [0, 6, 9])
def test_other_levels_use_pillow(level: int) -> None:
    img = Image.fromarray(make_frame(64, 48, 0, alpha=True))
    ref = io.BytesIO()
    img.save(ref, "PNG", compress_level=level)
    assert bytes(enc.encode_png(img, level)) == ref.getvalue()
    assert enc.png_encoder_name(level) == f"Pillow zlib level {level}"


def test_fpng_failure_falls_back_to_pillow(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Failing:  # the binding returns b"" when fpng_encode_image_to_memory fails
        @staticmethod
        def encode_ndarray(a: np.ndarray) -> bytes:
            return b""

    monkeypatch.setattr(enc, "_FPNG", Failing)
    img = Image.fromarray(make_frame(64, 48, 0, alpha=True))
    ref = io.BytesIO()
    img.save(ref, "PNG", compress_level=1)
    with caplog.at_level("WARNING", logger="gpupipe.cpu"):
        assert bytes(enc.encode_png(img, 1)) == ref.getvalue()
    assert "64x48 RGBA" in caplog.text


def test_without_fpng_pillow_writes_and_info_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enc, "_FPNG", None)
    img = Image.fromarray(make_frame(64, 48, 0, alpha=True))
    ref = io.BytesIO()
    img.save(ref, "PNG", compress_level=1)
    assert bytes(enc.encode_image(img, "png", 90, 1)) == ref.getvalue()
    assert enc.png_encoder_name() == "Pillow zlib level 1"


def test_info_names_the_png_encoder() -> None:
    from gpupipe.config import Config
    from gpupipe.cpu import CpuBackend
    from gpupipe.info import environment_report

    assert enc.png_encoder_name().startswith("fpng ")
    assert CpuBackend(1).info()["png_encoder"].startswith("fpng ")
    assert environment_report(Config())["png_encoder"].startswith("fpng ")
