"""The gpupipe CLI, in-process with typer's CliRunner (its own stdout, stderr, stdin, environment
and exit status); a real process only where the process is the point: the console entry point
(``python -m gpupipe``: its exit status, its logging set-up, and warnings shown once)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpupipe import cli


@dataclass
class Ran:
    """What a command did: exit status, stdout, stderr, and an exception the command let escape."""

    returncode: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Ran:
    """``gpupipe ARGS`` in this process; ``env`` adds (or, with ``None`` values, removes) variables."""
    r = CliRunner().invoke(cli.app, list(args), env=env, input=input)
    escaped = None if r.exception is None or isinstance(r.exception, SystemExit) else r.exception
    return Ran(r.exit_code, r.stdout, r.stderr, escaped)


def run_process(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m gpupipe ARGS`` in a new process: the installed entry point as a shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gpupipe", *args], check=False, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_encode_writes_json_lines(frame_files, tmp_path):
    p, j = frame_files
    out = tmp_path / "out.jsonl"
    r = run("encode", str(p), str(j), "--backend", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r_["source"] for r_ in rows] == [str(p), str(j)]
    assert rows[0]["mime"] == "image/png" and rows[1]["mime"] == "image/jpeg"
    assert base64.b64decode(rows[0]["uri"].split(",", 1)[1]) == p.read_bytes()
    assert rows[0]["bytes"] == len(rows[0]["uri"])
    assert "frames" in r.stderr and "hit ratio" in r.stderr


def test_encode_resize_to_stdout(frame_files):
    p, _ = frame_files
    r = run("encode", str(p), "--size", "160x90", "--quality", "70", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.strip())
    assert row["mime"] == "image/jpeg"


def test_encode_failures_exit_1_and_name_frames(frame_files, tmp_path):
    p, _ = frame_files
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    r = run("encode", str(p), str(bad), str(tmp_path / "missing.jpg"), "--backend", "cpu")
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [row["source"] for row in rows] == [str(p), str(bad), str(tmp_path / "missing.jpg")]
    assert "uri" in rows[0] and [row.get("type") for row in rows[1:]] == ["FrameDecodeError", "FrameNotFound"]
    assert "bad.png" in r.stderr and "missing.jpg" in r.stderr and "no such file" in r.stderr


def test_encode_bad_config_exits_2(frame_files, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {cache: {max_bytes: lots}}\n")
    r = run("encode", str(frame_files[0]), "--config", str(cfg))
    assert r.returncode == 2 and "defaults.cache.max_bytes" in r.stderr


def test_info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["backends"]["cpu"]["usable"] is True
    assert "reason" in rep["backends"]["gpu"] and rep["selected_backend"]["backend"] in ("cpu", "gpu")
    assert rep["config"]["cache"]["max_entries"] == 256
    assert "Pillow" in rep["versions"]["pillow"]


def test_info_table():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert "backends" in r.stdout and "resolved config" in r.stdout


def test_info_shows_sizes_for_people_and_says_where_the_config_came_from(tmp_path):
    """Sizes in MiB/GiB, the keys by their YAML path, no internal fields (``max_bytes_auto``,
    ``source: null``): the built-in defaults are named as such. ``--json`` keeps bytes and fields."""
    r = run("info")
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in r.stdout.splitlines() if line.count("│") == 3}
    assert rows["config file"].startswith("built-in defaults")
    assert rows["cache.max_bytes"] == "1500 MiB" and rows["staging.max_bytes"] == "2 GiB" and rows["staging.pinned_bytes"] == "256 MiB"
    assert rows["cache.admission_timeout"] == "60 s" and rows["max_source_bytes"] == "derived from max_pixels"
    assert not {"source", "gpu", "max_bytes_auto", "cache.max_bytes_auto"} & set(rows), rows
    assert "max_bytes_auto" not in r.stdout and "1572864000" not in r.stdout and "null" not in r.stdout
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {cache: {max_bytes: auto}}\ngpus: {1: {staging: {max_bytes: 3GiB}}}\n")
    r = run("info", "--config", str(cfg), "--gpu", "1")
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in r.stdout.splitlines() if line.count("│") == 3}
    assert rows["config file"] == str(cfg) and rows["GPU section"].startswith("1 (gpus: 1:")
    assert rows["cache.max_bytes"].endswith("(auto: sized from the memory this process may use)") and rows["staging.max_bytes"] == "3 GiB"
    data = json.loads(run("info", "--json").stdout)["config"]
    assert data["cache"]["max_bytes"] == 1500 * 2**20 and data["source"] is None and data["cache"]["max_bytes_auto"] is False


@pytest.mark.parametrize("command", ["", "encode", "info", "demo", "bench", "serve"])
def test_help_shows_metavars_not_python_types(command):
    """No ``<bool>`` beside flags (``--help`` included), no ``<list[Path]>``, ``<str>`` or ``<path>``:
    the option's own metavar (``WxH``, ``FILE``, ``N``) or nothing."""
    r = run(*([command] if command else []), "--help", env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    for python_type in ("<bool>", "<list[", "<str>", "<path>", "<int>", "<float", "<int range>"):
        assert python_type not in r.stdout, (python_type, r.stdout)
    if command == "encode":
        assert any("--size" in line and "WxH" in line for line in r.stdout.splitlines())


def _tiny_samples(monkeypatch) -> None:
    """The demo's sample frames at 1/10 of 1080p and 4K: the same clips and settings, quickly."""
    import gpupipe.samples

    monkeypatch.setattr(gpupipe.samples, "SAMPLE_SIZES", {"1080p": (192, 108), "4k": (384, 216)})


@pytest.mark.slow
def test_demo_runs(tmp_path, monkeypatch):
    _tiny_samples(monkeypatch)
    r = run("demo", "--frames", "2", "--requests", "6", "--samples-dir", str(tmp_path), "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    assert "render playback" in r.stdout and "hit ratio" in r.stdout and "4k png" in r.stdout
    assert f"in {tmp_path} " in r.stderr


def test_demo_is_not_silent_without_a_terminal(tmp_path, monkeypatch):
    """With stderr not a terminal, the demo says what it writes where before writing, prints
    progress lines while it writes and plays, and ends them with the final count, which says
    what it counts."""
    _tiny_samples(monkeypatch)
    monkeypatch.setattr(cli, "PROGRESS_INTERVAL_S", 0.0)
    r = run("demo", "--frames", "2", "--requests", "3", "--samples-dir", str(tmp_path), "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"writing 8 sample frames (1080p and 4K, PNG and JPEG) to {tmp_path}; frames already there are reused"
    wrote = [line.split(",")[0] for line in lines if line.startswith("wrote ")]
    assert wrote == [f"wrote {i}/8 sample frames" for i in range(1, 9)]
    played = [line for line in lines if line.startswith("played ")]
    assert len(played) == 48 and played[-1].startswith("played 48/48 requests (4 clips x 4 settings x 3 requests), ")


def _paren_depth(line: str) -> int:
    depth = deepest = 0
    for ch in line:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    return deepest


@pytest.mark.parametrize("ffmpeg", [False, True])
def test_demo_output_fits_80_columns_and_nests_no_parentheses(ffmpeg, tmp_path, monkeypatch):
    """On an 80-column terminal no line is wider and no cell is cut ("passthro..."); the header
    nests parentheses at most one deep (the backend's reason on a machine without a GPU was three)."""
    import gpupipe.samples
    import gpupipe.tools.ffmpeg_frames

    fake_extract, fake_write = _fake_writer([])
    monkeypatch.setattr(gpupipe.tools.ffmpeg_frames, "extract_frames", fake_extract)
    monkeypatch.setattr(gpupipe.samples, "write_samples", fake_write)
    flag = ["--ffmpeg"] if ffmpeg else []
    args = ("demo", "--backend", "auto", "--frames", "2", "--requests", "3", "--samples-dir", str(tmp_path), *flag)
    r = run(*args, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert max(len(line) for line in out) <= 80 and "…" not in r.stdout, r.stdout
    table = out[next(i for i, line in enumerate(out) if "render playback" in line) :]
    assert sum("  passthrough " in line for line in table) == (12 if ffmpeg else 8), r.stdout
    assert sum("  fit 720p " in line for line in table) == (12 if ffmpeg else 8), r.stdout
    header = out[: len(out) - len(table)]
    assert header and all(_paren_depth(line) <= 1 for line in header), header


# --------------------------------------------------------------------------- user errors: one line, exit 2

def _one_line_error(r: Ran | subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert getattr(r, "exception", None) is None and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert r.stdout == ""


def test_bad_cache_env_is_one_line(frame_files):
    r = run("encode", str(frame_files[1]), env={"GPUPIPE_CACHE_BYTES_MB": "inf"})
    _one_line_error(r, "GPUPIPE_CACHE_BYTES_MB", "'inf'")


def test_unwritable_out_is_one_line(frame_files, tmp_path):
    target = tmp_path / "missing" / "dir" / "x.jsonl"
    r = run("encode", str(frame_files[1]), "--backend", "cpu", "--out", str(target))
    _one_line_error(r, "--out", str(target), "No such file or directory")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("demo", "--backend", "tpu"), ("--backend", "'tpu'")),
        (("encode", "FRAME", "--backend", "tpu"), ("--backend", "'tpu'")),
        (("bench", "--backend", "tpu"), ("--backend", "cpu, gpu or all", "'tpu'")),
        (("bench", "--backend", "auto"), ("--backend", "'auto'")),
        (("encode", "FRAME", "--gpu", "-1"), ("--gpu", "-1")),
        (("info", "--gpu", "-1"), ("--gpu", "-1")),
        (("encode", "FRAME", "--gpu", "1024"), ("--gpu", "1024")),
        (("encode", "FRAME", "--size", "abc"), ("--size: expected WIDTHxHEIGHT", "got 'abc'")),
        (("encode", "FRAME", "--size", "0x10"), ("--size: expected WIDTHxHEIGHT", "got '0x10'")),
    ],
)
def test_bad_options_are_refused_naming_the_option(args, fragments, frame_files, tmp_path):
    out = tmp_path / "results"
    args = tuple(str(frame_files[1]) if a == "FRAME" else a for a in args)
    if args[0] == "bench":
        args += ("--quick", "--synthetic", "--no-soak", "--out", str(out))
    r = run(*args)
    _one_line_error(r, *fragments)
    assert not out.exists()  # refused before any work


def test_config_errors_are_one_line_on_every_command(tmp_path):
    r = run("info", env={"GPUPIPE_BACKEND": "tpu"})
    _one_line_error(r, "GPUPIPE_BACKEND")
    r = run("demo", "--samples-dir", str(tmp_path / "s"), env={"GPUPIPE_CACHE_MAX_ENTRIES": "0"})
    _one_line_error(r, "GPUPIPE_CACHE_MAX_ENTRIES")
    assert not (tmp_path / "s").exists()


def test_errors_inside_commands_are_one_line(tmp_path):
    """Errors raised past option parsing (the bench's own config load, an unusable GPU backend) too."""
    from conftest import gpu_state

    r = run("bench", "--quick", "--synthetic", "--no-soak", "--out", str(tmp_path / "r"), env={"GPUPIPE_CACHE_MAX_ENTRIES": "0"})
    _one_line_error(r, "GPUPIPE_CACHE_MAX_ENTRIES")
    if gpu_state()[0]:
        return
    r = run("demo", "--backend", "gpu", "--samples-dir", str(tmp_path / "s"))
    _one_line_error(r, "GPU backend unavailable")
    assert not (tmp_path / "s").exists()  # refused before writing sample frames


def test_multi_line_error_message_is_one_line(capsys):
    import typer

    from gpupipe.cli import _fail

    with pytest.raises(typer.Exit) as exc:
        _fail("ffmpeg failed:\n  line one\n\nline two\n")
    assert exc.value.exit_code == 2
    assert capsys.readouterr().err == "error: ffmpeg failed: | line one | line two\n"


def test_backend_option_is_case_insensitive(frame_files):
    r = run("encode", str(frame_files[1]), "--backend", "CPU")
    assert r.returncode == 0, r.stderr
    assert "cpu backend" in r.stderr


# --------------------------------------------------------------------------- JSON lines

def test_out_has_one_line_per_input_in_order(frame_files, tmp_path):
    """Good and failing frames interleaved: every input gets its line, in input order, and each
    line is exactly what the library returns for that frame."""
    from gpupipe import FrameEncoder, load_config

    p, j = frame_files
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    folder = tmp_path / "sub"
    folder.mkdir()
    missing = tmp_path / "missing.jpg"
    inputs = [p, bad, j, missing, p, missing, bad, j, bad, missing, p, j]
    out = tmp_path / "out.jsonl"
    r = run("encode", *map(str, inputs), "--backend", "cpu", "--output", "passthrough", "--out", str(out))
    assert r.returncode == 1
    with FrameEncoder(load_config(), backend="cpu") as enc:
        results = enc.encode_batch(inputs, output="passthrough")
    expected = []
    for src, res in zip(inputs, results):
        if isinstance(res, str):
            expected.append({"source": str(src), "mime": res[5 : res.index(";")], "bytes": len(res), "uri": res})
        else:
            expected.append({"source": str(src), "error": res.reason, "type": type(res).__name__})
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12
    assert [json.loads(line) for line in lines] == expected
    assert sum("error" in e for e in expected) == 6


@settings(max_examples=200)
@given(
    fields=st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers()), max_size=4),
    uri=st.one_of(
        st.text(max_size=40),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=200).map(
            lambda b: "data:image/png;base64," + b
        ),
    ),
)
def test_uri_line_is_the_json_dumps_text(fields, uri):
    """Spliced or not, a line is byte for byte what json.dumps writes, so it parses back to the record."""
    import io

    from gpupipe.cli import _write_uri_line

    fields.pop("uri", None)
    buf = io.StringIO()
    _write_uri_line(buf, fields, uri)
    assert buf.getvalue() == json.dumps({**fields, "uri": uri}) + "\n"
    assert json.loads(buf.getvalue()) == {**fields, "uri": uri}


