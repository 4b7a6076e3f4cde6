"""``scripts/gpu_session.sh STEPS=all`` (one device call for issue 18) and its goal summary
(``gpupipe.tools.session_goals``), without a GPU: every step's command is a fake python that records
its arguments and writes the files the real one would; the goal summary runs for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_bench import _video_bench

from gpupipe.tools.session_goals import check_session, main

REPO = Path(__file__).resolve().parents[1]


def _bench(gpu_jpeg_fps=520.0, resize_ratio=0.08, png=(2.5, 0.4), device="NVIDIA H200"):
    def row(res, kind, wl, gfps, cfps, gcost, ccost):
        return {"resolution": res, "source": kind, "workload": wl, "gpu_fps": gfps, "cpu_fps": cfps,
                "gpu_cpu_s_per_frame": gcost, "cpu_cpu_s_per_frame": ccost}  # fmt: skip

    return {
        "machine": {"cores": 16},
        "gpu": {"usable": True, "reason": f"CUDA device 0 of 1 ({device}, sm_90), driver CUDA 13.0"},
        "workloads": [
            row("4k", "jpeg", "transcode", gpu_jpeg_fps, 25.0, 0.008, 0.1),
            row("4k", "jpeg", "resize-1080p", 560.0, 90.0, 0.05 * resize_ratio, 0.05),
            row("4k", "png", "transcode", 20.0 * png[0], 20.0, 0.25 * png[1], 0.25),
        ],
    }


def _write_results(out: Path, **kw) -> None:
    (out / "bench-gpu").mkdir(parents=True, exist_ok=True)
    (out / "bench-gpu" / "bench.json").write_text(json.dumps(_bench(**kw)))
    rows = [{"resolution": r, "setting": f"load {x:g}", "hw_decoder_load": x, "hints": False, "frames": 16, "fps": 100.0,
             "cpu_ms_per_frame": 1.0, "all_encoded": True} for r in ("4k", "1080p") for x in (0.0, 0.65, 1.0)]  # fmt: skip
    choice = {"setting": "load 1", "hw_decoder_load": 1.0, "hints": False, "worst_share": 1.0}
    (out / "hwdec.json").write_text(json.dumps({"gpu": True, "rows": rows, "choice": choice}))
    (out / "base64-kernel.json").write_text(json.dumps({"ratio": 0.72, "kernel_gbps": 2800.0, "copy_gbps": 3900.0}))
    (out / "serve-load-gpu.json").write_text(json.dumps({"p50_ms": 3.0, "p99_ms": 40.0, "errors": 0}))
    (out / "serve-load-cpu.json").write_text(json.dumps({"p50_ms": 7.0, "p99_ms": 900.0, "errors": 0}))
    mem = {"device_total_bytes": 1, "staging_pool_used_bytes": 0, "pinned_staging_bytes": 0}
    (out / "info.json").write_text(json.dumps({"backends": {"gpu": {"detail": {"device_memory": mem}}}}))
    (out / "png-goals.txt").write_text("PASS: 4k RGBA png encode 3x faster: 3.4x at 1.1x bytes\n")
    (out / "goals.txt").write_text("PASS: 4k jpeg transcode (GPU >= 3x ...): ok\ngoals: 1 passed -> PASS\n")


def test_session_goals_pass_fail_and_not_run(tmp_path, capsys):
    _write_results(tmp_path)
    lines, earlier = check_session(tmp_path, 300)
    assert [g.status for g in lines] == ["PASS"] * len(lines) and len(lines) == 9
    assert [str(g) for g in earlier] == [
        "PASS: 4k jpeg transcode (GPU >= 3x ...): ok",
        "NOT RUN: #17 video goals: no video-goals.txt",
    ]
    _write_results(tmp_path, gpu_jpeg_fps=300.0, resize_ratio=0.125, png=(1.04, 1.03))
    by = {g.goal.split(" ")[1] + g.goal.split(" ")[2]: g.status for g in check_session(tmp_path, 500)[0]}
    assert by["4kjpeg"] == "FAIL" and by["4kpng"] == "FAIL" and by["onedevice"] == "FAIL"
    _write_results(tmp_path, device="NVIDIA A10")  # the f/s goal is set for H100/H200
    (fps,) = [g for g in check_session(tmp_path)[0] if "f/s (H100/H200)" in g.goal]
    assert fps.status == "NOT RUN" and "not an H100/H200" in fps.detail
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 3  # nothing measured: NOT RUN, not FAIL
    out = capsys.readouterr().out
    assert "== issue 18 goals" in out and "NOT RUN: #18 base64 kernel >= 70% of a device copy: no base64-kernel.json" in out


def _fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A fake ``python3`` on PATH: the goal checkers run for real, every other command is recorded
    (one JSON line of arguments in calls.jsonl) and writes what the real one would."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.jsonl"
    bench = json.dumps(_bench())
    video = json.dumps(_video_bench())
    fake = tmp_path / "fake_python.py"
    fake.write_text(
        "import json, pathlib, sys\n"
        "a = sys.argv[1:]\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(a) + '\\n')\n"
        "def out_dir():\n"
        "    d = pathlib.Path(a[a.index('--out') + 1]); d.mkdir(parents=True, exist_ok=True); return d\n"
        "if a[:3] == ['-m', 'gpupipe', 'bench']:\n"
        f"    (out_dir() / 'bench.json').write_text({video!r} if '--video' in a else {bench!r})\n"
        "elif a[:3] == ['-m', 'gpupipe', 'info']:\n"
        "    print(json.dumps({'backends': {'gpu': {'detail': {'device_memory': {'device_total_bytes': 1,"
        " 'staging_pool_used_bytes': 0, 'pinned_staging_bytes': 0}}}}}))\n"
        "elif a[:2] == ['-m', 'gpupipe.tools.hwdec']:\n"
        "    rows = [{'resolution': r, 'setting': 'load %g' % x, 'hw_decoder_load': x, 'hints': False, 'frames': 16,"
        " 'fps': 9.0, 'cpu_ms_per_frame': 1.0, 'all_encoded': True} for r in ('4k', '1080p') for x in (0.0, 0.65, 1.0)]\n"
        "    c = {'setting': 'load 1', 'hw_decoder_load': 1.0, 'hints': False, 'worst_share': 1.0}\n"
        "    pathlib.Path(a[a.index('--out') + 1]).write_text(json.dumps({'gpu': True, 'rows': rows, 'choice': c}))\n"
        "elif a[:2] == ['-m', 'gpupipe.tools.png_bench']:\n"
        "    pathlib.Path(a[a.index('--out') + 1]).write_text(json.dumps({'rows': {}}))\n"
        "    print(\"PASS: 4K PNG transcode on a GPU host (gpu nvcomp): 2.10x the CPU path's f/s (>= 2x), 0.40x its CPU-s/frame\")\n"
        "elif a[:2] == ['-m', 'gpupipe.tools.serve_load']:\n"
        "    p = 40.0 if a[a.index('--backend') + 1] == 'gpu' else 900.0\n"
        "    pathlib.Path(a[a.index('--out') + 1]).write_text(json.dumps({'p50_ms': 3.0, 'p99_ms': p, 'errors': 0}))\n"
        "elif a[:1] == ['-c'] and 'base64_kernel_bandwidth' in a[1]:\n"
        "    k = {'nbytes': 67108864.0, 'frames': 16.0, 'kernel_s': 0.1, 'copy_s': 0.1, 'kernel_gbps': 2900.0,"
        " 'copy_gbps': 3900.0, 'ratio': 0.75, 'kernel_input_gbps': 1200.0, 'verified': 1.0}\n"
        "    pathlib.Path(a[2]).write_text(json.dumps(k))\n"
        "elif a[:1] == ['-c']:\n"
        "    print('cupy fake dali fake')\n"
    )
    (bindir / "python3").write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in "-m gpupipe.tools.goals"|"-m gpupipe.tools.session_goals") exec '
        f'"{sys.executable}" "$@";; esac\n'
        f'exec "{sys.executable}" "{fake}" "$@"\n'
    )
    (bindir / "python3").chmod(0o755)
    (bindir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H200, 580.159.04, 143771 MiB'\n")
    (bindir / "nvidia-smi").chmod(0o755)
    return bindir, calls


def _run(tmp_path, bindir, **env):
    e = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=REPO, env=e, capture_output=True, text=True, timeout=120)


def test_steps_all_runs_every_step_in_one_call_with_the_cut_down_plan(tmp_path):
    bindir, calls = _fake_tree(tmp_path)
    out = tmp_path / "out"
    p = _run(tmp_path, bindir, STEPS="all", OUT=str(out))
    text = p.stdout
    assert p.returncode == 0, text + p.stderr
    steps = [ln for ln in text.splitlines() if ln.startswith("step ")]
    names = [ln.split()[1].rstrip(":") for ln in steps]
    assert names == ["install", "versions", "tests", "kernel", "bench-gpu", "goals", "hwdec", "png", "video", "budget", "summary"]
    assert all("PASS" in ln for ln in steps), steps
    args = [json.loads(x) for x in calls.read_text().splitlines()]
    bench = next(a for a in args if a[:3] == ["-m", "gpupipe", "bench"] and "--goals" in a)
    assert bench[bench.index("--max-seconds") + 1] == "100"
    vid = next(a for a in args if a[:3] == ["-m", "gpupipe", "bench"] and "--video" in a)
    assert "--quick" in vid and vid[vid.index("--max-seconds") + 1] == "45"
    hw = next(a for a in args if a[:2] == ["-m", "gpupipe.tools.hwdec"])
    assert hw[hw.index("--frames") + 1] == "16" and hw[hw.index("--repeats") + 1] == "2"
    kern = next(a for a in args if a[:1] == ["-c"] and "base64_kernel_bandwidth" in a[1])
    assert kern[3:] == ["64", "10"]
    png = next(a for a in args if a[:2] == ["-m", "gpupipe.tools.png_bench"])
    assert png[2:6] == ["--frames", "4", "--rounds", "1"]
    serve = [a[a.index("--backend") + 1] for a in args if a[:2] == ["-m", "gpupipe.tools.serve_load"]]
    assert serve == ["gpu", "cpu"]
    goals = (out / "session-goals.txt").read_text()
    assert "PASS: #18 4k jpeg transcode >= 500 f/s (H100/H200)" in goals and "PASS: #18 one device call <= 480 s" in goals
    assert "PASS: 4K PNG transcode on a GPU host (gpu nvcomp): 2.10x" in goals  # the png step's line, copied
    assert "PASS: video 4k h264 GPU path" in goals  # the issue 17 rows, copied from the video step's checker
    assert text.splitlines()[-1].startswith("step summary: PASS")


def test_steps_all_skips_what_the_deadline_leaves_no_time_for(tmp_path):
    bindir, calls = _fake_tree(tmp_path)
    p = _run(tmp_path, bindir, STEPS="call-all", OUT=str(tmp_path / "out"), ALL_DEADLINE_S="5", MIN_STEP_S="20")
    steps = [ln for ln in p.stdout.splitlines() if ln.startswith("step ")]
    assert all("SKIPPED (no time left in the one call)" in ln for ln in steps[:-1]) and len(steps) == 11, steps
    assert not calls.exists()  # no step ran a command
    assert "NOT RUN: #18 base64 kernel" in p.stdout and p.returncode == 3


def test_unknown_steps_are_refused_and_the_usual_calls_are_unchanged(tmp_path):
    bindir, calls = _fake_tree(tmp_path)
    p = _run(tmp_path, bindir, STEPS="hwdec nonsense", OUT=str(tmp_path / "o"))
    assert p.returncode == 2 and "unknown step 'nonsense'" in p.stderr
    p = _run(tmp_path, bindir, STEPS="kernel", OUT=str(tmp_path / "o"))
    kern = next(json.loads(x) for x in calls.read_text().splitlines() if "base64_kernel_bandwidth" in x)
    assert p.returncode == 0 and kern[3:] == ["256", "20"]  # the full kernel run outside the one call
