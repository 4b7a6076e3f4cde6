"""Where the base64 kernel's device code comes from: a prebuilt fatbin, or NVRTC at run time.

The package ships ``b64_kernel.fatbin``, built by ``nvcc`` from ``b64_kernel.cu`` with SASS for
every GPU generation CUDA 13 supports (:data:`SASS_ARCHS`) plus PTX for the oldest
(:data:`PTX_ARCH`, which the driver JIT-compiles on any newer device the SASS does not cover),
and beside it ``b64_kernel.fatbin.json``, its manifest: the SHA-256 of the source it was built
from, the fatbin's own SHA-256, the nvcc version and the architectures. The kernel loads the
fatbin with ``cupy.RawModule(path=...)``; that needs neither NVRTC nor CUDA headers, and SASS
built by nvcc 13.0 loads on every driver for CUDA 13 (R580 or newer), where PTX from a newer
NVRTC would not.

The fatbin is used only while its manifest names the current source (:func:`prebuilt_status`);
otherwise, or when the driver refuses it, the kernel is compiled from source by CuPy with NVRTC
(``libnvrtc.so.13``, which the ``gpu`` extra installs from the ``nvidia-cuda-nvrtc`` wheel; CuPy
finds it through ``cuda.pathfinder``). CI checks that the manifest matches the source and, where
nvcc is installed, that rebuilding gives the same bytes (``tests/test_gpu_start.py``).

Rebuild after editing the kernel: ``python -m gpupipe.gpu.kernel_build`` (needs nvcc 13).
``python -m gpupipe.gpu.kernel_build --check`` prints where the kernel would come from here.

Nothing in this module imports CuPy at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FATBIN_FILE",
    "KERNEL_FILE",
    "MANIFEST_FILE",
    "PTX_ARCH",
    "SASS_ARCHS",
    "NvrtcStatus",
    "PrebuiltStatus",
    "build_prebuilt",
    "compile_with_nvrtc",
    "kernel_availability",
    "nvcc_command",
    "nvrtc_status",
    "prebuilt_status",
    "source_sha256",
]

HERE = Path(__file__).resolve().parent
KERNEL_FILE = "b64_kernel.cu"
FATBIN_FILE = "b64_kernel.fatbin"
MANIFEST_FILE = "b64_kernel.fatbin.json"

SASS_ARCHS: tuple[int, ...] = (75, 80, 86, 89, 90, 100, 120)
"""Compute capabilities with SASS in the fatbin: Turing, A100, Ampere consumer, Ada, Hopper,
Blackwell data centre, Blackwell consumer (a cubin also runs on later minor versions of its major:
sm_80 on sm_87, sm_100 on sm_103, sm_120 on sm_121)."""

PTX_ARCH = 75
"""PTX for ``compute_75`` rides along: the driver JIT-compiles it on a device no SASS covers."""

NVCC_FLAGS: tuple[str, ...] = ("-std=c++14",)
NVRTC_FLAGS: tuple[str, ...] = ("-std=c++14",)
"""The options CuPy's ``RawModule`` gets when it compiles the kernel with NVRTC."""


def source_path() -> Path:
    """The kernel's CUDA C++ source in the installed package."""
    return HERE / KERNEL_FILE


def source_sha256(text: str | bytes | None = None) -> str:
    """SHA-256 (hex) of the kernel source (``text``, or the installed ``b64_kernel.cu``)."""
    if text is None:
        data = source_path().read_bytes()
    elif isinstance(text, str):
        data = text.encode("utf-8")
    else:
        data = text
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PrebuiltStatus:
    """Whether the shipped fatbin may be used: ``usable``, ``reason``, its ``path`` and ``manifest``."""

    usable: bool
    reason: str
    path: Path
    manifest: dict[str, Any] | None


def prebuilt_status(directory: Path | None = None) -> PrebuiltStatus:
    """Check the prebuilt fatbin in ``directory`` (default: this package) against its manifest and the source.

    Usable only when the fatbin and its manifest exist, the fatbin's SHA-256 is the one the
    manifest records, and the manifest was made from the current ``b64_kernel.cu``.
    """
    d = Path(directory) if directory is not None else HERE
    fatbin, manifest_path = d / FATBIN_FILE, d / MANIFEST_FILE
    if not fatbin.is_file() or not manifest_path.is_file():
        return PrebuiltStatus(False, f"no prebuilt kernel ({FATBIN_FILE} or {MANIFEST_FILE} missing in {d})", fatbin, None)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return PrebuiltStatus(False, f"unreadable {MANIFEST_FILE}: {e}", fatbin, None)
    src = d / str(manifest.get("source", KERNEL_FILE))
    try:
        want_src = source_sha256(src.read_bytes())
    except OSError as e:
        return PrebuiltStatus(False, f"kernel source {src.name} unreadable: {e}", fatbin, manifest)
    if manifest.get("source_sha256") != want_src:
        return PrebuiltStatus(
            False,
            f"prebuilt kernel is stale: {FATBIN_FILE} was built from another {src.name} "
            "(rebuild with python -m gpupipe.gpu.kernel_build)",
            fatbin,
            manifest,
        )
    if manifest.get("fatbin_sha256") != hashlib.sha256(fatbin.read_bytes()).hexdigest():
        return PrebuiltStatus(False, f"{FATBIN_FILE} does not match the SHA-256 in {MANIFEST_FILE}", fatbin, manifest)
    archs = ", ".join(f"sm_{a}" for a in manifest.get("sass", ()))
    ptx = manifest.get("ptx")
    what = f"prebuilt {FATBIN_FILE} (nvcc {manifest.get('nvcc', '?')}: {archs}" + (f"; PTX compute_{ptx}" if ptx else "") + ")"
    return PrebuiltStatus(True, what, fatbin, manifest)


