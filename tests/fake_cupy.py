"""A stand-in for the small part of CuPy that ``gpupipe/gpu`` uses, with host memory as "device"
memory and the base64 kernel's own CUDA source run on the host (``tests/cuda_host``).

It lets CI run the GPU modules' *device* branch (``DeviceLayer(config, device_id=0)``,
``Base64Kernel``, the CuPy memory pool with its limit, pinned buffers, the host/device copies)
without a GPU, so that glue mistakes (buffer offsets and sizes, the kernel's argument list and
types, the pool limit and out-of-memory handling, which device a call runs on) fail in CI. What it
cannot show: anything about asynchrony (every call here completes before it returns, so a missing
synchronisation is invisible), real CuPy/CUDA semantics beyond what is mimicked, and speed.

Fidelity choices, each mirroring real CuPy 14 / CUDA 13:

* allocations are 256-byte aligned and poisoned (``cudaMalloc`` memory is not zeroed); the pool
  rounds blocks to 512 bytes and raises the real ``cupy.cuda.memory.OutOfMemoryError`` past its
  limit or past the fake device's capacity;
* ``RawModule(code=...)`` compiles with "NVRTC" at first use: NVRTC is looked up the way CuPy does
  (``cuda.pathfinder.load_nvidia_dynamic_lib("nvrtc")``, raising its ``DynamicLibNotFoundError``
  when missing) and a ``#include`` of a CUDA header fails with NVRTC's "cannot open source file"
  (CuPy's ``CompileException``) unless the headers sit beside NVRTC, as in the
  ``nvidia-cuda-runtime`` wheel. CuPy's own elementwise kernels (``fill`` with a non-zero value,
  array assignment) need NVRTC and ``cuda_fp16.h`` in the same way;
* ``RawModule(path=...)`` loads a fatbin: it picks the SASS for the fake device's compute
  capability (a cubin runs on later minor versions of its major) or JIT-compiles PTX for an
  older one, and raises ``CUDA_ERROR_NO_BINARY_FOR_GPU`` otherwise; it runs the kernel source its
  manifest names;
* pinned memory comes from ``PinnedMemoryPool`` s that keep freed blocks until
  ``free_all_blocks`` (as CuPy's do); ``STATE.pinned_held`` counts what they hold;
* every CUDA call is recorded with the device current on its thread (``STATE.calls``);
  ``Device`` is a context manager that makes a device current, streams belong to the device
  current when they were created;
* a kernel launch can be made to fault (:meth:`_State.arm_fault`): as on a GPU the launch itself
  returns, the next synchronising call raises the real ``cupy.cuda.runtime.CUDARuntimeError``
  with that status, and, the error being sticky, so does every CUDA call after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import json
import pkgutil
import re
import struct
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from host_kernel import compile_kernel

POISON = 0xA5
POOL_ROUND = 512
PINNED_ROUND = 512

try:  # the real exception types: they construct without a GPU
    from cupy.cuda.compiler import CompileException
    from cupy.cuda.memory import OutOfMemoryError
    from cupy.cuda.runtime import CUDARuntimeError
except ImportError:  # pragma: no cover - CuPy not installed: look-alikes

    class OutOfMemoryError(MemoryError):  # type: ignore[no-redef]
        def __init__(self, size: int, total: int, limit: int) -> None:
            super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, limit set to: {limit:,} bytes).")

    class CUDARuntimeError(RuntimeError):  # type: ignore[no-redef]
        NAMES = {100: "cudaErrorNoDevice: no CUDA-capable device is detected",  # CuPy 14's words
                 101: "cudaErrorInvalidDevice: invalid device ordinal",
                 700: "cudaErrorIllegalAddress: an illegal memory access was encountered"}

        def __init__(self, status: int) -> None:
            self.status = status
            super().__init__(self.NAMES.get(status, f"cudaError {status}"))

    class CompileException(Exception):  # type: ignore[no-redef]
        def __init__(self, msg: str, source: str, name: str, options: tuple, backend: str = "nvrtc") -> None:
            super().__init__(msg)

try:
    from cuda.pathfinder import DynamicLibNotFoundError
except ImportError:  # pragma: no cover

    class DynamicLibNotFoundError(RuntimeError):  # type: ignore[no-redef]
        pass


class CUDADriverError(RuntimeError):
    """Mimics ``cupy.cuda.driver.CUDADriverError`` (whose constructor needs a real driver)."""

    NAMES = {209: ("CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"),
             218: ("CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"),
             222: ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."),
             200: ("CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid")}

    def __init__(self, status: int) -> None:
        self.status = status
        name, desc = self.NAMES.get(status, (f"CUDA_ERROR_{status}", "unknown"))
        super().__init__(f"{name}: {desc}")


# --------------------------------------------------------------------------- fatbin


def fatbin_images(data: bytes) -> list[tuple[str, int]]:
    """``[("sass" | "ptx", arch), ...]`` of a fatbin container (``nvcc -fatbin``): a 16-byte header
    (magic 0xBA55ED50, version, header size, payload size), then entries each with a header
    (kind 1 = PTX, 2 = ELF; header size at byte 4, padded payload size at byte 8, arch at byte 28)."""
    magic, _ver, hsize, fsize = struct.unpack_from("<IHHQ", data, 0)
    if magic != 0xBA55ED50:
        raise ValueError("not a fatbin (bad magic)")
    out = []
    pos, end = hsize, hsize + fsize
    while pos < end:
        kind, _v, eh, padded = struct.unpack_from("<HHIQ", data, pos)
        (arch,) = struct.unpack_from("<I", data, pos + 28)
        out.append(({1: "ptx", 2: "sass"}.get(kind, f"kind{kind}"), int(arch)))
        pos += eh + padded
    return out


def select_image(images: list[tuple[str, int]], cc: int) -> tuple[str, int] | None:
    """What a driver loads for compute capability ``cc``: SASS of the same major and minor at most
    ``cc``'s (the newest such), else PTX of an architecture at most ``cc`` (JIT-compiled)."""
    sass = [a for k, a in images if k == "sass" and a // 10 == cc // 10 and a <= cc]
    if sass:
        return ("sass", max(sass))
    ptx = [a for k, a in images if k == "ptx" and a <= cc]
    return ("ptx", max(ptx)) if ptx else None


# --------------------------------------------------------------------------- devices and memory


class FakeDevice:
    """The device memory: its capacity and what is allocated on it (shared by every device id)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.allocated = 0
        self.peak = 0
        self.lock = threading.Lock()


class MemoryPointer:
    """A device allocation: host memory, 256-byte aligned, poisoned."""

    def __init__(self, nbytes: int, release: Any = None) -> None:
        self._raw = np.empty(nbytes + 256, np.uint8)
        off = (-self._raw.ctypes.data) % 256
        self.buf = self._raw[off : off + nbytes]
        self.buf.fill(POISON)
        self.ptr = self.buf.ctypes.data
        self.nbytes = nbytes
        self._release = release

    def __del__(self) -> None:
        if self._release is not None:
            self._release(self.nbytes)


class MemoryPool:
    """Mimics ``cupy.cuda.MemoryPool``: ``set_limit``, ``malloc``, byte counters, ``free_all_blocks``."""

    def __init__(self, device: FakeDevice) -> None:
        self._dev = device
        self._limit = 0
        self._used = 0
        self.peak_used = 0
        self.freed_all = 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._used

    def free_all_blocks(self) -> None:
        self.freed_all += 1

    def malloc(self, nbytes: int) -> MemoryPointer:
        _touch("malloc")
        size = max(POOL_ROUND, (int(nbytes) + POOL_ROUND - 1) // POOL_ROUND * POOL_ROUND)
        dev = self._dev
        with dev.lock:
            if (self._limit and self._used + size > self._limit) or dev.allocated + size > dev.capacity:
                raise OutOfMemoryError(size, self._used, self._limit or dev.capacity)
            self._used += size
            dev.allocated += size
            self.peak_used = max(self.peak_used, self._used)
            dev.peak = max(dev.peak, dev.allocated)
        return MemoryPointer(size, self._free)

    def _free(self, size: int) -> None:
        with self._dev.lock:
            self._used -= size
            self._dev.allocated -= size


class PinnedMemoryPointer(bytearray):
    """Pinned host memory with the buffer protocol (NumPy arrays are built over it, as over CuPy's);
    when the last reference goes, the block returns to its pool's free list."""

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool._free_block(self.block)


class PinnedMemoryPool:
    """Mimics ``cupy.cuda.PinnedMemoryPool``: blocks rounded to 512 bytes; a freed block stays
    held by the pool (reused only for the same size) until :meth:`free_all_blocks`."""

    def __init__(self) -> None:
        self._free: dict[int, int] = {}  # size -> count of free blocks
        self._lock = threading.Lock()

    def malloc(self, size: int) -> PinnedMemoryPointer:
        size = max(PINNED_ROUND, (int(size) + PINNED_ROUND - 1) // PINNED_ROUND * PINNED_ROUND)
        with self._lock:
            if self._free.get(size):
                self._free[size] -= 1
            else:
                _touch("hostAlloc")
                STATE.pinned_held += size
                STATE.pinned_peak = max(STATE.pinned_peak, STATE.pinned_held)
        mem = PinnedMemoryPointer(size)
        mem.pool, mem.block = self, size
        return mem

    def _free_block(self, size: int) -> None:
        with self._lock:
            self._free[size] = self._free.get(size, 0) + 1

    def free_all_blocks(self) -> None:
        with self._lock:
            for size, n in self._free.items():
                STATE.pinned_held -= size * n
            self._free.clear()

    def n_free_blocks(self) -> int:
        return sum(self._free.values())


class ndarray:
    """A 1-D device array over a :class:`MemoryPointer` (only what gpupipe uses)."""

    def __init__(self, mem: MemoryPointer, view: np.ndarray) -> None:
        self._mem = mem  # keeps the allocation alive, as CuPy arrays do
        self._a = view
        self.data = types.SimpleNamespace(ptr=view.ctypes.data if view.size else mem.ptr)

    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    shape = property(lambda self: self._a.shape)

    def __getitem__(self, key: Any) -> "ndarray":
        return ndarray(self._mem, self._a[key])

    def view(self, dtype: Any) -> "ndarray":
        return ndarray(self._mem, self._a.view(dtype))

    def fill(self, value: int) -> None:
        if value != 0:  # CuPy memsets zeros; any other value is an elementwise kernel (NVRTC)
            _elementwise_kernel("fill")
        _touch("kernel")
        self._a.fill(value)

    def __setitem__(self, key: Any, value: Any) -> None:
        _elementwise_kernel("copy")  # CuPy's elementwise_copy
        _touch("kernel")
        self._a[key] = value._a if isinstance(value, ndarray) else value

    def get(self) -> np.ndarray:
        _touch("memcpy")
        return self._a.copy()


# --------------------------------------------------------------------------- NVRTC and modules


def _nvrtc_root() -> Path:
    """Where "NVRTC" lives (its include directory is ``<root>/include``); raises like CuPy without it."""
    mode = STATE.nvrtc
    if mode == "lookup":
        from cuda.pathfinder import load_nvidia_dynamic_lib

        lib = load_nvidia_dynamic_lib("nvrtc")  # DynamicLibNotFoundError when missing
        return Path(lib.abs_path).resolve().parent.parent
    if not mode:
        raise DynamicLibNotFoundError(
            'Failure finding "libnvrtc.so.13 or libnvrtc.so.12": No such file: libnvrtc.so.13 or libnvrtc.so.12'
        )
    return Path(STATE.workdir) / "fake-nvrtc"


def _nvrtc_compile(code: str, options: tuple) -> None:
    """What NVRTC needs to compile ``code``: the library, and every ``#include <...>`` on its include path."""
    root = _nvrtc_root()
    for name in re.findall(r"^\s*#\s*include\s*<([^>]+)>", code, re.M):
        have = (root / "include" / name).is_file() if STATE.nvrtc == "lookup" else STATE.headers
        if not have:
            raise CompileException(
                f'kern.cu(1): catastrophic error: cannot open source file "{name}"\n\n1 catastrophic error detected in the compilation of "kern.cu".\nCompilation terminated.',
                code,
                "kern.cu",
                tuple(options),
                "nvrtc",
            )


def _elementwise_kernel(name: str) -> None:
    _nvrtc_compile("#include <cuda_fp16.h>\n", ("-arch=sm_90",))


def _build_module(code: str, workdir: Path) -> ctypes.CDLL:
    """Compile ``code`` (kernel source) with the host shim into a shared library."""
    tag = hashlib.sha256(code.encode()).hexdigest()[:16]
    lib = workdir / f"kernel-{tag}.so"
    if not lib.exists():
        src = workdir / f"kernel-{tag}.cu"
        src.write_text(code)
        r = compile_kernel(src, lib, shared=True)
        if r.returncode != 0:
            raise RuntimeError(f"fake RawModule: compile failed:\n{r.stderr}")
    dll = ctypes.CDLL(str(lib))
    dll.emu_launch.argtypes = [ctypes.c_uint, ctypes.c_uint] + [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_longlong]
    dll.emu_launch.restype = None
    return dll


def _load_fatbin(path: str) -> str:
    """The kernel source a fatbin at ``path`` runs (per its manifest), after choosing its image
    for the fake device like the driver does."""
    data = Path(path).read_bytes()
    try:
        images = fatbin_images(data)
    except (ValueError, struct.error):
        raise CUDADriverError(200) from None
    chosen = select_image(images, STATE.cc)
    if chosen is None:
        raise CUDADriverError(209)
    manifest = json.loads(Path(str(path) + ".json").read_text())  # b64_kernel.fatbin.json beside it
    if manifest.get("fatbin_sha256") != hashlib.sha256(data).hexdigest():
        raise RuntimeError("fake RawModule: the fatbin does not match its manifest, so its source is unknown")
    src = Path(path).parent / manifest["source"]
    code = src.read_text()
    if hashlib.sha256(code.encode()).hexdigest() != manifest["source_sha256"]:
        raise RuntimeError("fake RawModule: the fatbin was built from another source; cannot emulate it")
    STATE.module_loads.append(("path", f"{chosen[0]}_{chosen[1]}"))
    return code


class RawKernel:
    """``b64_batch`` from a fake :class:`RawModule`; a call runs the grid on the host."""

    # The kernel's C parameters: four pointers, an int, a long long.
    SIGNATURE = (ndarray, ndarray, ndarray, ndarray, np.int32, np.int64)

    def __init__(self, dll: ctypes.CDLL, log: list) -> None:
        self._dll = dll
        self.kernel = types.SimpleNamespace(ptr=ctypes.cast(dll.emu_launch, ctypes.c_void_p).value)
        self.launches = log

    def __call__(self, grid: tuple, block: tuple, args: tuple, *, shared_mem: int = 0, stream: Any = None) -> None:
        _touch("launch")
        if len(args) != len(self.SIGNATURE):
            raise TypeError(f"b64_batch takes {len(self.SIGNATURE)} arguments, got {len(args)}")
        for i, (a, t) in enumerate(zip(args, self.SIGNATURE)):
            if type(a) is not t:
                raise TypeError(f"b64_batch argument {i}: expected {t.__name__}, got {type(a).__name__}")
        for i, a in enumerate(args[:4]):
            if a.data.ptr % a.dtype.itemsize:
                raise ValueError(f"b64_batch argument {i}: {a.dtype} data at a misaligned address (the GPU would fault)")
        (g,), (b,) = tuple(grid), tuple(block)
        if not (1 <= g <= 2**31 - 1 and 1 <= b <= 1024):
            raise ValueError(f"bad launch configuration {grid} x {block}")
        ptrs = [a.data.ptr for a in args[:4]]
        self.launches.append((g, b))
        if STATE.armed_fault is not None:  # the kernel faults on the device; the launch call itself returns
            STATE.fault, STATE.armed_fault = STATE.armed_fault, None
            return
        self._dll.emu_launch(g, b, *ptrs, int(args[4]), int(args[5]))


class RawModule:
    """Lazy, as CuPy's: compiling (``code``) or loading (``path``) happens at :meth:`get_function`."""

    def __init__(self, *, code: str | None = None, path: str | None = None, options: tuple = (), **_: Any) -> None:
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        self.code, self.path, self.options = code, path, tuple(options)

    def get_function(self, name: str) -> RawKernel:
        _touch("moduleLoad")
        if self.code is not None:
            _nvrtc_compile(self.code, self.options)
            code = self.code
            STATE.module_loads.append(("code", "nvrtc"))
        else:
            code = _load_fatbin(self.path)  # type: ignore[arg-type]
        if name != "b64_batch":
            raise AttributeError(f"no kernel {name!r} in the module")
        return RawKernel(_build_module(code, STATE.workdir), STATE.launches)


# --------------------------------------------------------------------------- state, streams, devices


class _State:
    """Per-install state: devices, the current allocator and stream, logs of what was called."""

    def __init__(self, capacity: int, workdir: Path, devices: int, cc: int, driver: int, nvrtc: Any, headers: bool) -> None:
        self.device = FakeDevice(capacity)
        self.workdir = workdir
        self.n_devices = devices
        self.cc = cc
        self.driver = driver
        self.nvrtc = nvrtc
        self.headers = headers
        self.allocator: Any = None
        self.local = threading.local()
        self.launches: list = []
        self.copies: list = []
        self.calls: list[tuple[str, int]] = []
        self.module_loads: list[tuple[str, str]] = []
        self.pinned_held = 0
        self.pinned_peak = 0
        self.fault: int | None = None
        self.armed_fault: int | None = None
        self.lock = threading.Lock()

    @property
    def current_device(self) -> int:
        return getattr(self.local, "device", 0)

    @property
    def stream(self) -> Any:
        return getattr(self.local, "stream", None)

    def arm_fault(self, status: int = 700) -> None:
        """Make the next kernel launch fault with CUDA ``status`` (reported at the next synchronisation)."""
        self.armed_fault = status

    def devices_touched(self) -> set[int]:
        return {d for _, d in self.calls}


STATE: _State


def _touch(op: str, device: int | None = None) -> None:
    """Record a CUDA call on ``device`` (default: the calling thread's current device); after a
    sticky fault every call fails with it."""
    dev = STATE.current_device if device is None else device
    with STATE.lock:
        STATE.calls.append((op, dev))
    if STATE.fault is not None:
        raise CUDARuntimeError(STATE.fault)


def _alloc(nbytes: int) -> MemoryPointer:
    if STATE.allocator is not None:
        return STATE.allocator(nbytes)
    # The default pool of real CuPy: unlimited, but the device has a capacity.
    return MemoryPool(STATE.device).malloc(nbytes)


def empty(shape: Any, dtype: Any = np.float64) -> ndarray:
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    mem = _alloc(n * dt.itemsize)
    return ndarray(mem, mem.buf[: n * dt.itemsize].view(dt))


def zeros(shape: Any, dtype: Any = np.float64) -> ndarray:
    a = empty(shape, dtype)
    _touch("memset")
    a._a.fill(0)
    return a


def asarray(a: Any) -> ndarray:
    if isinstance(a, ndarray):
        return a
    h = np.ascontiguousarray(a).reshape(-1)
    d = empty(h.size, h.dtype)
    _touch("memcpy")
    d._a[...] = h
    return d


def asnumpy(a: ndarray) -> np.ndarray:
    return a.get()


def empty_like(a: ndarray) -> ndarray:
    return empty(a.size, a.dtype)


class Event:
    """Records the host clock (every fake operation has completed when it returns)."""

    def __init__(self) -> None:
        self.t = None

    def record(self, stream: Any = None) -> None:
        _touch("eventRecord")
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        _touch("eventSynchronize")


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two recorded events."""
    return (end.t - start.t) * 1e3


class Stream:
    """A stream on the device current at its creation; ``synchronize`` runs there."""

    def __init__(self, non_blocking: bool = False, *, null: bool = False) -> None:
        self.device_id = STATE.current_device
        if not null:
            _touch("streamCreate")
        self.ptr = 0 if null else id(self)
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1
        _touch("streamSynchronize", self.device_id)

    def __enter__(self) -> "Stream":
        self._prev = STATE.stream
        STATE.local.stream = self
        return self

    def __exit__(self, *exc: Any) -> None:
        STATE.local.stream = self._prev


class Device:
    """``cupy.cuda.Device``: a context manager making device ``id`` current on this thread."""

    def __init__(self, device: int | None = None) -> None:
        self.id = STATE.current_device if device is None else int(device)
        if not 0 <= self.id < STATE.n_devices:
            raise CUDARuntimeError(101)  # cudaErrorInvalidDevice
        self.attributes = {"MultiProcessorCount": 132}
        self.compute_capability = str(STATE.cc)
        self._prev: list[int] = []

    def synchronize(self) -> None:
        _touch("deviceSynchronize", self.id)

    def __enter__(self) -> "Device":
        self._prev.append(STATE.current_device)
        STATE.local.device = self.id
        return self

    def __exit__(self, *exc: Any) -> None:
        STATE.local.device = self._prev.pop()


@contextlib.contextmanager
def using_allocator(allocator: Any = None):
    prev = STATE.allocator
    STATE.allocator = allocator
    try:
        yield
    finally:
        STATE.allocator = prev


def get_current_stream() -> Stream:
    s = STATE.stream
    if s is None:
        s = STATE.local.null = getattr(STATE.local, "null", None) or Stream(null=True)
    return s


def _memcpy_async(dst: int, src: int, size: int, kind: int, stream: int) -> None:
    if kind not in (1, 2):
        raise ValueError(f"fake memcpyAsync: unexpected kind {kind}")
    _touch("memcpyAsync")
    STATE.copies.append(("H2D" if kind == 1 else "D2H", int(size)))
    ctypes.memmove(dst, src, size)


def _device_properties(i: int) -> dict[str, Any]:
    if not 0 <= i < STATE.n_devices:
        raise CUDARuntimeError(101)
    return {"name": b"fake device (host emulation)", "major": STATE.cc // 10, "minor": STATE.cc % 10}


def _mem_get_info() -> tuple[int, int]:
    """``cudaMemGetInfo`` on the current device: (free, total) bytes of the fake device."""
    _touch("memGetInfo")
    dev = STATE.device
    with dev.lock:
        return dev.capacity - dev.allocated, dev.capacity


def _device_count() -> int:
    if STATE.n_devices == 0:
        raise CUDARuntimeError(100)  # cudaErrorNoDevice
    return STATE.n_devices


def install(
    monkeypatch: Any,
    workdir: Path,
    capacity: int = 1 << 34,
    *,
    devices: int = 1,
    cc: int = 90,
    driver: int = 13000,
    nvrtc: Any = "lookup",
    headers: bool = True,
    libcuda: bool = True,
) -> _State:
    """Put the fake ``cupy``/``cupyx`` in ``sys.modules`` for one test (``monkeypatch`` undoes it).

    ``devices``: how many devices the driver sees; ``cc``: their compute capability (e.g. 90);
    ``driver``: the CUDA version the driver supports (``cudaDriverGetVersion`` form); ``nvrtc``:
    ``"lookup"`` (find NVRTC as CuPy does, with ``cuda.pathfinder``), or ``True``/``False``;
    ``headers``: whether CUDA headers are on NVRTC's include path (when ``nvrtc`` is a bool);
    ``libcuda``: whether ``gpupipe.gpu.gpu_status`` finds the driver library (``libcuda.so.1``).
    """
    global STATE
    STATE = _State(capacity, workdir, devices, cc, driver, nvrtc, headers)
    default_pinned = PinnedMemoryPool()
    runtime = types.SimpleNamespace(
        memcpyAsync=_memcpy_async,
        memcpyHostToDevice=1,
        memcpyDeviceToHost=2,
        getDeviceCount=_device_count,
        getDevice=lambda: STATE.current_device,
        getDeviceProperties=_device_properties,
        runtimeGetVersion=lambda: 13000,
        driverGetVersion=lambda: STATE.driver,
        deviceSynchronize=lambda: _touch("deviceSynchronize"),
        memGetInfo=_mem_get_info,
        CUDARuntimeError=CUDARuntimeError,
    )
    driver_ns = types.SimpleNamespace(
        occupancyMaxActiveBlocksPerMultiprocessor=lambda func, threads, smem: 2048 // threads,
        CUDADriverError=CUDADriverError,
    )
    cuda = types.SimpleNamespace(
        Device=Device,
        Stream=Stream,
        Event=Event,
        get_elapsed_time=get_elapsed_time,
        MemoryPool=lambda: MemoryPool(STATE.device),
        PinnedMemoryPool=PinnedMemoryPool,
        using_allocator=using_allocator,
        get_current_stream=get_current_stream,
        runtime=runtime,
        driver=driver_ns,
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        compiler=types.SimpleNamespace(CompileException=CompileException),
    )
    cp = types.ModuleType("cupy")
    cp.__version__ = "fake (tests/fake_cupy.py)"
    cp.cuda = cuda
    cp.uint8, cp.int64, cp.int32 = np.uint8, np.int64, np.int32
    cp.ndarray = ndarray
    cp.empty, cp.zeros, cp.asarray, cp.asnumpy, cp.empty_like = empty, zeros, asarray, asnumpy, empty_like
    cp.RawModule = RawModule
    default_pool = MemoryPool(STATE.device)  # CuPy's default device pool (its figures need no CUDA call)
    cp.get_default_memory_pool = lambda: default_pool
    cpx = types.ModuleType("cupyx")

    def empty_pinned(shape: Any, dtype: Any = np.float64) -> np.ndarray:  # through CuPy's default pinned pool
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.ndarray(shape, dtype, buffer=default_pinned.malloc(n))

    cpx.empty_pinned = empty_pinned
    # Modules that bound the real CuPy at import are imported afresh under the fake; monkeypatch
    # puts the originals back afterwards. Every GPU module is imported first (with the real CuPy),
    # so that none imported during the test outlives it bound to the fake.
    import gpupipe.gpu

    no_driver = "libcuda.so.1 cannot be loaded (fake: no driver installed)"
    monkeypatch.setattr(gpupipe.gpu, "_driver_library_error", lambda: None if libcuda else no_driver)
    for info in pkgutil.iter_modules(gpupipe.gpu.__path__):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"gpupipe.gpu.{info.name}")
    for name in [m for m in sys.modules if m.startswith("gpupipe.gpu.")]:
        parent, _, child = name.rpartition(".")
        monkeypatch.setattr(sys.modules[parent], child, sys.modules[name], raising=False)  # restored afterwards
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupyx", cpx)
    # gpupipe's own NVRTC check agrees with the fake's NVRTC (the module is the fresh import the
    # GPU modules will use during the test).
    kb = importlib.import_module("gpupipe.gpu.kernel_build")
    real_status = kb.nvrtc_status

    def nvrtc_status() -> Any:
        if STATE.nvrtc == "lookup":
            return real_status()
        try:
            root = _nvrtc_root()
        except DynamicLibNotFoundError as e:
            return kb.NvrtcStatus(False, error=f"{type(e).__name__}: {e}")
        return kb.NvrtcStatus(True, found_via="site-packages", path=str(root / "lib" / "libnvrtc.so.13"))

    monkeypatch.setattr(kb, "nvrtc_status", nvrtc_status)
    return STATE
