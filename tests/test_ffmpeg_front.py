"""The ffmpeg front (``gpupipe-ffmpeg``): hyperframes' extraction commands recognised, everything else
handed to the real ffmpeg unchanged, no loop back to itself, and the same frames as ffmpeg writes.

The end-to-end tests run the real ffmpeg (``find_ffmpeg``: imageio-ffmpeg's, or ``ffmpeg`` on PATH);
without one they skip, unless ``FFMPEG_REQUIRED=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from gpupipe.errors import ConfigError
from gpupipe.extract import ExtractRequest
from gpupipe.ffmpeg_front import EXEC_MARK, LOG_LEVELS, Extraction, PassThrough, parse_command, parse_fit
from gpupipe.samples import write_clip
from gpupipe.tools.video_clips import make_clip

ROOT = Path(__file__).resolve().parent.parent

# hyperframes 0.8.170's filters (videoFrameExtractor.ts), verbatim.
SDR_CANVAS = "setparams=color_primaries=bt709:color_trc=iec61966-2-1"
JPEG_BT601 = (
    "scale=flags=neighbor+accurate_rnd,format=gbrp,scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p"
)


def js(x: float) -> str:
    """A number as JavaScript's ``String(x)`` writes it (the renderer builds its argv so)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def hyperframes_argv(
    clip, out_dir, *, start=0.0, duration=1.0, fps="30", fmt="jpg", guess="smpte170m", quality=95, segment=None, decoder=None
):
    """The argv hyperframes 0.8.170 gives ffmpeg for a clip window (``extractVideoFramesRange``);
    ``segment=(N, K)``: its segmented form's ``-frames:v N -start_number K``; ``decoder``: its ``-c:v``."""
    vf = ["settb=intb/2", "setpts=PTS-lte(TB\\,0.001)", f"fps={fps}:start_time=0:round=up"]
    vf += [f"setparams=colorspace={guess}"] if guess else []
    vf += [SDR_CANVAS] + ([JPEG_BT601] if fmt == "jpg" else [])
    enc = ["-q:v", str(math.ceil((100 - quality) / 3)) if fmt == "jpg" else "0"]
    enc += ["-compression_level", "1"] if fmt == "png" else []
    enc += ["-y", str(Path(out_dir) / f"frame_%05d.{fmt}")]
    seg = ["-frames:v", str(segment[0]), "-start_number", str(segment[1])] if segment else []
    dec = ["-c:v", decoder] if decoder else []
    return [*dec, "-noaccurate_seek", "-ss", js(start), "-i", str(clip), "-t", js(duration), "-vf", ",".join(vf), *seg, *enc]


HF = hyperframes_argv("c.mp4", "out")
VF = HF[HF.index("-vf") + 1]


def expected(clip="c.mp4", out_dir="out", **kw) -> ExtractRequest:
    base = ExtractRequest(
        clip=Path(clip),
        out_dir=Path(out_dir),
        fps=Fraction(30),
        start=0.0,
        duration=1.0,
        jpeg_qscale=2,
        atomic=False,
        fps_start=0.0,
        colour_matrix="bt601",
    )
    return replace(base, **kw)


MATRIX = {None: "stream", "smpte170m": "bt601", "bt709": "bt709"}


# --- recognised forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("guess", [None, "smpte170m", "bt709"])
@pytest.mark.parametrize(("fps", "rate"), [("30", Fraction(30)), ("24", Fraction(24)), ("30000/1001", Fraction(30000, 1001))])
def test_hyperframes_jpeg_window_is_recognised(guess, fps, rate):
    argv = hyperframes_argv("c.mp4", "out", duration=2.25, fps=fps, guess=guess)
    assert parse_command(argv) == Extraction(expected(duration=2.25, fps=rate, colour_matrix=MATRIX[guess]))


