"""``gpupipe extract`` (gpupipe.extract): FFmpeg's frame selection, pixel parity with FFmpeg's own
extraction under hyperframes' filter chain, atomic output, typed errors.

The parity tests run the FFmpeg binary (``find_ffmpeg``); without one they skip, unless
``FFMPEG_REQUIRED=1`` (set by .ci/run, which installs Debian's ffmpeg), where they fail.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpupipe.errors import ExtractError, NothingToExtract
from gpupipe.extract import ExtractRequest, extract_clip, jpeg_quality_for, output_name, select_frames
from gpupipe.frames.clip import probe_clip
from gpupipe.samples import write_clip


HF_CHAIN = (
    "settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps={fps}:start_time=0:round=up,"
    "{guess}setparams=color_primaries=bt709:color_trc=iec61966-2-1{tail}"
)
HF_JPEG_TAIL = (
    ",scale=flags=neighbor+accurate_rnd,format=gbrp,scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p"
)
VFR_PTS = [0, 30, 70, 100, 170, 200, 210, 260, 330, 340, 400, 430, 500, 520, 560, 600, 700, 710, 720, 800, 850, 900, 933, 966]
BT709 = {"x264-params": "colorprim=bt709:transfer=bt709:colormatrix=bt709"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("extract_clips")
    return {
        "cfr30": write_clip(d / "cfr30.mp4", frames=45, size=(64, 48), fps=30, options={"bf": "3", "g": "12"}),
        "cfr24": write_clip(d / "cfr24.mp4", frames=36, size=(64, 48), fps=24, options={"bf": "2", "g": "10"}),
        "vfr": write_clip(d / "vfr.mp4", frames=len(VFR_PTS), size=(64, 48), pts=VFR_PTS, time_base=Fraction(1, 1000)),
        "hd": write_clip(d / "hd.mp4", frames=24, size=(320, 240), options={"bf": "2", **BT709}),
        "grain": _grainy(d / "grain.mp4"),
    }


def _grainy(path: Path) -> Path:
    """An untagged grainy 320x240 H.264 clip (testsrc2 with noise), 0.8 s at 30 fps."""
    from gpupipe.tools.video_clips import _pyav_clip

    _pyav_clip(path, 320, 240, 24, "libx264", {"preset": "veryfast", "crf": "18"})
    return path


def _sources(clip: Path) -> list[np.ndarray]:
    """The clip's frames in display order, as float RGB (to identify extracted frames by content)."""
    import av

    with av.open(str(clip)) as c:
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)), key=lambda x: x[0])
    return [a.astype(np.float32) for _, a in frames]


def _identify(paths: list[Path], sources: list[np.ndarray]) -> list[int]:
    out = []
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
        out.append(int(np.argmin([((a - s) ** 2).mean() for s in sources])))
    return out


def _psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    mse = ((x - y) ** 2).mean()
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _run_ffmpeg(
    exe: str, clip: Path, out: Path, start: float, duration: float | None, fps: str, vf: str, extra: list[str], pattern: str
) -> list[Path]:
    out.mkdir()
    cmd = [exe, "-v", "error", "-noaccurate_seek", "-ss", str(start), "-i", str(clip)]
    cmd += ["-t", str(duration)] if duration is not None else []
    subprocess.run([*cmd, "-vf", vf, *extra, "-y", str(out / pattern)], check=True, capture_output=True)
    return sorted(out.iterdir())


def _model(
    clip: Path, fps: Fraction, start: float, duration: float | None, fps_start: float | None = None, max_frames: int | None = None
) -> list[int]:
    c = probe_clip(clip, "t")
    return select_frames(
        [p * c.time_base for p in c.pts],
        fps,
        start,
        duration,
        end=c.end_pts * c.time_base,
        time_base=c.time_base,
        fps_start=fps_start,
        max_frames=max_frames,
    )