@dataclass(frozen=True)
class NvrtcStatus:
    """Whether ``libnvrtc`` can be loaded: ``found``, ``found_via`` (cuda.pathfinder's word:
    ``site-packages``, ``conda``, ``system``, ``CUDA_HOME``), ``path``, or ``error``."""

    found: bool
    found_via: str | None = None
    path: str | None = None
    error: str | None = None


def nvrtc_status() -> NvrtcStatus:
    """Look NVRTC up the way CuPy does (``cuda.pathfinder.load_nvidia_dynamic_lib("nvrtc")``)."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError as e:
        return NvrtcStatus(False, error=f"cuda.pathfinder is not installed ({e})")
    try:
        lib = load_nvidia_dynamic_lib("nvrtc")
    except Exception as e:  # noqa: BLE001 - DynamicLibNotFoundError, or a broken library
        first = str(e).strip().splitlines()
        return NvrtcStatus(False, error=f"{type(e).__name__}: {first[0] if first else ''}")
    return NvrtcStatus(True, found_via=str(lib.found_via), path=str(lib.abs_path))


def kernel_availability(directory: Path | None = None) -> tuple[bool, str]:
    """``(ok, how)``: whether the base64 kernel can be loaded here, and from where.

    The prebuilt fatbin needs nothing else; without it (missing or stale) the kernel needs NVRTC.
    """
    pre = prebuilt_status(directory)
    if pre.usable:
        return True, pre.reason
    lib = nvrtc_status()
    if lib.found:
        return True, f"compiled at first use with NVRTC ({lib.path}, found via {lib.found_via}); {pre.reason}"
    return False, (
        f"the base64 kernel cannot be built: NVRTC (libnvrtc.so.13) not found ({lib.error}; "
        f"pip install 'gpupipe[gpu]' installs it from the nvidia-cuda-nvrtc wheel) and {pre.reason}"
    )


# --------------------------------------------------------------------------- building


def nvcc_command(nvcc: str, source: Path, out: Path) -> list[str]:
    """The nvcc command that builds the fatbin (SASS for :data:`SASS_ARCHS`, PTX for :data:`PTX_ARCH`)."""
    cmd = [nvcc, "-fatbin", *NVCC_FLAGS]
    for a in SASS_ARCHS:
        cmd += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    cmd += ["-gencode", f"arch=compute_{PTX_ARCH},code=compute_{PTX_ARCH}"]
    return [*cmd, "-o", str(out), str(source)]


def nvcc_version(nvcc: str) -> str:
    """``"13.0.88"`` from ``nvcc --version``."""
    r = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=True)
    m = re.search(r"release [\d.]+, V([\d.]+)", r.stdout)
    if not m:
        raise RuntimeError(f"cannot read the nvcc version from: {r.stdout!r}")
    return m.group(1)


def find_nvcc() -> str | None:
    """nvcc on ``PATH``, or under ``$CUDA_PATH``/``$CUDA_HOME``/``/usr/local/cuda``."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None


def build_prebuilt(out_dir: Path | None = None, nvcc: str | None = None, source: Path | None = None) -> dict[str, Any]:
    """Build ``b64_kernel.fatbin`` and its manifest into ``out_dir`` (default: this package); return the manifest."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (install the CUDA 13 toolkit, or set CUDA_PATH)")
    out_dir = Path(out_dir) if out_dir is not None else HERE
    source = Path(source) if source is not None else source_path()
    out = out_dir / FATBIN_FILE
    r = subprocess.run(nvcc_command(nvcc, source, out), check=False, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{r.stderr}")
    manifest = {
        "source": KERNEL_FILE,
        "source_sha256": source_sha256(source.read_bytes()),
        "fatbin_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "nvcc": nvcc_version(nvcc),
        "sass": list(SASS_ARCHS),
        "ptx": PTX_ARCH,
        "command": " ".join(["nvcc", *nvcc_command("nvcc", Path(KERNEL_FILE), Path(FATBIN_FILE))[1:]]),
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def compile_with_nvrtc(arch: int, source: str | None = None, options: Sequence[str] = NVRTC_FLAGS) -> bytes:
    """Compile the kernel (or ``source``) to a cubin for ``sm_<arch>`` with NVRTC, through
    ``cupy.cuda.nvrtc`` directly: no device or driver is needed (CuPy's own
    ``compile_using_nvrtc`` asks the driver for the current device's architecture first).

    Raises ``cuda.pathfinder``'s ``DynamicLibNotFoundError`` when NVRTC is missing and
    ``RuntimeError`` with the compiler log when compilation fails.
    """
    from cupy.cuda import nvrtc

    text = source if source is not None else source_path().read_text(encoding="utf-8")
    prog = nvrtc.createProgram(text, KERNEL_FILE, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*options, f"-arch=sm_{int(arch)}"])
        except nvrtc.NVRTCError as e:
            raise RuntimeError(f"NVRTC could not compile {KERNEL_FILE} for sm_{arch}: {e}\n{nvrtc.getProgramLog(prog)}") from e
        return bytes(nvrtc.getCUBIN(prog))
    finally:
        nvrtc.destroyProgram(prog)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gpupipe.gpu.kernel_build [--check]``: rebuild the fatbin, or report where the kernel comes from."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--check" in args:
        ok, how = kernel_availability()
        print(json.dumps({"kernel_ok": ok, "kernel": how, "nvrtc": nvrtc_status().__dict__}, indent=1))
        return 0 if ok else 1
    manifest = build_prebuilt()
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover - command line
    raise SystemExit(main())
