"""Video frames as sources (gpupipe.VideoFrame) on the CPU: PyAV-made clips, every frame by index and by
time equal to PyAV's own decode (PNG output: lossless, so exactly equal), random/reverse/keyframe
access, alpha, rotation, the browser's time rule, the decoder pool's bounds and seek rules, and the
errors. The memory budget with decoders open is in tests/test_video_budget.py; the NVDEC decoder's
logic in tests/test_video_nvdec.py."""

from __future__ import annotations

import base64
import io
import os
import time

import numpy as np
import pytest
from PIL import Image
from video_clips import frame_times, pyav_frames, vfr_pts, write_clips

import gpupipe
from gpupipe import VideoFrame
from gpupipe.errors import FrameDecodeError, FrameNotFound, FrameOutOfRange
from gpupipe.samples import write_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def refs(clips):
    return {name: pyav_frames(path) for name, path in clips.items()}


def pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def png_pipeline(max_decoders: int = 4, **kw) -> gpupipe.FramePipeline:
    cfg = gpupipe.load_config()
    from dataclasses import replace

    cfg = replace(cfg, video=replace(cfg.video, max_decoders=max_decoders))
    return gpupipe.FramePipeline(gpupipe.FrameEncoder(cfg, backend="cpu"), gpupipe.FrameCache(4096, 1 << 30), output="png", **kw)


# --------------------------------------------------------------------------- equality with PyAV


@pytest.mark.parametrize("name", ["h264", "vfr", "hevc10", "vp9_alpha", "prores4444", "rotated"])
def test_every_frame_by_index_and_by_time_equals_pyavs_own_decode(clips, refs, name):
    """PNG output is lossless, so each frame must equal PyAV's one-pass decode exactly; the same
    frame by time hits the same cache entry (t and index share one key)."""
    path, ref = clips[name], refs[name]
    with png_pipeline() as pipe:
        uris = pipe.get_many([VideoFrame(path, index=i) for i in range(len(ref))])
        for i, (uri, want) in enumerate(zip(uris, ref)):
            assert isinstance(uri, str), uri
            assert np.array_equal(pixels(uri), want), (name, i)
        loads = pipe.stats().loads
        by_time = pipe.get_many([VideoFrame(path, t=t) for t in frame_times(path)])
        assert by_time == uris
        assert pipe.stats().loads == loads  # every one a hit
        st = pipe.encoder.videos.stats()
        assert st.seeks == 0 and st.decoded == len(ref)  # in order: one decode per frame, no seek


def test_random_reverse_and_around_keyframes_equal_pyav(clips, refs):
    path, ref = clips["h264"], refs["h264"]
    rng = np.random.default_rng(3)
    keyframes = [16, 32, 48]
    around = [i for k in keyframes for i in (k - 2, k + 1, k - 1, k, k + 2)]
    for order in (list(rng.permutation(len(ref))), list(range(len(ref) - 1, -1, -1)), around):
        with png_pipeline() as pipe:
            for i in order:
                assert np.array_equal(pixels(pipe.get(VideoFrame(path, index=int(i)))), ref[int(i)]), i


def test_seek_rules_forward_decodes_behind_and_far_ahead_seek(clips):
    """Forward within a group of pictures decodes forward; behind, or past a keyframe, seeks once."""
    path = clips["h264"]
    with gpupipe.FrameEncoder(backend="cpu") as enc:
        enc.encode(VideoFrame(path, index=3))  # first group: from the start, no seek
        assert enc.videos.stats().seeks == 0
        enc.encode(VideoFrame(path, index=10))  # ahead, same group: forward
        assert enc.videos.stats().seeks == 0
        enc.encode(VideoFrame(path, index=40))  # past keyframes 16 and 32: one seek to 32
        st = enc.videos.stats()
        assert st.seeks == 1 and st.decoded <= 11 + (40 - 32 + 1) + 4
        enc.encode(VideoFrame(path, index=35))  # behind: one more seek
        assert enc.videos.stats().seeks == 2