SELECTION_CASES = [
    ("cfr30", 0, None, "30"),
    ("cfr30", 0.5, None, "30"),  # -ss rebases: starts at source 1.0 s (frame 30)
    ("cfr30", 0.2, 0.4, "30"),
    ("cfr30", 0.5, 0.5, "30"),  # S >= D: FFmpeg writes nothing
    ("cfr30", 0.1, 0.5, "60"),  # above the source rate: duplicates
    ("cfr30", 0.3, None, "24"),  # below: drops
    ("cfr30", 0.0333, 0.41, "15"),
    ("cfr24", 0, 1, "30"),
    ("cfr24", 0.25, 0.41, "30"),
    ("cfr24", 0, 0.721, "24"),  # equal rate, unaligned duration
    ("cfr24", 1 / 3, 0.5, "30000/1001"),
    ("vfr", 0, None, "30"),
    ("vfr", 0.123, None, "25"),
    ("vfr", 0.41, 1.45, "10"),  # the last frame's slot outruns the end of stream
    ("vfr", 0.2, 0.4, "30"),
]


@pytest.mark.parametrize(("name", "start", "duration", "fps"), SELECTION_CASES)
def test_select_frames_matches_ffmpeg(ffmpeg, clips, tmp_path, name, start, duration, fps):
    """start_time=S: the frame FFmpeg writes at each position (identified by content) is the one select_frames names, and as many."""
    clip = clips[name]
    vf = f"settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps={fps}:start_time={start}:round=up,format=rgb24"
    paths = _run_ffmpeg(ffmpeg, clip, tmp_path / "ff", start, duration, fps, vf, [], "f_%05d.png")
    assert _identify(paths, _sources(clip)) == _model(clip, Fraction(fps), start, duration)


HF_SELECTION_CASES = [  # hyperframes' start_time=0, with -frames:v where its segmented form adds it
    ("cfr30", 0.5, 0.5, "30", None),  # output k is the frame shown at S + k/F: frames 15..29
    ("cfr30", 0.41, None, "30", None),
    ("cfr30", 0.2, 0.4, "60", 7),
    ("cfr24", 1 / 3, 0.5, "30000/1001", None),
    ("vfr", 0.123, None, "25", None),
    ("vfr", 0.41, 0.45, "10", None),
    ("vfr", 0.2, None, "30", 5),
]


@pytest.mark.parametrize(("name", "start", "duration", "fps", "frames"), HF_SELECTION_CASES)
def test_select_frames_matches_ffmpeg_start_time_0(ffmpeg, clips, tmp_path, name, start, duration, fps, frames):
    """-ss S with the fps filter's start_time=0 (hyperframes' command), and -frames:v N: the same frames, as many."""
    clip = clips[name]
    vf = f"settb=intb/2,setpts=PTS-lte(TB\\,0.001),fps={fps}:start_time=0:round=up,format=rgb24"
    extra = ["-frames:v", str(frames)] if frames is not None else []
    paths = _run_ffmpeg(ffmpeg, clip, tmp_path / "ff", start, duration, fps, vf, extra, "f_%05d.png")
    assert paths
    assert _identify(paths, _sources(clip)) == _model(clip, Fraction(fps), start, duration, fps_start=0, max_frames=frames)


def _sizes_close(ref: list[Path], ours: tuple[Path, ...]) -> float:
    return max(abs(b.stat().st_size / a.stat().st_size - 1) for a, b in zip(ref, ours))