# --------------------------------------------------------------------------- --version, warnings, info

def test_version():
    import gpupipe

    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"gpupipe {gpupipe.__version__}"


def test_entry_point_version_and_usage_error_exit_status():
    """The console entry point itself: ``--version`` exits 0; a bad setting exits 2 with one line."""
    import gpupipe

    r = run_process("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"gpupipe {gpupipe.__version__}", r.stderr
    _one_line_error(run_process("info", env={"GPUPIPE_BACKEND": "tpu"}), "GPUPIPE_BACKEND")


def test_each_warning_is_one_line_from_the_entry_point(frame_files):
    """A clamped budget and allocator tuning that cannot apply: one ``warning:`` line each on
    stderr, naming the warning's class; no log line repeats them, and there is no process-wide
    filter hiding duplicates any more."""
    env = {"GPUPIPE_CACHE_BYTES_MB": "10", "MALLOC_MMAP_THRESHOLD_": "131072"}
    r = run_process("encode", str(frame_files[1]), "--backend", "cpu", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("below the floor") == 1 and r.stderr.count("allocator tuning not applied") == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if "below the floor" in line or "not applied" in line]
    assert [line.split(":")[:2] for line in lines] == [["warning", " ConfigWarning"], ["warning", " AllocatorTuningWarning"]]
    assert "Traceback" not in r.stderr and "WARNING" not in r.stderr
    assert not hasattr(cli, "_OnceFilter")


def test_warnings_are_one_line_in_process_too(frame_files):
    r = run("encode", str(frame_files[1]), "--backend", "cpu", env={"GPUPIPE_CACHE_BYTES_MB": "10"})
    assert r.returncode == 0, r.stderr
    (line,) = [line for line in r.stderr.splitlines() if "below the floor" in line]
    assert line.startswith("warning: ConfigWarning: environment: GPUPIPE_CACHE_BYTES_MB"), line


def test_info_names_pybase64_version_once():
    pybase64 = pytest.importorskip("pybase64")
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)["versions"]["base64"]
    assert line.startswith("pybase64 ") and line.count(pybase64.__version__) == 1, line