def test_schedule_reads_ahead_by_decoding_ahead_in_order(clips):
    path = clips["h264"]
    timeline = [VideoFrame(path, index=i) for i in range(64)]
    with png_pipeline() as pipe, pipe.schedule(timeline) as sched:
        for f in timeline:
            pipe.get(f)
        assert sched.stats().prefetched > 0
        st = pipe.encoder.videos.stats()
        # Read-ahead and the requests share the clip's decoder; a request that loses the race to a
        # read-ahead batch gets the frame the decoder just passed: one decode per frame, no seek.
        assert st.seeks == 0 and st.decoded == 64, st


def test_the_frame_just_passed_is_served_without_a_seek(clips, refs):
    """Frame 5 then frame 4 (a request racing read-ahead on one clip): the skipped frame is kept, so no seek."""
    from gpupipe.frames.clip import probe_clip
    from gpupipe.video.pyav_decoder import PyavDecoder

    dec = PyavDecoder(probe_clip(clips["h264"], "h264"))
    try:
        assert np.array_equal(dec.frame(5, "f").array, refs["h264"][5])
        assert np.array_equal(dec.frame(4, "f").array, refs["h264"][4])
        assert dec.seeks == 0 and dec.decoded == 6
        assert np.array_equal(dec.frame(6, "f").array, refs["h264"][6])  # and on forward from where it stood
        assert np.array_equal(dec.frame(3, "f").array, refs["h264"][3])  # not kept (not the last skipped): a seek
        assert dec.seeks == 1
    finally:
        dec.close()


def test_fitted_frames_come_fitted_from_the_decoder_rotated_or_not(clips, refs):
    """With an output size, frames are scaled while converted: the fitted size (of the upright frame),
    close to the full-size frame fitted with Pillow's Lanczos."""
    from test_video_rgb import luma_psnr

    for name, box in (("h264", (160, 160)), ("rotated", (90, 1000))):
        with png_pipeline(size=box) as pipe:
            got = pixels(pipe.get(VideoFrame(clips[name], index=2)))
        ref = refs[name][2]
        w, h = gpupipe.plan.fit_size(ref.shape[1], ref.shape[0], box)
        want = np.asarray(Image.fromarray(ref).resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0))
        assert got.shape == want.shape == (h, w, 3), name
        assert luma_psnr(got, want) >= 40, (name, luma_psnr(got, want))


def test_encoder_takes_video_frames_with_image_frames(clips, png_bytes):
    path = clips["h264"]
    with gpupipe.FrameEncoder(backend="cpu") as enc:
        out = enc.encode_batch([VideoFrame(path, index=5), png_bytes, VideoFrame(path, index=1), VideoFrame(path, index=99)])
        assert out[0].startswith("data:image/jpeg;base64,") and out[2].startswith("data:image/jpeg;base64,")
        assert out[1].startswith("data:image/png;base64,")  # the PNG passes through
        assert isinstance(out[3], FrameOutOfRange)
        assert enc.encode(VideoFrame(path, index=5), size=(160, 90)).startswith("data:image/jpeg")


# --------------------------------------------------------------------------- alpha, rotation, time


@pytest.mark.parametrize("name", ["vp9_alpha", "prores4444"])
def test_alpha_is_kept_and_auto_makes_png(clips, refs, name):
    """VP9 alpha through libvpx-vp9 (FFmpeg's vp9 decoder drops it) and ProRes 4444: RGBA PNG under auto."""
    with gpupipe.open_pipeline(backend="cpu") as pipe:
        uri = pipe.get(VideoFrame(clips[name], index=2))
    assert uri.startswith("data:image/png;base64,")
    got = pixels(uri)
    assert got.shape[2] == 4 and got[..., 3].min() < 200 and got[..., 3].max() == 255
    assert np.array_equal(got, refs[name][2])


def test_auto_output_of_a_clip_without_alpha_is_jpeg(clips):
    with gpupipe.open_pipeline(backend="cpu") as pipe:
        assert pipe.get(VideoFrame(clips["h264"], index=0)).startswith("data:image/jpeg;base64,")