@pytest.mark.parametrize(("ext", "extra"), [("jpg", ["-q:v", "2"]), ("png", ["-q:v", "0", "-compression_level", "1"])])
@pytest.mark.parametrize(("start", "duration", "guess"), [(0, 0.5, "bt709"), (0.3, 0.4, "smpte170m"), (0.1, None, None)])
def test_pixel_parity_with_hyperframes_ffmpeg_chain(ffmpeg, clips, tmp_path, ext, extra, start, duration, guess):
    """hyperframes' exact command (S > 0 with start_time=0, a forced matrix or the stream's, JPEG's
    chain or PNG's): same names, same frames, the same pixels (PSNR >= 45 dB required, identical
    measured) and file sizes within 5 % of FFmpeg's, on a grainy untagged clip."""
    clip = clips["grain"]
    pattern = f"frame_%05d.{ext}"
    vf = HF_CHAIN.format(
        fps=30, guess=f"setparams=colorspace={guess}," if guess else "", tail=HF_JPEG_TAIL if ext == "jpg" else ""
    )
    ref = _run_ffmpeg(ffmpeg, clip, tmp_path / "ff", start, duration, "30", vf, extra, pattern)
    matrix = {"bt709": "bt709", "smpte170m": "bt601", None: "stream"}[guess]
    req = ExtractRequest(
        clip,
        tmp_path / "ours",
        pattern=pattern,
        fps=Fraction(30),
        start=start,
        duration=duration,
        jpeg_qscale=2 if ext == "jpg" else None,
        colour_matrix=matrix,  # type: ignore[arg-type]
        png_compression_level=1,
    )
    result = extract_clip(req)
    assert [p.name for p in result.paths] == [p.name for p in ref]
    sources = _sources(clip)
    assert _identify(list(result.paths), sources) == _identify(ref, sources) == list(result.source_frames)
    worst = min(_psnr(a, b) for a, b in zip(ref, result.paths))
    assert worst >= 45.0, worst
    assert _sizes_close(ref, result.paths) <= 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ff", "ours"]  # no partial folder left


def test_segmented_form_frames_and_start_number(ffmpeg, clips, tmp_path):
    """hyperframes' segmented extraction: -ss/-t per segment, -frames:v N -start_number K, into one folder."""
    clip = clips["vfr"]
    vf = HF_CHAIN.format(fps=30, guess="", tail=HF_JPEG_TAIL)
    (tmp_path / "ff").mkdir()
    (tmp_path / "ours").mkdir()
    for start, frames, first in ((0, 9, 1), (0.3, 9, 10), (0.6, 20, 19)):
        cmd = [ffmpeg, "-v", "error", "-noaccurate_seek", "-ss", str(start), "-i", str(clip), "-t", "0.3", "-vf", vf]
        cmd += ["-frames:v", str(frames), "-start_number", str(first), "-q:v", "2", "-y", str(tmp_path / "ff" / "frame_%05d.jpg")]
        subprocess.run(cmd, check=True, capture_output=True)
        req = ExtractRequest(
            clip,
            tmp_path / "ours",
            fps=Fraction(30),
            start=start,
            duration=0.3,
            max_frames=frames,
            start_number=first,
            jpeg_qscale=2,
            atomic=False,
        )
        extract_clip(req)
    ref, ours = sorted((tmp_path / "ff").iterdir()), sorted((tmp_path / "ours").iterdir())
    assert [p.name for p in ours] == [p.name for p in ref] and len(ref) > 18
    assert min(_psnr(a, b) for a, b in zip(ref, ours)) >= 45.0


def test_size_fits_and_png_keeps_the_picture(clips, tmp_path):
    result = extract_clip(
        ExtractRequest(clips["hd"], tmp_path / "o", pattern="f%d.png", fps=Fraction(10), size=(160, 160), start_number=0)
    )
    assert result.paths[0].name == "f0.png" and result.backend == "cpu" and result.decoder == "pyav"
    assert Image.open(result.paths[0]).size == (160, 120)
    assert len(result.paths) == 8  # 24 frames at 30 fps = 0.8 s at 10 fps


def test_every_frame_without_fps(clips, tmp_path):
    result = extract_clip(ExtractRequest(clips["vfr"], tmp_path / "o", start=0.2, duration=0.3))
    c = probe_clip(clips["vfr"], "t")
    want = [i for i, p in enumerate(c.pts) if Fraction("0.2") <= p * c.time_base < Fraction("0.5")]
    assert list(result.source_frames) == want


