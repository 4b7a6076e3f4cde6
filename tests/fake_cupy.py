"""A stand-in for the small part of CuPy that ``gpupipe/gpu`` uses, with host memory as "device"
memory and the base64 kernel's own CUDA source run on the host (``tests/cuda_host``).

It lets CI run the GPU modules' *device* branch (``DeviceLayer(config, device_id=0)``,
``Base64Kernel``, the CuPy memory pool with its limit, pinned buffers, the host/device copies)
without a GPU, so that glue mistakes (buffer offsets and sizes, the kernel's argument list and
types, the pool limit and out-of-memory handling) fail in CI. What it cannot show: anything about
asynchrony (every call here completes before it returns, so a missing synchronisation is
invisible), real CuPy/CUDA semantics beyond what is mimicked, and speed.

Fidelity choices: allocations are 256-byte aligned and poisoned (``cudaMalloc`` memory is not
zeroed); the pool rounds blocks to 512 bytes as CuPy's does and raises an ``OutOfMemoryError``
past its limit or past the fake device's capacity; ``RawModule`` compiles the code it is given;
a kernel call checks that its arguments have exactly the kernel's C parameter types.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import pkgutil
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


class OutOfMemoryError(MemoryError):
    """Mimics ``cupy.cuda.memory.OutOfMemoryError`` (gpupipe recognises it by its name)."""

    def __init__(self, size: int, total: int, limit: int) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, limit set to: {limit:,} bytes).")


class FakeDevice:
    """The one fake device: its capacity and what is allocated on it."""

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
        self._a.fill(value)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[key] = value._a if isinstance(value, ndarray) else value

    def get(self) -> np.ndarray:
        return self._a.copy()


def _build_module(code: str, workdir: Path) -> ctypes.CDLL:
    """Compile ``code`` (the kernel source RawModule was given) with the host shim into a shared library."""
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


class RawKernel:
    """``b64_batch`` from a fake :class:`RawModule`; a call runs the grid on the host."""

    # The kernel's C parameters: four pointers, an int, a long long.
    SIGNATURE = (ndarray, ndarray, ndarray, ndarray, np.int32, np.int64)

    def __init__(self, dll: ctypes.CDLL, log: list) -> None:
        self._dll = dll
        self.kernel = types.SimpleNamespace(ptr=ctypes.cast(dll.emu_launch, ctypes.c_void_p).value)
        self.launches = log

    def __call__(self, grid: tuple, block: tuple, args: tuple, *, shared_mem: int = 0, stream: Any = None) -> None:
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
        self._dll.emu_launch(g, b, *ptrs, int(args[4]), int(args[5]))


class RawModule:
    def __init__(self, code: str, options: tuple = (), **_: Any) -> None:
        self._dll = _build_module(code, STATE.workdir)

    def get_function(self, name: str) -> RawKernel:
        if name != "b64_batch":
            raise AttributeError(f"no kernel {name!r} in the module")
        return RawKernel(self._dll, STATE.launches)


class _State:
    """Per-install state: the device, the current allocator and stream, a launch log."""

    def __init__(self, capacity: int, workdir: Path) -> None:
        self.device = FakeDevice(capacity)
        self.workdir = workdir
        self.allocator: Any = None
        self.stream: Any = None
        self.launches: list = []
        self.copies: list = []


STATE: _State


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
    a._a.fill(0)
    return a


def asarray(a: Any) -> ndarray:
    if isinstance(a, ndarray):
        return a
    h = np.ascontiguousarray(a).reshape(-1)
    d = empty(h.size, h.dtype)
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
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two recorded events."""
    return (end.t - start.t) * 1e3


class Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = id(self)
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1

    def __enter__(self) -> "Stream":
        self._prev = STATE.stream
        STATE.stream = self
        return self

    def __exit__(self, *exc: Any) -> None:
        STATE.stream = self._prev


class Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"fake CuPy: no device {self.id}")
        self.attributes = {"MultiProcessorCount": 132}

    def synchronize(self) -> None:
        pass

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


@contextlib.contextmanager
def using_allocator(allocator: Any = None):
    prev = STATE.allocator
    STATE.allocator = allocator
    try:
        yield
    finally:
        STATE.allocator = prev


def get_current_stream() -> Stream:
    return STATE.stream or _NULL_STREAM


def _memcpy_async(dst: int, src: int, size: int, kind: int, stream: int) -> None:
    if kind not in (1, 2):
        raise ValueError(f"fake memcpyAsync: unexpected kind {kind}")
    STATE.copies.append(("H2D" if kind == 1 else "D2H", int(size)))
    ctypes.memmove(dst, src, size)


def install(monkeypatch: Any, workdir: Path, capacity: int = 1 << 34) -> _State:
    """Put the fake ``cupy``/``cupyx`` in ``sys.modules`` for one test (``monkeypatch`` undoes it)."""
    global STATE, _NULL_STREAM
    STATE = _State(capacity, workdir)
    _NULL_STREAM = Stream()
    runtime = types.SimpleNamespace(
        memcpyAsync=_memcpy_async,
        memcpyHostToDevice=1,
        memcpyDeviceToHost=2,
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"fake device (host emulation)"},
        runtimeGetVersion=lambda: 13000,
        driverGetVersion=lambda: 13000,
        deviceSynchronize=lambda: None,
    )
    driver = types.SimpleNamespace(occupancyMaxActiveBlocksPerMultiprocessor=lambda func, threads, smem: 2048 // threads)
    cuda = types.SimpleNamespace(
        Device=Device,
        Stream=Stream,
        Event=Event,
        get_elapsed_time=get_elapsed_time,
        MemoryPool=lambda: MemoryPool(STATE.device),
        using_allocator=using_allocator,
        get_current_stream=get_current_stream,
        runtime=runtime,
        driver=driver,
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
    )
    cp = types.ModuleType("cupy")
    cp.__version__ = "fake (tests/fake_cupy.py)"
    cp.cuda = cuda
    cp.uint8, cp.int64, cp.int32 = np.uint8, np.int64, np.int32
    cp.ndarray = ndarray
    cp.empty, cp.zeros, cp.asarray, cp.asnumpy, cp.empty_like = empty, zeros, asarray, asnumpy, empty_like
    cp.RawModule = RawModule
    cpx = types.ModuleType("cupyx")
    cpx.empty_pinned = lambda shape, dtype=np.float64: np.empty(shape, dtype)
    # Modules that bound the real CuPy at import are imported afresh under the fake; monkeypatch
    # puts the originals back afterwards. Every GPU module is imported first (with the real CuPy),
    # so that none imported during the test outlives it bound to the fake.
    import gpupipe.gpu

    for info in pkgutil.iter_modules(gpupipe.gpu.__path__):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"gpupipe.gpu.{info.name}")
    for name in [m for m in sys.modules if m.startswith("gpupipe.gpu.")]:
        parent, _, child = name.rpartition(".")
        monkeypatch.setattr(sys.modules[parent], child, sys.modules[name], raising=False)  # restored afterwards
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupyx", cpx)
    return STATE


_NULL_STREAM: Stream