# --------------------------------------------------------------------------- progress without a terminal

class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_every_interval():
    import io

    from gpupipe.cli import _PlainProgress

    clock, buf = _Clock(), io.StringIO()
    prog = _PlainProgress(120, "encoded", "frames", "fps", interval=5.0, clock=clock, stream=buf)
    for done, at in ((8, 1.0), (16, 4.9), (40, 5.0), (48, 9.0), (80, 10.5), (120, 12.0)):
        clock.now = 100.0 + at
        prog.update(done)
    assert buf.getvalue().splitlines() == ["encoded 40/120 frames, 8.0 fps", "encoded 80/120 frames, 7.6 fps"]
    prog.advance(0)
    clock.now = 100.0 + 20.0
    prog.advance(0)
    assert buf.getvalue().splitlines()[-1] == "encoded 120/120 frames, 6.0 fps"


def test_encode_progress_lines_when_stderr_is_not_a_terminal(frame_files, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_INTERVAL_S", 0.0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {batch_size: 1, backend: cpu}\n")
    p, j = frame_files
    r = run("encode", str(p), str(j), str(p), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("encoded ")]
    assert [line.split(",")[0] for line in lines] == ["encoded 1/3 frames", "encoded 2/3 frames", "encoded 3/3 frames"]
    assert all(line.endswith(" fps") for line in lines)
    assert len(r.stdout.splitlines()) == 3