def test_duplicates_are_encoded_once_and_written_each(clips, tmp_path):
    result = extract_clip(ExtractRequest(clips["cfr30"], tmp_path / "o", fps=Fraction(60), duration=0.1))
    assert list(result.source_frames) == [0, 0, 1, 1, 2, 2]
    assert result.paths[0].read_bytes() == result.paths[1].read_bytes()


# ---------------------------------------------------------------------------- atomicity


def test_failure_midway_leaves_no_folder(clips, tmp_path, monkeypatch):
    import gpupipe.extract as ex

    real = ex._write
    calls = []

    def failing(path, data, atomic_dir):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(path, data, atomic_dir)

    monkeypatch.setattr(ex, "_write", failing)
    with pytest.raises(ExtractError, match="No space left") as e:
        extract_clip(ExtractRequest(clips["cfr30"], tmp_path / "o", fps=Fraction(30)))
    assert e.value.clip == str(clips["cfr30"])
    assert list(tmp_path.iterdir()) == []


def test_non_atomic_writes_complete_files_only(clips, tmp_path, monkeypatch):
    import gpupipe.extract as ex

    real_replace = os.replace
    done = []

    def replace(src, dst):
        if len(done) == 4:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)
        done.append(dst)

    monkeypatch.setattr(ex.os, "replace", replace)
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(ExtractError, match="Input/output error"):
        extract_clip(ExtractRequest(clips["cfr30"], out, fps=Fraction(30), atomic=False))
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:05d}.jpg" for i in range(1, 5)]  # no temporary file left
    for p in out.iterdir():
        Image.open(p).load()


def test_truncated_clip_fails_midway_and_leaves_nothing(tmp_path):
    clip = write_clip(
        tmp_path / "t.mp4", frames=60, size=(64, 48), options={"g": "10"}, container_options={"movflags": "+faststart"}
    )
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    with pytest.raises(ExtractError, match="truncated") as e:
        extract_clip(ExtractRequest(clip, out, fps=Fraction(30)))
    assert str(clip) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mp4"]


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("pattern", ["frame.jpg", "f_%d_%d.jpg", "f_%05d.gif", "sub/f_%d.jpg", "f_%s.jpg", ""])
def test_bad_pattern(clips, tmp_path, pattern):
    with pytest.raises(ExtractError, match="bad pattern") as e:
        extract_clip(ExtractRequest(clips["cfr30"], tmp_path / "o", pattern=pattern))
    assert str(clips["cfr30"]) in str(e.value)


def test_out_dir_exists(clips, tmp_path):
    with pytest.raises(ExtractError, match="exists"):
        extract_clip(ExtractRequest(clips["cfr30"], tmp_path))
    with pytest.raises(ExtractError, match="does not exist"):
        extract_clip(ExtractRequest(clips["cfr30"], tmp_path / "missing", atomic=False))


