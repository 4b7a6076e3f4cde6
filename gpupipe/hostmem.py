"""How much memory this process may use, how much is available now, and the ``auto`` cache budget.

The limit is the smaller of the host's RAM (``MemTotal`` in ``/proc/meminfo``) and the memory
limit of this process's cgroup (v2 ``memory.max``, or v1 ``memory.limit_in_bytes``), so a
container's limit counts, not the host's. Available memory is the smaller of the host's
``MemAvailable`` and, under a cgroup limit, the limit minus the cgroup's working set (usage
less its inactive page cache, which the kernel reclaims before it would kill anything).

``cache.max_bytes: auto`` sizes the budget of a frame service that shares its box with the
renderers it serves (a headless browser and its driver per worker), by tiers of the limit ``L``:

========================  ==============  ==================================================
limit ``L``               budget          why
========================  ==============  ==================================================
below 4 GiB               10% of ``L``    small boxes: the browsers need nearly all of it
4 GiB to below 8 GiB      20% of ``L``
8 GiB and more            30% of ``L``    the rest stays with the browsers and their drivers
========================  ==============  ==================================================

then clamped to 64 MiB .. 20 GiB (the same ceiling as Remotion's 40%-of-free-memory rule, which
sizes a cache inside one render process rather than one shared by the box). On a 24 GiB box
that is 7.2 GiB, shared by every worker, where per-worker caches of 1500 MB hold 12 GB at 8
workers.

Nothing here needs a GPU; every reader returns ``None`` where the figure cannot be read.
"""

from __future__ import annotations

from pathlib import Path

from .vocabulary import GiB, MiB

__all__ = [
    "AUTO_MAX_BYTES",
    "AUTO_MIN_BYTES",
    "auto_cache_bytes",
    "available_memory",
    "cgroup_limit",
    "cgroup_working_set",
    "host_available",
    "host_total",
    "memory_limit",
]

AUTO_MIN_BYTES = 64 * MiB
AUTO_MAX_BYTES = 20 * GiB
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge page-rounded number

_PROC_MEMINFO = Path("/proc/meminfo")
_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _meminfo(field: str) -> int | None:
    try:
        for line in _PROC_MEMINFO.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_total() -> int | None:
    """The host's RAM in bytes (``MemTotal``), or ``None`` where ``/proc/meminfo`` cannot be read."""
    return _meminfo("MemTotal")


def host_available() -> int | None:
    """The host's available memory in bytes (``MemAvailable``), or ``None``."""
    return _meminfo("MemAvailable")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        n = int(text)
    except ValueError:
        return None
    return None if n >= _UNLIMITED else n


def _cgroup_dirs() -> list[tuple[int, Path]]:
    """``(version, directory)`` of this process's memory cgroup, most specific first, then the mount's root."""
    out: list[tuple[int, Path]] = []
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2 unified hierarchy
            out.append((2, _CGROUP_ROOT / rel))
        elif "memory" in controllers.split(","):
            out.append((1, _CGROUP_ROOT / "memory" / rel))
    out += [(2, _CGROUP_ROOT), (1, _CGROUP_ROOT / "memory")]  # inside a container the namespace shows its own cgroup as the root
    return out


def cgroup_limit() -> int | None:
    """This process's cgroup memory limit in bytes, or ``None`` when there is none (or it cannot be read)."""
    for version, d in _cgroup_dirs():
        n = _read_int(d / ("memory.max" if version == 2 else "memory.limit_in_bytes"))
        if n is not None:
            return n
    return None


def cgroup_working_set() -> int | None:
    """Bytes charged to this process's memory cgroup less its inactive page cache, or ``None``."""
    for version, d in _cgroup_dirs():
        limit = _read_int(d / ("memory.max" if version == 2 else "memory.limit_in_bytes"))
        if limit is None:
            continue
        usage = _read_int(d / ("memory.current" if version == 2 else "memory.usage_in_bytes"))
        if usage is None:
            continue
        inactive = 0
        try:
            for line in (d / "memory.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name in ("inactive_file", "total_inactive_file"):
                    inactive = int(value)
                    if name == "total_inactive_file":
                        break
        except (OSError, ValueError):
            pass
        return max(0, usage - inactive)
    return None


def memory_limit() -> int | None:
    """The memory this process may use: the smaller of the host's RAM and its cgroup limit (``None``: unknown)."""
    known = [n for n in (host_total(), cgroup_limit()) if n is not None]
    return min(known) if known else None


def available_memory() -> int | None:
    """Memory available to this process now: the host's ``MemAvailable``, or less under a cgroup limit."""
    known: list[int] = []
    host = host_available()
    if host is not None:
        known.append(host)
    limit = cgroup_limit()
    if limit is not None:
        used = cgroup_working_set()
        if used is not None:
            known.append(max(0, limit - used))
    return min(known) if known else None


def auto_cache_bytes(limit: int | None = None) -> int:
    """The ``cache.max_bytes: auto`` budget for a memory ``limit`` (default :func:`memory_limit`); see the module docstring.

    An unknown limit gives the 1500 MiB built-in default.
    """
    if limit is None:
        limit = memory_limit()
    if limit is None:
        return 1500 * MiB
    if limit < 4 * GiB:
        share = 0.10
    elif limit < 8 * GiB:
        share = 0.20
    else:
        share = 0.30
    return int(min(AUTO_MAX_BYTES, max(AUTO_MIN_BYTES, limit * share)))
