"""Every environment variable gpupipe reads, declared once and read through :func:`env`.

The README's table of environment variables lists exactly :data:`ENV_VARS` (a test checks it).
"""

from __future__ import annotations

import os

__all__ = ["ENV_VARS", "env"]

ENV_VARS: dict[str, str] = {
    "GPUPIPE_CONFIG": "the YAML config file used when no path is given",
    "GPUPIPE_CACHE_MAX_BYTES": "cache.max_bytes, as a size with the YAML units (bytes, or e.g. 1500MiB, 2GB)",
    "GPUPIPE_CACHE_BYTES_MB": "cache.max_bytes in MiB (2^20 bytes; a number, may be fractional); GPUPIPE_CACHE_MAX_BYTES wins when both are set",
    "GPUPIPE_CACHE_MAX_ENTRIES": "cache.max_entries",
    "GPUPIPE_BACKEND": "backend: auto, gpu or cpu",
    "GPUPIPE_MALLOC_TUNE": "0 leaves glibc's allocator settings alone (default: fixed 1 MiB mmap threshold, see docs/BENCHMARKS.md)",
    "GPUPIPE_SAMPLES": "where the built-in sample frames are written (default: the temp dir's gpupipe-samples)",
    "GPUPIPE_FFMPEG_FRAMES": "where the benchmark's ffmpeg frames are written (default: the temp dir's gpupipe-ffmpeg-frames)",
    "GPUPIPE_REAL_FFMPEG": "gpupipe-ffmpeg: the real ffmpeg it hands other commands to (default: the next ffmpeg on PATH)",
    "GPUPIPE_EXTRACT_FIT": "gpupipe-ffmpeg: WxH, extracted frames are fitted inside it (aspect kept, never enlarged)",
    "GPUPIPE_URL": "gpupipe-ffmpeg: the gpupipe serve (http://host:port) that runs its extractions",
    "GPUPIPE_SOCKET": "gpupipe-ffmpeg: the gpupipe serve Unix socket that runs its extractions",
    "GPUPIPE_FFMPEG_LOG": "gpupipe-ffmpeg: a file it appends a JSON line to per call (extracted, or why passed on)",
    "GPUPIPE_FFMPEG_FRONT_EXEC": "set by gpupipe-ffmpeg in the real ffmpeg's environment; seen on its own start, it stops a loop",
}
"""Name → meaning of each variable gpupipe reads."""


def env(name: str) -> str | None:
    """The value of the declared variable ``name``, or ``None`` when it is unset or empty.

    Raises ``KeyError`` for a name not in :data:`ENV_VARS`, so that every variable read is documented.
    """
    if name not in ENV_VARS:
        raise KeyError(f"{name} is not a declared gpupipe environment variable")
    return os.environ.get(name) or None
