#!/usr/bin/env python3
"""Run the gpupipe benchmark (same as `gpupipe bench`): python scripts/bench.py [--quick] [--backend cpu|gpu|all]."""

from gpupipe.cli import app

if __name__ == "__main__":
    app(["bench", *__import__("sys").argv[1:]])
