"""The NVDEC decoder's logic (gpupipe/gpu/nvdec.py) against a stand-in for PyNvVideoCodec that fails the
way PyNvVideoCodec 2.2 does: ``PyNvVCExceptionUnsupported`` / ``PyNvVCException`` carrying NVDEC's
"Codec not supported on this GPU" or "Resolution not supported on this GPU" (raised at open, or at the
first decode, where NVDEC reads the sequence header), and plain errors for broken data. What NVDEC
cannot decode falls back to the CPU decoder, counted and logged once, never an error. The tests marked
``gpu`` run the real PyNvVideoCodec on a device."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from video_clips import pyav_frames, write_clips

from gpupipe.errors import FrameDecodeError
from gpupipe.frames import probe_clip
from gpupipe.gpu.nvdec import NvdecDecoder, NvdecOpener, nvdec_refusal
from gpupipe.video import PyavDecoder


class FakeNvc:
    """A stand-in for the ``PyNvVideoCodec`` module: ``SimpleDecoder`` hands out PyAV's frames of the clip."""

    class PyNvVCExceptionUnsupported(Exception):
        pass

    class PyNvVCException(Exception):
        pass

    class OutputColorType:
        NATIVE, RGB, RGBP = 0, 1, 2

    def __init__(self, fail_open: Exception | None = None, fail_decode: Exception | None = None) -> None:
        self.fail_open, self.fail_decode = fail_open, fail_decode
        self.opened: list[str] = []
        self.calls: list[tuple] = []

    def SimpleDecoder(self, path, gpu_id=0, use_device_memory=True, output_color_type=0):  # PyNvVideoCodec's name
        self.opened.append(path)
        if self.fail_open is not None:
            raise self.fail_open
        nvc = self

        class Simple:
            frames = pyav_frames(path)
            pos = 0

            def __len__(self):
                return len(self.frames)

            def seek_to_index(self, index):
                nvc.calls.append(("seek", index))
                self.pos = index

            def get_batch_frames(self, n):
                nvc.calls.append(("batch", n))
                if nvc.fail_decode is not None:
                    raise nvc.fail_decode
                out = self.frames[self.pos : self.pos + n]
                self.pos += len(out)
                return out

        return Simple()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("nvdec-clips"))


def opener(nvc) -> NvdecOpener:
    return NvdecOpener(0, nvc, to_device=lambda f: f)  # the stand-in's frames are NumPy arrays already


def test_follows_the_seek_rule_forward_without_seeking(clips):
    nvc = FakeNvc()
    clip = probe_clip(clips["h264"], "h264")
    ref = pyav_frames(clips["h264"])
    dec = NvdecDecoder(clip, 0, nvc, to_device=lambda f: f)
    for i in (0, 1, 2, 5):  # forward within the first group
        px = dec.frame(i, "f")
        assert px.on_device and np.array_equal(px.array, ref[i])
    assert ("seek", 0) in nvc.calls and sum(c[0] == "seek" for c in nvc.calls) == 1
    assert nvc.calls[-1] == ("batch", 3)  # 3 and 4 decoded on the way to 5, no seek
    dec.frame(3, "f")  # behind: seek
    dec.frame(40, "f")  # past keyframes: seek
    assert [c for c in nvc.calls if c[0] == "seek"][-2:] == [("seek", 3), ("seek", 40)]
    assert np.array_equal(dec.frame(41, "f").array, ref[41])


def test_refused_when_opened_falls_back_to_the_cpu_counted_and_logged_once(clips, caplog):
    nvc = FakeNvc(fail_open=FakeNvc.PyNvVCExceptionUnsupported("CreateSimpleDecoder failed: Codec not supported on this GPU"))
    op = opener(nvc)
    clip = probe_clip(clips["h264"], "h264")
    with caplog.at_level(logging.INFO, logger="gpupipe.gpu.nvdec"):
        for _ in range(2):
            dec = op(clip)
            assert isinstance(dec, PyavDecoder)
            dec.close()
    assert op.counters() == {"nvdec_opened": 0, "nvdec_fallback_refused": 2}
    assert len([r for r in caplog.records if "on the CPU" in r.getMessage()]) == 1


