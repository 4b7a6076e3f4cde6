"""Building gpupipe's CUDA base64 kernel for the host (see ``tests/cuda_host/``), shared by
``tests/test_kernel_host.py`` (an executable, under sanitizers) and ``tests/fake_cupy.py`` (a
shared library whose ``emu_launch`` the fake ``RawModule`` calls)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HOST = Path(__file__).resolve().parent / "cuda_host"
KERNEL = HOST.parents[1] / "gpupipe" / "gpu" / "b64_kernel.cu"

_FLAGS = ["-O1", "-g", "-std=c++14", "-fno-strict-aliasing", "-Wall", "-Werror", "-Wno-unknown-pragmas"]
_SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
_SHARED = ["-shared", "-fPIC", "-DEMU_SHARED"]


def host_cxx() -> str | None:
    """The host C++ compiler, or ``None``."""
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def compile_kernel(source: Path, out: Path, *, shared: bool = False, sanitize: bool = False) -> subprocess.CompletedProcess:
    """Compile kernel ``source`` with the host shim and ``launch.cpp`` into ``out`` (an executable,
    or a shared library exporting ``emu_launch`` when ``shared``)."""
    cxx = host_cxx()
    if cxx is None:
        raise RuntimeError("no host C++ compiler")
    cmd = [cxx, *_FLAGS, *(_SANITIZE if sanitize else []), *(_SHARED if shared else []),
           "-include", str(HOST / "shim.h"), "-x", "c++", str(source), str(HOST / "launch.cpp"), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