# --------------------------------------------------------------------------- demo sample folder

def _fake_writer(calls: list):
    """Writes tiny frames where the real frame writers would write big ones, with their return shapes."""
    from gpupipe.samples import encode_frame, make_frame

    def frames(folder, kind: str, count: int) -> list:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(count):
            path = folder / f"frame_{i + 1:05d}.{'jpg' if kind == 'jpeg' else 'png'}"
            path.write_bytes(encode_frame(make_frame(64, 36, i, alpha=kind == "png-alpha"), "jpeg" if kind == "jpeg" else "png"))
            paths.append(path)
        return paths

    def extract_frames(out_dir, width, height, count, kind="png", **kw):
        calls.append(out_dir)
        return frames(out_dir / f"testsrc2-{width}x{height}-{kind}", kind, count)

    def write_samples(directory=None, sizes=("1080p", "4k"), kinds=("png", "jpeg"), count=12, seed=0, on_frame=None):
        calls.append(directory)
        out = {(s, k): frames(directory / f"{s}-{k}", k, count) for s in sizes for k in kinds}
        for _ in range(len(out) * count if on_frame else 0):
            on_frame()
        return out

    return extract_frames, write_samples


@pytest.mark.parametrize("ffmpeg", [True, False])
def test_demo_says_where_sample_frames_are(ffmpeg, tmp_path, monkeypatch):
    import tempfile

    import gpupipe.samples
    import gpupipe.tools.ffmpeg_frames

    calls: list = []
    fake_extract, fake_write = _fake_writer(calls)
    monkeypatch.setattr(gpupipe.tools.ffmpeg_frames, "extract_frames", fake_extract)
    monkeypatch.setattr(gpupipe.samples, "write_samples", fake_write)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    flag = ["--ffmpeg"] if ffmpeg else []
    args = ["demo", "--backend", "cpu", "--frames", "2", "--requests", "2", *flag]

    r = run(*args)
    assert r.returncode == 0, r.stderr
    default = tmp_path / "tmp" / ("gpupipe-ffmpeg" if ffmpeg else "gpupipe-samples")
    notes = [line for line in r.stderr.splitlines() if line.startswith("sample frames:")]
    assert len(notes) == 1 and str(default) in notes[0] and " MB in " in notes[0], r.stderr
    assert calls and all(c == default for c in calls)

    chosen = tmp_path / "chosen"
    calls.clear()
    r = run(*args, "--samples-dir", str(chosen))
    assert r.returncode == 0, r.stderr
    assert str(chosen) in r.stderr and calls and all(c == chosen for c in calls)
    assert any(chosen.rglob("frame_00001.*"))


