"""A short summary of one kernel's Nsight Compute profile, from ``ncu --import REP --page raw --csv``.

``python -m gpupipe.tools.ncu_summary RAW.csv [--json OUT.json]`` prints the memory and DRAM
throughput (% of peak), the SM throughput, the achieved occupancy, the duration and the stall
reasons ranked by warp cycles per issued instruction, the top one first (the Warp State section of
``--set full``). ``scripts/gpu_session.sh`` runs it in its ``kernel`` step where ``ncu`` is installed.

The raw page's CSV has one header row of metric names, one row of units, then one row per profiled
kernel launch; numbers may carry thousands separators. A metric the report lacks is left out (its
name differs between Nsight Compute versions, e.g. ``dram__throughput`` and ``gpu__dram_throughput``).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["STALL_METRIC", "SUMMARY_METRICS", "main", "summarize"]

SUMMARY_METRICS: dict[str, tuple[str, ...]] = {
    "memory_throughput_pct": ("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",),
    "dram_throughput_pct": (
        "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
        "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    ),
    "sm_throughput_pct": ("sm__throughput.avg.pct_of_peak_sustained_elapsed",),
    "achieved_occupancy_pct": ("sm__warps_active.avg.pct_of_peak_sustained_active",),
    "duration": ("gpu__time_duration.sum",),
    "registers_per_thread": ("launch__registers_per_thread",),
}
"""Summary key → the raw metric names that give it, the first present wins."""

STALL_METRIC = re.compile(r"^smsp__average_warps?_issue_stalled_(?P<reason>\w+?)_per_issue_active\.ratio$")
"""Warp cycles per issued instruction spent stalled for one reason (Warp State Statistics)."""


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def summarize(csv_text: str, kernel: str = "b64_batch") -> dict[str, Any]:
    """The summary of the last profiled launch of ``kernel`` in ``csv_text`` (raises ``ValueError`` when none)."""
    rows = list(csv.reader(csv_text.splitlines()))
    header_at = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if header_at is None or len(rows) < header_at + 3:
        raise ValueError("not an ncu raw CSV page (no 'Kernel Name' header, units and data rows)")
    header, units = rows[header_at], rows[header_at + 1]
    name_col = header.index("Kernel Name")
    launches = [r for r in rows[header_at + 2 :] if len(r) == len(header) and kernel in r[name_col]]
    if not launches:
        raise ValueError(f"no launch of {kernel} in the profile")
    row = launches[-1]
    values = dict(zip(header, row))
    unit_of = dict(zip(header, units))
    out: dict[str, Any] = {"kernel": row[name_col]}
    for key, names in SUMMARY_METRICS.items():
        for name in names:
            v = _number(values.get(name, ""))
            if v is not None:
                out[key] = v
                if unit_of.get(name) and not key.endswith("_pct"):
                    out[key + "_unit"] = unit_of[name]
                break
    stalls = []
    for name, text in values.items():
        m = STALL_METRIC.match(name)
        v = _number(text)
        if m and v is not None and not m.group("reason").endswith(("not_issued", "selected")):
            stalls.append((v, m.group("reason")))
    stalls.sort(reverse=True)
    out["stalls"] = [{"reason": r, "cycles_per_issue": v} for v, r in stalls]
    if stalls:
        out["top_stall"] = stalls[0][1]
    return out


def _lines(s: dict[str, Any]) -> list[str]:
    pct = [(k, s[k]) for k in SUMMARY_METRICS if k.endswith("_pct") and k in s]
    lines = [f"ncu {s['kernel']}: " + ", ".join(f"{k[:-4].replace('_', ' ')} {v:.1f} %" for k, v in pct)]
    if "duration" in s:
        lines.append(f"duration {s['duration']:g} {s.get('duration_unit', '')}".rstrip())
    if s["stalls"]:
        top = ", ".join(f"{x['reason']} {x['cycles_per_issue']:.2f}" for x in s["stalls"][:4])
        lines.append(f"top stall: {s['top_stall']} (warp cycles per issued instruction: {top})")
    else:
        lines.append("top stall: not in the report (no Warp State Statistics)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: summarize a raw CSV page; exit 1 when it holds no launch of the kernel."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print("usage: python -m gpupipe.tools.ncu_summary RAW.csv [--json OUT.json]", file=sys.stderr)
        return 2
    try:
        s = summarize(Path(args[0]).read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as e:
        print(f"ncu summary: {e}", file=sys.stderr)
        return 1
    print("\n".join(_lines(s)))
    if "--json" in args[1:]:
        Path(args[args.index("--json") + 1]).write_text(json.dumps(s, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
