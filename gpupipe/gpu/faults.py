"""Classifying the GPU stack's errors: out of memory (retry smaller) or a dead CUDA context (stop).

The three libraries report the same CUDA failures differently:

* CuPy raises ``cupy.cuda.memory.OutOfMemoryError`` (a ``MemoryError``) when its pool cannot
  allocate, and ``cupy.cuda.runtime.CUDARuntimeError`` / ``cupy.cuda.driver.CUDADriverError``
  with the CUDA status in ``.status`` (their text: ``"cudaErrorIllegalAddress: an illegal memory
  access was encountered"``).
* DALI raises ``RuntimeError`` whose text carries the C++ error, wrapped in its "Critical error in
  pipeline" report: device allocation failures are its ``CUDABadAlloc`` (``"CUDA allocation
  failed"``, ``"Can't allocate N bytes on device D."``, ``"Can't allocate N bytes on host."``),
  host ones ``std::bad_alloc``; other CUDA failures are its ``CUDAError``
  (``"CUDA runtime API error cudaErrorIllegalAddress (700):"``, ``"CUDA driver API error
  CUDA_ERROR_ILLEGAL_ADDRESS (700)"``) (``include/dali/core/cuda_error.h``).
* nvImageCodec reports ``"CUDA Runtime failure: '#700'"``.

A *sticky* error (:data:`STICKY_CUDA_ERRORS`: an illegal address, a kernel fault, a device-side
assert, an uncorrectable ECC or NVLink error, ...) leaves the process's CUDA context unusable:
the CUDA documentation says "any further CUDA work will return the same error. To continue using
CUDA, the process must be terminated and relaunched". The GPU backend then stops using the device
for the rest of the process (:class:`DeviceLost`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..errors import DeviceOutOfMemory

__all__ = [
    "STICKY_CUDA_ERRORS",
    "cuda_status",
    "is_oom_error",
    "is_sticky_error",
]


STICKY_CUDA_ERRORS: dict[int, str] = {
    214: "cudaErrorECCUncorrectable",
    220: "cudaErrorNvlinkUncorrectable",
    700: "cudaErrorIllegalAddress",
    702: "cudaErrorLaunchTimeout",
    710: "cudaErrorAssert",
    714: "cudaErrorHardwareStackError",
    715: "cudaErrorIllegalInstruction",
    716: "cudaErrorMisalignedAddress",
    717: "cudaErrorInvalidAddressSpace",
    718: "cudaErrorInvalidPc",
    719: "cudaErrorLaunchFailure",
    911: "cudaErrorExternalDevice",
}
"""CUDA statuses after which the context is unusable, by runtime code and name. The driver API
uses the same numbers (``CUDA_ERROR_ILLEGAL_ADDRESS`` = 700, ``CUDA_ERROR_LAUNCH_FAILED`` = 719,
``CUDA_ERROR_ECC_UNCORRECTABLE`` = 214, ...)."""

_STICKY_DRIVER_NAMES = (
    "CUDA_ERROR_ECC_UNCORRECTABLE",
    "CUDA_ERROR_NVLINK_UNCORRECTABLE",
    "CUDA_ERROR_ILLEGAL_ADDRESS",
    "CUDA_ERROR_LAUNCH_TIMEOUT",
    "CUDA_ERROR_ASSERT",
    "CUDA_ERROR_HARDWARE_STACK_ERROR",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION",
    "CUDA_ERROR_MISALIGNED_ADDRESS",
    "CUDA_ERROR_INVALID_ADDRESS_SPACE",
    "CUDA_ERROR_INVALID_PC",
    "CUDA_ERROR_LAUNCH_FAILED",
    "CUDA_ERROR_EXTERNAL_DEVICE",
)
_STICKY_NAME_RE = re.compile(r"\b(" + "|".join(sorted(STICKY_CUDA_ERRORS.values()) + list(_STICKY_DRIVER_NAMES)) + r")\b")
_NVIMGCODEC_STATUS_RE = re.compile(r"CUDA Runtime failure:? '#(\d+)'")

_OOM_STATUSES = {2}  # cudaErrorMemoryAllocation / CUDA_ERROR_OUT_OF_MEMORY
_OOM_RE = re.compile(
    r"out of memory"
    r"|cudaErrorMemoryAllocation|CUDA_ERROR_OUT_OF_MEMORY"
    r"|CUDA allocation failed"  # DALI CUDABadAlloc()
    r"|Can't allocate \d+ bytes on (?:device -?\d+|host)"  # DALI CUDABadAlloc(size, host)
    r"|std::bad_alloc",
    re.IGNORECASE,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, without cycles."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def cuda_status(exc: BaseException) -> int | None:
    """The CUDA status code ``exc`` carries (CuPy's ``.status``, or nvImageCodec's ``'#N'``), if any."""
    for e in _chain(exc):
        status = getattr(e, "status", None)
        if isinstance(status, int) and type(e).__name__ in ("CUDARuntimeError", "CUDADriverError"):
            return status
        m = _NVIMGCODEC_STATUS_RE.search(str(e))
        if m:
            return int(m.group(1))
    return None


def is_sticky_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a sticky CUDA error that killed the context."""
    status = cuda_status(exc)
    if status is not None and status in STICKY_CUDA_ERRORS:
        return True
    return any(_STICKY_NAME_RE.search(str(e)) for e in _chain(exc))


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error from CuPy, DALI or nvImageCodec (by type, status or message)."""
    if is_sticky_error(exc):
        return False
    for e in _chain(exc):
        if isinstance(e, (DeviceOutOfMemory, MemoryError)):
            return True
        if getattr(e, "status", None) in _OOM_STATUSES and type(e).__name__ in ("CUDARuntimeError", "CUDADriverError"):
            return True
        if _OOM_RE.search(str(e)):
            return True
    return False


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]
