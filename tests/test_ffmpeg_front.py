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

try:
    from gpupipe.extract import ExtractRequest

    HAVE_EXTRACT = True
except ModuleNotFoundError:  # TEMPORARY until i19-extract is merged: the agreed interface's request, for the parser tests
    import types
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ExtractRequest:  # type: ignore[no-redef]
        clip: Path
        out_dir: Path
        pattern: str = "frame_%05d.jpg"
        fps: Fraction | None = None
        start: float = 0.0
        duration: float | None = None
        size: tuple[int, int] | None = None
        jpeg_qscale: int | None = None
        jpeg_quality: int = 95
        start_number: int = 1
        atomic: bool = True

    sys.modules["gpupipe.extract"] = types.SimpleNamespace(ExtractRequest=ExtractRequest)  # type: ignore[assignment]
    HAVE_EXTRACT = False
needs_extract = pytest.mark.skipif(not HAVE_EXTRACT, reason="gpupipe.extract not merged yet")
from gpupipe.ffmpeg_front import EXEC_MARK, LOG_LEVELS, Extraction, PassThrough, parse_command, parse_fit
from gpupipe.samples import write_clip
from gpupipe.tools.ffmpeg_frames import find_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("FFMPEG_REQUIRED") == "1"  # read at import: the autouse fixture only clears GPUPIPE_*

# hyperframes 0.8.170's filters (videoFrameExtractor.ts), verbatim.
SDR_CANVAS = "setparams=color_primaries=bt709:color_trc=iec61966-2-1"
JPEG_BT601 = "scale=flags=neighbor+accurate_rnd,format=gbrp,scale=out_color_matrix=bt601:out_range=pc:flags=neighbor,format=yuv420p"


