"""How the GPU path starts on a stock CUDA host: where the base64 kernel's device code comes from.

The package ships ``gpupipe/gpu/b64_kernel.fatbin`` (nvcc, SASS for every CUDA 13 GPU generation
plus PTX) with a manifest naming the source it was built from, and the ``gpu`` extra installs
NVRTC and the CUDA headers from wheels. These tests check, without a GPU: that the fatbin is the
one its manifest describes and was built from today's ``b64_kernel.cu`` (and, where nvcc is
installed, that rebuilding gives the same bytes); that the packaging ships it and the extra names
the wheels; and, where the extra is installed, that NVRTC and the headers come from
site-packages and compile the kernel with no CUDA toolkit in sight.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import gpupipe.gpu.kernel_build as kb
from fake_cupy import fatbin_images

ROOT = Path(__file__).resolve().parents[1]


def _manifest() -> dict:
    return json.loads((kb.HERE / kb.MANIFEST_FILE).read_text())


def test_prebuilt_fatbin_was_built_from_this_source():
    """Editing ``b64_kernel.cu`` without ``python -m gpupipe.gpu.kernel_build`` fails here."""
    m = _manifest()
    assert m["source"] == kb.KERNEL_FILE
    assert m["source_sha256"] == hashlib.sha256((kb.HERE / kb.KERNEL_FILE).read_bytes()).hexdigest(), (
        "b64_kernel.cu changed since the fatbin was built: run python -m gpupipe.gpu.kernel_build"
    )
    assert m["fatbin_sha256"] == hashlib.sha256((kb.HERE / kb.FATBIN_FILE).read_bytes()).hexdigest()
    st = kb.prebuilt_status()
    assert st.usable, st.reason


def test_prebuilt_fatbin_holds_every_architecture():
    """SASS for each CUDA 13 generation and PTX for the oldest, as the manifest says."""
    images = fatbin_images((kb.HERE / kb.FATBIN_FILE).read_bytes())
    assert sorted(a for k, a in images if k == "sass") == sorted(kb.SASS_ARCHS) == sorted(_manifest()["sass"])
    assert [a for k, a in images if k == "ptx"] == [kb.PTX_ARCH] == [_manifest()["ptx"]]
    assert {80, 86, 89, 90, 100, 120} <= set(kb.SASS_ARCHS)
    assert _manifest()["nvcc"].startswith("13.0."), "built by nvcc 13.0, whose code every CUDA 13 driver loads"


def test_rebuilding_with_nvcc_gives_the_same_fatbin(tmp_path):
    nvcc = kb.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    m = kb.build_prebuilt(tmp_path, nvcc=nvcc)
    assert m["source_sha256"] == _manifest()["source_sha256"]
    assert fatbin_images((tmp_path / kb.FATBIN_FILE).read_bytes()) == fatbin_images((kb.HERE / kb.FATBIN_FILE).read_bytes())
    if m["nvcc"] == _manifest()["nvcc"]:
        assert (tmp_path / kb.FATBIN_FILE).read_bytes() == (kb.HERE / kb.FATBIN_FILE).read_bytes()


def test_stale_or_missing_prebuilt_is_reported(tmp_path):
    for name in (kb.KERNEL_FILE, kb.FATBIN_FILE, kb.MANIFEST_FILE):
        (tmp_path / name).write_bytes((kb.HERE / name).read_bytes())
    assert kb.prebuilt_status(tmp_path).usable
    (tmp_path / kb.KERNEL_FILE).write_text((kb.HERE / kb.KERNEL_FILE).read_text() + "// edit\n")
    st = kb.prebuilt_status(tmp_path)
    assert not st.usable and "stale" in st.reason
    (tmp_path / kb.KERNEL_FILE).write_bytes((kb.HERE / kb.KERNEL_FILE).read_bytes())
    (tmp_path / kb.FATBIN_FILE).write_bytes(b"\0" * 64)
    assert "does not match" in kb.prebuilt_status(tmp_path).reason
    (tmp_path / kb.FATBIN_FILE).unlink()
    assert "missing" in kb.prebuilt_status(tmp_path).reason


def test_packaging_ships_the_fatbin_and_the_extra_names_nvrtc():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")

    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = py["tool"]["setuptools"]["package-data"]["gpupipe"]
    for name in (kb.KERNEL_FILE, kb.FATBIN_FILE, kb.MANIFEST_FILE):
        assert any(fnmatch.fnmatch(f"gpu/{name}", pat) for pat in data), f"{name} is not in the package data"
    extra = " ".join(py["project"]["optional-dependencies"]["gpu"])
    assert "nvidia-cuda-nvrtc" in extra and "nvidia-cuda-runtime" in extra


def test_kernel_build_check_command():
    r = subprocess.run([sys.executable, "-m", "gpupipe.gpu.kernel_build", "--check"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["kernel_ok"] and "prebuilt" in out["kernel"]


def _dist(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_nvrtc_and_headers_come_from_the_wheels_with_no_toolkit_visible():
    """With only the ``gpu`` extra (no CUDA toolkit: CUDA_PATH/CUDA_HOME unset, nothing CUDA on
    PATH or LD_LIBRARY_PATH), NVRTC is found in site-packages, CuPy derives the CUDA header root
    from it, the kernel compiles to an sm_90 cubin, and so does a source including ``cuda_fp16.h``
    (what CuPy's own elementwise kernels need). Compiled through ``cupy.cuda.nvrtc`` directly:
    CuPy's ``compile_using_nvrtc`` would ask the (absent) driver for the device first."""
    if _dist("nvidia-cuda-nvrtc") is None or _dist("nvidia-cuda-runtime") is None:
        pytest.skip("the gpu extra's NVRTC wheels are not installed here (pip install -e '.[gpu]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA", "CUPY_CUDA", "NVCC")) and k != "LD_LIBRARY_PATH"}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if "cuda" not in p.lower())
    env["PYTHONPATH"] = str(ROOT)
    code = textwrap.dedent(
        """
        import json, os
        from cuda.pathfinder import load_nvidia_dynamic_lib
        from cupy import _environment
        from gpupipe.gpu.kernel_build import compile_with_nvrtc

        lib = load_nvidia_dynamic_lib("nvrtc")
        root = _environment.get_cuda_path()
        cubin = compile_with_nvrtc(90)
        inc = os.path.join(root, "include")
        fp16 = compile_with_nvrtc(90, '#include <cuda_fp16.h>\\nextern "C" __global__ void k(__half* p) { p[0] = __float2half(1.0f); }\\n', ("-std=c++14", "-I" + inc))
        print(json.dumps({"found_via": lib.found_via, "path": lib.abs_path, "root": root, "cubin": cubin[:4].hex(), "fp16": fp16[:4].hex()}))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["found_via"] == "site-packages", out
    assert "site-packages" in out["root"] and os.path.isfile(os.path.join(out["root"], "include", "cuda_fp16.h")), out
    assert out["cubin"] == out["fp16"] == "7f454c46"  # ELF: SASS, loadable by any CUDA 13 driver
