"""The DALI decode/resize pipeline on DALI's CPU backend (device_id=None), checked against Pillow;
how bad frames are kept away from DALI or isolated (counting pipeline rebuilds), and how DALI's
real errors are classified."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("nvidia.dali")

from gpupipe.errors import FrameDecodeError
from gpupipe.errors import DeviceOutOfMemory
from gpupipe.gpu.dali_decode import DaliDecoder, failed_sample, host_precheck
from gpupipe.gpu.faults import is_oom_error
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.frames import read_frame
from gpupipe.plan import fit_size


def _jobs(datas, spec=OutputSpec("jpeg")):
    return [plan_job(i, read_frame(d), spec) for i, d in enumerate(datas)]


def _collect(jobs, images):
    return [np.array(np.asarray(im)) for im in images]  # copy before DALI's next run


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def _corrupt_png(png: bytes) -> bytes:
    """Damaged pixel data; the IDAT chunk's CRC no longer matches (the host check sees it)."""
    i = png.find(b"IDAT")
    return png[: i + 100] + bytes(b ^ 0x5A for b in png[i + 100 : i + 400]) + png[i + 400 :]


def _fix_crcs(png: bytes) -> bytes:
    """Recompute every chunk CRC: the damage is then only inside the compressed data."""
    out, pos = bytearray(png[:8]), 8
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        body = png[pos + 4 : pos + 8 + n]
        out += png[pos : pos + 8 + n] + struct.pack(">I", zlib.crc32(body))
        pos += 12 + n
    return bytes(out)


def _corrupt_in_data(png: bytes) -> bytes:
    """A PNG whose structure and CRCs are all fine but whose deflate stream is broken: only a
    decoder can tell, so it reaches DALI."""
    return _fix_crcs(_corrupt_png(png))


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


