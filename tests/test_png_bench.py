"""The goal line of ``python -m gpupipe.tools.png_bench`` (gpu_session.sh step ``png``)."""

from __future__ import annotations

from gpupipe.tools.png_bench import _goal_line


def test_goal_line_judges_the_best_gpu_row_against_the_best_cpu_row() -> None:
    cpu = {"cpu pillow": {"fps": 10.0, "cpu_s_per_frame": 1.0}, "cpu spng": {"fps": 20.0, "cpu_s_per_frame": 0.8}}
    passing = {**cpu, "gpu dali": {"fps": 25.0, "cpu_s_per_frame": 0.7}, "gpu nvcomp": {"fps": 41.0, "cpu_s_per_frame": 0.3}}
    assert _goal_line(passing).startswith("PASS: 4K PNG transcode on a GPU host (gpu nvcomp): 2.05x")
    too_much_cpu = {**cpu, "gpu nvcomp": {"fps": 41.0, "cpu_s_per_frame": 0.5}}
    assert _goal_line(too_much_cpu).startswith("FAIL")
    assert _goal_line({**cpu, "gpu nvcomp": {"error": "nvidia-nvcomp-cu13 does not import"}}).startswith("SKIP")
    assert _goal_line(cpu).startswith("SKIP")
