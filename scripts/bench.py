#!/usr/bin/env python3
"""Run the gpupipe benchmark (same as `gpupipe bench`): python scripts/bench.py [--quick] [--backend cpu|gpu|all]."""

import sys

from gpupipe.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]])
