"""The GPU path (DALI decode/resize, nvImageCodec JPEG encode, CuPy base64).

Importing this package never imports CuPy or DALI; they load on first use, so ``import
gpupipe`` works on machines without CUDA.
"""

from __future__ import annotations

__all__ = ["gpu_available", "GpuBackend"]


def gpu_available(device: int = 0) -> tuple[bool, str]:
    """``(usable, reason)``: whether CuPy sees CUDA device ``device`` and DALI imports."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e.name or e}); pip install 'gpupipe[gpu]'"
    except Exception as e:  # noqa: BLE001 - broken CUDA installs raise many types
        return False, f"CuPy failed to import: {e}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError and driver errors
        return False, f"no CUDA device usable: {e}"
    if n <= device:
        return False, f"CUDA device {device} requested but {n} device(s) present"
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        return False, f"NVIDIA DALI is not installed ({e.name or e}); pip install 'gpupipe[gpu]'"
    except Exception as e:  # noqa: BLE001
        return False, f"NVIDIA DALI failed to import: {e}"
    return True, f"CUDA device {device} of {n}, DALI {nvidia.dali.__version__}"


def __getattr__(name: str):
    if name == "GpuBackend":
        from .backend import GpuBackend

        return GpuBackend
    raise AttributeError(name)