def test_refused_at_the_first_decode_falls_back_and_gives_the_same_frames(clips):
    """NVDEC checks the size against its limits when it reads the sequence header: at the first decode."""
    err = FakeNvc.PyNvVCException(
        "\nResolution          : 8192x4320\nMax Supported (wxh) : 4096x4096\nResolution not supported on this GPU"
    )
    nvc = FakeNvc(fail_decode=err)
    op = opener(nvc)
    clip = probe_clip(clips["h264"], "h264")
    ref = pyav_frames(clips["h264"])
    dec = op(clip)
    assert np.array_equal(dec.frame(7, "f").array, ref[7]) and not dec.frame(7, "f").on_device
    assert np.array_equal(dec.frame(8, "f").array, ref[8])
    assert op.counters()["nvdec_fallback_refused"] == 1
    dec.close()


@pytest.mark.parametrize(("name", "reason"), [("prores4444", "codec"), ("vp9_alpha", "alpha")])
def test_what_nvdec_cannot_do_is_never_tried(clips, name, reason):
    nvc = FakeNvc()
    op = opener(nvc)
    clip = probe_clip(clips[name], name)
    assert nvdec_refusal(clip) == reason
    dec = op(clip)
    assert isinstance(dec, PyavDecoder) and nvc.opened == []
    assert op.counters()[f"nvdec_fallback_{reason}"] == 1
    dec.close()


def test_without_pynvvideocodec_every_clip_decodes_on_the_cpu(clips):
    op = NvdecOpener(0, None)
    dec = op(probe_clip(clips["h264"], "h264"))
    assert isinstance(dec, PyavDecoder) and op.counters()["nvdec_fallback_no_pynvvideocodec"] == 1
    dec.close()


def test_broken_data_is_the_frames_error_not_a_fallback(clips):
    nvc = FakeNvc(fail_decode=FakeNvc.PyNvVCException("get_batch_frames failed: Invalid data found when processing input"))
    dec = opener(nvc)(probe_clip(clips["h264"], "h264"))
    with pytest.raises(FrameDecodeError, match="NVDEC cannot decode frame 3"):
        dec.frame(3, "clip#3")
    dec.close()


def test_a_device_frame_going_to_jpeg_unresized_is_routed_to_the_device_encoder():
    from dataclasses import replace

    from gpupipe.config import Config
    from gpupipe.frames import Frame, Header, Pixels
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.plan import Job

    class Ops:  # the device layer is not used by these routes
        def release(self): ...
        def close(self): ...
        def is_oom(self, e):
            return False

    backend = GpuBackend(Config(), ops=Ops(), workers=1)  # type: ignore[arg-type]
    try:
        header = Header("pixels", 4, 2, 3, 1, 24)
        frame = Frame("clip#0", b"", header, None, Pixels(np.zeros((2, 4, 3), np.uint8), on_device=True))
        job = Job(0, frame, False, "jpeg", (4, 2), 90, 1)
        assert backend.route(job) == "video"
        assert backend.route(replace(job, out_size=(2, 1))) == "cpu"  # a resize: the CPU path, on a host copy
        assert backend.route(replace(job, target="png")) == "cpu"
        host = replace(job, frame=replace(frame, pixels=Pixels(np.zeros((2, 4, 3), np.uint8))))
        assert backend.route(host) == "cpu"
    finally:
        backend.close()


@pytest.mark.gpu
def test_nvdec_frames_match_pyav_on_a_device(clips):
    """On a GPU with PyNvVideoCodec: NVDEC's RGB against PyAV's (FFmpeg's) within a few levels."""
    import cupy

    from gpupipe.gpu.nvdec import load_pynvvideocodec

    nvc = load_pynvvideocodec()
    if nvc is None:
        pytest.skip("PyNvVideoCodec is not installed")
    op = NvdecOpener(0, nvc)
    for name in ("h264", "vfr", "hevc10"):
        clip = probe_clip(clips[name], name)
        ref = pyav_frames(clips[name])
        dec = op(clip)
        order = [*range(len(ref)), len(ref) - 1, 0, len(ref) // 2]
        for i in order:
            px = dec.frame(i, f"{name}#{i}")
            got = cupy.asnumpy(px.array) if px.on_device else px.array
            diff = np.abs(got.astype(np.int16) - ref[i])
            assert diff.mean() < 2.0 and np.percentile(diff, 99.9) <= 16, (name, i, diff.mean())
        dec.close()
    assert op.counters()["nvdec_opened"] == 3