# --------------------------------------------------------------------------- directories and stdin

def test_encode_directory_sorted_by_name_non_recursive(tmp_path, png_bytes, jpeg_bytes):
    d = tmp_path / "frames"
    (d / "sub").mkdir(parents=True)
    (d / "b.png").write_bytes(png_bytes)
    (d / "a.jpg").write_bytes(jpeg_bytes)
    (d / "c.JPEG").write_bytes(jpeg_bytes)
    (d / "notes.txt").write_text("not a frame")
    (d / "sub" / "0.png").write_bytes(png_bytes)
    (d / "dir.png").mkdir()
    r = run("encode", str(d), "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["source"] for line in r.stdout.splitlines()] == [str(d / n) for n in ("a.jpg", "b.png", "c.JPEG")]


def test_encode_empty_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    _one_line_error(run("encode", str(tmp_path)), str(tmp_path), "no .png, .jpg, .jpeg files")


def test_encode_paths_from_stdin(frame_files, tmp_path):
    p, j = frame_files
    text = f"{j}\n\n   \n{p}\r\n{tmp_path / 'missing.png'}\n"
    r = run("encode", "-", str(j), "--backend", "cpu", input=text)
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["source"] for row in rows] == [str(j), str(p), str(tmp_path / "missing.png"), str(j)]
    assert rows[2]["type"] == "FrameNotFound"


