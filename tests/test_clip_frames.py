"""Selecting a clip's frames (gpupipe.clip_frames): ``--frames`` means what a Python slice or index means over the
clip's frames, and ``--fps`` picks the frame shown at each ``start + k / fps``; telling clips from frame files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupipe.clip_frames import FrameSelection, clip_of, image_kind, parse_frames
from gpupipe.errors import FrameDecodeError, FrameOutOfRange
from gpupipe.frames import Clip
from gpupipe.samples import encode_frame, make_frame, write_clip

N = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[str, Clip]:
    path = write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=N, size=(64, 36), fps=30)
    probed = clip_of(path)
    assert isinstance(probed, Clip)
    return str(path), probed


ends = st.one_of(st.none(), st.integers(-20, 20))


@given(start=ends, stop=ends, step=st.one_of(st.none(), st.integers(-5, 5).filter(bool)), form=st.integers(1, 3))
def test_frames_select_what_a_python_slice_selects(clip, start, stop, step, form):
    path, probed = clip
    text = ":".join("" if v is None else str(v) for v in (start, stop, step)[: form if form > 1 else 2])
    if form == 1:
        text = str(start if start is not None else 0)
    picked = parse_frames(text)
    frames = FrameSelection(picked).frames_of(path, probed)
    want = list(range(N))[picked] if isinstance(picked, slice) else ([list(range(N))[picked]] if -N <= picked < N else [picked])
    if want == [] or (isinstance(picked, int) and picked < -N):
        (only,) = frames
        assert isinstance(only.error, FrameOutOfRange) and only.source is None
    else:
        assert [f.index for f in frames] == want
        assert all(f.source is not None and f.source.index == f.index for f in frames)


@given(fps=st.floats(1, 240), start=st.floats(0, 0.39))
def test_times_pick_the_frame_shown_at_each_time(clip, fps, start):
    path, probed = clip
    frames = FrameSelection(fps=fps, start=start).frames_of(path, probed)
    assert frames and all(f.error is None for f in frames)
    for k, f in enumerate(frames):
        assert f.t == start + k / fps and f.source is not None and f.source.t == f.t
        shown = max(i for i in range(N) if probed.micros(i) <= round(f.t * 1e6))  # compared in whole microseconds
        assert f.index == shown and abs(f.t - shown / 30) < 1 / 30
    assert frames[-1].t < probed.duration <= frames[-1].t + 1 / fps + 1e-9


def test_files_are_told_apart_by_content(tmp_path, clip):
    png = tmp_path / "looks.mp4"
    png.write_bytes(encode_frame(make_frame(16, 16, 0, 0), "png"))  # a PNG, whatever its name
    assert image_kind(png) == "png" and clip_of(png) is None
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a frame")
    assert image_kind(text) is None and clip_of(text) is None  # its reader reports its error
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"not a video")
    assert isinstance(clip_of(broken), FrameDecodeError)
    assert image_kind(tmp_path) is None and image_kind(tmp_path / "missing") is None
    assert isinstance(clip_of(clip[0]), Clip)
