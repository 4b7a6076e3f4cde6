"""Building ``data:<mime>;base64,<payload>`` strings on the host in as few passes as possible.

At 4K one URI is 20–35 MB, and a naive ``"data:...," + base64.b64encode(b).decode()``
writes it three times (encode, decode to ``str``, concatenate) into fresh memory whose page
faults alone cost more than the encoding. :func:`build_uri` instead allocates the final
``str`` once and has pybase64's SIMD encoder (libbase64) write the payload straight into it,
with the GIL released, so the URI is written exactly once. Where that fast path is not
available (no pybase64, or not CPython) it falls back to ``pybase64.b64encode_as_string``
(two passes), then to the standard library.
"""

from __future__ import annotations

import base64
import ctypes
import logging
import platform
import sys
from collections.abc import Callable

__all__ = ["URI_METHOD", "assemble_uri", "b64_len", "base64_impl", "build_uri", "uri_prefix"]

log = logging.getLogger("gpupipe.uri")


def b64_len(n: int) -> int:
    """Length of the padded base64 encoding of ``n`` bytes."""
    return 4 * ((n + 2) // 3)


def uri_prefix(mime: str) -> bytes:
    """The ``data:<mime>;base64,`` prefix as ASCII bytes."""
    return f"data:{mime};base64,".encode("ascii")


def _stdlib_build(mime: str, data: bytes | memoryview) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _make_pybase64_build() -> Callable[[str, bytes | memoryview], str] | None:
    try:
        import pybase64
    except ImportError:
        return None
    as_string = getattr(pybase64, "b64encode_as_string", None)
    if as_string is None:
        return lambda mime, data: f"data:{mime};base64," + pybase64.b64encode(data).decode("ascii")
    return lambda mime, data: f"data:{mime};base64," + as_string(data)


def _make_single_pass_build() -> Callable[[str, bytes | memoryview], str] | None:
    """The one-pass builder: ``PyUnicode_New`` + libbase64's ``base64_encode`` into the str's buffer."""
    if platform.python_implementation() != "CPython":
        return None
    try:
        import pybase64._pybase64 as ext

        lib = ctypes.CDLL(ext.__file__)  # CDLL: the GIL is released during the call
        encode = lib.base64_encode
    except (ImportError, OSError, AttributeError):
        return None
    encode.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int]
    encode.restype = None
    new_str = ctypes.pythonapi.PyUnicode_New
    new_str.argtypes = [ctypes.c_ssize_t, ctypes.c_uint32]
    new_str.restype = ctypes.py_object
    # A compact ASCII str keeps its characters right after its header; sizeof('') is header + NUL.
    data_offset = sys.getsizeof("") - 1
    memmove = ctypes.memmove
    from_buffer = ctypes.c_char.from_buffer
    addressof = ctypes.addressof

    def src_address(data: bytes | memoryview) -> tuple[int, object]:
        if isinstance(data, bytes):
            return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0, data
        mv = memoryview(data).cast("B")
        if mv.readonly:
            import numpy as np  # read-only buffers: numpy exposes their address without a copy

            arr = np.frombuffer(mv, dtype=np.uint8)
            return arr.ctypes.data, arr
        c = from_buffer(mv)
        return addressof(c), c

    def build(mime: str, data: bytes | memoryview) -> str:
        prefix = uri_prefix(mime)
        n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        total = len(prefix) + b64_len(n)
        out = new_str(total, 127)
        dst = id(out) + data_offset
        memmove(dst, prefix, len(prefix))
        if n:
            addr, keep = src_address(data)
            outlen = ctypes.c_size_t(0)
            encode(addr, n, dst + len(prefix), ctypes.byref(outlen), 0)
            del keep
            if outlen.value != total - len(prefix):  # never expected; refuse a half-written str
                raise RuntimeError(f"base64_encode wrote {outlen.value} bytes, expected {total - len(prefix)}")
        return out

    # Self-test once: the fast path must agree with the standard library byte for byte.
    for sample in (b"", b"a", b"ab", b"abc", bytes(range(256)) * 3 + b"xy"):
        if build("image/png", sample) != _stdlib_build("image/png", sample):
            log.warning("single-pass URI builder failed its self-test; using pybase64 instead")
            return None
    return build


def _choose() -> tuple[str, Callable[[str, bytes | memoryview], str]]:
    fast = _make_single_pass_build()
    if fast is not None:
        return "single-pass (pybase64/libbase64 into a preallocated str)", fast
    pyb = _make_pybase64_build()
    if pyb is not None:
        return "pybase64 b64encode_as_string + concatenation", pyb
    return "standard library base64 + decode + concatenation", _stdlib_build


URI_METHOD, _build = _choose()


def build_uri(mime: str, data: bytes | memoryview) -> str:
    """``data:<mime>;base64,<base64 of data>`` as a ``str``, written in a single pass where possible."""
    return _build(mime, data)


def assemble_uri(buffer: memoryview, start: int, length: int, *, check_ascii: bool = True) -> str:
    """A ``str`` from ``length`` ASCII bytes at ``start`` of ``buffer`` (URI bytes made elsewhere, e.g. on a GPU).

    One copy: the bytes go straight into the new string's storage. ``check_ascii`` first reads
    the span once more and raises ``ValueError`` if a byte is over 127 (a ``str`` made this way
    must hold ASCII only). Producers that can only write ASCII pass ``False`` to keep to a single
    pass: the base64 kernel and its twin write the prefix and alphabet characters only (checked
    for every byte value by ``tests/test_kernel_host.py`` and ``tests/test_b64.py``).
    """
    return _assemble(buffer, start, length, check_ascii)


def _make_assemble() -> Callable[[memoryview, int, int, bool], str]:
    if platform.python_implementation() == "CPython":
        new_str = ctypes.pythonapi.PyUnicode_New
        data_offset = sys.getsizeof("") - 1
        import numpy as np

        def fast(buffer: memoryview, start: int, length: int, check_ascii: bool) -> str:
            arr = np.frombuffer(buffer, dtype=np.uint8, count=length, offset=start)
            if check_ascii and length and int(arr.max()) > 127:
                raise ValueError("URI bytes are not ASCII")
            out = new_str(length, 127)
            ctypes.memmove(id(out) + data_offset, arr.ctypes.data, length)
            return out

        return fast
    return lambda buffer, start, length, check_ascii: bytes(buffer[start : start + length]).decode("ascii")


_assemble = _make_assemble()


def base64_impl() -> str:
    """Which base64 implementation the CPU path uses, for reports."""
    try:
        import pybase64

        return f"pybase64 {pybase64.get_version()}"  # get_version() starts with the version
    except ImportError:
        return "standard library base64"
