"""Batched base64 into ``data:`` URIs: the shared batch layout and the NumPy twin of the GPU kernel.

The GPU path (:mod:`gpupipe.gpu.base64_kernel`) encodes a whole batch of frames in one CUDA
launch. This module holds what both sides share and the NumPy reference implementation of the
very same algorithm, which runs everywhere (CI has no GPU) and against which the CUDA kernel is
tested byte for byte.

Batch layout (:func:`batch_layout`)
-----------------------------------
*Input buffer* (``in_size`` bytes): every frame's bytes at ``in_offsets[i]`` (16-byte aligned, so
the kernel can load 48 bytes as three 16-byte vectors), followed by every frame's
``data:<mime>;base64,`` prefix at ``prefix_offsets[i]``. One host-to-device copy moves it all.

*Output buffer* (``out_size`` bytes): frame ``i``'s URI is the contiguous span
``out[out_starts[i] : out_starts[i] + out_lengths[i]]``: its prefix, then the padded standard
base64 of its bytes. The payload starts at ``payload_starts[i]``, which is 16-byte aligned so that
each 48-byte input chunk becomes one aligned 64-byte store (four 16-byte vectors). Bytes between
spans are alignment padding and are never part of a URI.

*Chunks*: frame ``i`` is cut into ``ceil(len / 48)`` chunks of 48 input bytes (the last one
shorter); ``chunk_offsets`` is their running total, which the kernel's threads binary-search to
find their frame.

Algorithm (identical in both implementations)
---------------------------------------------
Each 3-byte group ``b0 b1 b2`` gives four 6-bit indices ``b0>>2``, ``(b0&3)<<4 | b1>>4``,
``(b1&15)<<2 | b2>>6``, ``b2&63``. An index ``v`` becomes its character arithmetically, without a
table: ``v + 'A'``, plus 6 if ``v >= 26``, plus 0xB5 (-75 mod 256) if ``v >= 52``, plus 0xF1 (-15)
if ``v == 62``, plus 0xF4 (-12) if ``v == 63``, all modulo 256. The kernel does this on four
packed indices at once with the byte-SIMD intrinsics ``__vcmpgeu4``/``__vcmpeq4``/``__vadd4``;
NumPy does it on ``uint8`` arrays. A final group of one or two bytes is zero-extended and its
last two or one characters replaced with ``=``.
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
    "encode_batch",
    "encode_packed",
    "map_indices",
    "pack_batch",
    "uris_from_buffer",
]

ALIGN = 16
"""Alignment, in bytes, of every frame's input and of every URI's payload."""
CHUNK_IN = 48
"""Input bytes per kernel work item (16 groups of 3; three 16-byte loads)."""
CHUNK_OUT = 64
"""Output bytes per full work item (four 16-byte stores)."""

_BLOCK_GROUPS = 1 << 18  # NumPy twin works in blocks of this many 3-byte groups (bounded temporaries)


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
        """Number of 48-byte work items over all frames."""
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
    chunks = (lens + CHUNK_IN - 1) // CHUNK_IN
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


def map_indices(idx: np.ndarray) -> np.ndarray:
    """6-bit indices (``uint8``) to base64 characters, by the kernel's branch-free arithmetic."""
    idx = idx.astype(np.uint8, copy=False)
    c = idx + np.uint8(0x41)
    c += (idx >= 26).astype(np.uint8) * np.uint8(0x06)
    c += (idx >= 52).astype(np.uint8) * np.uint8(0xB5)
    c += (idx == 62).astype(np.uint8) * np.uint8(0xF1)
    c += (idx == 63).astype(np.uint8) * np.uint8(0xF4)
    return c


def _groups_to_chars(g: np.ndarray) -> np.ndarray:
    """``(m, 3)`` uint8 groups → ``(m, 4)`` uint8 characters."""
    b0 = g[:, 0]
    b1 = g[:, 1]
    b2 = g[:, 2]
    idx = np.empty((g.shape[0], 4), np.uint8)
    idx[:, 0] = b0 >> 2
    idx[:, 1] = ((b0 & 3) << 4) | (b1 >> 4)
    idx[:, 2] = ((b1 & 15) << 2) | (b2 >> 6)
    idx[:, 3] = b2 & 63
    return map_indices(idx)


def encode_packed(inbuf: np.ndarray, layout: BatchLayout, out: np.ndarray | None = None) -> np.ndarray:
    """The NumPy twin of the CUDA kernel: encode a packed input buffer into the batch's output buffer.

    ``inbuf`` is what :func:`pack_batch` made. ``out`` (``uint8``, at least ``layout.out_size``)
    is written and returned; a new zero-filled array is made if it is ``None``. Only URI spans
    are written; alignment padding keeps its previous contents.
    """
    inbuf = np.asarray(inbuf, dtype=np.uint8).reshape(-1)
    if inbuf.size < layout.in_size:
        raise ValueError(f"input buffer too small: {inbuf.size} < {layout.in_size} bytes")
    if out is None:
        out = np.zeros(layout.out_size, np.uint8)
    elif out.dtype != np.uint8 or out.size < layout.out_size:
        raise ValueError(f"output buffer too small: {out.size} < {layout.out_size} bytes")
    flat = out.reshape(-1)
    for i in range(layout.n):
        # The prefix (the kernel's extra work items, one per frame).
        po, pl = int(layout.prefix_offsets[i]), int(layout.prefix_lengths[i])
        os_ = int(layout.out_starts[i])
        flat[os_ : os_ + pl] = inbuf[po : po + pl]
        n = int(layout.lengths[i])
        src = inbuf[int(layout.in_offsets[i]) : int(layout.in_offsets[i]) + n]
        dst = int(layout.payload_starts[i])
        full = n // 3
        for g0 in range(0, full, _BLOCK_GROUPS):
            g1 = min(full, g0 + _BLOCK_GROUPS)
            chars = _groups_to_chars(src[3 * g0 : 3 * g1].reshape(-1, 3))
            flat[dst + 4 * g0 : dst + 4 * g1] = chars.reshape(-1)
        rem = n - 3 * full
        if rem:
            g = np.zeros((1, 3), np.uint8)
            g[0, :rem] = src[3 * full :]
            chars = _groups_to_chars(g).reshape(-1)
            chars[rem + 1 :] = ord("=")
            t = dst + 4 * full
            flat[t : t + 4] = chars
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
