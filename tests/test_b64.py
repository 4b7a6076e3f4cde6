"""The NumPy twin of the GPU base64 kernel and the batch layout they share (runs everywhere)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gpupipe.base64_batch import (
    ALIGN,
    CHUNK_IN,
    batch_layout,
    encode_batch,
    encode_packed,
    map_indices,
    pack_batch,
    uris_from_buffer,
)
from gpupipe.uri import b64_len

MIMES = ["image/png", "image/jpeg"]


def expected(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def test_alphabet_mapping_matches_standard_alphabet():
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert bytes(map_indices(np.arange(64, dtype=np.uint8))) == alphabet


@pytest.mark.parametrize("n", list(range(0, 14)) + [CHUNK_IN - 1, CHUNK_IN, CHUNK_IN + 1, 3 * CHUNK_IN + 2, 1000, 4099])
def test_every_small_length_single_frame(n):
    data = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
    buf, layout = encode_batch([data], ["image/jpeg"])
    (uri,) = uris_from_buffer(buf, layout)
    assert uri == expected("image/jpeg", data)


@given(st.binary(max_size=3000))
def test_twin_is_byte_identical_to_b64encode(data):
    buf, layout = encode_batch([data], ["image/png"])
    start, length = layout.span(0)
    assert bytes(buf[start : start + length]) == expected("image/png", data).encode()


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=2))
def test_lengths_at_every_remainder(k, rem):
    data = bytes((i * 37 + 11) % 256 for i in range(3 * k + rem))
    buf, layout = encode_batch([data], ["image/png"])
    assert uris_from_buffer(buf, layout) == [expected("image/png", data)]


@given(st.lists(st.tuples(st.binary(max_size=700), st.sampled_from(MIMES)), min_size=1, max_size=9))
def test_batches_with_mixed_mimes_and_lengths(items):
    datas = [d for d, _ in items]
    mimes = [m for _, m in items]
    buf, layout = encode_batch(datas, mimes)
    assert uris_from_buffer(buf, layout) == [expected(m, d) for d, m in items]


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=12), st.lists(st.sampled_from(MIMES), min_size=12, max_size=12))
def test_layout_offsets(lengths, mimes):
    mimes = mimes[: len(lengths)]
    lay = batch_layout(mimes, lengths)
    n = len(lengths)
    assert lay.n == n
    prefix_lens = [len(f"data:{m};base64,") for m in mimes]
    # Inputs: aligned, in order, non-overlapping; prefixes after the frames.
    end = 0
    for i in range(n):
        assert lay.in_offsets[i] % ALIGN == 0
        assert lay.in_offsets[i] >= end
        end = lay.in_offsets[i] + lengths[i]
    pos = end
    for i in range(n):
        assert lay.prefix_offsets[i] >= pos and lay.prefix_lengths[i] == prefix_lens[i]
        pos = lay.prefix_offsets[i] + prefix_lens[i]
    assert lay.in_size >= pos
    # Outputs: each URI one contiguous span; payload aligned right after its prefix; no overlap.
    end = 0
    for i in range(n):
        start, length = lay.span(i)
        assert start >= end
        assert length == prefix_lens[i] + b64_len(lengths[i])
        assert lay.payload_starts[i] == start + prefix_lens[i]
        assert lay.payload_starts[i] % ALIGN == 0
        end = start + length
    assert lay.out_size >= end and lay.out_size % ALIGN == 0
    # Chunks: the full 12-byte chunks, len // 12 per frame, running total (the tail goes with the prefix).
    assert list(np.diff(lay.chunk_offsets)) == [x // CHUNK_IN for x in lengths]
    table = lay.kernel_table()
    assert table.dtype == np.int64 and table.size == 5 * n + n + 1
    if n:
        rows = table[: 5 * n].reshape(n, 5)
        assert list(rows[:, 1]) == lengths
        assert list(rows[:, 2]) == list(lay.payload_starts)


def test_packed_input_and_reused_buffers():
    datas = [b"abc", b"", b"\x00\xff" * 50]
    mimes = ["image/png", "image/jpeg", "image/png"]
    lay = batch_layout(mimes, [len(d) for d in datas])
    big_in = np.full(lay.in_size + 100, 0xAA, np.uint8)  # reused (dirty) buffers: padding must not matter
    big_out = np.full(lay.out_size + 100, 0xAA, np.uint8)
    packed = pack_batch(datas, lay, big_in)
    for i, d in enumerate(datas):
        o = lay.in_offsets[i]
        assert bytes(packed[o : o + len(d)]) == d
        po = lay.prefix_offsets[i]
        assert bytes(packed[po : po + lay.prefix_lengths[i]]) == f"data:{mimes[i]};base64,".encode()
    encode_packed(packed, lay, big_out)
    assert uris_from_buffer(big_out, lay) == [expected(m, d) for d, m in zip(datas, mimes)]


def test_empty_batch_and_errors():
    buf, lay = encode_batch([], [])
    assert lay.n == 0 and uris_from_buffer(buf, lay) == []
    with pytest.raises(ValueError):
        batch_layout(["image/png"], [1, 2])
    lay = batch_layout(["image/png"], [10])
    with pytest.raises(ValueError):
        pack_batch([b"0123456789"], lay, np.empty(3, np.uint8))
    with pytest.raises(ValueError):
        encode_packed(np.empty(lay.in_size, np.uint8), lay, np.empty(2, np.uint8))
