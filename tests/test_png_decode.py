"""PNG decoding outside Pillow: the stream parser (gpupipe/png_stream.py), the NumPy twin of the
device un-filter kernel (gpupipe/png_unfilter.py) and libspng on the CPU path (png_decoder: spng),
each checked against Pillow's decode on generated PNGs and on the project's corpus."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from corpus import build_corpus, write_png
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpupipe.cpu.decode import decode_frame, spng_available
from gpupipe.errors import FrameError
from gpupipe.frames import read_frame
from gpupipe.plan import Job
from gpupipe.png_stream import device_decodable, png_stream
from gpupipe.png_unfilter import BadFilterType, unfilter
from gpupipe.samples import make_frame


def _png(pixels: np.ndarray, level: int = 6, optimize: bool = False) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=level, optimize=optimize)
    return buf.getvalue()


def _twin_decode(data: bytes) -> np.ndarray:
    s = png_stream(data)
    h = s.header
    filtered = np.frombuffer(zlib.decompress(s.deflate, -15), np.uint8)
    return unfilter(filtered, h.height, h.row_bytes, h.bpp).reshape(h.height, h.width, h.channels)


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("level", [1, 6, 9])
def test_twin_matches_pillow_on_pillow_pngs(alpha: bool, level: int) -> None:
    # Pillow picks filters per row (adaptive) at these levels: all five types occur
    pixels = make_frame(96, 40, 2, alpha=alpha)
    data = _png(pixels, level)
    assert np.array_equal(_twin_decode(data), np.asarray(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize("band", [1, 3, 7, 1024])
def test_twin_same_result_for_any_band(band: int) -> None:
    # every filter type, in every row order, and bands that split the image anywhere
    rng = np.random.default_rng(band)
    h, w, bpp = 13, 9, 4
    rows = [bytes([int(rng.integers(0, 5))]) + rng.integers(0, 256, w * bpp, dtype=np.uint8).tobytes() for _ in range(h)]
    filtered = np.frombuffer(b"".join(rows), np.uint8)
    ref = unfilter(filtered, h, w * bpp, bpp, band=h)
    assert np.array_equal(unfilter(filtered, h, w * bpp, bpp, band=band), ref)
    # and the reference is PNG's: wrap it in a PNG and let Pillow decode it
    ihdr = (w).to_bytes(4, "big") + (h).to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])

    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(filtered.tobytes())) + chunk(b"IEND", b"")
    assert np.array_equal(ref.reshape(h, w, 4), np.asarray(Image.open(io.BytesIO(png))))


@settings(max_examples=20, deadline=None)
@given(
    w=st.integers(1, 24),
    h=st.integers(1, 20),
    alpha=st.booleans(),
    seed=st.integers(0, 1000),
    level=st.sampled_from([0, 1, 6, 9]),
)
def test_twin_matches_pillow_any_size(w: int, h: int, alpha: bool, seed: int, level: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 4 if alpha else 3), dtype=np.uint8)
    pixels[h // 2 :] //= 16  # smooth parts too, so that Pillow picks filters other than None
    data = _png(pixels, level)
    assert np.array_equal(_twin_decode(data), pixels)


def test_twin_refuses_bad_filter_type_and_wrong_size() -> None:
    with pytest.raises(BadFilterType):
        unfilter(np.frombuffer(b"\x05abc", np.uint8), 1, 3, 3)
    with pytest.raises(ValueError, match="expected"):
        unfilter(np.zeros(5, np.uint8), 1, 3, 3)


def test_stream_concatenates_idat_chunks_and_strips_zlib() -> None:
    pixels = make_frame(64, 48, 1, alpha=True)
    one = write_png(pixels)
    s1 = png_stream(one)
    # split the IDAT into three chunks
    start = one.index(b"IDAT") - 4
    n = int.from_bytes(one[start : start + 4], "big")
    body = one[start + 8 : start + 8 + n]

    def chunk(tag: bytes, b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + tag + b + zlib.crc32(tag + b).to_bytes(4, "big")

    parts = [body[: n // 3], body[n // 3 : 2 * n // 3], body[2 * n // 3 :]]
    split = one[:start] + b"".join(chunk(b"IDAT", p) for p in parts) + one[start + 12 + n :]
    s3 = png_stream(split)
    assert s3.deflate == s1.deflate == body[2:-4]
    assert s3.header.width == 64 and s3.header.height == 48 and s3.header.channels == 4
    assert np.array_equal(_twin_decode(split), pixels)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GIF89a" + bytes(40), "signature"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00", "truncated"),
    ],
)
def test_stream_refuses_what_it_cannot_read(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        png_stream(data)


def test_device_decodable() -> None:
    rgb, rgba = png_stream(_png(make_frame(8, 8, 0))), png_stream(_png(make_frame(8, 8, 0, alpha=True)))
    assert device_decodable(rgb.header) and device_decodable(rgba.header)
    assert not device_decodable(rgb.header, has_trns=True)
    inter = png_stream(write_png(make_frame(8, 8, 0), interlace=True))
    assert not device_decodable(inter.header)
    assert not device_decodable(png_stream(write_png(make_frame(8, 8, 0).astype(np.uint16) * 257)).header)
    assert not device_decodable(png_stream(_png(make_frame(8, 8, 0)[..., 0])).header)


# --------------------------------------------------------------------------- the corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list:
    return [it for it in build_corpus(tmp_path_factory.mktemp("corpus")) if it.path.suffix == ".png" and it.path.is_file()]


def _job(path: Path) -> Job:
    frame = read_frame(path)
    return Job(0, frame, False, "png", (frame.width, frame.height), 90, 1)


def _outcome(path: Path, decoder: str) -> object:
    try:
        job = _job(path)
    except FrameError as e:
        return type(e)
    try:
        img = decode_frame(job, decoder)  # type: ignore[arg-type]
    except FrameError as e:
        return type(e)
    return img.mode, np.asarray(img).tobytes()


@pytest.mark.skipif(not spng_available(), reason="imagecodecs (libspng) is not installed: png_decoder spng is Pillow")
def test_spng_decoder_agrees_with_pillow_on_the_corpus(corpus: list) -> None:
    assert len(corpus) > 20
    for item in corpus:
        assert _outcome(item.path, "spng") == _outcome(item.path, "pillow"), item.name


def test_twin_matches_pillow_on_the_corpus_where_device_decodable(corpus: list) -> None:
    checked = 0
    for item in corpus:
        data = item.path.read_bytes()
        try:
            s = png_stream(data)
        except ValueError:
            continue
        if not device_decodable(s.header, s.has_trns):
            continue
        try:
            ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA" if s.header.channels == 4 else "RGB"))
        except Exception:
            ref = None
        try:
            got = _twin_decode(data)
        except (ValueError, zlib.error):
            got = None
        if ref is not None and got is not None:
            assert np.array_equal(got, ref), item.name
            checked += 1
    assert checked >= 3


def test_png_header_agrees_with_png_stream_on_the_corpus(corpus: list) -> None:
    from gpupipe.png_stream import png_header

    for item in corpus:
        data = item.path.read_bytes()
        try:
            s = png_stream(data)
        except ValueError:
            continue
        found = png_header(data)
        assert found is not None, item.name
        assert found == (s.header, s.has_trns), item.name


def _paeth_png(pixels: np.ndarray, chunk: int = 7) -> bytes:
    """An 8-bit PNG whose rows all use the Paeth filter (as ffmpeg writes them), its IDAT split into ``chunk``-byte chunks."""
    h, w, ch = pixels.shape
    p = pixels.astype(np.int32).reshape(h, w * ch)
    rows = []
    for r in range(h):
        out = bytearray([4])
        for i in range(w * ch):
            a = p[r, i - ch] if i >= ch else 0
            b = p[r - 1, i] if r else 0
            c = p[r - 1, i - ch] if r and i >= ch else 0
            est = a + b - c
            pa, pb, pc = abs(est - a), abs(est - b), abs(est - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out.append((p[r, i] - pred) & 0xFF)
        rows.append(bytes(out))
    z = zlib.compress(b"".join(rows))

    def chunk_(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 6 if ch == 4 else 2, 0, 0, 0])
    idats = b"".join(chunk_(b"IDAT", z[k : k + chunk]) for k in range(0, len(z), chunk))
    return b"\x89PNG\r\n\x1a\n" + chunk_(b"IHDR", ihdr) + idats + chunk_(b"IEND", b"")


def test_first_filter_types_reads_across_small_idat_chunks() -> None:
    from gpupipe.png_stream import first_filter_types, png_header

    pixels = make_frame(24, 10, 0)
    data = _paeth_png(pixels)
    found = png_header(data)
    assert found is not None
    assert first_filter_types(data, found[0]) == b"\x04\x04\x04\x04"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert first_filter_types(write_png(pixels), found[0]) == b"\x00\x00\x00\x00"  # filter None on every row


@pytest.mark.skipif(not spng_available(), reason="imagecodecs (libspng) is not installed: png_decoder spng is Pillow")
def test_spng_decodes_where_it_pays_and_pillow_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpupipe.cpu import decode as dec

    calls: list[int] = []
    real = dec._SPNG

    def counting(data: bytes) -> np.ndarray:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(dec, "_SPNG", counting)
    rgb = make_frame(24, 10, 0)
    cases = {
        "paeth_rgb.png": (_paeth_png(rgb), True),
        "rgba.png": (_png(make_frame(24, 10, 0, alpha=True), 1), True),
        "plain_rgb.png": (write_png(rgb), False),  # filter None: Pillow is as fast, without the RGB copy
        "interlaced.png": (write_png(make_frame(24, 10, 0, alpha=True), interlace=True), False),
    }
    for name, (data, by_spng) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        calls.clear()
        img = decode_frame(_job(p), "spng")
        assert bool(calls) == by_spng, name
        assert _outcome(p, "pillow") == (img.mode, np.asarray(img).tobytes()), name


def test_info_names_the_png_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpupipe.config import Config
    from gpupipe.cpu import CpuBackend
    from gpupipe.cpu import decode as dec
    from gpupipe.info import environment_report

    assert CpuBackend(1, "pillow").info()["png_decoder"] == "Pillow"
    assert CpuBackend(1, "nvcomp").info()["png_decoder"] == "Pillow"  # a device decoder: the CPU path uses Pillow
    monkeypatch.setattr(dec, "_SPNG", None)
    assert environment_report(Config())["png_decoder"] == "Pillow (png_decoder spng, but imagecodecs is not installed)"
    monkeypatch.setattr(dec, "_SPNG", lambda data: None)
    assert CpuBackend(1, "spng").info()["png_decoder"].startswith("libspng")