def test_not_a_video_and_missing(tmp_path):
    txt = tmp_path / "notes.mp4"
    txt.write_text("secret words, not a video\n" * 20)
    with pytest.raises(ExtractError) as e:
        extract_clip(ExtractRequest(txt, tmp_path / "o"))
    assert str(txt) in str(e.value) and "secret" not in str(e.value)
    with pytest.raises(ExtractError, match="no such file"):
        extract_clip(ExtractRequest(tmp_path / "none.mp4", tmp_path / "o"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_start_past_the_end_selects_nothing(clips, tmp_path):
    with pytest.raises(NothingToExtract, match="no frame selected") as e:
        extract_clip(ExtractRequest(clips["cfr30"], tmp_path / "o", fps=Fraction(30), start=5.0))
    assert isinstance(e.value, ExtractError) and e.value.clip == str(clips["cfr30"])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kw",
    [
        {"fps": Fraction(0)},
        {"start": -1.0},
        {"duration": 0.0},
        {"size": (0, 10)},
        {"jpeg_qscale": 40},
        {"jpeg_quality": 0},
        {"start_number": -1},
    ],
)
def test_bad_options(clips, tmp_path, kw):
    with pytest.raises(ExtractError):
        extract_clip(ExtractRequest(clips["cfr30"], tmp_path / "o", **kw))


# ---------------------------------------------------------------------------- pure parts


def test_output_names_follow_ffmpeg():
    assert output_name("frame_%05d.jpg", 7) == "frame_00007.jpg"
    assert output_name("f%d.png", 12) == "f12.png"
    assert output_name("f%3d.png", 5) == "f005.png"  # av_get_frame_filename pads %Nd with zeros
    assert output_name("100%%_%02d.jpg", 3) == "100%_03.jpg"


def test_qscale_table():
    assert jpeg_quality_for(2) == 92
    qs = [jpeg_quality_for(q) for q in range(1, 32)]
    assert all(a >= b for a, b in itertools.pairwise(qs))
    with pytest.raises(ValueError):
        jpeg_quality_for(0)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 120),
    rate=st.sampled_from([Fraction(24), Fraction(25), Fraction(30), Fraction(30000, 1001), Fraction(60)]),
    fps=st.sampled_from([Fraction(10), Fraction(24), Fraction(30), Fraction(30000, 1001), Fraction(60)]),
    start=st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 1.0, 1.7]),
    duration=st.none() | st.floats(0.01, 5.0),
)
def test_select_frames_properties(n, rate, fps, start, duration):
    tb = Fraction(1, 90000)
    pts = [round(Fraction(i) / rate / tb) * tb for i in range(n)]
    sel = select_frames(pts, fps, start, duration, end=pts[-1] + 1 / rate, time_base=tb)
    assert sel == sorted(sel)
    assert all(0 <= i < n for i in sel)
    for k, i in enumerate(sel):  # each output shows a frame from at or before its time (2S + k/fps, see fps_select)
        assert i == sel[0] == 0 or pts[i] <= 2 * Fraction(repr(start)) + Fraction(k) / fps + Fraction(1, 10**6)
    if start == 0:  # from 0 the count is the clip's length at the output rate, cut by -t
        want = math.ceil(n * fps / rate)
        if duration is not None:
            d = Fraction(math.trunc(Fraction(repr(duration)) * 10**6), 10**6) * fps
            want = min(want, math.floor(d + Fraction(1, 2)))
        assert len(sel) == want


# ---------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_extraction_matches_cpu(clips, tmp_path):
    """NVDEC -> resize -> nvImageCodec against PyAV -> Pillow: same selection, PSNR >= 40 dB (JPEG q92)."""
    from gpupipe import FrameEncoder

    req = ExtractRequest(clips["hd"], tmp_path / "cpu", fps=Fraction(30), start=0.1, duration=0.6, jpeg_qscale=2)
    cpu = extract_clip(req)
    with FrameEncoder(backend="gpu") as enc:
        gpu = extract_clip(
            ExtractRequest(clips["hd"], tmp_path / "gpu", fps=Fraction(30), start=0.1, duration=0.6, jpeg_qscale=2), encoder=enc
        )
    assert gpu.backend == "gpu"
    assert gpu.source_frames == cpu.source_frames
    assert min(_psnr(a, b) for a, b in zip(cpu.paths, gpu.paths)) >= 40.0


# ---------------------------------------------------------------------------- CLI


