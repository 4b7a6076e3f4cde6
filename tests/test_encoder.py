"""FrameEncoder on the CPU path: passthrough, transcode, resize, format sniffing, per-frame errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from gpupipe import FrameEncoder, load_config
from gpupipe.config import Config
from gpupipe.errors import BackendUnavailable, FrameDecodeError, FrameError, FrameNotFound, FrameTooLarge
from gpupipe.plan import fit_size


def payload(uri: str) -> tuple[str, bytes]:
    head, b64 = uri.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(b64, validate=True)


def decode(uri: str) -> Image.Image:
    mime, data = payload(uri)
    img = Image.open(io.BytesIO(data))
    assert img.get_format_mimetype() == mime
    img.load()
    return img


@pytest.fixture(scope="module")
def enc():
    with FrameEncoder(backend="cpu") as e:
        yield e


def test_cpu_backend_selected(enc):
    assert enc.backend == "cpu"


def test_passthrough_round_trips_bytes_exactly(enc, png_bytes, jpeg_bytes, frame_files):
    for src, raw, mime in ((png_bytes, png_bytes, "image/png"), (jpeg_bytes, jpeg_bytes, "image/jpeg")):
        uri = enc.encode(src)
        assert payload(uri) == (mime, raw)
        assert uri == f"data:{mime};base64," + base64.b64encode(raw).decode()
    p, j = frame_files
    assert payload(enc.encode(p, output="passthrough")) == ("image/png", p.read_bytes())
    assert payload(enc.encode(str(j))) == ("image/jpeg", j.read_bytes())


def test_format_is_sniffed_not_taken_from_the_extension(enc, tmp_path, png_bytes, jpeg_bytes):
    (tmp_path / "really_png.jpg").write_bytes(png_bytes)
    (tmp_path / "really_jpeg.png").write_bytes(jpeg_bytes)
    assert enc.encode(tmp_path / "really_png.jpg").startswith("data:image/png;base64,")
    assert enc.encode(tmp_path / "really_jpeg.png").startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("size", [(160, 90), (100, 100), (319, 500), (32, 18)])
def test_transcode_resizes_to_fit_with_aspect_kept(enc, png_bytes, jpeg_bytes, size):
    for src in (png_bytes, jpeg_bytes):
        img = decode(enc.encode(src, size=size))
        assert img.format == "JPEG"
        assert img.size == fit_size(320, 180, size)


def test_fits_already_means_passthrough(enc, png_bytes):
    assert payload(enc.encode(png_bytes, size=(640, 640)))[1] == png_bytes


def test_explicit_formats_reencode(enc, png_bytes, jpeg_bytes, rgb_frame):
    img = decode(enc.encode(jpeg_bytes, output="png"))
    assert img.format == "PNG" and img.size == (320, 180)
    img = decode(enc.encode(png_bytes, output="jpeg", quality=95))
    assert img.format == "JPEG" and img.size == (320, 180)
    diff = np.abs(np.asarray(img, np.int16) - rgb_frame.astype(np.int16)).mean()
    assert diff < 6.0  # noisy test frame; a wrong channel order or scaling gives > 40
    lossless = decode(enc.encode(png_bytes, output="png"))
    assert np.array_equal(np.asarray(lossless), rgb_frame)


def test_alpha_frames_stay_png(enc, rgba_png_bytes):
    img = decode(enc.encode(rgba_png_bytes, size=(160, 90)))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (160, 90)
    assert np.asarray(img)[..., 3].min() < 255


def test_opaque_alpha_becomes_jpeg(enc, rgb_frame):
    a = np.full(rgb_frame.shape[:2] + (1,), 255, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([rgb_frame, a], -1)).save(buf, "PNG")
    assert decode(enc.encode(buf.getvalue(), size=(160, 90))).format == "JPEG"


def test_quality_changes_size(enc, png_bytes):
    lo = enc.encode(png_bytes, output="jpeg", quality=20)
    hi = enc.encode(png_bytes, output="jpeg", quality=95)
    assert len(lo) < len(hi)


def bad_inputs(tmp_path, png_bytes, jpeg_bytes):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"hello, not an image")
    (tmp_path / "trunc.png").write_bytes(png_bytes[: len(png_bytes) // 2])
    (tmp_path / "trunc.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    (tmp_path / "hdr.png").write_bytes(png_bytes[:20])
    bomb = bytearray(png_bytes)
    bomb[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(bytes(bomb))
    return {
        tmp_path / "missing.png": FrameNotFound,
        tmp_path / "empty.png": FrameDecodeError,
        tmp_path / "text.png": FrameDecodeError,
        tmp_path / "trunc.png": FrameDecodeError,
        tmp_path / "trunc.jpg": FrameDecodeError,
        tmp_path / "hdr.png": FrameDecodeError,
        tmp_path / "bomb.png": FrameTooLarge,
        tmp_path: FrameNotFound,  # a directory
    }


@pytest.mark.parametrize("kw", [{}, {"size": (160, 90)}, {"output": "jpeg"}, {"output": "passthrough"}])
def test_bad_frames_fail_alone(enc, tmp_path, png_bytes, jpeg_bytes, kw):
    bad = bad_inputs(tmp_path, png_bytes, jpeg_bytes)
    sources = [png_bytes]
    for path in bad:
        sources += [path, jpeg_bytes]
    results = enc.encode_batch(sources, **kw)
    assert len(results) == len(sources)
    for src, res in zip(sources, results):
        if isinstance(src, bytes):
            assert isinstance(res, str)
            decode(res)
        else:
            assert isinstance(res, bad[src]), (src, res)
            assert str(src) in str(res)
    with pytest.raises(FrameNotFound, match="missing.png"):
        enc.encode(tmp_path / "missing.png", **kw)


def test_max_pixels_guard(png_bytes):
    cfg = Config(max_pixels=320 * 180 - 1)
    with FrameEncoder(cfg, backend="cpu") as e, pytest.raises(FrameTooLarge, match="max_pixels"):
        e.encode(png_bytes)


def test_modes_are_normalised(enc):
    rng = np.random.default_rng(0)
    cases = {
        "L": Image.fromarray(rng.integers(0, 255, (40, 60), np.uint8), "L"),
        "P": Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).convert("P"),
        "I;16": Image.fromarray(rng.integers(0, 65535, (40, 60), np.uint16)),
        "LA": Image.fromarray(rng.integers(0, 255, (40, 60, 2), np.uint8), "LA"),
    }
    for mode, img in cases.items():
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out = decode(enc.encode(buf.getvalue(), output="jpeg", size=(30, 30)))
        assert out.size == (30, 20), mode
    cmyk = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).convert("CMYK").save(cmyk, "JPEG")
    assert decode(enc.encode(cmyk.getvalue(), output="png")).mode == "RGB"


def test_sixteen_bit_gray_scales_instead_of_clipping(enc):
    arr = np.full((8, 8), 40000, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = np.asarray(decode(enc.encode(buf.getvalue(), output="png")))
    assert out.shape == (8, 8, 3) and int(out[0, 0, 0]) == 40000 >> 8


def test_exif_orientation_applied(enc, rgb_frame):
    img = Image.fromarray(rgb_frame)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    out = decode(enc.encode(buf.getvalue()))
    assert out.size == (180, 320)
    out = decode(enc.encode(buf.getvalue(), size=(90, 90)))
    assert out.size == (51, 90)


def test_bad_arguments(enc, png_bytes):
    with pytest.raises(ValueError):
        enc.encode(png_bytes, output="webp")
    with pytest.raises(ValueError):
        enc.encode(png_bytes, quality=0)


def test_gpu_backend_unavailable_is_typed():
    from gpupipe.gpu import gpu_available

    if gpu_available()[0]:
        pytest.skip("a GPU is usable here")
    with pytest.raises(BackendUnavailable, match="GPU backend unavailable"):
        FrameEncoder(backend="gpu")
    assert FrameEncoder(load_config(), backend="auto").backend == "cpu"


def test_errors_are_frame_errors():
    assert issubclass(FrameTooLarge, FrameError) and issubclass(FrameNotFound, FrameError)


def test_unknown_backend_name_is_refused():
    with pytest.raises(ValueError, match="auto, gpu or cpu"):
        FrameEncoder(backend="tpu")


def test_auto_falls_back_to_cpu_when_the_gpu_backend_fails_to_start(monkeypatch, png_bytes):
    import gpupipe.encoder as encoder_mod
    import gpupipe.gpu as gpu_pkg

    monkeypatch.setattr(encoder_mod, "select_backend", lambda requested, config: ("gpu", "pretend"))

    class Broken:
        def __init__(self, config):
            raise RuntimeError("cudaErrorLaunchFailure")

    monkeypatch.setattr(gpu_pkg, "GpuBackend", Broken, raising=False)
    with FrameEncoder(backend="auto") as e:
        assert e.backend == "cpu" and "failed to start" in e.backend_reason
        assert e.encode(png_bytes).startswith("data:image/png;base64,")
    with pytest.raises(BackendUnavailable, match="failed to start"):
        FrameEncoder(backend="gpu")


@pytest.mark.timeout(10)  # reading the FIFO with a blocking open would hang the batch forever
def test_a_fifo_in_a_batch_fails_alone_without_blocking(tmp_path, png_bytes, jpeg_bytes):
    import os

    from gpupipe.errors import FrameNotRegularFile

    good_png, good_jpg, fifo = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"
    good_png.write_bytes(png_bytes)
    good_jpg.write_bytes(jpeg_bytes)
    os.mkfifo(fifo)
    with FrameEncoder(Config(), backend="cpu") as e:
        results = e.encode_batch([good_png, fifo, good_jpg, fifo, png_bytes])
    assert isinstance(results[1], FrameNotRegularFile) and results[1].frame == str(fifo)
    assert "is a FIFO, not a regular file" in str(results[1]) and results[3] == results[1]
    assert payload(results[0]) == ("image/png", png_bytes) and payload(results[2]) == ("image/jpeg", jpeg_bytes)
    assert results[4] == results[0]


def test_truecolour_trns_stays_png_with_its_transparency(enc, rgb_frame):
    """An RGB PNG whose tRNS chunk names a transparent colour is transparent there, like RGBA."""
    rgb = rgb_frame.copy()
    rgb[:60, :100] = (1, 2, 3)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", transparency=(1, 2, 3))
    data = buf.getvalue()
    assert b"tRNS" in data
    img = decode(enc.encode(data, size=(160, 90)))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (160, 90)
    alpha = np.asarray(img)[..., 3]
    assert alpha[10, 20] < 16 and alpha[80, 150] == 255
    full = np.asarray(decode(enc.encode(data, output="png")))[..., 3]
    assert np.array_equal(full == 0, (rgb == (1, 2, 3)).all(-1))


def test_both_backends_implement_the_backend_contract(host_gpu_backend):
    """The CPU backend and the GPU backend (on its CPU stand-ins, which need DALI: the gpu extra)."""
    from gpupipe.backend import Backend
    from gpupipe.cpu import CpuBackend

    cpu = CpuBackend(1)
    try:
        for b in (cpu, host_gpu_backend):
            assert isinstance(b, Backend)
            assert isinstance(b.info(), dict) and isinstance(b.counters(), dict) and b.workers >= 1
    finally:
        cpu.close()
