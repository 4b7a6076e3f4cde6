"""Environment report for ``gpupipe info``: versions, usable backends and why, resolved config."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from typing import Any

from .config import Config
from .env import env
from .vocabulary import GiB, KiB, MiB, TiB

__all__ = ["config_rows", "environment_report", "format_size", "package_version"]


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
    from .cpu.decode import png_decoder_name
    from .cpu.encode import png_encoder_name
    from .encoder import select_backend
    from .gpu import gpu_status
    from .memory import allocator_status
    from .uri import URI_METHOD

    status = gpu_status(config.gpu or 0)
    gpu_ok, gpu_why = status.usable, status.reason
    chosen: str
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
            "av": package_version("av"),
            "pynvvideocodec": package_version("pynvvideocodec"),
            "cupy": _first_version("cupy-cuda13x", "cupy-cuda12x", "cupy"),
            "dali": _first_version("nvidia-dali-cuda130", "nvidia-dali-cuda120"),
            "nvimgcodec": _first_version("nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12"),
        },
        "uri_builder": URI_METHOD,
        "png_encoder": png_encoder_name(config.output.png_compress_level),
        "png_decoder": png_decoder_name(config.png_decoder),
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


_UNITS = ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"))


def format_size(n: int) -> str:
    """``n`` bytes for a reader: the largest binary unit that holds it a whole number of times
    (``1500 MiB``, ``2 GiB``), else the largest unit it reaches, to one decimal (``1.4 GiB``);
    below 1 KiB, ``n bytes``."""
    for unit, name in _UNITS:
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    for unit, name in _UNITS:
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n} bytes"


def _seconds(v: float) -> str:
    return f"{v:g} s"


# How each config key reads in ``gpupipe info`` (keys not listed print as they are; ``None`` as "none").
_SHOW: dict[str, Any] = {
    "cache.max_bytes": format_size,
    "cache.admission_timeout": _seconds,
    "cache.pressure_available": lambda v: (
        "auto (5% of the memory limit, at least 128 MiB)" if v is None else "0 (off)" if v == 0 else format_size(v)
    ),
    "cache.pressure_interval": _seconds,
    "staging.max_bytes": format_size,
    "staging.pinned_bytes": format_size,
    "output.size": lambda v: "none (the source size)" if v is None else f"fit inside {v[0]}x{v[1]}",
    "serve.max_batch_delay": _seconds,
    "serve.request_timeout": _seconds,
    "serve.send_timeout": _seconds,
    "serve.cors_origins": lambda v: ("none" if not v else ", ".join(v)) if isinstance(v, list) else v,
    "max_pixels": lambda v: f"{v:,}",
    "max_source_bytes": lambda v: "derived from max_pixels" if v is None else format_size(v),
    "workers": lambda v: "one per core" if v is None else str(v),
}
_NOT_KEYS = ("gpu", "source", "cache.max_bytes_auto")  # where the config came from, shown first
_CONFIG_ENV = ("GPUPIPE_CACHE_MAX_BYTES", "GPUPIPE_CACHE_BYTES_MB", "GPUPIPE_CACHE_MAX_ENTRIES", "GPUPIPE_BACKEND")


def config_rows(config: Config) -> list[tuple[str, str]]:
    """The resolved config as ``(label, value)`` rows for people: where it came from (the file, or
    the built-in defaults; the GPU section; environment overrides), then every key by its path in
    the YAML file (``cache.max_bytes``), sizes in KiB/MiB/GiB and seconds with their unit."""
    source = config.source or "built-in defaults (no --config, and GPUPIPE_CONFIG unset)"
    gpu = "none (the defaults: section only)" if config.gpu is None else f"{config.gpu} (gpus: {config.gpu}: over defaults:)"
    overrides = [name for name in _CONFIG_ENV if env(name)]
    rows = [("config file", source), ("GPU section", gpu), ("environment overrides", ", ".join(overrides) or "none")]
    for key, value in _flatten(config.to_dict()):
        if key in _NOT_KEYS:
            continue
        show = _SHOW.get(key)
        text = show(value) if show is not None else ("none" if value is None else str(value))
        if key == "cache.max_bytes" and config.cache.max_bytes_auto:
            text += " (auto: sized from the memory this process may use)"
        rows.append((key, text))
    return rows


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(_flatten(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out