@pytest.mark.parametrize("guess", [None, "smpte170m", "bt709"])
def test_hyperframes_png_window_is_recognised(guess):
    argv = hyperframes_argv("/abs/clip.mov", "/tmp/x/v1", duration=4, fmt="png", guess=guess)
    want = expected(
        "/abs/clip.mov",
        "/tmp/x/v1",
        duration=4.0,
        pattern="frame_%05d.png",
        jpeg_qscale=None,
        colour_matrix=MATRIX[guess],
        png_compression_level=1,
    )
    assert parse_command(argv) == Extraction(want)


def test_a_window_from_s_keeps_start_time_0():
    """-ss S with start_time=0: output k is the frame shown at S + k/F (start=S, fps_start=0)."""
    assert parse_command(hyperframes_argv("c.mp4", "out", start=12.5)) == Extraction(expected(start=12.5))


def test_the_segmented_form_with_an_alpha_decoder_and_another_quality():
    argv = hyperframes_argv("c.webm", "out", start=0.5, duration=0.25, segment=(8, 16), decoder="libvpx-vp9", quality=80)
    want = expected("c.webm", start=0.5, duration=0.25, max_frames=8, start_number=16, jpeg_qscale=7)
    assert parse_command(argv) == Extraction(want, decoder="libvpx-vp9")


def test_durations_are_read_to_the_microsecond_as_ffmpeg_reads_them():
    what = parse_command(hyperframes_argv("c.mp4", "out", duration=1 / 3))
    assert isinstance(what, Extraction) and what.request.duration == 0.333333


def test_options_in_any_order_within_their_place_and_the_quiet_globals():
    argv = ["-hide_banner", "-loglevel", "error", "-nostdin", "-ss", "0.0", "-noaccurate_seek", "-i", "c.mp4", "-y",
            "-vf", VF, "-f", "image2", "-start_number", "7", "-q:v", "2", "-t", "1",
            "-nostats", "out/frame_%05d.jpg"]  # fmt: skip
    assert parse_command(argv) == Extraction(expected(start_number=7), LOG_LEVELS["error"])


def test_without_ss_and_t_the_whole_clip_from_its_start():
    argv = ["-i", "c.mp4", *HF[HF.index("-vf") :]]
    assert parse_command(argv) == Extraction(expected(duration=None))


def test_a_relative_pattern_writes_into_the_current_folder_and_jpeg_is_jpeg():
    argv = [*HF[:-1], "f_%d.jpeg"]
    assert parse_command(argv) == Extraction(expected(out_dir=".", pattern="f_%d.jpeg"))


@pytest.mark.parametrize(("flag", "level"), [("error", 16), ("repeat+level+verbose", 40), ("quiet", -8), ("48", 48)])
def test_loglevel_is_read_as_ffmpeg_reads_it(flag, level):
    what = parse_command(["-loglevel", flag, *HF])
    assert isinstance(what, Extraction) and what.loglevel == level
    assert parse_command(HF).loglevel == LOG_LEVELS["info"]


def test_fit_becomes_the_requests_size():
    what = parse_command(HF, fit=(1920, 1080))
    assert isinstance(what, Extraction) and what.request.size == (1920, 1080)


@pytest.mark.parametrize(("value", "size"), [("1920x1080", (1920, 1080)), (" 640X360 ", (640, 360)), ("", None), (None, None)])
def test_parse_fit(value, size):
    assert parse_fit(value) == size


@pytest.mark.parametrize("value", ["1920", "1920x", "0x1080", "-1x5", "1920x1080x3", "w x h", "1e3x2"])
def test_parse_fit_refuses_what_is_not_a_size(value):
    with pytest.raises(ConfigError, match="GPUPIPE_EXTRACT_FIT"):
        parse_fit(value)


# --- everything else passes through ------------------------------------------------------------------


def _edit(argv: list[str], old: str, new: list[str]) -> list[str]:
    i = argv.index(old)
    return argv[:i] + new + argv[i + 1 :]


def _value(argv: list[str], option: str, new: str) -> list[str]:
    i = argv.index(option) + 1
    return [*argv[:i], new, *argv[i + 1 :]]


