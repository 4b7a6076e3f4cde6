"""Host URI assembly: the single-pass builder agrees with the standard library for every input."""

from __future__ import annotations

import base64

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gpupipe import uri as uri_mod
from gpupipe.uri import assemble_uri, b64_len, build_uri


def reference(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


@given(st.binary(max_size=2000), st.sampled_from(["image/png", "image/jpeg"]))
def test_build_uri_matches_stdlib(data, mime):
    expected = reference(mime, data)
    assert build_uri(mime, data) == expected
    assert build_uri(mime, memoryview(data)) == expected  # read-only buffer
    assert build_uri(mime, memoryview(bytearray(data))) == expected  # writable buffer
    assert b64_len(len(data)) == len(expected) - len(f"data:{mime};base64,")


def test_every_length_near_multiples_of_three():
    rng = np.random.default_rng(1)
    for n in list(range(0, 40)) + [3 * 1000 + k for k in range(4)]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        s = build_uri("image/png", data)
        assert s == reference("image/png", data)
        assert s.isascii() and hash(s) == hash(str(s))  # a well-formed str


def test_large_uri_and_fresh_objects():
    data = np.random.default_rng(2).integers(0, 256, 5_000_001, dtype=np.uint8).tobytes()
    a = build_uri("image/jpeg", data)
    b = build_uri("image/jpeg", data)
    assert a == b == reference("image/jpeg", data) and a is not b


def test_fallback_builders_agree():
    data = bytes(range(256)) * 7 + b"ab"
    assert uri_mod._stdlib_build("image/png", data) == reference("image/png", data)
    pyb = uri_mod._make_pybase64_build()
    assert pyb is not None and pyb("image/png", data) == reference("image/png", data)


@given(st.binary(max_size=300), st.integers(0, 20), st.integers(0, 20))
def test_assemble_uri_copies_the_span(payload, before, after):
    text = reference("image/png", payload).encode()
    buf = memoryview(b"#" * before + text + b"%" * after)
    assert assemble_uri(buf, before, len(text)) == text.decode()
    assert assemble_uri(buf, before, len(text), check_ascii=False) == text.decode()


def test_assemble_uri_refuses_non_ascii():
    import pytest

    with pytest.raises(ValueError):
        assemble_uri(memoryview(b"data:\xff"), 0, 6)
