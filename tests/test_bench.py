"""The benchmark's structure (rows, CPU-cost figures, report sections) and the GPU goal checker's
PASS/FAIL/SKIP logic and exit status. No test asserts a timing: the goal checks are fed made-up
result dicts, and the runs only show that every figure is produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import gpupipe.tools.goals as goals
from gpupipe.tools.bench import WORKLOADS, full_matrix, measure, median_time, stdlib_uri, timed_runs
from gpupipe.config import Config
from gpupipe.plan import OutputSpec

REPO = Path(__file__).resolve().parents[1]


def test_median_time_counts_runs():
    calls = []
    med, times = median_time(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and len(times) == 5 and med >= 0


def test_timed_runs_counts_cpu_of_every_thread():
    """CPU time is the process's (user + sys of all threads): work done on other threads is counted."""

    def spin():  # burn 20 ms of this thread's own CPU time
        c = time.thread_time()
        while time.thread_time() - c < 0.02:
            pass

    def on_two_threads():
        ts = [threading.Thread(target=spin) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    r = timed_runs(on_two_threads, repeats=2, warmup=0)
    assert len(r.wall) == len(r.cpu) == 2
    assert all(c >= 0.04 for c in r.cpu)  # 2 × 20 ms burned on threads other than the caller's


def test_measure_figures():
    m = measure(lambda: sum(range(20000)), frames=4, repeats=3, warmup=1)
    assert set(m) == {"fps", "cpu_s_per_frame", "cores_busy", "times", "cpu_times"}
    assert len(m["times"]) == len(m["cpu_times"]) == 3
    assert m["fps"] > 0 and m["cpu_s_per_frame"] >= 0


def test_full_matrix_cells():
    cells = full_matrix()
    assert len(cells) == len(set(cells)) == 2 * 3 * 3 + 2
    assert [c for c in cells if c[2] == "resize-1080p"] == [("4k", "png", "resize-1080p"), ("4k", "jpeg", "resize-1080p")]
    assert set(goals.GOAL_MATRIX) <= set(cells) and {c[2] for c in cells} == set(WORKLOADS)
    assert full_matrix(quick=True) == [c for c in cells if c[2] != "resize-1080p"]
    assert WORKLOADS["resize-1080p"] == OutputSpec("jpeg", (1920, 1080), 90)


def test_stdlib_baseline_is_a_valid_uri(frame_files):
    import base64

    p, j = frame_files
    assert stdlib_uri(p, WORKLOADS["passthrough"]) == "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
    assert stdlib_uri(j, OutputSpec("jpeg", (64, 64), 80)).startswith("data:image/jpeg;base64,/9j/")


# --------------------------------------------------------------------------- goal checker


def _row(res, kind, wl, cpu_fps, cpu_cost, gpu_fps=None, gpu_cost=None, passthrough=None):
    w = {"resolution": res, "source": kind, "workload": wl, "frames": 32, "cpu_fps": cpu_fps, "cpu_cpu_s_per_frame": cpu_cost}
    if gpu_fps is not None:
        w.update(gpu_fps=gpu_fps, gpu_cpu_s_per_frame=gpu_cost, gpu_vs_cpu=gpu_fps / cpu_fps, gpu_cpu_s_vs_cpu=gpu_cost / cpu_cost)
    if passthrough is not None:
        w["gpu_passthrough"] = passthrough
    return w


def _kernel(ratio=0.8, verified=1.0):
    return {"nbytes": 256e6, "kernel_gbps": 2400.0 * ratio / 0.8, "copy_gbps": 3000.0, "ratio": ratio, "verified": verified}


def _bench(speed=4.0, cost=0.05, gpu=True, kernel_ratio=0.8, drop=()):
    """A bench.json-like dict whose two goal rows have GPU/CPU ``speed`` and CPU-cost ratio ``cost``."""
    rows = []
    for cell in goals.GOAL_MATRIX:
        if cell in drop:
            continue
        cpu_fps, cpu_cost = 20.0, 2.5
        if gpu:
            pt = {"setting": "cpu", "cpu": {"fps": 500.0, "cpu_s_per_frame": 0.002}, "gpu": {"fps": 600.0, "cpu_s_per_frame": 0.001}}
            rows.append(_row(*cell, cpu_fps, cpu_cost, cpu_fps * speed, cpu_cost * cost, pt if cell[2] == "passthrough" else None))
        else:
            rows.append(_row(*cell, cpu_fps, cpu_cost))
    r = {
        "machine": {"cores": 16},
        "gpu": {"usable": gpu, "reason": "CUDA device 0 of 1" if gpu else "no CUDA device usable: test"},
        "backends": ["cpu", "gpu"] if gpu else ["cpu"],
        "workloads": rows,
    }
    if gpu and kernel_ratio is not None:
        r["gpu_detail"] = {"base64_kernel": _kernel(kernel_ratio), "stages": []}
    return r


def _statuses(lines):
    return {line.goal.split(" (")[0]: line.status for line in lines}


def test_goals_all_pass():
    lines = goals.check_goals(_bench())
    st = _statuses(lines)
    assert st["base64 kernel"] == "PASS"
    assert st["4k jpeg transcode"] == st["4k jpeg resize-1080p"] == "PASS"
    assert st["4k png transcode"] == st["4k png passthrough"] == "INFO"
    assert goals.exit_status(lines) == goals.EXIT_PASS
    assert goals.summary(lines).endswith("-> PASS")


def test_goals_pass_at_the_exact_thresholds():
    lines = goals.check_goals(_bench(speed=3.0, cost=0.1, kernel_ratio=0.70))
    assert goals.exit_status(lines) == goals.EXIT_PASS, [str(x) for x in lines]


@pytest.mark.parametrize(
    ("kw", "failing", "words"),
    [
        ({"speed": 2.9}, ("4k jpeg transcode", "4k jpeg resize-1080p"), "TOO SLOW"),
        ({"cost": 0.11}, ("4k jpeg transcode", "4k jpeg resize-1080p"), "TOO MUCH CPU"),
        ({"kernel_ratio": 0.69}, ("base64 kernel",), "69%"),
        ({"drop": [("4k", "jpeg", "resize-1080p")]}, ("4k jpeg resize-1080p",), "not measured"),
    ],
)
def test_goals_fail(kw, failing, words):
    lines = goals.check_goals(_bench(**kw))
    bad = [x for x in lines if x.status == "FAIL"]
    assert [x.goal.split(" (")[0] for x in bad] == list(failing)
    assert all(words in str(x) and str(x).startswith("FAIL: ") for x in bad)
    assert goals.exit_status(lines) == goals.EXIT_FAIL


def test_goals_fail_when_kernel_output_unverified():
    b = _bench()
    b["gpu_detail"]["base64_kernel"]["verified"] = 0.0
    (line,) = [x for x in goals.check_goals(b) if x.goal.startswith("base64 kernel")]
    assert line.status == "FAIL" and "NOT checked" in line.detail


def test_goals_skip_without_gpu():
    lines = goals.check_goals(_bench(gpu=False))
    assert lines[0].status == "INFO" and "no CUDA device usable: test" in lines[0].detail
    skipped = [str(x) for x in lines if x.status == "SKIP"]
    assert len(skipped) == 3 and all(": no GPU" in s for s in skipped)
    assert "CPU path (16 cores) 20.0 f/s at 2500.0 CPU-ms/frame" in skipped[1]  # the CPU figures are still shown
    assert "PASS" not in {x.status for x in lines} and "FAIL" not in {x.status for x in lines}
    assert goals.exit_status(lines) == goals.EXIT_SKIP
    mixed = goals.check_goals(_bench(gpu=False), _kernel(0.9))  # a passed kernel step does not hide skipped goals
    assert mixed[0].status == "PASS" and goals.exit_status(mixed) == goals.EXIT_SKIP


def test_goals_skip_when_only_the_cpu_backend_ran():
    b = _bench()
    b["backends"] = ["cpu", "stdlib"]
    del b["gpu_detail"]
    for w in b["workloads"]:
        for k in [k for k in w if k.startswith("gpu")]:
            del w[k]
    assert goals.exit_status(goals.check_goals(b)) == goals.EXIT_SKIP


def test_passthrough_reported_both_ways():
    lines = goals.check_goals(_bench())
    (pt,) = [x for x in lines if x.goal.startswith("4k png passthrough")]
    assert pt.status == "INFO"
    assert "passthrough_device=cpu: 500.0 f/s at 2.0 CPU-ms/frame" in pt.detail
    assert "passthrough_device=gpu: 600.0 f/s at 1.0 CPU-ms/frame" in pt.detail


def test_kernel_results_alone():
    assert [x.status for x in goals.check_goals(None, _kernel(0.75))] == ["PASS"]
    assert goals.exit_status(goals.check_goals(None, _kernel(0.5))) == goals.EXIT_FAIL
    assert goals.exit_status(goals.check_goals(None, None)) == goals.EXIT_SKIP


def test_goals_main_exit_status(tmp_path, capsys):
    ok, slow, cpu_only = (tmp_path / n for n in ("ok.json", "slow.json", "cpu.json"))
    ok.write_text(json.dumps(_bench()))
    slow.write_text(json.dumps(_bench(speed=1.5)))
    cpu_only.write_text(json.dumps(_bench(gpu=False)))
    (tmp_path / "k.json").write_text(json.dumps(_kernel(0.9)))
    assert goals.main([str(ok), "--kernel", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PASS: base64 kernel (kernel step)") and out[-1] == "goals: 4 passed, 0 failed, 0 skipped -> PASS"
    assert goals.main([str(slow)]) == 1
    assert "FAIL: 4k jpeg transcode" in capsys.readouterr().out
    assert goals.main([str(cpu_only)]) == 3
    assert goals.main([str(tmp_path / "missing.json")]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL: inputs: cannot read results")


# --------------------------------------------------------------------------- the session script


def _session(tmp_path: Path, steps: str, bench: dict | None) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    if bench is not None:
        (out / "bench-gpu").mkdir(parents=True)
        (out / "bench-gpu" / "bench.json").write_text(json.dumps(bench))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # this interpreter, venv and all
    (bindir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "STEPS": steps, "OUT": str(out)}
    return subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("bench", "rc", "step_line"),
    [
        (_bench(), 0, "step goals: PASS"),
        (_bench(cost=0.5), 1, "step goals: FAIL (exit 1"),
        (_bench(gpu=False), 3, "step goals: SKIPPED"),
        (None, 1, "step goals: FAIL (exit 1"),  # bench-gpu left no results
    ],
)
def test_session_script_goals_step(tmp_path, bench, rc, step_line):
    p = _session(tmp_path, "goals", bench)
    assert p.returncode == rc, p.stdout + p.stderr
    last = p.stdout.strip().splitlines()
    assert last[-1].startswith(step_line) and last[-2] == f"== steps ({tmp_path / 'out'})"


def test_session_script_rejects_unknown_steps(tmp_path):
    p = _session(tmp_path, "kernal", None)
    assert p.returncode == 2 and "unknown step 'kernal'" in p.stderr


# --------------------------------------------------------------------------- end to end


def _tiny_frames(monkeypatch, tmp_path):
    import gpupipe.tools.bench as bench

    monkeypatch.setattr(bench, "RESOLUTIONS", {"1080p": (192, 108), "4k": (384, 216)})
    monkeypatch.setattr(__import__("tempfile"), "tempdir", str(tmp_path))
    return bench


def test_goals_bench_without_gpu_skips(monkeypatch, tmp_path):
    """The CPU smoke of ``gpupipe bench --goals`` + the checker: GPU rows absent, SKIP lines, exit 3."""
    bench = _tiny_frames(monkeypatch, tmp_path)
    import gpupipe.gpu

    monkeypatch.setattr(gpupipe.gpu, "gpu_available", lambda device=0: (False, "no CUDA device usable: test"))
    r = bench.run_bench(backend="gpu", quick=True, goals=True, out=tmp_path / "g", use_ffmpeg=False)
    assert [(w["resolution"], w["source"], w["workload"]) for w in r["workloads"]] == list(goals.GOAL_MATRIX)
    assert r["backends"] == ["cpu"] and not any("gpu_fps" in w for w in r["workloads"])
    assert all(w["frames"] == 4 and w["distinct_frames"] == 2 and w["cpu_cpu_s_per_frame"] > 0 for w in r["workloads"])
    assert not r["stages"] and "soak" not in r and "hit_ratio" not in r
    assert goals.main([str(tmp_path / "g" / "bench.json")]) == goals.EXIT_SKIP
    md = (tmp_path / "g" / "BENCH.md").read_text()
    assert "SKIP: 4k jpeg transcode" in md and "Host CPU cost" in md and "stdlib" not in md


def test_bench_stops_at_its_time_limit(monkeypatch, tmp_path):
    bench = _tiny_frames(monkeypatch, tmp_path)
    r = bench.run_bench(backend="cpu", quick=True, goals=True, out=tmp_path / "g", use_ffmpeg=False, max_seconds=1e-9)
    assert r["workloads"] == [] and "time limit" in r["stopped_early"]
    assert json.loads((tmp_path / "g" / "bench.json").read_text())["stopped_early"] == r["stopped_early"]
    assert "**Stopped early**" in (tmp_path / "g" / "BENCH.md").read_text()


@dataclass(frozen=True)
class _ConfigWithPassthroughDevice(Config):
    """A config that has the ``passthrough_device`` setting (the GPU backend honours it where it exists)."""

    passthrough_device: str = "cpu"


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """The fake CuPy (host memory, the kernel's source run on the host) with DALI and nvImageCodec on their CPU backends."""
    import fake_cupy
    import host_kernel

    if host_kernel.host_cxx() is None:
        pytest.skip("no host C++ compiler for the emulated kernel")
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    (tmp_path / "kernel").mkdir()
    fake = fake_cupy.install(monkeypatch, tmp_path / "kernel")
    import gpupipe.gpu.bench as gbench
    import gpupipe.gpu.dali_decode as dd
    import gpupipe.gpu.device as device
    import gpupipe.gpu.jpeg_encode as je

    real_build, real_enc, real_bw = dd.build_pipeline, je.JpegEncoder, gbench.base64_kernel_bandwidth
    monkeypatch.setattr(dd, "build_pipeline", lambda b, t, device_id, resize: real_build(b, 1, None, resize))
    monkeypatch.setattr(je, "JpegEncoder", lambda device_id=None, **k: real_enc(None))
    monkeypatch.setattr(device, "JpegEncoder", lambda device_id=None, **k: real_enc(None))
    monkeypatch.setattr(gbench, "base64_kernel_bandwidth", lambda nbytes, repeats, frames=16: real_bw(1 << 20, 1, 4))
    return fake


def test_goals_bench_on_the_fake_gpu(fake_gpu, monkeypatch, tmp_path):
    """``gpupipe bench --goals`` with a GPU backend (fake device: figures meaningless): GPU rows carry both
    ratios, passthrough runs with both ``passthrough_device`` values, and the goal lines are PASS or FAIL."""
    bench = _tiny_frames(monkeypatch, tmp_path)
    made = []
    real_encoder = bench.FrameEncoder

    def encoder(cfg, backend="auto"):
        made.append((backend, getattr(cfg, "passthrough_device", None)))
        return real_encoder(cfg, backend)

    monkeypatch.setattr(bench, "FrameEncoder", encoder)
    r = bench.run_bench(backend="gpu", quick=True, goals=True, out=tmp_path / "g", use_ffmpeg=False,
                        config=_ConfigWithPassthroughDevice())
    assert sorted(made) == [("cpu", "cpu"), ("gpu", "cpu"), ("gpu", "gpu")]
    for w in r["workloads"]:
        assert w["gpu_vs_cpu"] == w["gpu_fps"] / w["cpu_fps"]
        assert w["gpu_cpu_s_vs_cpu"] == w["gpu_cpu_s_per_frame"] / w["cpu_cpu_s_per_frame"]
    pts = [w["gpu_passthrough"] for w in r["workloads"] if w["workload"] == "passthrough"]
    assert len(pts) == 2 and all(p["setting"] == "cpu" and p["cpu"]["fps"] > 0 and p["gpu"]["fps"] > 0 for p in pts)
    assert r["gpu_detail"]["base64_kernel"]["verified"] == 1.0 and len(r["gpu_detail"]["stages"]) == 4
    lines = goals.check_goals(r)
    assert {x.status for x in lines if x.goal.startswith(("base64 kernel", "4k jpeg transcode", "4k jpeg resize"))} <= {"PASS", "FAIL"}
    md = (tmp_path / "g" / "BENCH.md").read_text()
    assert "`passthrough_device: cpu` and `gpu`" in md and "GPU / CPU CPU-s per frame" in md
    assert (tmp_path / "g" / "gpu_cpu_ratio.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_bench_writes_report(tmp_path, monkeypatch):
    """``gpupipe bench --quick`` end to end on frames a tenth of 1080p and 4K (``_tiny_frames``): every
    row, figure, section and chart; the figures themselves mean nothing here."""
    bench = _tiny_frames(monkeypatch, tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    out = tmp_path / "results"
    r = bench.run_bench(quick=True, out=out, use_ffmpeg=False)
    data = json.loads((out / "bench.json").read_text())
    assert len(data["workloads"]) == len(full_matrix(quick=True))
    for w in data["workloads"]:
        for b in ("cpu", "stdlib"):
            assert w[f"{b}_fps"] > 0 and w[f"{b}_cpu_s_per_frame"] > 0 and len(w[f"{b}_cpu_times"]) == data["repeats"]
    assert {s["workload"] for s in data["stages"]} == set(WORKLOADS) - {"resize-1080p"}
    assert data["soak"]["invariant_violations"] == 0
    md = (out / "BENCH.md").read_text()
    assert "Throughput" in md and "Host CPU cost" in md and "Memory soak" in md
    for chart in ("throughput.png", "cpu_cost.png", "stages.png", "soak_rss.png"):
        assert (out / chart).stat().st_size > 1000
    assert r["machine"]["cores"] >= 1


# --------------------------------------------------------------------------- the video section


def _video_paths(extract_cpu=0.5, extract_fps=4.0, cpu_fitted=0.08, gpu=None, source=0.12, plain=0.1, seeks=0):
    """A clip row's paths: extraction to PNG + passthrough, the CPU video source, the plain PyAV loop, and
    (``gpu``: (f/s, CPU-s)) the GPU one."""
    p = {
        "extract-png+passthrough": {"fps": extract_fps, "cpu_s_per_frame": extract_cpu},
        "video-cpu-fitted": {"fps": 10.0, "cpu_s_per_frame": cpu_fitted},
        "video-cpu-source": {"fps": 8.0, "cpu_s_per_frame": source, "seeks": seeks},
        "pyav-loop": {"fps": 9.0, "cpu_s_per_frame": plain},
    }
    if gpu is not None:
        p["video-gpu-fitted"] = {"fps": gpu[0], "cpu_s_per_frame": gpu[1], "decoder": "nvdec"}
    return p


def _video_bench(device="NVIDIA H200", gpu=(400.0, 0.003), sections=("video",), notes=(), **kw):
    rows = [
        {"resolution": res, "codec": codec, "frames": 60, "paths": _video_paths(gpu=gpu, **kw)}
        for res in ("1080p", "4k")
        for codec in ("h264", "hevc")
        if not any(n.startswith(codec) for n in notes)
    ]
    ran = gpu is not None
    return {
        "sections": list(sections),
        "workloads": [],
        "machine": {"cores": 16},
        "gpu": {"usable": ran, "reason": "CUDA device 0 of 1" if ran else "no CUDA device usable: test"},
        "backends": ["cpu", "gpu"] if ran else ["cpu"],
        "video": {
            "rows": rows,
            "notes": list(notes),
            "gpu": {"ran": ran, "device": device if ran else None, "reason": "ok" if ran else "no GPU (test)"},
        },
    }


def test_video_goals_pass():
    lines = goals.check_goals(_video_bench())
    assert [(x.goal.split(" (")[0], x.status) for x in lines] == [
        ("video 4k h264 CPU path", "PASS"),
        ("video 4k hevc CPU path", "PASS"),
        ("video 4k h264 GPU path", "PASS"),
        ("video in-order contract", "PASS"),
    ]  # a --video run: no image-matrix goal lines
    assert "6.2x fewer" in lines[0].detail and "at the clip's size 120.0 CPU-ms/frame, 4.2x fewer" in lines[0].detail
    assert goals.exit_status(lines) == goals.EXIT_PASS


@pytest.mark.parametrize(
    ("kw", "failing", "words"),
    [
        ({"cpu_fitted": 0.11}, ["video 4k h264 CPU path", "video 4k hevc CPU path"], "4.5x fewer"),
        ({"plain": 0.079}, ["video in-order contract"], "4k hevc: 1.52x (120.0 vs 79.0 CPU-ms/frame, OVER)"),
        ({"seeks": 3}, ["video in-order contract"], "1080p h264: 1.20x (120.0 vs 100.0 CPU-ms/frame, 3 seeks, OVER)"),
        ({"gpu": (299.0, 0.003)}, ["video 4k h264 GPU path"], "TOO SLOW"),
        ({"gpu": (400.0, 0.0051)}, ["video 4k h264 GPU path"], "TOO MUCH CPU"),
        ({"gpu": (400.0, 0.003), "extract_fps": 20.5}, ["video 4k h264 GPU path"], "NOT ENOUGH"),
    ],
)
def test_video_goals_fail(kw, failing, words):
    lines = goals.check_goals(_video_bench(**kw))
    bad = [x for x in lines if x.status == "FAIL"]
    assert [x.goal.split(" (")[0] for x in bad] == failing and all(words in x.detail for x in bad), [str(x) for x in lines]
    assert goals.exit_status(lines) == goals.EXIT_FAIL


def test_video_goals_at_the_exact_thresholds():
    lines = goals.check_goals(_video_bench(cpu_fitted=0.1, gpu=(300.0, 0.005), extract_fps=15.0, source=0.15, plain=0.1))
    assert goals.exit_status(lines) == goals.EXIT_PASS, [str(x) for x in lines]


def test_video_gpu_goal_skipped_without_a_gpu_and_informational_on_another_gpu():
    lines = goals.check_goals(_video_bench(gpu=None))
    (g,) = [x for x in lines if "GPU path" in x.goal]
    assert g.status == "SKIP" and "no GPU (test)" in g.detail and "CPU path video source 10.0 f/s" in g.detail
    assert goals.exit_status(lines) == goals.EXIT_SKIP
    (g,) = [x for x in goals.check_goals(_video_bench(device="NVIDIA L4")) if "GPU path" in x.goal]
    assert g.status == "INFO" and "this GPU is NVIDIA L4" in g.detail


def test_video_goals_missing_rows_codecs_and_sections():
    lines = goals.check_goals(_video_bench(notes=["hevc: no encoder (PyAV lacks it): rows skipped"]))
    assert [x.status for x in lines] == ["PASS", "SKIP", "PASS", "PASS"] and "no encoder" in lines[1].detail
    b = _video_bench()
    b["video"]["rows"] = [r for r in b["video"]["rows"] if r["resolution"] != "4k"]
    assert {x.status for x in goals.check_goals(b) if "4k" in x.goal} == {"FAIL"}
    del b["video"]
    (only,) = goals.check_goals(b)
    assert only.status == "FAIL" and "no video section" in only.detail
    full = _bench()  # an image-matrix run with a video section gets both sets of lines
    full.update(sections=["image", "video"], video=_video_bench()["video"])
    names = [x.goal.split(" (")[0] for x in goals.check_goals(full)]
    assert "4k jpeg transcode" in names and names[-4:] == [
        "video 4k h264 CPU path", "video 4k hevc CPU path", "video 4k h264 GPU path", "video in-order contract"
    ]


def _tiny_clips(monkeypatch, tmp_path):
    """The video section on clips of 192x108 and 384x216 pixels, 4 frames each, in ``tmp_path``."""
    import gpupipe.tools.video_bench as vb

    monkeypatch.setattr(vb, "VIDEO_SIZES", {"1080p": (192, 108), "4k": (384, 216)})
    monkeypatch.setattr(vb, "QUICK_FRAMES", 4)
    monkeypatch.setattr(__import__("tempfile"), "tempdir", str(tmp_path))
    return _tiny_frames(monkeypatch, tmp_path)


@pytest.mark.parametrize("use_ffmpeg", [True, False], ids=["ffmpeg-binary", "pyav"])
def test_quick_video_bench(monkeypatch, tmp_path, use_ffmpeg):
    """``gpupipe bench --video --quick`` on tiny clips (the figures mean nothing): every clip and path, the
    figures, the report and the goal lines; the GPU path skipped with its reason; ffmpeg or PyAV."""
    from gpupipe.tools.ffmpeg_frames import find_ffmpeg

    if use_ffmpeg and find_ffmpeg() is None:
        pytest.skip("no ffmpeg binary")
    bench = _tiny_clips(monkeypatch, tmp_path)
    import gpupipe.gpu

    monkeypatch.setattr(gpupipe.gpu, "gpu_available", lambda device=0: (False, "no CUDA device usable: test"))
    r = bench.run_bench(backend="gpu", quick=True, video=True, out=tmp_path / "v", use_ffmpeg=use_ffmpeg)
    v = r["video"]
    assert r["sections"] == ["video"] and r["workloads"] == [] and "soak" not in r
    assert [(row["resolution"], row["codec"]) for row in v["rows"]] == [
        ("1080p", "h264"), ("1080p", "hevc"), ("4k", "h264"), ("4k", "hevc")
    ]
    assert v["gpu"] == {"ran": False, "reason": "no GPU (no CUDA device usable: test)", "device": None}
    assert ("PyAV" in v["ffmpeg"]) != use_ffmpeg
    for row in v["rows"]:
        assert set(row["paths"]) == {
            "extract-png", "extract-png+passthrough", "extract-png+fitted", "video-cpu-fitted", "video-cpu-source", "pyav-loop"
        }
        for name, m in row["paths"].items():
            assert m["fps"] > 0 and m["cpu_s_per_frame"] > 0, name
        for out in ("fitted", "source"):
            m = row["paths"][f"video-cpu-{out}"]
            assert m["seeks"] == 0 and m["decoded"] == 4  # in order: one decode per frame, no seek
            assert m["cpu_s_vs_extract_png"] > 0 and len(m["wall_s"]) == 1
        assert row["png_mb"] > 0 and row["clip_mb"] > 0
        assert row["paths"]["video-cpu-source"]["cpu_vs_pyav_loop"] > 0 and row["paths"]["pyav-loop"]["fps"] > 0
    assert not list((tmp_path / "gpupipe-bench" / "video").glob("*-png"))  # extracted frames removed
    statuses = {x.goal.split(" (")[0]: x.status for x in goals.check_goals(r)}
    assert statuses["video 4k h264 GPU path"] == "SKIP" and statuses["video 4k hevc CPU path"] in ("PASS", "FAIL")
    assert statuses["video in-order contract"] in ("PASS", "FAIL")
    md = (tmp_path / "v" / "BENCH.md").read_text()
    assert "### Frames from video (4 frames per clip" in md and "(b) video source, CPU, JPEG fitted 1920x1080" in md
    assert "GPU: not run: no GPU (no CUDA device usable: test)" in md and "SKIP: video 4k h264 GPU path" in md


def test_session_script_video_step(tmp_path):
    """The ``video`` step runs ``gpupipe bench --backend gpu --video`` into $OUT/bench-video, then the goal checker on it."""
    out = tmp_path / "out"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    made = json.dumps(_video_bench())
    fake = tmp_path / "fake_bench.py"  # stands in for the bench: records its arguments, writes results
    fake.write_text(
        "import json, pathlib, sys\n"
        "args = sys.argv[1:]\n"
        "d = pathlib.Path(args[args.index('--out') + 1]); d.mkdir(parents=True)\n"
        f"(d / 'bench.json').write_text({made!r})\n"
        "(d.parent / 'args.json').write_text(json.dumps(args))\n"
    )
    (bindir / "python3").write_text(
        f'#!/bin/sh\nif [ "$1 $2 $3" = "-m gpupipe bench" ]; then shift 3; exec "{sys.executable}" "{fake}" "$@"; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    (bindir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "STEPS": "video", "OUT": str(out)}
    p = subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    args = json.loads((out / "args.json").read_text())
    assert args[:3] == ["--backend", "gpu", "--video"] and args[args.index("--out") + 1] == str(out / "bench-video")
    assert "PASS: video 4k h264 GPU path" in (out / "video-goals.txt").read_text()
    assert p.stdout.strip().splitlines()[-1].startswith("step video: PASS")


def test_video_cpu_goal_names_the_default_compression_extraction_for_reference():
    b = _video_bench(cpu_fitted=0.2)
    for row in b["video"]["rows"]:
        row["paths"]["extract-png-default+passthrough"] = {"fps": 1.0, "cpu_s_per_frame": 1.8}
    (h264,) = [x for x in goals.check_goals(b) if x.goal.startswith("video 4k h264 CPU path")]
    assert h264.status == "FAIL" and "2.5x fewer" in h264.detail  # judged against the renderer's own setting
    assert "against PNG at ffmpeg's default compression (1800.0 CPU-ms/frame, not the renderer's setting) 9.0x fewer" in h264.detail


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_pyav_clips_have_the_encoders_keyframes_and_optional_bt709_tags(tmp_path, codec):
    """Clips made through PyAV are what the ffmpeg command line makes: one keyframe in a short clip (lavfi's
    frames come marked I, which libx264 would take as forced keyframes), and BT.709 tags when asked."""
    import av

    from gpupipe.frames.clip import probe_clip
    from gpupipe.tools.video_clips import make_clip

    plain = make_clip(tmp_path, (64, 48), 8, codec, None)
    tagged = make_clip(tmp_path, (64, 48), 8, codec, None, bt709=True)
    assert plain != tagged and probe_clip(plain, "plain").keyframes == (0,)
    with av.open(str(plain)) as c:
        assert int(next(c.decode(video=0)).colorspace) == 2  # AVCOL_SPC_UNSPECIFIED
    with av.open(str(tagged)) as c:
        f = next(c.decode(video=0))
        assert (int(f.colorspace), int(f.color_primaries), int(f.color_trc)) == (1, 1, 1)  # BT.709 each