NOT_RECOGNISED = {
    "version": ["-version"],
    "filters probe": ["-hide_banner", "-filters"],
    "no arguments": [],
    "an unknown option": _edit(HF, "-y", ["-threads", "2", "-y"]),
    "another decoder (-c:v)": ["-c:v", "h264_cuvid", *HF],
    "-c:v after -i": _edit(HF, "-y", ["-c:v", "libvpx-vp9", "-y"]),
    "hwaccel": ["-hwaccel", "videotoolbox", *HF],
    "-frames:v 0": _edit(HF, "-vf", ["-frames:v", "0", "-vf"]),
    "final frame (output -ss)": ["-i", "c.mp4", "-ss", "3", "-frames:v", "1", "-vf", VF, "-q:v", "2", "-y", "out/frame_%05d.jpg"],
    "another colorspace guess": _value(HF, "-vf", VF.replace("colorspace=smpte170m", "colorspace=bt2020nc")),
    "q:v 32": _value(HF, "-q:v", "32"),
    "q:v 0 for a jpg": _value(HF, "-q:v", "0"),
    "accurate seek": [a for a in HF if a != "-noaccurate_seek"],
    "start_time=S (the issue's paraphrase)": _value(HF, "-vf", VF.replace("start_time=0:", "start_time=0.5:")),
    "0.8.10's fps=30": ["-ss", "0", "-i", "c.mp4", "-t", "1", "-vf", "fps=30", "-q:v", "2", "-y", "out/frame_%05d.jpg"],
    "tone map": _value(HF, "-vf", VF.replace(SDR_CANVAS, "zscale=t=linear," + SDR_CANVAS)),
    "png chain to a jpg": _value(HF, "-vf", VF.replace("," + JPEG_BT601, "")),
    "jpg chain to a png": [*HF[:-1], "out/frame_%05d.png"],
    "no -y": [a for a in HF if a != "-y"],
    "-n": _edit(HF, "-y", ["-n"]),
    "two inputs": _edit(HF, "-t", ["-i", "d.mp4", "-t"]),
    "stdin input": _value(HF, "-i", "-"),
    "URL input": _value(HF, "-i", "https://example.com/c.mp4"),
    "-t with a suffix": _value(HF, "-t", "500ms"),
    "-t as HH:MM:SS": _value(HF, "-t", "00:00:00.5"),
    "-t in JS exponent form": _value(HF, "-t", "1e-7"),
    "png compression_level 10": _value(hyperframes_argv("c.mp4", "out", fmt="png"), "-compression_level", "10"),
    "q:v as a float": _value(HF, "-q:v", "2.0"),
    "no pattern": [*HF[:-1], "out/frame.jpg"],
    "two patterns": [*HF[:-1], "out/%d/frame_%05d.jpg"],
    "literal %%": [*HF[:-1], "out/frame_%%_%05d.jpg"],
    "webp output": [*HF[:-1], "out/frame_%05d.webp"],
    "video output": ["-i", "c.mp4", "-c:v", "libx264", "-y", "out.mp4"],
    "image2 input (the encode)": ["-framerate", "30", "-i", "out/frame_%05d.png", "-y", "out.mp4"],
    "mjpeg muxer": _edit(HF, "-y", ["-f", "mjpeg", "-y"]),
    "option given twice": _edit(HF, "-y", ["-t", "2", "-y"]),
    "option without its value": [*HF[:-2], "-y", "-t"],
    "a bad loglevel": ["-loglevel", "loud", *HF],
    "stray argument": _edit(HF, "-y", ["stray", "-y"]),
}


@pytest.mark.parametrize("argv", NOT_RECOGNISED.values(), ids=NOT_RECOGNISED.keys())
def test_other_commands_pass_through(argv):
    what = parse_command(argv)
    assert isinstance(what, PassThrough) and what.reason


