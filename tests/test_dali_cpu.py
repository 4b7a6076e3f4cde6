"""The DALI decode/resize pipeline on DALI's CPU backend (device_id=None), checked against Pillow."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("nvidia.dali")

from gpupipe.errors import FrameDecodeError
from gpupipe.gpu.dali_decode import DaliDecoder, DeviceOutOfMemory, is_oom_error
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.sources import fit_size, read_frame


def _jobs(datas, spec=OutputSpec("jpeg")):
    return [plan_job(i, read_frame(d), spec) for i, d in enumerate(datas)]


def _collect(jobs, images):
    return [np.array(np.asarray(im)) for im in images]  # copy before DALI's next run


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def _corrupt_png(png: bytes) -> bytes:
    i = png.find(b"IDAT")
    return png[: i + 100] + bytes(b ^ 0x5A for b in png[i + 100 : i + 400]) + png[i + 400 :]


@pytest.fixture(scope="module")
def decoder():
    d = DaliDecoder(None, max_batch=4, num_threads=2)
    yield d
    d.close()


def test_png_pixels_equal_pillow(decoder, png_bytes, rgb_frame):
    (out,) = decoder.decode(_jobs([png_bytes]), _collect)
    assert out.shape == rgb_frame.shape and out.dtype == np.uint8
    assert np.array_equal(out, rgb_frame)


def test_jpeg_pixels_within_decoder_tolerance(decoder, jpeg_bytes):
    (out,) = decoder.decode(_jobs([jpeg_bytes]), _collect)
    ref = _pillow(jpeg_bytes)
    assert out.shape == ref.shape
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 16


def test_grayscale_palette_and_16bit_png_become_rgb(decoder, rgb_frame):
    def enc(img: Image.Image) -> bytes:
        b = io.BytesIO()
        img.save(b, "PNG")
        return b.getvalue()

    gray = enc(Image.fromarray(rgb_frame[..., 0]))
    pal = enc(Image.fromarray(rgb_frame).convert("P"))
    outs = decoder.decode(_jobs([gray, pal]), _collect)
    assert np.array_equal(outs[0], np.repeat(rgb_frame[..., :1], 3, axis=2))
    assert np.array_equal(outs[1], _pillow(pal))


@pytest.mark.parametrize("size", [(160, 160), (100, 30), (319, 179), (50, 200)])
def test_resize_output_size_is_fit_size(decoder, png_bytes, jpeg_bytes, size):
    jobs = _jobs([png_bytes, jpeg_bytes], OutputSpec("jpeg", size))
    outs = decoder.decode(jobs, _collect)
    want = fit_size(320, 180, size)
    for job, out in zip(jobs, outs):
        assert job.out_size == want
        assert out.shape == (want[1], want[0], 3)


def test_resize_close_to_pillow_lanczos(decoder, png_bytes, rgb_frame):
    (out,) = decoder.decode(_jobs([png_bytes], OutputSpec("jpeg", (160, 90))), _collect)
    ref = np.asarray(Image.fromarray(rgb_frame).resize((160, 90), Image.Resampling.LANCZOS))
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() < 3.0


def test_mixed_resize_and_plain_in_one_call_keep_order(decoder, png_bytes, jpeg_bytes):
    small = plan_job(1, read_frame(jpeg_bytes), OutputSpec("jpeg", (80, 80)))
    full = plan_job(0, read_frame(png_bytes), OutputSpec("jpeg"))
    outs = decoder.decode([full, small, full], _collect)
    assert [o.shape for o in outs] == [(180, 320, 3), (45, 80, 3), (180, 320, 3)]


def test_bad_frame_in_batch_is_isolated(decoder, png_bytes, jpeg_bytes):
    bad = _corrupt_png(png_bytes)
    jobs = _jobs([png_bytes, bad, jpeg_bytes, png_bytes])
    before = decoder.rebuilds
    outs = decoder.decode(jobs, _collect)
    assert isinstance(outs[1], FrameDecodeError)
    assert outs[1].frame == jobs[1].frame.label
    assert np.array_equal(outs[0], outs[3])
    assert outs[2].shape == (180, 320, 3)
    assert decoder.rebuilds > before  # the failed pipeline was replaced
    # The decoder still works afterwards.
    (again,) = decoder.decode(_jobs([png_bytes]), _collect)
    assert np.array_equal(again, outs[0])


def test_truncated_frame_fails_before_dali(decoder, jpeg_bytes, png_bytes):
    jobs = _jobs([jpeg_bytes, png_bytes])
    short = [replace(j, frame=replace(j.frame, data=j.frame.data[: len(j.frame.data) // 2])) for j in jobs]
    outs = decoder.decode([jobs[0], short[0], short[1]], _collect)
    assert outs[0].shape == (180, 320, 3)
    assert isinstance(outs[1], FrameDecodeError) and isinstance(outs[2], FrameDecodeError)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied(decoder, rgb_frame, orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    b = io.BytesIO()
    Image.fromarray(rgb_frame).save(b, "JPEG", quality=95, exif=ex.tobytes())
    data = b.getvalue()
    job = plan_job(0, read_frame(data), OutputSpec("jpeg"))
    (out,) = decoder.decode([job], _collect)
    ref = _pillow(data)
    assert out.shape == ref.shape == (job.out_size[1], job.out_size[0], 3)
    assert np.abs(out.astype(np.int16) - ref.astype(np.int16)).mean() < 1.0


def test_variable_batch_sizes_larger_than_max(png_bytes, jpeg_bytes):
    d = DaliDecoder(None, max_batch=2, num_threads=1)
    try:
        for n in (1, 3, 5, 2):
            outs = d.decode(_jobs([png_bytes, jpeg_bytes] * 3)[:n], _collect)
            assert len(outs) == n and all(o.shape == (180, 320, 3) for o in outs)
    finally:
        d.close()


def test_consume_is_called_before_the_next_run(png_bytes, jpeg_bytes):
    """Each run's images are consumed before the pipeline runs again (DALI may reuse its buffers)."""
    d = DaliDecoder(None, max_batch=1, num_threads=1)
    seen = []

    def consume(jobs, images):
        seen.append(d._pipes[False])  # the pipeline that produced these is still current
        return [np.asarray(im).shape for im in images]

    try:
        outs = d.decode(_jobs([png_bytes, jpeg_bytes, png_bytes]), consume)
        assert outs == [(180, 320, 3)] * 3 and len(seen) == 3
    finally:
        d.close()


def test_oom_errors_propagate_not_as_decode_errors(png_bytes, monkeypatch):
    d = DaliDecoder(None, max_batch=2, num_threads=1)

    def boom(jobs, resize):
        raise RuntimeError("Critical error in pipeline: CUDA error: out of memory")

    monkeypatch.setattr(d, "_run", boom)
    with pytest.raises(DeviceOutOfMemory):
        d.decode(_jobs([png_bytes, png_bytes]), _collect)
    assert is_oom_error(RuntimeError("cudaErrorMemoryAllocation")) and not is_oom_error(RuntimeError("Invalid marker"))
