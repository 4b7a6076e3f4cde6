"""Waiting for another thread in tests: bounded, and never a timing assertion."""

from __future__ import annotations

import threading
from typing import Callable

WAIT = 20  # seconds any event may take before the test fails


def wait_until(pred: Callable[[], bool], what: str) -> None:
    """Return once ``pred()`` holds, polling every 10 ms; fail the test naming ``what`` after
    :data:`WAIT` seconds. The one waiting helper of the tests (no test asserts how long it took)."""
    ev = threading.Event()
    for _ in range(WAIT * 100):
        if pred():
            return
        ev.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")