KNOWN = {"-y", "-n", "-i", "-ss", "-t", "-vf", "-q:v", "-compression_level", "-start_number", "-f", "-hide_banner", "-nostdin",
         "-nostats", "-loglevel", "-v", "-noaccurate_seek", "-c:v", "-frames:v"}  # fmt: skip


@given(
    form=st.sampled_from([hyperframes_argv("c.mp4", "o", fmt=f, guess=g) for f in ("jpg", "png") for g in (None, "smpte170m")]),
    option=st.from_regex(r"-[a-z_:]{1,12}", fullmatch=True).filter(lambda o: o not in KNOWN),
    value=st.one_of(st.none(), st.sampled_from(["1", "x", "libx264"])),
    at=st.integers(0, 30),
)
def test_any_option_the_front_does_not_know_passes_through(form, option, value, at):
    assert isinstance(parse_command(form), Extraction)
    at = min(at, len(form) - 1)
    argv = form[:at] + [option] + ([value] if value else []) + form[at:]
    assert isinstance(parse_command(argv), PassThrough)


# --- the front as a process: pass-through, fallback, no loop ---------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_ffmpeg(tmp_path) -> Path:
    """``bin/ffmpeg``: tests/fake_ffmpeg.py run by this Python."""
    return _script(tmp_path / "bin" / "ffmpeg", f"#!{sys.executable}\n" + (ROOT / "tests" / "fake_ffmpeg.py").read_text())


@pytest.fixture
def front(tmp_path) -> Path:
    """``front/gpupipe-ffmpeg``: a wrapper as pip's console script is, starting gpupipe.ffmpeg_front."""
    return _script(tmp_path / "front" / "gpupipe-ffmpeg", f'#!/bin/sh\nexec "{sys.executable}" -m gpupipe.ffmpeg_front "$@"\n')


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPIPE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["FAKE_FFMPEG_RECORD"] = str(tmp_path / "record.jsonl")
    env.update(extra)
    return env


def _records(tmp_path: Path) -> list[dict]:
    path = tmp_path / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run(exe: Path | str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *argv], check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


CASES = {
    "version": ["-version"],
    "unknown option": ["-hide_banner", "-foo", "1", "-i", "c.mp4", "x.jpg"],
    "missing input (encode)": ["-i", "nope.mp4", "-c:v", "libx264", "-y", "out.mp4"],
    "hwaccel": NOT_RECOGNISED["hwaccel"],
}


@pytest.mark.parametrize("argv", CASES.values(), ids=CASES.keys())
def test_passes_through_unchanged_with_ffmpegs_status_stdout_and_stderr(tmp_path, fake_ffmpeg, front, argv):
    env = _env(tmp_path, GPUPIPE_REAL_FFMPEG=str(fake_ffmpeg))
    direct = _run(fake_ffmpeg, argv, env, cwd=tmp_path)
    via = _run(front, argv, env, cwd=tmp_path)
    assert (via.returncode, via.stdout, via.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    assert [r["argv"] for r in _records(tmp_path)] == [argv, argv]
    assert _records(tmp_path)[1]["mark"] == "1"


def test_next_ffmpeg_on_path_that_is_not_the_front(tmp_path, fake_ffmpeg, front):
    """PATH may hold the front as ``ffmpeg`` (a link, or a wrapper): the front skips itself."""
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "ffmpeg").symlink_to(front)
    _script(tmp_path / "copy" / "ffmpeg", front.read_text())
    path = os.pathsep.join([str(tmp_path / "link"), str(tmp_path / "copy"), str(fake_ffmpeg.parent), os.environ["PATH"]])
    r = _run(tmp_path / "link" / "ffmpeg", ["-version"], _env(tmp_path, PATH=path))
    assert r.returncode == 0 and r.stdout.startswith("ffmpeg version fake-9.0")
    assert [rec["argv"] for rec in _records(tmp_path)] == [["-version"]]


def test_only_fronts_on_path_is_an_error_not_a_loop(tmp_path, front):
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "ffmpeg").symlink_to(front)
    # PATH holds only the link to the front (whatever ffmpeg the machine has elsewhere is not on it)
    r = _run(front, ["-version"], _env(tmp_path, PATH=str(tmp_path / "link")))
    assert r.returncode == 1 and "no real ffmpeg" in r.stderr