def test_frames_with_visible_damage_never_reach_dali(decoder, png_bytes, jpeg_bytes):
    """Bad CRCs, a missing IEND, a JPEG without its end marker: refused on the host, no DALI run fails."""
    bad_crc = _corrupt_png(png_bytes)
    no_iend = png_bytes[:-12]
    short_jpeg = jpeg_bytes[: len(jpeg_bytes) // 2]
    frames = [png_bytes, bad_crc, jpeg_bytes, no_iend, png_bytes]
    jobs = _jobs(frames)
    jobs.append(replace(jobs[2], frame=replace(jobs[2].frame, data=short_jpeg)))
    before = decoder.stats()
    outs = decoder.decode(jobs, _collect)
    after = decoder.stats()
    assert [isinstance(o, FrameDecodeError) for o in outs] == [False, True, False, True, False, True]
    assert "bad CRC" in outs[1].reason and "IEND" in outs[3].reason and "end-of-image" in outs[5].reason
    assert outs[1].frame == jobs[1].frame.label
    assert after["dali_rebuilds"] == before["dali_rebuilds"] and after["dali_failed_runs"] == before["dali_failed_runs"]
    assert after["dali_host_rejects"] - before["dali_host_rejects"] == 3
    assert np.array_equal(outs[0], outs[4]) and outs[2].shape == (180, 320, 3)
    assert host_precheck(read_frame(png_bytes)) is None and host_precheck(read_frame(_corrupt_in_data(png_bytes))) is None


def test_two_bad_frames_in_a_batch_of_eight_cost_two_rebuilds(png_bytes, jpeg_bytes, rgb_frame):
    """Frames only a decoder can tell are bad: DALI names the failing sample, that frame gets its
    error and the rest run once more, so 2 bad frames cost 2 rebuilds and every good frame decodes."""
    d = DaliDecoder(None, max_batch=8, num_threads=2)
    bad = _corrupt_in_data(png_bytes)
    datas = [png_bytes, jpeg_bytes, bad, png_bytes, jpeg_bytes, png_bytes, bad, jpeg_bytes]
    try:
        outs = d.decode(_jobs(datas), _collect)
        st = d.stats()
    finally:
        d.close()
    assert [isinstance(o, FrameDecodeError) for o in outs] == [k in (2, 6) for k in range(8)]
    assert st["dali_rebuilds"] == 2 and st["dali_failed_runs"] == 2 and st["dali_runs"] == 3
    assert st["dali_bad_samples"] == 2 and st["dali_host_rejects"] == 0
    ref_jpeg = _pillow(jpeg_bytes).astype(np.int16)
    for k, o in enumerate(outs):
        if k in (0, 3, 5):
            assert np.array_equal(o, rgb_frame)
        elif k in (1, 4, 7):
            assert np.abs(o.astype(np.int16) - ref_jpeg).mean() < 1.0


def test_unnamed_failures_are_bisected_then_the_good_frames_run_once(png_bytes, monkeypatch):
    """When DALI's error names no sample, the batch is bisected to find the bad frame, and the
    good frames are decoded together in one final run."""
    d = DaliDecoder(None, max_batch=8, num_threads=1)
    real = d._run
    runs = []

    def run(jobs, resize, slot=0):
        runs.append(len(jobs))
        if any(j.frame.data.endswith(b"#bad") for j in jobs):
            raise RuntimeError("Critical error in pipeline:\nsomething failed outside the decoder\nCurrent pipeline object is no longer valid.")
        return real(jobs, resize, slot)

    monkeypatch.setattr(d, "_run", run)
    jobs = _jobs([png_bytes] * 8)
    jobs[5] = replace(jobs[5], frame=replace(jobs[5].frame, data=png_bytes + b"#bad"))
    try:
        outs = d.decode(jobs, _collect)
        st = d.stats()
    finally:
        d.close()
    assert [isinstance(o, FrameDecodeError) for o in outs] == [k == 5 for k in range(8)]
    assert runs == [8, 4, 4, 2, 1, 1, 2, 7]  # bisect to the bad frame, then the 7 good ones together
    assert st["dali_rebuilds"] == st["dali_failed_runs"] == 4


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
        seen.append(d._pipes[(False, 0)])  # the pipeline that produced these is still current
        return [np.asarray(im).shape for im in images]

    try:
        outs = d.decode(_jobs([png_bytes, jpeg_bytes, png_bytes]), consume)
        assert outs == [(180, 320, 3)] * 3 and len(seen) == 3
    finally:
        d.close()


def _dali_error(inner: str) -> RuntimeError:
    """A DALI pipeline failure as ``Pipeline.run`` raises it; ``inner`` is the C++ exception's text
    (the wrapper is the one DALI 2.4 produces, see the tests above and below)."""
    return RuntimeError(
        "Critical error in pipeline:\nCritical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.image`,\n"
        "which was used in the pipeline definition with the following traceback:\n\n"
        "encountered:\n\n" + inner + "\nCurrent pipeline object is no longer valid.\nCurrent pipeline object is no longer valid."
    )


@pytest.mark.parametrize(
    "inner",
    ["Can't allocate 132710400 bytes on device 0.", "CUDA allocation failed", "Can't allocate 16777216 bytes on host.", "std::bad_alloc"],
)
def test_oom_errors_propagate_not_as_decode_errors(png_bytes, monkeypatch, inner):
    """DALI's out-of-memory texts (its ``CUDABadAlloc`` and ``std::bad_alloc``, per
    ``include/dali/core/cuda_error.h``) become :class:`DeviceOutOfMemory`, not bad frames."""
    d = DaliDecoder(None, max_batch=2, num_threads=1)

    def boom(jobs, resize, slot=0):
        raise _dali_error(inner)

    monkeypatch.setattr(d, "_run", boom)
    with pytest.raises(DeviceOutOfMemory):
        d.decode(_jobs([png_bytes, png_bytes]), _collect)
    assert d.stats()["dali_bad_samples"] == 0 and d.stats()["dali_failed_runs"] == 1
    assert is_oom_error(_dali_error(inner))
    assert not is_oom_error(_dali_error("Failed to decode sample #1 : ")) and not is_oom_error(RuntimeError("Invalid marker"))


def test_sticky_cuda_errors_propagate_without_isolation(png_bytes, monkeypatch):
    """A dead CUDA context is not a bad frame: the error goes up as it is, after one failed run."""
    d = DaliDecoder(None, max_batch=4, num_threads=1)
    err = _dali_error("CUDA runtime API error cudaErrorIllegalAddress (700):\nan illegal memory access was encountered")
    monkeypatch.setattr(d, "_run", lambda jobs, resize, slot=0: (_ for _ in ()).throw(err))
    with pytest.raises(RuntimeError, match="cudaErrorIllegalAddress"):
        d.decode(_jobs([png_bytes] * 4), _collect)
    assert d.stats()["dali_failed_runs"] == 1 and d.stats()["dali_bad_samples"] == 0


def test_failed_sample_is_read_from_the_real_dali_error(png_bytes):
    """DALI's own message (its CPU backend here) names the sample, which the isolation relies on."""
    from gpupipe.gpu.dali_decode import build_pipeline

    p = build_pipeline(3, 1, None, False)
    p.feed_input("enc", [np.frombuffer(x, np.uint8) for x in (png_bytes, png_bytes, _corrupt_in_data(png_bytes))])
    with pytest.raises(RuntimeError) as ei:
        p.run()
    assert failed_sample(ei.value) == 2


def test_real_dali_out_of_memory_is_recognised(tmp_path):
    """DALI really running out of memory (its CPU backend, with the process's address space capped
    just above what it holds): the error it raises is classified as out of memory, not a bad frame."""
    code = textwrap.dedent(
        """
        import io, re, resource, sys
        import numpy as np
        from PIL import Image
        from gpupipe.gpu.dali_decode import DaliDecoder, DeviceOutOfMemory
        from gpupipe.plan import OutputSpec, plan_job
        from gpupipe.frames import read_frame

        b = io.BytesIO()
        Image.new("RGB", (7000, 7000)).save(b, "PNG", compress_level=1)  # 147 MB decoded, under 1 MB encoded
        job = plan_job(0, read_frame(b.getvalue()), OutputSpec("jpeg"))
        d = DaliDecoder(None, max_batch=1, num_threads=1)
        d._pipe(False, 0)  # built before the cap
        vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (96 << 20), resource.RLIM_INFINITY))
        try:
            d.run_batch([job])
        except DeviceOutOfMemory as e:
            print("OOM", repr(str(e.__cause__))[:300])
            sys.exit(0)
        print("no OOM")
        sys.exit(3)
        """
    )
    if not sys.platform.startswith("linux"):
        pytest.skip("needs /proc and RLIMIT_AS")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert r.stdout.startswith("OOM")


def test_hardware_decoder_settings_reach_dalis_decoder_and_its_cpu_backend_accepts_them(jpeg_bytes, png_bytes):
    """The ``gpu_path`` DALI arguments (``hw_decoder_load`` and the hints) are passed to
    ``fn.decoders.image``; DALI 2.4's ``cpu`` backend accepts and ignores them (same pixels), and an
    argument DALI does not know fails the pipeline build (so a misspelt key cannot pass silently)."""
    from gpupipe.config import GpuPathConfig
    from gpupipe.gpu.dali_decode import build_pipeline

    args = GpuPathConfig(
        hw_decoder_load=1.0, preallocate_width_hint=3840, preallocate_height_hint=2160, hybrid_huffman_threshold=0
    ).dali_decoder_args()
    jobs = _jobs([jpeg_bytes, png_bytes])
    plain = [np.asarray(x) for x in DaliDecoder(None, max_batch=2, num_threads=1).run_batch(jobs)]
    tuned = DaliDecoder(None, max_batch=2, num_threads=1, decoder_args=args)
    assert tuned.decoder_args == args
    for a, b in zip(plain, tuned.run_batch(jobs)):
        assert np.array_equal(a, np.asarray(b))
    with pytest.raises(Exception, match="hw_decoder_lod"):
        build_pipeline(1, 1, None, False, None, {"hw_decoder_lod": 1.0})
