"""Shared fixtures. Tests marked ``gpu`` skip cleanly unless the GPU path can run, with the first thing
missing as the reason (no CuPy, no NVIDIA driver, a driver too old for CUDA 13, no device, no way to
load the base64 kernel, no DALI or nvImageCodec: ``gpupipe.gpu.gpu_status``)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_GPU_STATE: tuple[bool, str] | None = None


def gpu_state() -> tuple[bool, str]:
    """``(usable, reason)``, computed once per session."""
    global _GPU_STATE
    if _GPU_STATE is None:
        from gpupipe.gpu import gpu_available

        _GPU_STATE = gpu_available(0)
    return _GPU_STATE


def pytest_collection_modifyitems(config, items):
    ok, why = gpu_state()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"GPU path unavailable: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


FFMPEG_REQUIRED = os.environ.get("FFMPEG_REQUIRED") == "1"  # read at import: _clean_env clears GPUPIPE_* only


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests never see the developer's gpupipe environment overrides."""
    for k in list(os.environ):
        if k.startswith("GPUPIPE_"):
            monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """The ffmpeg binary (:func:`gpupipe.tools.ffmpeg_frames.find_ffmpeg`: imageio-ffmpeg's, or ``ffmpeg``
    on PATH) for the tests that compare with ffmpeg's own output; they skip without one, unless
    ``FFMPEG_REQUIRED=1`` (set by .ci/run, which installs Debian's ffmpeg) makes that a failure."""
    from gpupipe.tools.ffmpeg_frames import find_ffmpeg

    exe = find_ffmpeg()
    if exe is None:
        if FFMPEG_REQUIRED:
            pytest.fail("no ffmpeg binary (imageio-ffmpeg or ffmpeg on PATH), and FFMPEG_REQUIRED=1")
        pytest.skip("no ffmpeg binary (pip install imageio-ffmpeg, or put ffmpeg on PATH)")
    return exe


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def rgb_frame() -> np.ndarray:
    """A 320×180 RGB frame with gradients, shapes and noise."""
    from gpupipe.samples import make_frame

    return make_frame(320, 180, index=1, seed=7)


@pytest.fixture(scope="session")
def png_bytes(rgb_frame) -> bytes:
    return _encode(rgb_frame, "PNG")


@pytest.fixture(scope="session")
def jpeg_bytes(rgb_frame) -> bytes:
    return _encode(rgb_frame, "JPEG", quality=90)


@pytest.fixture(scope="session")
def rgba_png_bytes(rgb_frame) -> bytes:
    a = np.full(rgb_frame.shape[:2] + (1,), 255, np.uint8)
    a[:40, :40] = 100
    return _encode(np.concatenate([rgb_frame, a], axis=-1), "PNG")


@pytest.fixture
def frame_files(tmp_path, png_bytes, jpeg_bytes):
    """A folder with a PNG and a JPEG frame; returns ``(png_path, jpeg_path)``."""
    p = tmp_path / "a.png"
    j = tmp_path / "b.jpg"
    p.write_bytes(png_bytes)
    j.write_bytes(jpeg_bytes)
    return p, j


@pytest.fixture(scope="module")
def host_gpu_backend():
    """The GPU backend's data path on CPU stand-ins (DALI's CPU backend, the NumPy kernel twin): runs without a GPU."""
    pytest.importorskip("nvidia.dali")
    from dataclasses import replace

    from gpupipe.config import Config
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import DeviceLayer

    cfg = replace(Config(), batch_size=4)
    be = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=None, dali_threads=1), workers=2)
    yield be
    be.close()


@pytest.fixture(scope="session")
def noisy_1080p(tmp_path_factory):
    """1080p frames with camera-like noise (a gradient plus Gaussian noise, so they compress like
    real footage), in one folder: ``f0.png``, ``f1.png``, ``f2.png`` (~5 MB each) for the memory
    stress tests, and in ``layouts/`` the first frame's pixels in every layout the footprint probe
    measures: ``noise.png``, ``noise.jpg``, ``rgba.png`` (partly transparent), ``gray16.png`` and
    ``exif6.jpg`` (EXIF orientation 6)."""
    d = tmp_path_factory.mktemp("noisy1080p")
    rng = np.random.default_rng(11)
    base = np.linspace(30, 220, 1920, dtype=np.float32)[None, :, None] * np.ones((1080, 1, 3), np.float32)
    frames = [np.clip(base + rng.normal(0, 14, base.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    for i, rgb in enumerate(frames):
        Image.fromarray(rgb).save(d / f"f{i}.png", "PNG", compress_level=1)
    layouts = d / "layouts"
    layouts.mkdir()
    rgb = frames[0]
    Image.fromarray(rgb).save(layouts / "noise.png", "PNG", compress_level=1)
    Image.fromarray(rgb).save(layouts / "noise.jpg", "JPEG", quality=92)
    alpha = np.full((*rgb.shape[:2], 1), 255, np.uint8)
    alpha[:200, :200] = 90
    Image.fromarray(np.concatenate([rgb, alpha], -1)).save(layouts / "rgba.png", "PNG", compress_level=1)
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(layouts / "gray16.png", "PNG", compress_level=1)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(layouts / "exif6.jpg", "JPEG", quality=92, exif=exif.tobytes())
    return d


@pytest.fixture(scope="session")
def random_1080p(tmp_path_factory):
    """Three 1080p PNGs of uniform random noise (~6.2 MB each, Pillow ``compress_level=1``): the
    largest sources and, fitted to 1280x720, JPEG URIs of ~0.8 MB, below a 1 MiB mmap threshold."""
    from PIL import Image

    d = tmp_path_factory.mktemp("random1080p")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (1080, 1920, 3), np.uint8)).save(d / f"r{i}.png", "PNG", compress_level=1)
    return d
