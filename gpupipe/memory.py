"""Host-allocator tuning that keeps a URI cache's resident memory at its byte budget.

A cache of 10–35 MB strings defeats glibc malloc's defaults: its mmap threshold is dynamic
and climbs to the size of the largest block freed (up to 32 MiB), after which such URIs are
carved from the heap arenas (one per thread) and freed blocks stay resident as
fragmentation. Setting the threshold explicitly also switches the dynamic adjustment off, so
every large block is mapped on allocation and unmapped on free.

The threshold is 256 KiB: a frame fitted to 1280×720 makes a JPEG URI of 0.3–1 MB, and with
a 1 MiB threshold those URIs (and the encoder's growing output buffers) filled up to one arena
per thread; evicted, they stayed resident (16 threads, 128 MiB budget: RSS +155 MiB above base
at 1 MiB, +126 MiB at 256 KiB, measured with random-noise 1080p PNGs; docs/BENCHMARKS.md).

A fixed threshold is the setting that keeps peak RSS within budget × 1.15 + base at every
thread count measured (docs/BENCHMARKS.md, "Memory held to the budget"), and it is the default.
Its price is the kernel's page faults on each fresh URI mapping; ``GPUPIPE_MALLOC_TUNE=0`` opts
out where speed matters more than a hard memory bound.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

from .env import env

__all__ = ["allocator_tuning", "release_large_allocations"]

log = logging.getLogger("gpupipe.memory")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 256 * 1024

_lock = threading.Lock()
_applied: int | None = None


def release_large_allocations(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more with mmap, returned to the OS when freed.

    Process-wide and idempotent; does nothing (returns ``False``) off glibc, or when
    ``GPUPIPE_MALLOC_TUNE=0`` or ``MALLOC_MMAP_THRESHOLD_`` is already set in the environment.
    """
    global _applied  # noqa: PLW0603 - the one process-wide setting, applied once
    with _lock:
        if _applied is not None:
            return True
        if env("GPUPIPE_MALLOC_TUNE") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        if mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1:
            log.debug("mallopt(M_MMAP_THRESHOLD) refused")
            return False
        _applied = int(threshold)
        return True


def allocator_tuning() -> str:
    """A line for reports: which allocator tuning is in force."""
    if _applied is not None:
        return f"glibc mmap threshold fixed at {_applied} bytes"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return f"MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']} (environment)"
    return "allocator defaults"
