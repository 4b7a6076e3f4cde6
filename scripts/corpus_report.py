#!/usr/bin/env python
"""Print the bad-input corpus results (issue 4 §4): outcome counts per backend and mode.

Usage: ``python scripts/corpus_report.py [--json out.json]``. Runs the corpus of
``tests/corpus.py`` through the CPU backend, and the GPU backend when one is usable. Exits 1
if any file broke its expectation (a wrong outcome, an exception other than FrameError).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402

from gpupipe.gpu import gpu_available  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the corpus on every usable backend, print a table per backend; 1 on any unexpected result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the summaries as JSON here")
    a = ap.parse_args(argv)
    backends = ["cpu"]
    ok, why = gpu_available(0)
    if ok:
        backends.append("gpu")
    else:
        print(f"GPU backend: not run ({why})\n")
    summaries = []
    for backend in backends:
        s = corpus.corpus_summary(backend)
        summaries.append(s)
        outcomes = sorted({o for counts in s["modes"].values() for o in counts})
        print(f"## {backend} backend: {s['files']} files, slowest call {s['slowest_s'] * 1000:.1f} ms\n")
        print("| outcome | " + " | ".join(s["modes"]) + " |")
        print("|---|" + "---:|" * len(s["modes"]))
        for o in outcomes:
            print(f"| {o} | " + " | ".join(str(c.get(o, 0)) for c in s["modes"].values()) + " |")
        print()
        for u in s["unexpected"]:
            print("UNEXPECTED:", u[:300])
    if a.json:
        Path(a.json).write_text(json.dumps(summaries, indent=1))
    return 1 if any(s["unexpected"] for s in summaries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
