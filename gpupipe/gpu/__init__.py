"""The GPU path (DALI decode/resize, nvImageCodec JPEG encode, CuPy base64).

Importing this package never imports CuPy or DALI; they load on first use, so ``import
gpupipe`` works on machines without CUDA.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MIN_DRIVER_CUDA", "GpuBackend", "GpuStatus", "gpu_available", "gpu_status"]

MIN_DRIVER_CUDA = 13000
"""The CUDA version (``cudaDriverGetVersion`` form) the driver must support: CuPy, DALI and
nvImageCodec are the CUDA 13 builds (driver R580 or newer)."""

_NO_DEVICE = 100  # cudaErrorNoDevice
_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


@dataclass(frozen=True)
class GpuStatus:
    """Whether the GPU path can run on a device, and if not, the first thing missing.

    ``code``: ``ok``, ``cupy-missing``, ``no-driver`` (``libcuda.so.1`` not loadable),
    ``driver-too-old``, ``no-device``, ``device-index``, ``device-too-old``, ``kernel``
    (neither the prebuilt base64 kernel nor NVRTC), ``dali-missing``, ``nvimgcodec-missing``.
    ``checks``: what was found on the way (driver and device versions, where the kernel comes from).
    """

    usable: bool
    code: str
    reason: str
    checks: dict[str, Any] = field(default_factory=dict)


def _driver_library_error() -> str | None:
    """Why the NVIDIA driver library cannot be loaded, or ``None`` when it can."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
    except OSError as e:  # the loader's message names the library: "libcuda.so.1: cannot open shared object file: ..."
        return str(e) if name in str(e) else f"{name}: {e}"
    return None


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def gpu_status(device: int = 0) -> GpuStatus:  # noqa: PLR0911, PLR0912 - one return per missing piece, in the order a user fixes them
    """Check, in order, what the GPU path needs on CUDA device ``device``, and say what is missing.

    CuPy imports → the NVIDIA driver library loads → the driver supports CUDA 13 → the driver
    sees a device → device ``device`` exists (compute capability 7.5 or newer) → the base64
    kernel can be loaded (prebuilt fatbin, or NVRTC) → DALI and nvImageCodec import.
    """
    checks: dict[str, Any] = {}

    def fail(code: str, reason: str) -> GpuStatus:
        return GpuStatus(False, code, reason, checks)

    try:
        import cupy
    except ImportError as e:
        return fail("cupy-missing", f"CuPy is not installed ({e.name or e}); pip install 'gpupipe[gpu]'")
    except Exception as e:  # noqa: BLE001 - broken CUDA installs raise many types
        return fail("cupy-missing", f"CuPy failed to import: {e}")
    checks["cupy"] = cupy.__version__
    missing = _driver_library_error()
    if missing is not None:
        return fail("no-driver", f"no NVIDIA driver: {missing}")
    rt = cupy.cuda.runtime
    try:
        drv = int(rt.driverGetVersion())
    except Exception as e:  # noqa: BLE001
        return fail("no-driver", f"the NVIDIA driver does not answer: {e}")
    checks["driver_cuda"] = _version(drv)
    if drv < MIN_DRIVER_CUDA:
        return fail(
            "driver-too-old",
            f"the NVIDIA driver supports CUDA {_version(drv)}; the GPU path needs CUDA {_version(MIN_DRIVER_CUDA)} "
            "(driver R580 or newer)",
        )
    try:
        n = int(rt.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError and driver errors
        status = getattr(e, "status", None)
        if status == _NO_DEVICE:
            return fail("no-device", "the NVIDIA driver is loaded but sees no CUDA device")
        if status == _INSUFFICIENT_DRIVER:
            return fail("driver-too-old", f"the NVIDIA driver is too old for CuPy's CUDA runtime: {e}")
        return fail("no-device", f"CUDA device query failed: {e}")
    checks["devices"] = n
    if n == 0:
        return fail("no-device", "the NVIDIA driver is loaded but sees no CUDA device")
    if device >= n or device < 0:
        return fail("device-index", f"CUDA device {device} requested but {n} device(s) present")
    try:
        props = rt.getDeviceProperties(device)
        cc = int(props["major"]) * 10 + int(props["minor"])
        name = props["name"]
        checks["device"] = name.decode() if isinstance(name, bytes) else str(name)
        checks["compute_capability"] = f"{cc // 10}.{cc % 10}"
    except Exception as e:  # noqa: BLE001
        return fail("no-device", f"CUDA device {device} cannot be queried: {e}")
    if cc < 75:
        return fail(
            "device-too-old", f"CUDA device {device} has compute capability {cc // 10}.{cc % 10}; CUDA 13 needs 7.5 or newer"
        )
    from .kernel_build import kernel_availability

    ok, how = kernel_availability()
    checks["kernel"] = how
    if not ok:
        return fail("kernel", how)
    try:
        import nvidia.dali as dali  # noqa: PLR0402 - a missing nvidia.dali must fail this import, not find a stale attribute
    except ImportError as e:
        return fail("dali-missing", f"NVIDIA DALI is not installed ({e.name or e}); pip install 'gpupipe[gpu]'")
    except Exception as e:  # noqa: BLE001
        return fail("dali-missing", f"NVIDIA DALI failed to import: {e}")
    checks["dali"] = dali.__version__
    try:
        from nvidia import nvimgcodec as nv
    except ImportError as e:
        return fail("nvimgcodec-missing", f"nvImageCodec is not installed ({e.name or e}); pip install 'gpupipe[gpu]'")
    except Exception as e:  # noqa: BLE001
        return fail("nvimgcodec-missing", f"nvImageCodec failed to import: {e}")
    checks["nvimgcodec"] = getattr(nv, "__version__", "?")
    return GpuStatus(
        True,
        "ok",
        f"CUDA device {device} of {n} ({checks['device']}, sm_{cc}), driver CUDA {checks['driver_cuda']}, DALI {dali.__version__}",
        checks,
    )


def gpu_available(device: int = 0) -> tuple[bool, str]:
    """``(usable, reason)``: whether the GPU path can run on CUDA device ``device``; the reason
    names the first thing missing (see :func:`gpu_status`)."""
    st = gpu_status(device)
    return st.usable, st.reason


def __getattr__(name: str) -> Any:
    if name == "GpuBackend":
        from .backend import GpuBackend

        return GpuBackend
    raise AttributeError(name)
