"""Host-allocator tuning that keeps a URI cache's resident memory at its byte budget.

A cache of 10–35 MB strings defeats glibc malloc's defaults: its mmap threshold is dynamic
and climbs to the size of the largest block freed (up to 32 MiB), after which such URIs are
carved from the heap arenas (one per thread) and freed blocks stay resident as
fragmentation. Measured on a 4K soak (1,000 requests, 4 threads, 1500 MiB budget, CPU
path): peak RSS 2303 MiB with the defaults, 1596 MiB with a fixed 1 MiB threshold, and the
run got faster (4.4 → 4.0 s). Setting the threshold explicitly also switches the dynamic
adjustment off, so every large block is mapped on allocation and unmapped on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

__all__ = ["release_large_allocations", "allocator_tuning"]

log = logging.getLogger("gpupipe.memory")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 1 << 20

_lock = threading.Lock()
_applied: int | None = None


def release_large_allocations(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more with mmap, returned to the OS when freed.

    Process-wide and idempotent; does nothing (returns ``False``) off glibc, or when
    ``GPUPIPE_MALLOC_TUNE=0`` or ``MALLOC_MMAP_THRESHOLD_`` is already set in the environment.
    """
    global _applied
    with _lock:
        if _applied is not None:
            return True
        if os.environ.get("GPUPIPE_MALLOC_TUNE", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
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
