"""gpupipe.tools.ncu_summary on CSV laid out as ``ncu --import REP --page raw --csv`` writes it
(header row, units row, one row per launch, quoted values with thousands separators)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from gpupipe.tools.ncu_summary import main, summarize

_FIXED = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size", "Grid Size", "Device", "CC"]
_METRICS = {
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": ("%", "71.52"),
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": ("%", "70.9"),
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": ("%", "48.3"),
    "sm__warps_active.avg.pct_of_peak_sustained_active": ("%", "58.1"),
    "gpu__time_duration.sum": ("usecond", "1,234.5"),
    "launch__registers_per_thread": ("register/thread", "48"),
    "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio": ("inst", "6.21"),
    "smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio": ("inst", "1.02"),
    "smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio": ("inst", "9.9"),
    "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio": ("inst", "0.5"),
}


def _csv(kernels: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL)
    w.writerow(_FIXED + list(_METRICS))
    w.writerow([""] * len(_FIXED) + [u for u, _ in _METRICS.values()])
    for i, k in enumerate(kernels):
        w.writerow([str(i), "4242", "python3", "127.0.0.1", k, "1", "13", "(256, 1, 1)", "(660, 1, 1)", "0", "9.0"] + [v for _, v in _METRICS.values()])
    return "==PROF== Disconnected from process 4242\n" + buf.getvalue()


def test_summary_of_the_kernel_launch():
    s = summarize(_csv(["elementwise_copy", "b64_batch"]))
    assert s["kernel"] == "b64_batch"
    assert s["memory_throughput_pct"] == pytest.approx(71.52)
    assert s["dram_throughput_pct"] == pytest.approx(70.9)  # the older metric name
    assert s["duration"] == pytest.approx(1234.5) and s["duration_unit"] == "usecond"
    assert s["registers_per_thread"] == 48
    assert s["top_stall"] == "long_scoreboard"  # "not_selected" is not a stall reason
    assert [x["reason"] for x in s["stalls"]] == ["long_scoreboard", "lg_throttle", "wait"]


def test_a_report_without_the_kernel_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no launch of b64_batch"):
        summarize(_csv(["elementwise_copy"]))
    with pytest.raises(ValueError, match="not an ncu raw CSV"):
        summarize("==ERROR== The application returned an error code (1).\n")
    p = tmp_path / "raw.csv"
    p.write_text(_csv([]))
    assert main([str(p)]) == 1


def test_command_line_prints_and_writes_json(tmp_path, capsys):
    p = tmp_path / "raw.csv"
    p.write_text(_csv(["b64_batch"]))
    assert main([str(p), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "memory throughput 71.5 %" in out and "top stall: long_scoreboard" in out
    assert json.loads((tmp_path / "s.json").read_text())["top_stall"] == "long_scoreboard"