def test_rotation_applied_as_a_browser_applies_it(clips, refs):
    with png_pipeline() as pipe:
        got = pixels(pipe.get(VideoFrame(clips["rotated"], index=1)))
    assert got.shape == (320, 180, 3) and np.array_equal(got, refs["rotated"][1])


def test_time_maps_to_the_last_frame_at_or_before_it_variable_frame_rate(clips):
    path = clips["vfr"]
    times = [p / 1000 for p in vfr_pts(48)]
    with png_pipeline() as pipe:

        def index_of(t: float) -> str | None:
            return pipe.key(VideoFrame(path, t=t)).source.part

        for i, t in enumerate(times):
            assert index_of(t) == str(i)
            if i:
                assert index_of(t - 0.001) == str(i - 1)  # a millisecond before: still the previous frame
                assert index_of((t + times[i - 1]) / 2) == str(i - 1)
        duration = times[-1] + 0.033  # the last frame lasts one step
        assert index_of(duration - 1e-4) == str(47)
        with pytest.raises(FrameOutOfRange, match="duration"):
            pipe.get(VideoFrame(path, t=duration + 0.01))


def test_t_from_a_float_frame_rate_lands_on_the_frame(clips):
    """t = i / 30 in floating point is a hair below i/30 for some i: compared in microseconds, as
    Chromium does, it still shows frame i."""
    with png_pipeline() as pipe:
        parts = [pipe.key(VideoFrame(clips["h264"], t=i / 30)).source.part for i in range(64)]
    assert parts == [str(i) for i in range(64)]


# --------------------------------------------------------------------------- the API's contract


def test_video_frame_is_frozen_hashable_and_takes_exactly_one_of_index_and_t(clips):
    a, b = VideoFrame("clip.mp4", index=3), VideoFrame("clip.mp4", index=3)
    assert a == b and hash(a) == hash(b) and len({a, b, VideoFrame("clip.mp4", t=0.1)}) == 2
    with pytest.raises(AttributeError):
        a.index = 4  # type: ignore[misc]
    for bad in ({}, {"index": 1, "t": 0.0}):
        with pytest.raises(ValueError, match="exactly one"):
            VideoFrame("clip.mp4", **bad)
    with pytest.raises(ValueError, match="0 or more"):
        VideoFrame("clip.mp4", t=-0.001)
    with pytest.raises(ValueError):
        VideoFrame("clip.mp4", index=-1)
    with pytest.raises(ValueError):
        VideoFrame("clip.mp4", t=float("nan"))
    with pytest.raises(TypeError):
        VideoFrame("clip.mp4", index=True)
    with pytest.raises(TypeError):
        VideoFrame("clip.mp4", 3)  # type: ignore[misc]


def test_t_and_index_of_one_frame_share_one_cache_entry(clips):
    path = clips["h264"]
    with png_pipeline() as pipe:
        assert pipe.key(VideoFrame(path, t=0.5)) == pipe.key(VideoFrame(path, index=15))
        pipe.get(VideoFrame(path, index=15))
        pipe.get(VideoFrame(path, t=0.5))
        pipe.get(VideoFrame(path, t=0.52))  # still frame 15 (frame 16 starts at 0.5333 s)
        s = pipe.stats()
        assert (s.loads, s.hits, s.entries) == (1, 2, 1)


# --------------------------------------------------------------------------- errors


def test_past_the_end_names_the_frame_count_or_the_duration(clips):
    path = clips["h264"]
    with png_pipeline() as pipe:
        out = pipe.get_many([VideoFrame(path, index=64), VideoFrame(path, t=10.0), VideoFrame(path, index=63)])
    assert isinstance(out[0], FrameOutOfRange) and "64 frames" in str(out[0])
    assert isinstance(out[1], FrameOutOfRange) and "duration 2.13" in str(out[1])
    assert isinstance(out[2], str)


