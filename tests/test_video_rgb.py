"""The CPU decoder's RGB conversion into a reused buffer (gpupipe.video.rgb): identical to PyAV's
``to_ndarray`` on every test clip, one buffer reused for frames taken one at a time, a fresh one
while the pooled array is still held (whose pixels stay intact), and the decoder's state bound
counting that buffer."""

from __future__ import annotations

import numpy as np
import pytest
from video_clips import write_clips

from gpupipe.frames.clip import decoder_state_bytes, probe_clip
from gpupipe.plan import fit_size
from gpupipe.video.rgb import RgbConverter


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("rgb"))


def decoded(path):
    """Every decoded frame of the clip (libvpx-vp9 for VP9 with alpha, as the decoder does) and its RGB format."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ctx = av.CodecContext.create("libvpx-vp9", "r") if s.metadata.get("alpha_mode") == "1" else s.codec_context
        frames = [f for p in c.demux(s) if p.size for f in ctx.decode(p)] + list(ctx.decode(None))
    alpha = any(comp.is_alpha for comp in frames[0].format.components)
    return frames, "rgba" if alpha else "rgb24"


@pytest.mark.parametrize("name", ["h264", "vfr", "hevc10", "vp9_alpha", "prores4444", "rotated"])
def test_pooled_conversion_equals_to_ndarray_and_reuses_one_buffer(clips, name):
    frames, fmt = decoded(clips[name])
    conv = RgbConverter(fmt)
    addresses = set()
    for i, f in enumerate(frames):
        got = conv.convert(f)
        assert got.flags.c_contiguous and got.dtype == np.uint8
        assert np.array_equal(got, f.to_ndarray(format=fmt)), (name, i)
        addresses.add(got.__array_interface__["data"][0])
        del got
    assert conv.fresh == 0  # each array was gone before the next frame: the pooled buffer every time
    assert len(addresses) == 1
    conv.close()


def test_a_held_array_keeps_its_pixels_and_the_next_frame_gets_a_fresh_buffer(clips):
    frames, fmt = decoded(clips["h264"])
    conv = RgbConverter(fmt)
    held = [conv.convert(f) for f in frames[:4]]  # all alive at once
    assert conv.fresh == 3  # one pooled buffer; the others fresh
    for f, got in zip(frames[:4], held):
        assert np.array_equal(got, f.to_ndarray(format=fmt))
    view = held[0][10:20]  # a view keeps the pooled buffer lent
    del held
    nxt = conv.convert(frames[4])
    assert conv.fresh == 4
    assert np.array_equal(view, frames[0].to_ndarray(format=fmt)[10:20])
    del view, nxt
    conv.convert(frames[5])
    assert conv.fresh == 4  # lent buffer back: reused
    conv.close()


def test_decoder_state_counts_the_reused_converted_frame(clips):
    clip = probe_clip(clips["h264"], "h264")
    assert decoder_state_bytes(clip) == 9 * clip.frame_bytes() + clip.width * clip.height * 3 + 2 * 1024 * 1024


def luma_psnr(a, b):
    y = lambda x: x[..., :3].astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    mse = float(((y(a) - y(b)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("name", ["h264", "hevc10", "vp9_alpha", "prores4444"])
def test_scaled_conversion_matches_the_full_size_conversion_then_pillows_lanczos(clips, name):
    """Converted and scaled in one pass: the fitted size, and within 40 dB (luma) of converting at
    full size and then fitting with Pillow's Lanczos, the CPU path's resize; alpha kept."""
    from PIL import Image

    frames, fmt = decoded(clips[name])
    conv = RgbConverter(fmt)
    for f in frames[::7]:
        size = fit_size(f.width, f.height, (f.width // 2, f.height // 3))
        got = conv.convert(f, size)
        full = f.to_ndarray(format=fmt)
        want = np.asarray(Image.fromarray(full).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
        assert got.shape == want.shape and got.flags.c_contiguous
        assert luma_psnr(got, want) >= 40, (name, luma_psnr(got, want))
        if fmt == "rgba":
            assert np.abs(got[..., 3].astype(int) - want[..., 3]).mean() < 2
        held = got  # a second frame while the first is held: a fresh buffer, the same pixels
        again = conv.convert(f, size)
        assert np.array_equal(again, held) and conv.fresh >= 1
        del got, held, again
    assert np.array_equal(conv.convert(frames[0]), frames[0].to_ndarray(format=fmt))  # back to full size
    conv.close()
