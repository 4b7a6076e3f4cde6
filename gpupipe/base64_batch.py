"""Batched base64 into ``data:`` URIs: the shared batch layout and the NumPy twin of the GPU kernel.

The GPU path (:mod:`gpupipe.gpu.base64_kernel`) encodes a whole batch of frames in one CUDA
launch. This module holds what both sides share and the NumPy reference implementation of the
very same algorithm, which runs everywhere (CI has no GPU) and against which the CUDA kernel is
tested byte for byte.

Batch layout (:func:`batch_layout`)
-----------------------------------
*Input buffer* (``in_size`` bytes): every frame's bytes at ``in_offsets[i]`` (16-byte aligned, so
every 12-byte chunk starts 4-byte aligned and the kernel reads it as three 4-byte words), followed
by every frame's ``data:<mime>;base64,`` prefix at ``prefix_offsets[i]``. One host-to-device copy
moves it all.

*Output buffer* (``out_size`` bytes): frame ``i``'s URI is the contiguous span
``out[out_starts[i] : out_starts[i] + out_lengths[i]]``: its prefix, then the padded standard
base64 of its bytes. The payload starts at ``payload_starts[i]``, which is 16-byte aligned so that
each 12-byte input chunk becomes one aligned 16-byte store. Bytes between spans are alignment
padding and are never part of a URI.

*Chunks* (the kernel's work items): frame ``i``'s first ``len // 12`` groups of 12 bytes are its
full chunks, 12 bytes in and 16 characters out each; ``chunk_offsets`` is their running total,
which the kernel's threads search to find their frame. The frame's last ``len % 12`` bytes (its
*tail*, with the ``=`` padding) and its prefix are done by one thread per frame.

Algorithm (identical in both implementations)
---------------------------------------------
A chunk is three little-endian 32-bit words ``w0 w1 w2`` (bytes ``B0..B11``). For each 3-byte group
``b0 b1 b2`` a byte permutation (CUDA's ``__byte_perm``, :func:`byte_perm` here) makes
``v = b0 << 24 | b1 << 16 | b2 << 8``; :func:`group_indices` takes the four 6-bit indices out of
``v`` into the four bytes of one word (``b0 >> 2`` in the lowest); :func:`map4` turns the four
indices into their characters at once, without a table: ``idx + 'A'``, plus 6 if ``idx >= 26``,
plus 3 if ``idx == 63``, minus 75 if ``idx >= 52``, minus 15 if ``idx >= 62``, each flag bit 7 of
``idx + (128 - k)``, with 32-bit adds whose per-byte sums never carry into the next byte. A
chunk's four words are its 16 characters in order. A tail's groups are built the same way from
its bytes (missing bytes zero) and their last one or two characters replaced with ``=``.
The kernel runs this on 32-bit registers; the twin on ``uint32`` arrays, chunk by chunk in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .uri import assemble_uri, b64_len, uri_prefix

__all__ = [
    "ALIGN",
    "CHUNK_IN",
    "CHUNK_OUT",
    "BatchLayout",
    "batch_layout",
    "byte_perm",
    "encode_batch",
    "encode_chunks",
    "encode_packed",
    "encode_tail",
    "group_indices",
    "map4",
    "map_indices",
    "pack_batch",
    "uris_from_buffer",
]

ALIGN = 16
"""Alignment, in bytes, of every frame's input and of every URI's payload."""
CHUNK_IN = 12
"""Input bytes per kernel work item (four groups of 3; three 4-byte loads)."""
CHUNK_OUT = 16
"""Output bytes per full work item (one 16-byte store)."""

_BLOCK_CHUNKS = 1 << 16  # the NumPy twin works in blocks of this many chunks (bounded temporaries)


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class BatchLayout:
    """Where each frame's bytes, prefix and URI live in a batch's input and output buffers.

    All arrays are ``int64``. ``lengths``, ``in_offsets``, ``prefix_offsets``, ``prefix_lengths``,
    ``out_starts``, ``out_lengths`` and ``payload_starts`` have one entry per frame;
    ``chunk_offsets`` has ``n + 1`` (the last is ``total_chunks``).
    """

    lengths: np.ndarray
    in_offsets: np.ndarray
    prefix_offsets: np.ndarray
    prefix_lengths: np.ndarray
    in_size: int
    out_starts: np.ndarray
    out_lengths: np.ndarray
    payload_starts: np.ndarray
    out_size: int
    chunk_offsets: np.ndarray
    prefixes: tuple[bytes, ...]

    @property
    def n(self) -> int:
        """Number of frames in the batch."""
        return int(self.lengths.shape[0])

    @property
    def total_chunks(self) -> int:
        """Number of full 12-byte chunks (the kernel's work items) over all frames."""
        return int(self.chunk_offsets[-1])

    def span(self, i: int) -> tuple[int, int]:
        """``(start, length)`` of frame ``i``'s URI in the output buffer."""
        return int(self.out_starts[i]), int(self.out_lengths[i])

    def kernel_table(self) -> np.ndarray:
        """The per-frame table the CUDA kernel reads: ``int64`` rows of
        ``(in_offset, length, payload_start, prefix_offset, prefix_length)``, then the
        ``n + 1`` chunk offsets, flattened into one array (one host-to-device copy)."""
        table = np.stack(
            [self.in_offsets, self.lengths, self.payload_starts, self.prefix_offsets, self.prefix_lengths], axis=1
        ).astype(np.int64)
        return np.concatenate([table.ravel(), self.chunk_offsets.astype(np.int64)])


def batch_layout(mimes: Sequence[str], lengths: Sequence[int]) -> BatchLayout:
    """The :class:`BatchLayout` of a batch whose frame ``i`` has MIME type ``mimes[i]`` and ``lengths[i]`` bytes."""
    if len(mimes) != len(lengths):
        raise ValueError(f"{len(mimes)} MIME types for {len(lengths)} frames")
    n = len(lengths)
    prefixes = tuple(uri_prefix(m) for m in mimes)
    lens = np.asarray(lengths, dtype=np.int64).reshape(n)
    if n and int(lens.min()) < 0:
        raise ValueError("frame lengths must not be negative")
    in_off = np.zeros(n, np.int64)
    pos = 0
    for i in range(n):
        in_off[i] = pos
        pos = _align(pos + int(lens[i]))
    pre_off = np.zeros(n, np.int64)
    pre_len = np.array([len(p) for p in prefixes], dtype=np.int64)
    for i in range(n):
        pre_off[i] = pos
        pos += int(pre_len[i])
    in_size = pos
    out_start = np.zeros(n, np.int64)
    payload = np.zeros(n, np.int64)
    out_len = np.zeros(n, np.int64)
    pos = 0
    for i in range(n):
        p = _align(pos + int(pre_len[i]))  # payload aligned; the prefix sits right before it
        payload[i] = p
        out_start[i] = p - pre_len[i]
        blen = b64_len(int(lens[i]))
        out_len[i] = pre_len[i] + blen
        pos = p + blen
    out_size = _align(pos)
    chunks = lens // CHUNK_IN  # full chunks only: the tail (len % 12 bytes) goes with the prefix
    chunk_off = np.zeros(n + 1, np.int64)
    np.cumsum(chunks, out=chunk_off[1:])
    return BatchLayout(lens, in_off, pre_off, pre_len, in_size, out_start, out_len, payload, out_size, chunk_off, prefixes)


def pack_batch(datas: Sequence[bytes | memoryview], layout: BatchLayout, out: np.ndarray | None = None) -> np.ndarray:
    """The batch's input buffer: each frame's bytes and each prefix copied to their layout offsets.

    ``out`` (``uint8``, at least ``layout.in_size`` bytes, e.g. a view of pinned host memory) is
    filled and returned (as a view of its first ``in_size`` bytes); otherwise a new array is made.
    Alignment padding is left as it is: no URI byte depends on it.
    """
    if len(datas) != layout.n:
        raise ValueError(f"{len(datas)} frames for a layout of {layout.n}")
    if out is None:
        buf = np.empty(layout.in_size, np.uint8)
    else:
        if out.dtype != np.uint8 or out.size < layout.in_size:
            raise ValueError(f"input buffer too small: {out.size} < {layout.in_size} bytes")
        buf = out.reshape(-1)[: layout.in_size]
    for i, d in enumerate(datas):
        n = int(layout.lengths[i])
        o = int(layout.in_offsets[i])
        if n:
            buf[o : o + n] = np.frombuffer(d, np.uint8, count=n)
        po = int(layout.prefix_offsets[i])
        buf[po : po + int(layout.prefix_lengths[i])] = np.frombuffer(layout.prefixes[i], np.uint8)
    return buf


_U32 = np.dtype("<u4")


def byte_perm(x: np.ndarray, y: np.ndarray, selector: int) -> np.ndarray:
    """CUDA's ``__byte_perm`` on ``uint32`` arrays: byte ``i`` of the result is byte
    ``(selector >> 4i) & 7`` of the 8-byte value ``y:x`` (bytes 0-3 from ``x``, 4-7 from ``y``)."""
    v = (y.astype(np.uint64) << np.uint64(32)) | x.astype(np.uint64)
    r = np.zeros(v.shape, np.uint64)
    for i in range(4):
        sel = (selector >> (4 * i)) & 7
        r |= ((v >> np.uint64(8 * sel)) & np.uint64(0xFF)) << np.uint64(8 * i)
    return r.astype(np.uint32)


def group_indices(v: np.ndarray) -> np.ndarray:
    """``v = b0 << 24 | b1 << 16 | b2 << 8`` (``uint32``; bits 0-7 ignored) → the group's four 6-bit
    indices, one per byte, the first in the lowest byte (the kernel's ``b64_indices``)."""
    v = v.astype(np.uint32, copy=False)
    return (
        (v >> np.uint32(26))
        | ((v >> np.uint32(12)) & np.uint32(0x3F00))
        | ((v << np.uint32(2)) & np.uint32(0x3F0000))
        | ((v << np.uint32(16)) & np.uint32(0x3F000000))
    )


def _flag_times(flags: np.ndarray, k: int) -> np.ndarray:
    """``flags`` (bit 7 of each byte) times ``k`` per byte: the high word of ``flags * (k << 25)``, as the kernel's ``__umulhi``."""
    return ((flags.astype(np.uint64) * np.uint64(k << 25)) >> np.uint64(32)).astype(np.uint32)


def map4(x: np.ndarray) -> np.ndarray:
    """Four packed 6-bit indices per ``uint32`` (each byte 0..63) → their four base64 characters,
    by the kernel's branch-free byte-parallel arithmetic (``b64_map4``)."""
    x = x.astype(np.uint32, copy=False)
    high = np.uint32(0x80808080)
    base = x + np.uint32(0x41414141)
    ge26 = (x + np.uint32(0x66666666)) & high
    ge52 = (x + np.uint32(0x4C4C4C4C)) & high
    ge62 = (x + np.uint32(0x42424242)) & high
    eq63 = base & high
    return base + _flag_times(ge26, 6) + _flag_times(eq63, 3) - _flag_times(ge52, 75) - _flag_times(ge62, 15)


def map_indices(idx: np.ndarray) -> np.ndarray:
    """6-bit indices (``uint8``, any length) to base64 characters, through :func:`map4`."""
    idx = np.asarray(idx, dtype=np.uint8).reshape(-1)
    padded = np.zeros((idx.size + 3) // 4 * 4, np.uint8)
    padded[: idx.size] = idx
    return map4(padded.view(_U32)).astype(_U32).view(np.uint8)[: idx.size]


def encode_chunks(words: np.ndarray) -> np.ndarray:
    """``(m, 3)`` little-endian ``uint32`` words (``m`` chunks of 12 bytes) → ``(m, 4)`` ``uint32``
    words whose little-endian bytes are the 16 characters of each chunk (the kernel's ``b64_chunk``)."""
    w0, w1, w2 = words[:, 0], words[:, 1], words[:, 2]
    out = np.empty((words.shape[0], 4), _U32)
    out[:, 0] = map4(group_indices(byte_perm(w0, w0, 0x0120)))  # B0 B1 B2
    out[:, 1] = map4(group_indices(byte_perm(w0, w1, 0x3450)))  # B3 B4 B5
    out[:, 2] = map4(group_indices(byte_perm(w1, w2, 0x2340)))  # B6 B7 B8
    out[:, 3] = map4(group_indices(byte_perm(w2, w2, 0x1230)))  # B9 B10 B11
    return out


def encode_tail(tail: bytes | np.ndarray) -> bytes:
    """A frame's last ``len % 12`` bytes → their padded characters, group by group as the kernel's
    per-frame thread does it (missing bytes zero; the last one or two characters ``=``)."""
    t = bytes(np.asarray(tail, dtype=np.uint8)) if not isinstance(tail, bytes) else tail
    out = bytearray()
    for j in range(0, len(t), 3):
        g = t[j : j + 3]
        b1 = g[1] if len(g) > 1 else 0
        b2 = g[2] if len(g) > 2 else 0
        v = np.array([(g[0] << 24) | (b1 << 16) | (b2 << 8)], np.uint32)
        chars = bytearray(map4(group_indices(v)).astype(_U32).tobytes())
        if len(g) < 3:
            chars[3] = ord("=")
        if len(g) < 2:
            chars[2] = ord("=")
        out += chars
    return bytes(out)


def encode_packed(inbuf: np.ndarray, layout: BatchLayout, out: np.ndarray | None = None) -> np.ndarray:
    """The NumPy twin of the CUDA kernel: encode a packed input buffer into the batch's output buffer.

    The same work split as the kernel: every frame's full 12-byte chunks through
    :func:`encode_chunks` (its word arithmetic, in bulk), then per frame its prefix and its tail
    (:func:`encode_tail`). ``inbuf`` is what :func:`pack_batch` made. ``out`` (``uint8``, at least
    ``layout.out_size``) is written and returned; a new zero-filled array is made if it is
    ``None``. Only URI spans are written; alignment padding keeps its previous contents.
    """
    inbuf = np.asarray(inbuf, dtype=np.uint8).reshape(-1)
    if inbuf.size < layout.in_size:
        raise ValueError(f"input buffer too small: {inbuf.size} < {layout.in_size} bytes")
    if out is None:
        out = np.zeros(layout.out_size, np.uint8)
    elif out.dtype != np.uint8 or out.size < layout.out_size:
        raise ValueError(f"output buffer too small: {out.size} < {layout.out_size} bytes")
    flat = out.reshape(-1)
    for i in range(layout.n):  # the kernel's main loop: full chunks
        src = int(layout.in_offsets[i])
        dst = int(layout.payload_starts[i])
        full = int(layout.chunk_offsets[i + 1] - layout.chunk_offsets[i])
        for k0 in range(0, full, _BLOCK_CHUNKS):
            k1 = min(full, k0 + _BLOCK_CHUNKS)
            words = inbuf[src + CHUNK_IN * k0 : src + CHUNK_IN * k1].view(_U32).reshape(-1, 3)
            flat[dst + CHUNK_OUT * k0 : dst + CHUNK_OUT * k1] = encode_chunks(words).reshape(-1).view(np.uint8)
    for i in range(layout.n):  # one thread per frame: the prefix, then the tail
        po, pl = int(layout.prefix_offsets[i]), int(layout.prefix_lengths[i])
        os_ = int(layout.out_starts[i])
        flat[os_ : os_ + pl] = inbuf[po : po + pl]
        n = int(layout.lengths[i])
        full = n // CHUNK_IN
        tail = encode_tail(inbuf[int(layout.in_offsets[i]) + CHUNK_IN * full : int(layout.in_offsets[i]) + n])
        t = int(layout.payload_starts[i]) + CHUNK_OUT * full
        flat[t : t + len(tail)] = np.frombuffer(tail, np.uint8)
    return out


def encode_batch(datas: Sequence[bytes | memoryview], mimes: Sequence[str]) -> tuple[np.ndarray, BatchLayout]:
    """Lay out, pack and encode a batch on the host; ``(output buffer, layout)``."""
    layout = batch_layout(mimes, [memoryview(d).nbytes for d in datas])
    return encode_packed(pack_batch(datas, layout), layout), layout


def uris_from_buffer(buf: np.ndarray, layout: BatchLayout, *, check_ascii: bool = True) -> list[str]:
    """Every frame's URI ``str`` from a batch's output buffer (one copy each, via :func:`gpupipe.uri.assemble_uri`;
    ``check_ascii=False`` for buffers written by the kernel or :func:`encode_packed`, which write ASCII only)."""
    mv = memoryview(np.ascontiguousarray(buf).reshape(-1))  # type: ignore[arg-type]  # NumPy arrays export the buffer protocol
    return [assemble_uri(mv, *layout.span(i), check_ascii=check_ascii) for i in range(layout.n)]
