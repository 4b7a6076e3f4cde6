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

Smaller blocks (codec buffers, reads, small URIs) still come from the threads' arenas, and what
they free stays resident until glibc is asked to hand it back: :func:`trim_free_memory` calls
``malloc_trim(0)`` at most every :data:`TRIM_INTERVAL_S` seconds (``FramePipeline`` calls it after
each load; one call took ~5 ms with 16 threads' arenas, measured). In the case above it brought
RSS from +137 MiB to +94 MiB above base over 400 requests, with the same run time.

A fixed threshold (with the trims) is the setting that keeps peak RSS within budget × 1.15 + base
at every thread count measured (docs/BENCHMARKS.md, "Memory held to the budget"), and it is the default.
Its price is the kernel's page faults on each fresh mapping; ``GPUPIPE_MALLOC_TUNE=0`` opts
out where speed matters more than a hard memory bound.

**Image buffers reused.** Every transcode makes Pillow images of a few MB (a 1080p RGB picture
is 8.3 MB in Pillow's 4-byte layout), freed when the frame is done. Mapped fresh each time, they
cost more CPU in page faults than the copy into them (a 1080p video frame: 2,025 faults, ~4 ms
here). So with the threshold, Pillow keeps up to :data:`IMAGE_BLOCKS_KEPT` freed image blocks for
reuse (``PIL.Image.core.set_blocks_max``; a block is at most Pillow's block size, 16 MiB): a fixed
overhead of at most 32 MiB, not scaled by the cache budget, and measured inside it (docs/BENCHMARKS.md,
"Frames from video"). A ``PILLOW_BLOCKS_MAX`` set in the environment is left in force.

The tuning only works where glibc's malloc serves the process's ``malloc`` calls. It is not
applied, and :func:`allocator_status` says why, when another allocator is interposed
(jemalloc or tcmalloc through ``LD_PRELOAD``, or linked in: glibc's ``mallopt`` would still
accept the setting, for an allocator nobody uses), when the environment already sets glibc's
threshold (``MALLOC_MMAP_THRESHOLD_``, or ``glibc.malloc.mmap_threshold`` in
``GLIBC_TUNABLES``: that setting is left in force), off glibc, and under ``GPUPIPE_MALLOC_TUNE=0``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .env import env
from .errors import AllocatorTuningWarning

__all__ = [
    "IMAGE_BLOCKS_KEPT",
    "TRIM_INTERVAL_S",
    "AllocatorStatus",
    "allocator_status",
    "allocator_tuning",
    "release_large_allocations",
    "trim_free_memory",
]

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_THRESHOLD = 256 * 1024
TRIM_INTERVAL_S = 0.5
"""The shortest time between two :func:`trim_free_memory` calls that reach glibc, per process."""

IMAGE_BLOCKS_KEPT = 2
"""Freed Pillow image blocks kept for reuse while the tuning is applied (see the module docstring)."""

NOT_APPLIED = "not applied: "
"""How :attr:`AllocatorStatus.reason` starts when the tuning cannot, or may not, be applied."""

_GLIBC_SONAME = "libc.so.6"
_TUNABLE = "glibc.malloc.mmap_threshold"
_KNOWN_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc", "snmalloc", "hoard")
_GLIBC_ONLY = "gpupipe's mmap-threshold tuning only works with glibc malloc"

_lock = threading.Lock()
_applied: int | None = None
_mallopt_refused: str | None = None  # why glibc refused the setting, once it has
_warned = False
_trim_lock = threading.Lock()
_last_trim = -1e9


@dataclass(frozen=True)
class AllocatorStatus:
    """Whether gpupipe's fixed mmap threshold is in force in this process, and why (not).

    ``applied``: the threshold is fixed (by :func:`release_large_allocations`). ``allocator``: the
    ``malloc`` the process uses: ``"glibc"``, ``"jemalloc"``, ``"tcmalloc"``, ``"mimalloc"``, the
    file name of another library that provides it, or ``"unknown"`` (not glibc, and no library
    could be named). ``reason``: one line for reports; it starts with ``"not applied: "``
    (:data:`NOT_APPLIED`) exactly when the tuning cannot or may not be applied in this process,
    and then says why. Not applied and not refused (no encoder has started yet), it says when
    the tuning will happen.
    """

    applied: bool
    allocator: str
    reason: str

    def as_dict(self) -> dict[str, bool | str]:
        """``applied``, ``allocator`` and ``reason``, for JSON reports."""
        return {"applied": self.applied, "allocator": self.allocator, "reason": self.reason}


class _DlInfo(ctypes.Structure):
    """glibc's ``Dl_info``, filled by ``dladdr``."""

    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _glibc() -> bool:
    """Whether the process runs on glibc (``confstr(_CS_GNU_LIBC_VERSION)`` answers only there)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def _library_of(address: int, proc: ctypes.CDLL) -> str | None:
    """The path of the loaded object that holds ``address`` (``dladdr``), or ``None``."""
    try:
        dladdr = proc.dladdr
    except AttributeError:  # glibc before 2.34 keeps dladdr in libdl
        try:
            dladdr = ctypes.CDLL("libdl.so.2").dladdr
        except (OSError, AttributeError):
            return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def _how_loaded(path: str) -> str:
    """``"via LD_PRELOAD"``, ``"via /etc/ld.so.preload"`` or ``"linked into the process"`` for library ``path``."""
    name = Path(path).name
    real = os.path.realpath(path)

    def listed(entries: str) -> bool:
        return any(Path(e).name == name or os.path.realpath(e) == real for e in entries.replace(":", " ").split())

    if listed(os.environ.get("LD_PRELOAD", "")):
        return "via LD_PRELOAD"
    try:
        if listed(Path("/etc/ld.so.preload").read_text()):
            return "via /etc/ld.so.preload"
    except OSError:
        pass
    return "linked into the process"


@functools.cache
def _malloc_in_use() -> tuple[str, str | None]:
    """``(allocator, why not glibc's)``: the ``malloc`` this process resolves (``RTLD_DEFAULT``)
    against glibc's own; ``why`` is ``None`` when they are the same. Fixed for the process's life."""
    if not _glibc():
        return "unknown", f"the C library is not glibc; {_GLIBC_ONLY}"
    try:
        proc = ctypes.CDLL(None)
        libc = ctypes.CDLL(_GLIBC_SONAME)
        resolved = ctypes.cast(proc.malloc, ctypes.c_void_p).value
        own = ctypes.cast(libc.malloc, ctypes.c_void_p).value
    except (OSError, AttributeError) as e:
        return "unknown", f"glibc's malloc could not be located ({e})"
    if resolved is None or resolved == own:
        return "glibc", None
    path = _library_of(resolved, proc)
    if path is None:
        return "unknown", f"malloc is not glibc's (its library could not be named); {_GLIBC_ONLY}"
    name = Path(path).name
    allocator = next((a for a in _KNOWN_ALLOCATORS if a in name.lower()), name)
    return allocator, f"malloc is {allocator} ({name} {_how_loaded(path)}), not glibc's; {_GLIBC_ONLY}"


def _threshold_from_environment() -> str | None:
    """The glibc mmap-threshold setting the process inherited, as ``NAME=value``, or ``None``."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return f"MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}"
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        if name.strip() == _TUNABLE:
            return f"GLIBC_TUNABLES {_TUNABLE}={value}"
    return None


def _refusal(not_glibc: str | None) -> str | None:
    """Why the tuning cannot or may not be applied now (without :data:`NOT_APPLIED`), or ``None``."""
    if env("GPUPIPE_MALLOC_TUNE") == "0":
        return "GPUPIPE_MALLOC_TUNE=0"
    if not_glibc is not None:
        return not_glibc
    inherited = _threshold_from_environment()
    if inherited is not None:
        return f"{inherited} set in the environment; glibc uses that threshold, not gpupipe's"
    return _mallopt_refused


def allocator_status() -> AllocatorStatus:
    """Whether the mmap-threshold tuning is in force in this process, the allocator in use, and why.

    Reads the process (which ``malloc`` it resolves, and its environment); changes nothing and
    warns about nothing. Once :func:`release_large_allocations` has applied the tuning, it stays
    reported as applied.
    """
    allocator, not_glibc = _malloc_in_use()
    if _applied is not None:
        return AllocatorStatus(True, allocator, f"glibc mmap threshold fixed at {_applied} bytes")
    why = _refusal(not_glibc)
    if why is not None:
        return AllocatorStatus(False, allocator, NOT_APPLIED + why)
    return AllocatorStatus(
        False, allocator, "glibc malloc; its mmap threshold is fixed when a FrameEncoder or FramePipeline starts"
    )


def release_large_allocations(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more with mmap, returned to the OS when freed.

    Process-wide and idempotent (the first threshold applied stays). Returns whether the tuning is
    in force. It is not applied (``False``) under ``GPUPIPE_MALLOC_TUNE=0``, silently, and in every
    case :func:`allocator_status` reports as refused: another ``malloc`` interposed, a threshold
    inherited from the environment, not glibc, or ``mallopt`` refusing it. Those cases emit one
    :class:`~gpupipe.errors.AllocatorTuningWarning` per process, naming the reason.
    """
    global _applied, _mallopt_refused, _warned  # noqa: PLW0603 - the one process-wide setting, applied once
    with _lock:
        if _applied is not None:
            return True
        why = _refusal(_malloc_in_use()[1])
        if why is None:
            mallopt = ctypes.CDLL(_GLIBC_SONAME).mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            if mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1:
                _applied = int(threshold)
                _reuse_image_blocks()
                return True
            why = _mallopt_refused = f"glibc's mallopt(M_MMAP_THRESHOLD, {int(threshold)}) refused the setting"
        if why == "GPUPIPE_MALLOC_TUNE=0" or _warned:
            return False
        _warned = True
    msg = (
        f"allocator tuning {NOT_APPLIED}{why}. Evicted URIs may stay resident, so RSS can exceed the cache "
        "budget (see gpupipe.memory)"
    )
    warnings.warn(msg, AllocatorTuningWarning, stacklevel=3)
    return False


def _reuse_image_blocks() -> None:
    """Let Pillow keep :data:`IMAGE_BLOCKS_KEPT` freed image blocks for reuse, unless the environment
    sets ``PILLOW_BLOCKS_MAX`` or a larger number is set already."""
    if "PILLOW_BLOCKS_MAX" in os.environ:
        return
    from PIL import Image

    if Image.core.get_blocks_max() < IMAGE_BLOCKS_KEPT:
        Image.core.set_blocks_max(IMAGE_BLOCKS_KEPT)


def trim_free_memory() -> bool:
    """Hand the heap memory glibc holds free back to the OS (``malloc_trim(0)``), where the tuning is applied.

    Rate-limited to one call every :data:`TRIM_INTERVAL_S` seconds per process, and never waits:
    while another thread trims, or within the interval, it returns ``False`` at once. Returns
    whether this call trimmed.
    """
    global _last_trim  # noqa: PLW0603 - one rate limit for the process
    if _applied is None:
        return False
    now = time.monotonic()
    if now - _last_trim < TRIM_INTERVAL_S or not _trim_lock.acquire(blocking=False):
        return False
    try:
        if now - _last_trim < TRIM_INTERVAL_S:
            return False
        _last_trim = now
        ctypes.CDLL(_GLIBC_SONAME).malloc_trim(0)
        return True
    finally:
        _trim_lock.release()


def allocator_tuning() -> str:
    """A line for reports: which allocator tuning is in force, or ``"not applied: "`` and why."""
    return allocator_status().reason