def test_not_a_video_and_a_corrupt_clip_fail_per_frame_fast_and_the_pipeline_stays_usable(clips, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    corrupt = tmp_path / "corrupt.mp4"
    data = bytearray(clips["h264"].read_bytes())
    moov = data.find(b"moov")
    data[moov - 4 : moov + 400] = bytes(404)  # the index box is gone
    corrupt.write_bytes(bytes(data))
    image = tmp_path / "frame.png"
    Image.new("RGB", (8, 8)).save(image)
    with png_pipeline() as pipe:
        t0 = time.monotonic()
        out = pipe.get_many(
            [
                VideoFrame(junk, index=0),
                VideoFrame(junk, t=0.5),
                VideoFrame(corrupt, index=1),
                VideoFrame(image, index=0),
                VideoFrame(tmp_path / "missing.mp4", index=0),
                VideoFrame(clips["h264"], index=7),
            ]
        )
        assert time.monotonic() - t0 < 30  # within seconds, not a hang (generous for a loaded CI box)
        assert [type(r) for r in out[:4]] == [FrameDecodeError] * 4, out
        assert isinstance(out[4], FrameNotFound)
        assert isinstance(out[5], str)
        for err in out[:4]:
            assert "junk" in err.frame or "corrupt" in err.frame or "frame.png" in err.frame
        assert pipe.get(VideoFrame(clips["h264"], index=8))  # still usable


def test_a_truncated_clip_decodes_its_earlier_frames_and_fails_the_rest(tmp_path):
    whole = write_clip(
        tmp_path / "whole.mp4", frames=64, options={"bf": "3", "g": "16"}, container_options={"movflags": "+faststart"}
    )
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with png_pipeline() as pipe:
        t0 = time.monotonic()
        out = pipe.get_many([VideoFrame(cut, index=i) for i in range(64)])
        assert time.monotonic() - t0 < 30
    good = [i for i, r in enumerate(out) if isinstance(r, str)]
    bad = [i for i, r in enumerate(out) if not isinstance(r, str)]
    assert good and bad and good == list(range(len(good))), (good, bad)  # a prefix decodes
    assert len(good) >= 16
    assert all(isinstance(out[i], FrameDecodeError) for i in bad)
    ref = pyav_frames(whole)
    assert all(np.array_equal(pixels(out[i]), ref[i]) for i in good)  # the same pictures as the whole clip


def test_a_clip_changed_on_disk_gets_a_new_identity_and_new_frames(tmp_path):
    path = write_clip(tmp_path / "c.mp4", frames=8, seed=1)
    with png_pipeline() as pipe:
        k1 = pipe.key(VideoFrame(path, index=2))
        first = pipe.get(VideoFrame(path, index=2))
        write_clip(path, frames=8, seed=2)
        os.utime(path, ns=(1, 1))  # even with an old modification time
        k2 = pipe.key(VideoFrame(path, index=2))
        assert k1 != k2 and k1.source.identity != k2.source.identity
        assert pipe.get(VideoFrame(path, index=2)) != first


# --------------------------------------------------------------------------- the pool


def test_pool_keeps_at_most_max_decoders_open_least_recently_used_closed_first(clips):
    names = ["h264", "vfr", "hevc10"]
    with png_pipeline(max_decoders=2) as pipe:
        for n in names:
            pipe.get(VideoFrame(clips[n], index=0))
            assert pipe.encoder.videos.stats().open <= 2
        st = pipe.encoder.videos.stats()
        assert (st.opened, st.closed) == (3, 1)
        pipe.get(VideoFrame(clips["vfr"], index=1))  # still open: no new decoder
        assert pipe.encoder.videos.stats().opened == 3
        pipe.get(VideoFrame(clips["h264"], index=1))  # the least recently used was closed
        assert pipe.encoder.videos.stats().opened == 4


def test_config_key_video_max_decoders(tmp_path):
    from gpupipe.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults:\n  video: {max_decoders: 2}\n")
    assert gpupipe.load_config(cfg).video.max_decoders == 2
    assert gpupipe.load_config().video.max_decoders == 4
    for bad in ("0", "2000", "two", "{}"):
        cfg.write_text(f"defaults:\n  video: {{max_decoders: {bad}}}\n")
        with pytest.raises(ConfigError, match=r"video\.max_decoders"):
            gpupipe.load_config(cfg)