def test_encode_empty_stdin_is_refused():
    _one_line_error(run("encode", "-", input="\n\n"), "no paths on stdin")


# --------------------------------------------------------------------------- video clips


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame 30 fps H.264 clip of 160x90 with B-frames, and PyAV's own decode of it."""
    from video_clips import pyav_frames

    from gpupipe.samples import write_clip

    path = write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=12, size=(160, 90), fps=30, options={"bf": "2", "g": "6"})
    return path, pyav_frames(path)


def _rows(r: Ran) -> list[dict]:
    return [json.loads(line) for line in r.stdout.splitlines()]


def _pixels(uri: str):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.mark.parametrize("frames,want", [("0:6:2", [0, 2, 4]), ("5", [5]), ("-1", [11]), ("9:", [9, 10, 11]), (":3", [0, 1, 2]),
                                         ("::5", [0, 5, 10]), ("-3:-1", [9, 10]), ("0:90", list(range(12)))])
def test_encode_a_clips_frames_by_index_with_python_slice_meaning(clip, frames, want):
    import numpy as np

    path, ref = clip
    r = run("encode", str(path), "--frames", frames, "-o", "png", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    rows = _rows(r)
    assert [(row["source"], row["frame"], row["t"]) for row in rows] == [(str(path), i, round(i / 30, 6)) for i in want]
    for row, i in zip(rows, want):
        assert row["mime"] == "image/png" and row["bytes"] == len(row["uri"])
        assert np.array_equal(_pixels(row["uri"]), ref[i]), i  # PNG is lossless: the clip's own frame
    assert f"{len(want)} (0 failed)" in r.stderr


def test_encode_a_clips_frames_by_time_as_a_composition_samples_it(clip):
    """``--fps 10 --start 0.1 --duration 0.25``: t = 0.1, 0.2, 0.3 (start + k/fps, up to start + duration), each the
    frame shown at t (the last frame whose timestamp is <= t); the same frames as by index."""
    path, _ = clip
    r = run("encode", str(path), "--fps", "10", "--start", "0.1", "--duration", "0.25", "--size", "80x80", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    rows = _rows(r)
    assert [(row["frame"], row["t"]) for row in rows] == [(3, 0.1), (6, 0.2), (9, 0.30000000000000004)]
    by_index = _rows(run("encode", str(path), "--frames", "3:10:3", "--size", "80x80", "--backend", "cpu"))
    assert [row["uri"] for row in rows] == [row["uri"] for row in by_index]
    assert rows[0]["mime"] == "image/jpeg" and _pixels(rows[0]["uri"]).shape == (45, 80, 3)
    whole = _rows(run("encode", str(path), "--fps", "60", "--backend", "cpu"))  # to the clip's end, each frame twice
    assert [row["frame"] for row in whole] == [i // 2 for i in range(24)]


def test_encode_a_clip_without_a_selection_gives_every_frame_beside_frame_files(clip, frame_files):
    path, _ = clip
    p, _ = frame_files
    r = run("encode", str(p), str(path), "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    rows = _rows(r)
    assert [row["source"] for row in rows] == [str(p)] + [str(path)] * 12
    assert "frame" not in rows[0] and [row["frame"] for row in rows[1:]] == list(range(12))


@pytest.mark.parametrize("args,says", [
    (("--frames", "12"), "frame 12 is past the end of the clip (12 frames)"),
    (("--frames", "-13"), "--frames -13 selects no frame of the clip (12 frames)"),
    (("--frames", "20:30"), "--frames 20:30 selects no frame of the clip (12 frames)"),
    (("--fps", "30", "--start", "0.5"), "t=0.5 s is past the end of the clip (duration 0.4 s)"),
])
def test_encode_frames_past_a_clips_end_fail_naming_its_length(clip, args, says):
    path, _ = clip
    r = run("encode", str(path), *args, "--backend", "cpu")
    assert r.returncode == 1
    (row,) = _rows(r)
    assert row["type"] == "FrameOutOfRange" and row["error"] == says and row["source"] == str(path)
    assert says in r.stderr


@pytest.mark.parametrize("args,fragments", [
    (("--frames", "a:b"), ("--frames", "whole numbers", "'a:b'")),
    (("--frames", "1:2:0"), ("--frames", "step cannot be zero")),
    (("--frames", "1:2:3:4"), ("--frames", "START:STOP[:STEP]")),
    (("--frames", ""), ("--frames", "START:STOP[:STEP]")),
    (("--frames", "1", "--fps", "2"), ("--frames", "--fps", "not both")),
    (("--fps", "0"), ("--fps must be a positive number",)),
    (("--fps", "-5"), ("--fps must be a positive number",)),
    (("--fps", "nan"), ("--fps must be a positive number",)),
    (("--start", "1"), ("--start and --duration", "give --fps")),
    (("--fps", "30", "--start", "-1"), ("--start must be 0 or more",)),
    (("--fps", "30", "--duration", "0"), ("--duration must be a positive",)),
])
def test_bad_clip_selections_are_refused_naming_the_option(clip, args, fragments):
    _one_line_error(run("encode", str(clip[0]), *args, "--backend", "cpu"), *fragments)


def test_a_clip_selection_without_a_clip_is_refused(frame_files):
    _one_line_error(run("encode", str(frame_files[0]), "--frames", "0:9", "--backend", "cpu"), "--frames selects frames of video clips",
                    "no input is one")


def test_a_file_named_like_a_clip_that_does_not_open_is_a_clip_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"SECRET-0123 not a video at all" * 10)
    r = run("encode", str(bad), "--frames", "0:3", "--backend", "cpu")
    assert r.returncode == 1
    (row,) = _rows(r)
    assert row["type"] == "FrameDecodeError" and "not a video file" in row["error"] and "SECRET" not in r.stdout + r.stderr
