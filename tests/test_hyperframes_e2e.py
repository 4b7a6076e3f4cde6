"""The end-to-end render through the real renderer (hyperframes 0.8.170) with the gpupipe-ffmpeg front,
compared frame by frame with the same render through ffmpeg alone; and the benchmark harness's parts.

The end-to-end test needs the pinned CLI, Node >= 22, Debian's chromium, ffmpeg and ffprobe on ``PATH``
(``bash scripts/setup_hyperframes.sh`` installs them) and the ``gpupipe-ffmpeg`` executable (next to
this Python: ``pip install -e .``). Where any is missing it skips, unless ``HYPERFRAMES_E2E_REQUIRED=1``
(set by .ci/run, which runs that script) makes that a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpupipe.samples import write_clip
from gpupipe.tools.goals import EXIT_FAIL, EXIT_SKIP
from gpupipe.tools.hyperframes_bench import front_summary
from gpupipe.tools.hyperframes_goals import EXTRACT_PSNR_MIN_DB, PSNR_MIN_DB, check_goals, exit_status
from gpupipe.tools.hyperframes_render import disk_used, measure_render, parse_trace, write_project
from gpupipe.tools.hyperframes_toolchain import HYPERFRAMES_VERSION, Toolchain, ToolchainMissing, find_front, find_toolchain
from gpupipe.tools.video_compare import PSNR_IDENTICAL, image_psnr, video_psnr

ROOT = Path(__file__).resolve().parents[1]
SETUP = "bash scripts/setup_hyperframes.sh"
REQUIRED = os.environ.get("HYPERFRAMES_E2E_REQUIRED") == "1"  # read at import: the autouse fixture only clears GPUPIPE_*


def _need(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} ({SETUP} installs it), and HYPERFRAMES_E2E_REQUIRED=1")
    pytest.skip(f"{what}: {SETUP} installs it")


@pytest.mark.slow
def test_render_with_the_front_matches_ffmpeg(tmp_path: Path) -> None:
    """320x240, 1 s, draft: the same video, frame for frame, with the front extracting the clips."""
    try:
        tools = find_toolchain()
    except ToolchainMissing as e:
        _need(str(e))
    front = find_front()
    if front is None:
        _need("the gpupipe-ffmpeg executable is missing (pip install -e . puts it next to this Python)")
        return
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=30, size=(320, 240), fps=30)
    project = write_project(tmp_path / "project", [clip], (320, 240), 1.0)
    plain = measure_render(tools, project, tmp_path / "ffmpeg.mp4", tools.render_env(tmp_path / "cache-ffmpeg"), "draft", timeout=240)
    log = tmp_path / "front.jsonl"
    env = tools.render_env(tmp_path / "cache-gpupipe", front, {"GPUPIPE_FFMPEG_LOG": str(log)})
    ours = measure_render(tools, project, tmp_path / "gpupipe.mp4", env, "draft", timeout=240)
    done = front_summary(log)
    assert done["extractions"] >= 1 and done["frames"] == 30 and done["fell_back"] == 0, done
    assert plain.cache_misses == ours.cache_misses == 1
    p = video_psnr(plain.output, ours.output)
    assert p.same_shape and (p.frames_a, p.size_a) == (30, (320, 240)), p
    assert p.min_db >= PSNR_MIN_DB, p
    # The files the renderer read: the front's against its ffmpeg's, name for name (the extraction's parity).
    theirs = sorted((tmp_path / "cache-ffmpeg").rglob("frame_*.jpg"))
    mine = sorted((tmp_path / "cache-gpupipe").rglob("frame_*.jpg"))
    assert [f.name for f in mine] == [f.name for f in theirs] and len(mine) == 30, (len(mine), len(theirs))
    worst = min(image_psnr(a, b) for a, b in zip(theirs, mine))
    assert worst >= EXTRACT_PSNR_MIN_DB, worst


def test_project_root_carries_what_the_cli_needs(tmp_path: Path) -> None:
    clips = []
    for i, size in enumerate(((64, 48), (96, 64))):
        clips.append(tmp_path / f"c{i}.mp4")
        write_clip(clips[-1], frames=3, size=size, fps=30)
    project = write_project(tmp_path / "p", clips, (640, 360), 1.5)
    html = (project / "index.html").read_text()
    for attr in ('data-composition-id="main"', 'data-width="640"', 'data-height="360"', "data-no-timeline", 'data-duration="1.5"'):
        assert attr in html
    assert html.count("<video") == 2 and "width: 320px; height: 180px" in html
    assert (project / "c0.mp4").read_bytes() == clips[0].read_bytes()
    with pytest.raises(ValueError, match="at most 4 clips"):
        write_project(tmp_path / "q", clips * 3, (640, 360), 1.0)


def test_parse_trace_reads_stage_durations_and_cache_counters() -> None:
    log = "\n".join(
        [
            "noise",
            '[INFO] [Render:trace] {"phase":"video_extract","status":"start","elapsedMs":5}',
            '[INFO] [Render:trace] {"phase":"video_extract","status":"end","durationMs":4593}',
            '[INFO] [Render:trace] {"phase":"video_extract","status":"checkpoint","cacheHits":1,"cacheMisses":2,"totalFramesExtracted":60}',
            '[INFO] [Render:trace] {"phase":"capture_streaming","status":"end","durationMs":7518}',
            "[INFO] [Render:trace] {not json",
            '[INFO] [Render:trace] ["a list"]',
        ]
    )
    stages, counters = parse_trace(log)
    assert stages == {"video_extract": 4.593, "capture_streaming": 7.518}
    assert counters == {"cacheHits": 1, "cacheMisses": 2, "totalFramesExtracted": 60}


def test_video_psnr_identical_and_different(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_clip(a, frames=4, size=(64, 48), fps=30)
    write_clip(b, frames=5, size=(64, 48), fps=30, seed=3)
    same = video_psnr(a, a)
    assert same.same_shape and same.frames_a == 4 and same.min_db == same.mean_db == PSNR_IDENTICAL
    diff = video_psnr(a, b)
    assert not diff.same_shape and (diff.frames_a, diff.frames_b) == (4, 5) and diff.min_db < 40


def test_front_summary_counts_extractions_passes_and_fallbacks(tmp_path: Path) -> None:
    log = tmp_path / "front.jsonl"
    records = [
        {"action": "extract", "argv": [], "frames": 30, "by": "cpu", "seconds": 0.5},
        {"action": "pass", "reason": "not an extraction", "argv": ["-version"]},
        {"action": "pass", "reason": "gpupipe failed (no frames)", "argv": []},
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    s = front_summary(log)
    assert (s["extractions"], s["frames"], s["seconds"], s["passed"], s["fell_back"]) == (1, 30, 0.5, 1, 1)
    assert front_summary(tmp_path / "absent.jsonl")["extractions"] == 0


def test_render_env_pins_the_renderer_and_routes_ffmpeg_through_the_front(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HYPERFRAMES_FFMPEG_PATH", "/elsewhere/ffmpeg")
    t = Toolchain(node=Path("/n/bin/node"), cli=Path("/h/cli.mjs"), chromium=Path("/c"), ffmpeg=Path("/f/ffmpeg"), ffprobe=Path("/f/ffprobe"))
    plain = t.render_env(tmp_path)
    assert plain["HYPERFRAMES_FFMPEG_PATH"] == "/f/ffmpeg" and "GPUPIPE_REAL_FFMPEG" not in plain
    for k in ("HYPERFRAMES_NO_UPDATE_CHECK", "HYPERFRAMES_NO_AUTO_INSTALL", "HYPERFRAMES_NO_TELEMETRY", "HYPERFRAMES_RENDER_DETACHED", "PUPPETEER_SKIP_DOWNLOAD"):
        assert plain[k] == "1"
    assert plain["HYPERFRAMES_EXTRACT_CACHE_DIR"] == str(tmp_path) and plain["PATH"].startswith("/n/bin")
    ours = t.render_env(tmp_path, Path("/v/bin/gpupipe-ffmpeg"), {"GPUPIPE_EXTRACT_FIT": "320x180"})
    assert ours["HYPERFRAMES_FFMPEG_PATH"] == "/v/bin/gpupipe-ffmpeg" and ours["GPUPIPE_REAL_FFMPEG"] == "/f/ffmpeg"
    assert ours["GPUPIPE_EXTRACT_FIT"] == "320x180" and t.command("render")[1:] == ["/h/cli.mjs", "render"]


def test_find_toolchain_names_every_missing_piece(tmp_path: Path) -> None:
    with pytest.raises(ToolchainMissing) as e:
        find_toolchain(tmp_path, chromium=tmp_path / "no-chromium", ffmpeg=tmp_path / "no-ffmpeg", ffprobe=tmp_path / "no-ffprobe")
    msg = str(e.value)
    for piece in (f"hyperframes {HYPERFRAMES_VERSION}", "Chromium", "ffmpeg (", "ffprobe (", SETUP):
        assert piece in msg


def test_setup_script_pins_the_same_version() -> None:
    assert f"VERSION={HYPERFRAMES_VERSION} " in (ROOT / "scripts" / "setup_hyperframes.sh").read_text()


def _results(size: list[int], fit: list[int], gpu: dict, runs: list[dict], comparisons: list[dict]) -> dict:
    return {
        "machine": {"gpu": gpu},
        "composition": {"size": size, "shown_at": [size[0] // 2, size[1] // 2]},
        "fit": fit,
        "psnr_min_db": PSNR_MIN_DB,
        "runs": runs,
        "comparisons": comparisons,
        "skipped": [],
    }


def _run(mode: str, cache: str, wall: float, rss: int, extract: float, front: dict | None = None) -> dict:
    return {"mode": mode, "quality": "draft", "cache": cache, "wall_s": wall, "peak_rss": rss, "extract_s": extract, "front": front}


def _cmp(mode: str, cache: str, min_db: float, frames_b: int = 30) -> dict:
    return {
        "a": "ffmpeg",
        "b": mode,
        "mode": mode,
        "quality": "draft",
        "cache": cache,
        "frames_a": 30,
        "frames_b": frames_b,
        "size_a": [3840, 2160],
        "size_b": [3840, 2160],
        "min_db": min_db,
        "mean_db": min_db + 5,
    }


def test_goals_on_an_h200_run() -> None:
    front = {"extractions": 2, "frames": 240, "fell_back": 0}
    runs = [
        _run("ffmpeg", "cold", 60.0, 5000, 20.0),
        _run("ffmpeg", "warm", 50.0, 4500, 0.0),
        _run("gpupipe", "cold", 41.0, 4500, 0.5, front),
        _run("gpupipe", "warm", 50.0, 4500, 0.0, {"extractions": 0}),
        _run("fitted", "cold", 32.0, 3000, 0.4, front),
        _run("fitted", "warm", 38.0, 4000, 0.0, {"extractions": 0}),
    ]
    gpu = {"usable": True, "device": "NVIDIA H200", "reason": "ok"}
    lines = {g.goal: g for g in check_goals(_results([3840, 2160], [1920, 1080], gpu, runs, [_cmp("gpupipe", "cold", 44.0), _cmp("gpupipe", "warm", 34.0)]))}
    assert lines["output parity draft cold"].status == "PASS" and lines["output parity draft warm"].status == "FAIL"
    assert lines["extraction speed draft"].status == "PASS"  # 20 / 0.5 = 40x
    assert lines["fitted frames"].status == "FAIL"  # warm: wall 24 % less, RSS only 11 % less
    assert lines["fitted frames cold"].status == "INFO"


def test_goals_skip_without_a_gpu_a_front_or_a_4k_composition() -> None:
    runs = [_run("ffmpeg", "cold", 20.0, 3000, 5.0), _run("gpupipe", "cold", 20.0, 3000, 5.0, {"extractions": 0, "fell_back": 1})]
    gpu = {"usable": False, "reason": "no NVIDIA driver"}
    goals = check_goals(_results([640, 360], [320, 180], gpu, runs, [_cmp("gpupipe", "cold", 60.0)]))
    by = {g.goal: g for g in goals}
    assert by["output parity draft cold"].status == "FAIL"  # the front fell back: not a gpupipe render
    assert by["extraction speed"].status == "SKIP" and "no NVIDIA driver" in by["extraction speed"].detail
    assert by["fitted frames"].status == "SKIP" and "640x360" in by["fitted frames"].detail
    assert exit_status([{"status": g.status} for g in goals]) == EXIT_FAIL
    none = check_goals(_results([640, 360], [320, 180], gpu, runs[:1], []))
    assert {g.goal: g.status for g in none}["output parity"] == "SKIP"
    assert exit_status([{"status": g.status} for g in none]) == EXIT_SKIP


def test_disk_used_counts_allocated_blocks(tmp_path: Path) -> None:
    assert disk_used(tmp_path / "absent") == 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    assert disk_used(tmp_path) >= 10000


def test_run_bench_records_what_the_front_did_per_cell(tmp_path: Path, monkeypatch) -> None:
    """The harness without a renderer (its toolchain, clips, renders and PSNR stubbed): each gpupipe and
    fitted row carries the front's log summary, which the parity goal and the report read; clips are tagged."""
    from gpupipe.tools import hyperframes_bench as hb
    from gpupipe.tools.hyperframes_goals import markdown_report
    from gpupipe.tools.hyperframes_render import RenderRun
    from gpupipe.tools.video_compare import VideoPsnr

    tools = Toolchain(node=Path("/n"), cli=Path("/c"), chromium=Path("/b"), ffmpeg=Path("/f/ffmpeg"), ffprobe=Path("/f/ffprobe"))
    monkeypatch.setattr(hb, "find_toolchain", lambda home, **kw: tools)
    made: list[bool] = []

    def make_clip(folder, size, frames, codec, exe, *, bt709=False):
        made.append(bt709)
        return folder / f"{size[0]}x{size[1]}.mp4"

    def render(tools, project, out, env, quality, workers, timeout):
        out.parent.mkdir(parents=True, exist_ok=True)
        if "GPUPIPE_FFMPEG_LOG" in env:  # the front's log, as gpupipe-ffmpeg appends it
            Path(env["GPUPIPE_FFMPEG_LOG"]).write_text(
                json.dumps({"action": "pass", "reason": "no output file last", "argv": ["-version"]})
                + "\n"
                + json.dumps({"action": "extract", "argv": [], "frames": 30, "seconds": 0.5})
                + "\n"
            )
        return RenderRun(out, out.with_suffix(".log"), 10.0, 12.0, 12.0, True, 2**30, 2**29, 9, 2**20, 1.0, 0, 1)

    monkeypatch.setattr(hb, "make_clip", make_clip)
    monkeypatch.setattr(hb, "write_project", lambda folder, clips, size, duration: folder)
    monkeypatch.setattr(hb, "measure_render", render)
    monkeypatch.setattr(hb, "video_psnr", lambda a, b: VideoPsnr(30, 30, (640, 360), (640, 360), 50.0, 55.0))
    argv = ["--quick", "--quality", "draft", "--front", "/v/gpupipe-ffmpeg", "--work", str(tmp_path), "--out", str(tmp_path / "r")]
    a = hb._parser().parse_args(argv)
    a.argv, (a.size, a.duration) = argv, ((640, 360), 1.0)
    results = hb.run_bench(a, say=lambda line: None)
    assert made == [True, True] and results["composition"]["clip_tags"] == "bt709"
    fronts = {(r["mode"], r["cache"]): r.get("front") for r in results["runs"]}
    assert fronts[("ffmpeg", "cold")] is None
    assert fronts[("gpupipe", "cold")] == fronts[("fitted", "warm")] == {
        "extractions": 1, "frames": 30, "seconds": 0.5, "passed": 1, "fell_back": 0, "fallback_reasons": []
    }
    parity = [g for g in results["goals"] if g["goal"] == "output parity draft cold"]
    assert parity and parity[0]["status"] == "PASS", parity
    assert "| 1 (30 frames) / 1 / 0 |" in markdown_report(results)
