"""Environment report for ``gpupipe info``: versions, usable backends and why, resolved config."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from typing import Any

from .config import Config

__all__ = ["environment_report", "package_version"]


def package_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or ``None``."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _first_version(*dists: str) -> str | None:
    for d in dists:
        v = package_version(d)
        if v:
            return f"{d} {v}"
    return None


def _base64_version() -> str:
    """``"pybase64 <version> (<SIMD state>)"``, the version once, or the standard library's."""
    try:
        import pybase64
    except ImportError:
        return "standard library base64"
    return f"pybase64 {pybase64.get_version()}"  # get_version() is "<version> (C extension ...)"


def environment_report(config: Config) -> dict[str, Any]:
    """Versions, backend availability (with reasons) and the resolved config, as plain data.

    ``allocator``: whether gpupipe's mmap-threshold tuning is (or will be) in force, the malloc in
    use, and why (:class:`gpupipe.memory.AllocatorStatus`; ``reason`` starts ``"not applied: "``
    where it cannot be, e.g. under jemalloc or tcmalloc through ``LD_PRELOAD``).
    ``backends.gpu``: ``usable``, ``reason`` (the first thing missing: CuPy, the NVIDIA driver,
    a driver for CUDA 13, a device, the base64 kernel, DALI, nvImageCodec), ``code`` (see
    :class:`gpupipe.gpu.GpuStatus`), ``checks`` (what was found), and with a device, ``detail``
    (:meth:`gpupipe.gpu.GpuBackend.info`).
    """
    from . import __version__
    from .cpu import pillow_flavour
    from .encoder import select_backend
    from .gpu import gpu_status
    from .memory import allocator_status
    from .uri import URI_METHOD

    status = gpu_status(config.gpu or 0)
    gpu_ok, gpu_why = status.usable, status.reason
    try:
        chosen, why = select_backend(config.backend, config)
    except Exception as e:  # noqa: BLE001 - e.g. backend: gpu on a machine without one
        chosen, why = "unavailable", str(e)
    gpu_detail: dict[str, Any] = {}
    if gpu_ok:
        try:  # device name, versions, staging pool limit and in-flight figures
            from .gpu import GpuBackend

            backend = GpuBackend(config)
            try:
                gpu_detail = backend.info()
            finally:
                backend.close()
        except Exception as e:  # noqa: BLE001 - a report must not fail
            gpu_detail = {"error": str(e)}
    return {
        "gpupipe": __version__,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "platform": platform.platform(),
        "versions": {
            "numpy": package_version("numpy"),
            "pillow": pillow_flavour(),
            "base64": _base64_version(),
            "pyyaml": package_version("PyYAML"),
            "cupy": _first_version("cupy-cuda13x", "cupy-cuda12x", "cupy"),
            "dali": _first_version("nvidia-dali-cuda130", "nvidia-dali-cuda120"),
            "nvimgcodec": _first_version("nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12"),
        },
        "uri_builder": URI_METHOD,
        "allocator": allocator_status().as_dict(),
        "backends": {
            "cpu": {"usable": True, "reason": "always available"},
            "gpu": {
                "usable": gpu_ok,
                "reason": gpu_why,
                "code": status.code,
                "checks": status.checks,
                **({"detail": gpu_detail} if gpu_detail else {}),
            },
        },
        "selected_backend": {"backend": chosen, "reason": why},
        "config": config.to_dict(),
    }