def js(x: float) -> str:
    """A number as JavaScript's ``String(x)`` writes it (the renderer builds its argv so)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def hyperframes_argv(clip, out_dir, *, start=0.0, duration=1.0, fps="30", fmt="jpg", guess="smpte170m", quality=95):
    """The argv hyperframes 0.8.170 gives ffmpeg for a clip window (``extractVideoFramesRange``)."""
    vf = ["settb=intb/2", "setpts=PTS-lte(TB\\,0.001)", f"fps={fps}:start_time=0:round=up"]
    vf += [f"setparams=colorspace={guess}"] if guess else []
    vf += [SDR_CANVAS] + ([JPEG_BT601] if fmt == "jpg" else [])
    enc = ["-q:v", str(math.ceil((100 - quality) / 3)) if fmt == "jpg" else "0"]
    enc += ["-compression_level", "1"] if fmt == "png" else []
    enc += ["-y", str(Path(out_dir) / f"frame_%05d.{fmt}")]
    return ["-noaccurate_seek", "-ss", js(start), "-i", str(clip), "-t", js(duration), "-vf", ",".join(vf), *enc]


def expected(clip="c.mp4", out_dir="out", **kw) -> ExtractRequest:
    base = ExtractRequest(clip=Path(clip), out_dir=Path(out_dir), fps=Fraction(30), start=0.0, duration=1.0, jpeg_qscale=2, atomic=False)
    return replace(base, **kw)


# --- recognised forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("guess", [None, "bt709", "smpte170m"])
@pytest.mark.parametrize(("fps", "rate"), [("30", Fraction(30)), ("24", Fraction(24)), ("30000/1001", Fraction(30000, 1001))])
def test_hyperframes_jpeg_window_is_recognised(guess, fps, rate):
    argv = hyperframes_argv("c.mp4", "out", start=0.5, duration=2.25, fps=fps, guess=guess)
    assert parse_command(argv) == Extraction(expected(start=0.5, duration=2.25, fps=rate))


@pytest.mark.parametrize("guess", [None, "bt709"])
def test_hyperframes_png_window_is_recognised(guess):
    argv = hyperframes_argv("/abs/clip.webm", "/tmp/x/v1", start=0, duration=4, fmt="png", guess=guess)
    want = expected("/abs/clip.webm", "/tmp/x/v1", duration=4.0, pattern="frame_%05d.png", jpeg_qscale=None)
    assert parse_command(argv) == Extraction(want)


@pytest.mark.parametrize(("quality", "q"), [(95, 2), (80, 7), (70, 10), (10, 30)])
def test_jpeg_quality_arrives_as_ffmpegs_qscale(quality, q):
    what = parse_command(hyperframes_argv("c.mp4", "out", quality=quality))
    assert isinstance(what, Extraction) and what.request.jpeg_qscale == q


def test_times_are_read_to_the_microsecond_as_ffmpeg_reads_them():
    what = parse_command(hyperframes_argv("c.mp4", "out", start=0.1234567, duration=1 / 3))
    assert isinstance(what, Extraction)
    assert what.request.start == 0.123456 and what.request.duration == 0.333333


def test_options_in_any_order_within_their_place_and_the_quiet_globals():
    argv = ["-hide_banner", "-loglevel", "error", "-nostdin", "-ss", "1.5", "-noaccurate_seek", "-i", "c.mp4", "-y",
            "-vf", hyperframes_argv("c.mp4", "out")[8], "-f", "image2", "-start_number", "7", "-q:v", "3", "-t", "1",
            "-nostats", "out/frame_%05d.jpg"]  # fmt: skip
    assert parse_command(argv) == Extraction(expected(start=1.5, jpeg_qscale=3, start_number=7), LOG_LEVELS["error"])


def test_without_ss_and_t_the_whole_clip_from_its_start():
    hf = hyperframes_argv("c.mp4", "out")
    argv = ["-i", "c.mp4", *hf[hf.index("-vf") :]]
    assert parse_command(argv) == Extraction(expected(duration=None))


def test_a_relative_pattern_writes_into_the_current_folder_and_jpeg_is_jpeg():
    argv = hyperframes_argv("c.mp4", ".")
    argv[-1] = "f_%d.jpeg"
    assert parse_command(argv) == Extraction(expected(out_dir=".", pattern="f_%d.jpeg"))


@pytest.mark.parametrize(("flag", "level"), [("error", 16), ("repeat+level+verbose", 40), ("quiet", -8), ("48", 48)])
def test_loglevel_is_read_as_ffmpeg_reads_it(flag, level):
    what = parse_command(["-loglevel", flag, *hyperframes_argv("c.mp4", "out")])
    assert isinstance(what, Extraction) and what.loglevel == level
    assert parse_command(hyperframes_argv("c.mp4", "out")).loglevel == LOG_LEVELS["info"]


def test_fit_becomes_the_requests_size():
    what = parse_command(hyperframes_argv("c.mp4", "out"), fit=(1920, 1080))
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


HF = hyperframes_argv("c.mp4", "out", start=0.5)
VF = HF[HF.index("-vf") + 1]
NOT_RECOGNISED = {
    "version": ["-version"],
    "filters probe": ["-hide_banner", "-filters"],
    "no arguments": [],
    "an unknown option": _edit(HF, "-y", ["-threads", "2", "-y"]),
    "alpha decoder (-c:v)": ["-c:v", "libvpx-vp9", *HF],
    "hwaccel": ["-hwaccel", "videotoolbox", *HF],
    "segment (-frames:v, -start_number)": _edit(HF, "-vf", ["-frames:v", "30", "-start_number", "31", "-vf"]),
    "final frame (output -ss)": ["-i", "c.mp4", "-ss", "3", "-frames:v", "1", "-vf", VF, "-q:v", "2", "-y", "out/frame_%05d.jpg"],
    "accurate seek": [a for a in HF if a != "-noaccurate_seek"],
    "start_time=S (not 0.8.170's)": _edit(HF, VF, [VF.replace("start_time=0:", "start_time=0.5:")]),
    "0.8.10's fps=30": ["-ss", "0", "-i", "c.mp4", "-t", "1", "-vf", "fps=30", "-q:v", "2", "-y", "out/frame_%05d.jpg"],
    "tone map": _edit(HF, VF, [VF.replace(SDR_CANVAS, "zscale=t=linear," + SDR_CANVAS)]),
    "png chain to a jpg": _edit(HF, VF, [VF.replace("," + JPEG_BT601, "")]),
    "jpg chain to a png": [*HF[:-1], "out/frame_%05d.png"],
    "no -y": [a for a in HF if a != "-y"],
    "-n": _edit(HF, "-y", ["-n"]),
    "two inputs": _edit(HF, "-t", ["-i", "d.mp4", "-t"]),
    "stdin input": _edit(HF, "c.mp4", ["-"]),
    "URL input": _edit(HF, "c.mp4", ["https://example.com/c.mp4"]),
    "-ss with a suffix": _edit(HF, "0.5", ["500ms"]),
    "-ss as HH:MM:SS": _edit(HF, "0.5", ["00:00:00.5"]),
    "-ss in JS exponent form": _edit(HF, "0.5", ["1e-7"]),
    "q:v 1": _edit(HF, "2", ["1"]),
    "q:v as a float": _edit(HF, "2", ["2.5"]),
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
         "-nostats", "-loglevel", "-v", "-noaccurate_seek"}  # fmt: skip


@given(
    form=st.sampled_from([hyperframes_argv("c.mp4", "o", start=1, fmt=f, guess=g) for f in ("jpg", "png") for g in (None, "bt709")]),
    option=st.from_regex(r"-[a-z_:]{1,12}", fullmatch=True).filter(lambda o: o not in KNOWN),
    value=st.one_of(st.none(), st.sampled_from(["1", "x", "libx264"])),
    at=st.integers(0, 30),
)
def test_any_option_the_front_does_not_know_passes_through(form, option, value, at):
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
    "segment": NOT_RECOGNISED["segment (-frames:v, -start_number)"],
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
    r = _run(front, ["-version"], _env(tmp_path, PATH=f"{tmp_path / 'link'}{os.pathsep}/usr/bin{os.pathsep}/bin"))
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
def real_ffmpeg() -> str:
    exe = find_ffmpeg()
    if exe is None:
        if REQUIRED:
            pytest.fail("no ffmpeg binary (imageio-ffmpeg or ffmpeg on PATH), and FFMPEG_REQUIRED=1")
        pytest.skip("no ffmpeg binary (imageio-ffmpeg or ffmpeg on PATH)")
    return exe


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """48 frames at 30 fps, 160x120 (hyperframes guesses an untagged SD clip's matrix as smpte170m), keyframe every 10."""
    return write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=48, size=(160, 120), fps=30, options={"g": "10", "bf": "2"})


def psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    assert x.shape == y.shape, (a.name, x.shape, y.shape)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _both(tmp_path, real_ffmpeg, front, make_argv, **env):
    """Run ``make_argv(out_dir)`` through the real ffmpeg and through the front: the two folders and the front's run."""
    ref, got = tmp_path / "ffmpeg", tmp_path / "front"
    ref.mkdir()
    got.mkdir()
    direct = _run(real_ffmpeg, make_argv(ref), _env(tmp_path))
    assert direct.returncode == 0, direct.stderr[-2000:]
    log = tmp_path / "front.jsonl"
    via = _run(front, make_argv(got), _env(tmp_path, GPUPIPE_REAL_FFMPEG=real_ffmpeg, GPUPIPE_FFMPEG_LOG=str(log), **env))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return ref, got, via, records


E2E = {
    "jpg from 0": {"start": 0, "duration": 1},
    "jpg from a non-keyframe, at 24 fps": {"start": 0.41, "duration": 0.9, "fps": "24"},
    "jpg to past the end": {"start": 1.2, "duration": 5},
    "jpg, HD guess, quality 80": {"start": 0.5, "duration": 0.5, "guess": "bt709", "quality": 80},
    "png from 0.5": {"start": 0.5, "duration": 0.7, "fmt": "png"},
    "png, no guess, ntsc rate": {"start": 0.2, "duration": 0.6, "fmt": "png", "guess": None, "fps": "30000/1001"},
}


@pytest.mark.parametrize("kw", E2E.values(), ids=E2E.keys())
def test_front_writes_what_ffmpeg_writes(tmp_path, real_ffmpeg, front, clip, kw):
    ref, got, via, records = _both(tmp_path, real_ffmpeg, front, lambda d: hyperframes_argv(clip, d, **kw))
    assert via.returncode == 0, via.stderr[-2000:]
    assert [r["action"] for r in records] == ["extract"], records
    names = sorted(p.name for p in ref.iterdir())
    assert names and sorted(p.name for p in got.iterdir()) == names
    worst = min(psnr(ref / n, got / n) for n in names)
    assert worst >= 40.0, f"worst frame PSNR {worst:.1f} dB"
    assert f"{len(names)} frames of" in via.stderr  # at ffmpeg's default log level, the front says what it did


def test_front_is_silent_at_loglevel_error(tmp_path, real_ffmpeg, front, clip):
    _, _, via, records = _both(tmp_path, real_ffmpeg, front, lambda d: ["-loglevel", "error", *hyperframes_argv(clip, d)])
    assert via.returncode == 0 and via.stderr == "" and records[0]["action"] == "extract"


def test_fit_writes_frames_fitted_inside_the_size(tmp_path, real_ffmpeg, front, clip):
    ref, got, via, records = _both(tmp_path, real_ffmpeg, front, lambda d: hyperframes_argv(clip, d), GPUPIPE_EXTRACT_FIT="80x80")
    assert via.returncode == 0 and records[0]["action"] == "extract"
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    assert {Image.open(got / n).size for n in names} == {(80, 60)}


def test_a_missing_input_fails_as_ffmpeg_fails(tmp_path, real_ffmpeg, front):
    """gpupipe cannot open the clip, so the real ffmpeg runs: its stderr and exit status, byte for byte."""
    argv = hyperframes_argv(tmp_path / "nope.mp4", tmp_path)
    direct = _run(real_ffmpeg, argv, _env(tmp_path))
    via = _run(front, argv, _env(tmp_path, GPUPIPE_REAL_FFMPEG=real_ffmpeg))
    assert direct.returncode != 0
    strip = lambda s: [line.split("] ", 1)[-1] for line in s.splitlines()]  # noqa: E731 - the log context holds addresses
    assert (via.returncode, strip(via.stderr)) == (direct.returncode, strip(direct.stderr))


def test_a_missing_output_folder_fails_as_ffmpeg_fails(tmp_path, real_ffmpeg, front, clip):
    argv = ["-loglevel", "error", *hyperframes_argv(clip, tmp_path / "no" / "such")]
    direct = _run(real_ffmpeg, argv, _env(tmp_path))
    via = _run(front, argv, _env(tmp_path, GPUPIPE_REAL_FFMPEG=real_ffmpeg))
    assert direct.returncode != 0 and via.returncode == direct.returncode
    assert not (tmp_path / "no").exists()