def test_real_ffmpeg_naming_the_front_is_an_error(tmp_path, front):
    r = _run(front, ["-version"], _env(tmp_path, GPUPIPE_REAL_FFMPEG=str(front)))
    assert r.returncode == 1 and "is gpupipe-ffmpeg itself" in r.stderr


def test_a_loop_it_cannot_see_stops_at_the_mark(tmp_path, front):
    """A wrapper that does not name gpupipe but runs the front: the second front sees the mark and stops."""
    hidden = _script(tmp_path / "hidden" / "ffmpeg", '#!/bin/sh\nexec "$WRAPPED" "$@"\n')
    r = _run(front, ["-version"], _env(tmp_path, GPUPIPE_REAL_FFMPEG=str(hidden), WRAPPED=str(front)))
    assert r.returncode == 1 and "gpupipe-ffmpeg again" in r.stderr
    assert EXEC_MARK == "GPUPIPE_FFMPEG_FRONT_EXEC"


def test_a_bad_fit_is_an_error_that_names_the_variable(tmp_path, fake_ffmpeg, front):
    r = _run(front, ["-version"], _env(tmp_path, GPUPIPE_REAL_FFMPEG=str(fake_ffmpeg), GPUPIPE_EXTRACT_FIT="big"))
    assert r.returncode == 1 and "GPUPIPE_EXTRACT_FIT" in r.stderr and _records(tmp_path) == []


