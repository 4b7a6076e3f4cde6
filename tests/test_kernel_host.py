"""The CUDA base64 kernel's own source, run on the host (no GPU needed).

``gpupipe/gpu/b64_kernel.cu`` is compiled with the host C++ compiler against
``tests/cuda_host/shim.h`` (host versions of the few CUDA built-ins it uses) and launched by
``tests/cuda_host/launch.cpp``, which walks the launch grid one thread at a time. The kernel's
threads share nothing and never synchronise, so this gives the bytes the GPU would write: the
index arithmetic, the frame search, the vector loads and stores, the tail and padding code and the
prefix items all run here. Where the compiler has them, AddressSanitizer and UBSan watch every
access (exact-size buffers; 16-byte alignment of the vector accesses).

What this cannot show is anything about the GPU itself: speed, and the compiler's device code
generation. ``test_kernel_compiles_for_sm90`` covers the latter as far as a compiler can (nvcc,
when installed); ``tests/test_gpu.py`` runs the kernel on a real device.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gpupipe.base64_batch import CHUNK_IN, BatchLayout, batch_layout, encode_packed, pack_batch
from host_kernel import KERNEL, compile_kernel, host_cxx

THREADS = 256  # gpupipe.gpu.base64_kernel.THREADS
CHUNKS_PER_THREAD = 4  # gpupipe.gpu.base64_kernel.CHUNKS_PER_THREAD (checked against the source below)
H100_BLOCKS = 132 * 5  # what Base64Kernel.grid() caps at on an H100 SXM (132 SMs x 5 resident blocks at 48 registers)
SENTINEL = 0xEE
MIMES = ["image/png", "image/jpeg", "image/webp"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    """The kernel built for the host, with sanitizers where the compiler supports them."""
    if host_cxx() is None:
        pytest.skip("no host C++ compiler to build the kernel emulation")
    exe = tmp_path_factory.mktemp("b64emu") / "b64emu"
    r = compile_kernel(KERNEL, exe, sanitize=True)
    if r.returncode != 0:
        r = compile_kernel(KERNEL, exe)  # a compiler without sanitizer runtimes
    assert r.returncode == 0, f"the kernel source does not compile for the host:\n{r.stderr}"
    return exe


def launch(exe: Path, datas: list[bytes], mimes: list[str], grid: int | None = None, block: int = THREADS) -> tuple[np.ndarray, BatchLayout]:
    """The kernel's output buffer for a batch, with ``grid`` blocks of ``block`` threads (default:
    the production grid, ``Base64Kernel.grid()`` on an H100)."""
    layout = batch_layout(mimes, [len(d) for d in datas])
    if grid is None:
        grid = max(1, min(H100_BLOCKS, -(-layout.total_chunks // (THREADS * CHUNKS_PER_THREAD))))
    d = exe.parent
    (d / "in.bin").write_bytes(pack_batch(datas, layout).tobytes())
    (d / "table.bin").write_bytes(layout.kernel_table().astype(np.int64).tobytes())
    out = d / "out.bin"
    r = subprocess.run(
        [str(exe), str(d / "in.bin"), str(d / "table.bin"), str(layout.out_size), str(grid), str(block), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"emulated kernel failed (rc {r.returncode}):\n{r.stderr[-4000:]}"
    buf = np.frombuffer(out.read_bytes(), np.uint8)
    assert buf.size == layout.out_size
    return buf, layout


def check(buf: np.ndarray, layout: BatchLayout, datas: list[bytes], mimes: list[str]) -> None:
    """Every span is the standard library's URI and the twin's bytes; nothing outside a span was written."""
    twin = encode_packed(pack_batch(datas, layout), layout)
    written = np.zeros(layout.out_size, bool)
    for i, (d, m) in enumerate(zip(datas, mimes)):
        s, n = layout.span(i)
        got = bytes(buf[s : s + n])
        assert got == f"data:{m};base64,".encode() + base64.b64encode(d), f"frame {i} ({len(d)} bytes)"
        assert got == bytes(twin[s : s + n])
        written[s : s + n] = True
    assert (buf[~written] == SENTINEL).all(), "the kernel wrote outside the URI spans"


@given(st.lists(st.tuples(st.binary(max_size=600), st.sampled_from(MIMES)), min_size=1, max_size=12))
def test_kernel_matches_b64encode_and_twin(emulator, items):
    datas = [d for d, _ in items]
    mimes = [m for _, m in items]
    buf, layout = launch(emulator, datas, mimes)
    check(buf, layout, datas, mimes)


def test_every_length_to_many_chunks_in_one_batch(emulator):
    """Lengths 0 to 20 * 12 + 2, every remainder mod 3 and mod 12, side by side in one launch, with
    small blocks so that tiles cross frame ends at every position."""
    rng = np.random.default_rng(3)
    datas = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in range(20 * CHUNK_IN + 3)]
    mimes = [MIMES[i % 3] for i in range(len(datas))]
    for grid, block in ((None, THREADS), (5, 32), (2, 7)):
        buf, layout = launch(emulator, datas, mimes, grid=grid, block=block)
        check(buf, layout, datas, mimes)


@given(
    st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(MIMES)), min_size=1, max_size=20),
    st.integers(1, 9),
    st.sampled_from([1, 3, 32, 64, THREADS]),
    st.randoms(use_true_random=False),
)
def test_batch_layouts_and_launch_grids(emulator, frames, grid, block, rnd):
    """Hypothesis over batch layouts (frame lengths, mixed MIME types, empty frames) and launch
    grids: the block ranges, tiles and frame changes fall everywhere."""
    datas = [rnd.randbytes(n) for n, _ in frames]
    mimes = [m for _, m in frames]
    buf, layout = launch(emulator, datas, mimes, grid=grid, block=block)
    check(buf, layout, datas, mimes)


@pytest.mark.parametrize(
    "grid,block",
    [(1, 1), (1, 32), (3, 64), (H100_BLOCKS, THREADS)],
    ids=["one-thread", "one-warp", "odd-grid", "oversized-grid"],
)
def test_grid_stride_covers_every_item_once(emulator, grid, block):
    """Fewer threads than items (each thread walks many, across frames) and more threads than items."""
    rng = np.random.default_rng(grid * 1000 + block)
    lengths = [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 4099, 12_345]
    datas = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    mimes = [MIMES[i % 3] for i in range(len(datas))]
    buf, layout = launch(emulator, datas, mimes, grid=grid, block=block)
    check(buf, layout, datas, mimes)


def test_large_frames_at_each_remainder(emulator):
    """Three ~1 MiB frames (every length mod 3) with the production grid: many items per thread."""
    rng = np.random.default_rng(11)
    datas = [rng.integers(0, 256, (1 << 20) + r, dtype=np.uint8).tobytes() for r in (0, 1, 2)]
    mimes = ["image/png", "image/jpeg", "image/png"]
    buf, layout = launch(emulator, datas, mimes, grid=8)
    check(buf, layout, datas, mimes)


def test_all_byte_values_map_to_the_alphabet(emulator):
    """Every 6-bit index in every position of a group and of the packed 4-character word."""
    data = bytes(range(256)) * 3 + bytes(range(255, -1, -1)) * 3
    buf, layout = launch(emulator, [data], ["image/png"])
    check(buf, layout, [data], ["image/png"])


def test_chunks_per_thread_matches_the_source():
    """The host-side grid sizing (gpupipe.gpu.base64_kernel) and the kernel agree on the tile size."""
    src = KERNEL.read_text()
    assert re.search(rf"^#define CHUNKS_PER_THREAD {CHUNKS_PER_THREAD}$", src, re.M)
    assert re.search(rf"^#define CHUNK_IN {CHUNK_IN}$", src, re.M)
    assert "CHUNKS_PER_THREAD = 4\n" in (KERNEL.parent / "base64_kernel.py").read_text()


def test_kernel_compiles_for_sm90(tmp_path):
    """nvcc (when installed) compiles the kernel for the H100/H200 without spilling registers or a
    stack frame; a chunk is three 4-byte loads through the read-only path and one 16-byte store
    (PTX: both tile paths, the whole-tile one and the one crossing frame ends). Where cuobjdump
    is installed, the SASS has the 16-byte stores (STG.E.128) and no local memory (LDL/STL)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    cubin = tmp_path / "k.cubin"
    r = subprocess.run(
        [nvcc, "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-o", str(cubin), str(KERNEL)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    log = r.stdout + r.stderr
    assert "0 bytes spill stores, 0 bytes spill loads" in log, log
    assert "0 bytes stack frame" in log, log
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    assert regs <= 64, f"{regs} registers: fewer than 4 blocks of 256 threads per SM"
    r = subprocess.run([nvcc, "-arch=sm_90", "-ptx", "-o", str(tmp_path / "k.ptx"), str(KERNEL)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    assert ptx.count("ld.global.nc.u32") == 2 * 3 * CHUNKS_PER_THREAD, "a chunk should be three 4-byte loads"
    assert ptx.count("st.global.v4.u32") == 2 * CHUNKS_PER_THREAD, "a chunk should be one 16-byte store"
    assert "ld.local" not in ptx and "st.local" not in ptx
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        return
    r = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("STG.E.128") == 2 * CHUNKS_PER_THREAD
    assert r.stdout.count("LDG.E.CONSTANT ") == 2 * 3 * CHUNKS_PER_THREAD
    assert not re.search(r"\b(LDL|STL)\b", r.stdout), "local memory in the SASS"