def test_cli_extract_summary_and_json(clips, tmp_path):
    from test_cli import run

    r = run(
        "extract",
        str(clips["cfr30"]),
        str(tmp_path / "a"),
        "--fps",
        "30",
        "--start",
        "0.2",
        "--duration",
        "0.6",
        "--qscale",
        "2",
        "--backend",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("18 frames -> ") and "(cpu, pyav)" in r.stdout  # from 0.2 s, 0.6 s at 30 fps
    r = run("extract", str(clips["cfr30"]), str(tmp_path / "c"), "--fps", "30", "--start", "0.2", "--fps-start", "0.2")
    assert r.returncode == 0 and r.stdout.startswith("33 frames -> "), r.stderr  # from frame 12 (2 x 0.2 s) to 44
    r = run("extract", str(clips["cfr30"]), str(tmp_path / "d"), "--frames", "4", "--colour-matrix", "bt709", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["source_frames"] == [0, 1, 2, 3], r.stderr
    r = run(
        "extract",
        str(clips["cfr30"]),
        str(tmp_path / "b"),
        "--fps",
        "30000/1001",
        "--pattern",
        "f%d.png",
        "--size",
        "32x32",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["count"] == len(data["paths"]) == len(data["source_frames"]) and data["paths"][0].endswith("/f1.png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "x.jpg"], "bad pattern"),
        (["--fps", "0"], "--fps"),
        (["--quality", "90", "--qscale", "2"], "exclude"),
        (["--start", "9"], "no frame selected"),
        (["--colour-matrix", "bt2020"], "--colour-matrix"),
    ],
)
def test_cli_extract_errors(clips, tmp_path, args, message):
    from test_cli import run

    r = run("extract", str(clips["cfr30"]), str(tmp_path / "o"), "--fps", "30", *args)
    assert r.returncode == 2 and message in r.stderr and r.exception is None
    assert not (tmp_path / "o").exists()


class _Recorded:
    """A FrameCache's reservations, recorded: each batch's bytes and the cache's work in flight meanwhile."""

    def __init__(self, cache):
        self.cache = cache
        self.max_bytes = cache.max_bytes
        self.held: list[int] = []
        self.inflight: list[int] = []

    def reserve(self, nbytes, *, label="work"):
        from contextlib import contextmanager

        @contextmanager
        def run():
            with self.cache.reserve(nbytes, label=label) as got:
                self.held.append(got)
                self.inflight.append(self.cache.stats().inflight_bytes)
                yield got

        return run()


def test_a_budget_counts_each_batch_and_the_decoder_then_closes_it(clips, tmp_path):
    """In the service an extraction's batches and its decoder count in the lane's byte budget: each
    batch reserves its frames' work plus the open decoder's state, nothing stays held after, and the
    decoder opened for it is closed (its state would count nowhere)."""
    import gpupipe

    cache = gpupipe.FrameCache(64, 24 * 2**20)  # room for a few frames' work at a time: several batches
    budget = _Recorded(cache)
    with gpupipe.FrameEncoder(backend="cpu") as enc:
        clip = probe_clip(clips["hd"], "hd")
        req = ExtractRequest(clips["hd"], tmp_path / "out", fps=Fraction(30), pattern="f_%03d.jpg")
        res = extract_clip(req, encoder=enc, budget=budget)
        assert len(res.paths) == 24
        assert len(budget.held) > 1 and max(budget.held) <= cache.max_bytes and budget.inflight == budget.held
        from gpupipe.frames.clip import decoder_state_bytes

        assert min(budget.held) > decoder_state_bytes(clip)  # the decoder's state is in every batch's reservation
        st = cache.stats()
        assert st.inflight_bytes == 0 and st.kept_bytes == 0
        assert enc.videos.stats().open == 0  # closed at the end: uncounted state never stays open
        extract_clip(ExtractRequest(clips["hd"], tmp_path / "out2", fps=Fraction(30)), encoder=enc)
        assert enc.videos.stats().open == 1  # without a budget the decoder stays open for the next request


def test_a_full_budget_times_out_and_leaves_nothing(clips, tmp_path):
    """When the budget stays full the extraction gives up with BudgetTimeout (retryable: 503 in the
    service), not an ExtractError, and leaves no folder behind."""
    import gpupipe
    from gpupipe.errors import BudgetTimeout

    cache = gpupipe.FrameCache(64, 64 * 2**20, admission_timeout=0.2)
    with gpupipe.FrameEncoder(backend="cpu") as enc, cache.reserve(64 * 2**20 - 1024, label="other work"):
        with pytest.raises(BudgetTimeout):
            extract_clip(ExtractRequest(clips["hd"], tmp_path / "out", fps=Fraction(30)), encoder=enc, budget=cache)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