def test_the_log_file_says_what_it_did(tmp_path, fake_ffmpeg, front):
    log = tmp_path / "front.jsonl"
    _run(front, ["-version"], _env(tmp_path, GPUPIPE_REAL_FFMPEG=str(fake_ffmpeg), GPUPIPE_FFMPEG_LOG=str(log)))
    (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert rec["action"] == "pass" and rec["argv"] == ["-version"] and rec["reason"]


def test_pass_through_reason_on_stderr_only_at_verbose(tmp_path, fake_ffmpeg, front):
    env = _env(tmp_path, GPUPIPE_REAL_FFMPEG=str(fake_ffmpeg))
    quiet = _run(front, ["-hide_banner", "-i", "c.mp4", "out.mp4"], env, cwd=tmp_path)
    loud = _run(front, ["-v", "verbose", "-hide_banner", "-i", "c.mp4", "out.mp4"], env, cwd=tmp_path)
    assert "gpupipe-ffmpeg" not in quiet.stderr and "[gpupipe-ffmpeg] to the real ffmpeg" in loud.stderr


# --- end to end: the front against the real ffmpeg -------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory, ffmpeg) -> Path:
    """36 frames at 30 fps, 640x360, grainy testsrc2 (:func:`gpupipe.tools.video_clips.make_clip`), untagged:
    hyperframes guesses smpte170m under 720 lines; the cases force bt709 too."""
    return make_clip(tmp_path_factory.mktemp("clip"), (640, 360), 36, "h264", ffmpeg)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> Path:
    """A BT.709-tagged clip (hyperframes adds no setparams=colorspace for it), B-frames, keyframe every 10."""
    opts = {"g": "10", "bf": "2", "x264-params": "colorprim=bt709:transfer=bt709:colormatrix=bt709"}
    return write_clip(tmp_path_factory.mktemp("tagged") / "t.mp4", frames=36, size=(640, 360), fps=30, options=opts)


def psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    assert x.shape == y.shape, (a.name, x.shape, y.shape)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _both(tmp_path, ffmpeg, front, make_argv, **env):
    """Run ``make_argv(out_dir)`` through the real ffmpeg and through the front: the two folders, the front's run, its log."""
    ref, got = tmp_path / "by-ffmpeg", tmp_path / "by-front"
    ref.mkdir()
    got.mkdir()
    direct = _run(ffmpeg, make_argv(ref), _env(tmp_path))
    assert direct.returncode == 0, direct.stderr[-2000:]
    log = tmp_path / "front.jsonl"
    via = _run(front, make_argv(got), _env(tmp_path, GPUPIPE_REAL_FFMPEG=ffmpeg, GPUPIPE_FFMPEG_LOG=str(log), **env))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return ref, got, via, records


E2E = {
    "jpg, 1 s": {"duration": 1},
    "jpg, 24 fps, 0.9 s": {"duration": 0.9, "fps": "24"},
    "jpg, past the end": {"duration": 5},
    "jpg, from 0.5 s": {"start": 0.5, "duration": 0.5},
    "jpg, HD guess bt709": {"duration": 0.4, "guess": "bt709"},
    "jpg, quality 80 (-q:v 7)": {"duration": 0.3, "quality": 80},
    "jpg, segment (-frames:v, -start_number)": {"start": 0.3, "duration": 0.4, "segment": (7, 10)},
    "jpg, tagged (no guess)": {"duration": 0.5, "guess": None, "clip": "tagged"},
    "png, 0.7 s": {"duration": 0.7, "fmt": "png"},
    "png, from 0.2 s, bt709": {"start": 0.2, "duration": 0.3, "fmt": "png", "guess": "bt709"},
    "png, ntsc rate, tagged": {"duration": 0.6, "fmt": "png", "guess": None, "fps": "30000/1001", "clip": "tagged"},
}


@pytest.mark.parametrize("kw", E2E.values(), ids=E2E.keys())
def test_front_writes_what_ffmpeg_writes(tmp_path, ffmpeg, front, clip, tagged, kw):
    """Same names and count, PSNR >= 45 dB per frame (the same pixels, measured) and sizes within 5 %."""
    kw = dict(kw)
    source = tagged if kw.pop("clip", None) == "tagged" else clip
    ref, got, via, records = _both(tmp_path, ffmpeg, front, lambda d: hyperframes_argv(source, d, **kw))
    assert via.returncode == 0, via.stderr[-2000:]
    assert [r["action"] for r in records] == ["extract"], records
    names = sorted(p.name for p in ref.iterdir())
    assert names and sorted(p.name for p in got.iterdir()) == names
    worst = min(psnr(ref / n, got / n) for n in names)
    assert worst >= 45.0, f"worst frame PSNR {worst:.1f} dB"
    assert max(abs((got / n).stat().st_size / (ref / n).stat().st_size - 1) for n in names) <= 0.05
    assert f"{len(names)} frames of" in via.stderr  # at ffmpeg's default log level, the front says what it did


PASSED_ON = {
    "0.8.10's -vf fps=30": lambda clip, d: [
        "-ss",
        "0",
        "-i",
        str(clip),
        "-t",
        "0.3",
        "-vf",
        "fps=30",
        "-q:v",
        "2",
        "-y",
        str(d / "f_%05d.jpg"),
    ],
}


@pytest.mark.parametrize("make", PASSED_ON.values(), ids=PASSED_ON.keys())
def test_forms_gpupipe_does_not_run_are_ffmpegs_own_files(tmp_path, ffmpeg, front, clip, make):
    ref, got, via, records = _both(tmp_path, ffmpeg, front, lambda d: make(clip, d))
    assert via.returncode == 0 and [r["action"] for r in records] == ["pass"]
    names = sorted(p.name for p in ref.iterdir())
    assert names and [(got / n).read_bytes() == (ref / n).read_bytes() for n in names] == [True] * len(names)


def test_a_decoder_for_another_codec_fails_as_ffmpeg_fails(tmp_path, ffmpeg, front, clip):
    """-c:v libvpx-vp9 on an H.264 clip: the front sees the mismatch and the real ffmpeg fails in its own words."""
    argv = ["-loglevel", "error", *hyperframes_argv(clip, tmp_path, duration=0.2, decoder="libvpx-vp9")]
    direct = _run(ffmpeg, argv, _env(tmp_path))
    log = tmp_path / "front.jsonl"
    via = _run(front, argv, _env(tmp_path, GPUPIPE_REAL_FFMPEG=ffmpeg, GPUPIPE_FFMPEG_LOG=str(log)))
    assert via.returncode == direct.returncode
    record = json.loads(log.read_text().splitlines()[0])
    assert record["action"] == "pass" and "-c:v libvpx-vp9 for a h264 clip" in record["reason"]


def test_front_is_silent_at_loglevel_error(tmp_path, ffmpeg, front, clip):
    _, _, via, records = _both(tmp_path, ffmpeg, front, lambda d: ["-loglevel", "error", *hyperframes_argv(clip, d)])
    assert via.returncode == 0 and via.stderr == "" and records[0]["action"] == "extract"


def test_fit_writes_frames_fitted_inside_the_size(tmp_path, ffmpeg, front, clip):
    ref, got, via, records = _both(tmp_path, ffmpeg, front, lambda d: hyperframes_argv(clip, d), GPUPIPE_EXTRACT_FIT="80x80")
    assert via.returncode == 0 and records[0]["action"] == "extract"
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    assert {Image.open(got / n).size for n in names} == {(80, 45)}


def test_a_missing_input_fails_as_ffmpeg_fails(tmp_path, ffmpeg, front):
    """gpupipe cannot open the clip, so the real ffmpeg runs: its stderr and exit status, byte for byte."""
    argv = hyperframes_argv(tmp_path / "nope.mp4", tmp_path)
    direct = _run(ffmpeg, argv, _env(tmp_path))
    via = _run(front, argv, _env(tmp_path, GPUPIPE_REAL_FFMPEG=ffmpeg))
    assert direct.returncode != 0
    strip = lambda s: [line.split("] ", 1)[-1] for line in s.splitlines()]  # noqa: E731 - the log context holds addresses
    assert (via.returncode, strip(via.stderr)) == (direct.returncode, strip(direct.stderr))


def test_a_missing_output_folder_fails_as_ffmpeg_fails(tmp_path, ffmpeg, front, clip):
    argv = ["-loglevel", "error", *hyperframes_argv(clip, tmp_path / "no" / "such")]
    direct = _run(ffmpeg, argv, _env(tmp_path))
    via = _run(front, argv, _env(tmp_path, GPUPIPE_REAL_FFMPEG=ffmpeg))
    assert direct.returncode != 0 and via.returncode == direct.returncode
    assert not (tmp_path / "no").exists()


def test_with_gpupipe_url_the_service_extracts_and_a_refusal_goes_to_ffmpeg(tmp_path, ffmpeg, front, clip):
    """Workers share one service: the front asks it (POST /v1/extract). A folder outside its roots is refused
    (403), and the real ffmpeg writes the frames instead."""
    pytest.importorskip("aiohttp")
    from serve_util import LiveServer, cpu_pipeline, service

    root = tmp_path / "root"
    (root / "v").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shared = root / "c.mp4"
    shared.write_bytes(clip.read_bytes())
    log = tmp_path / "front.jsonl"
    with LiveServer(service(cpu_pipeline(), root)) as srv:
        env = _env(tmp_path, GPUPIPE_REAL_FFMPEG=ffmpeg, GPUPIPE_FFMPEG_LOG=str(log), GPUPIPE_URL=srv.url)
        served = _run(front, hyperframes_argv(shared, root / "v", duration=0.5), env)
        refused = _run(front, hyperframes_argv(shared, outside, duration=0.5), env)
    assert served.returncode == 0 and refused.returncode == 0, (served.stderr, refused.stderr)
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert first["action"] == "extract" and first["by"].startswith("gpupipe serve"), first
    assert second["action"] == "pass" and "403" in second["reason"], second
    names = [f"frame_{i:05d}.jpg" for i in range(1, 16)]
    assert sorted(p.name for p in (root / "v").iterdir()) == names == sorted(p.name for p in outside.iterdir())
