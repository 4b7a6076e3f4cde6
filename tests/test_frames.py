"""Reading and probing frames (gpupipe.frames) and decoding them (gpupipe.cpu) from any input:
special files, size caps, files changing while read, cheap labels for in-memory data, malformed
EXIF, PNG eXIf orientation and tRNS transparency; on the CPU path and on the GPU backend's data
path run with CPU stand-ins (DALI's CPU backend)."""

from __future__ import annotations

import base64
import io
import os
import socket
import stat
import struct
import tempfile
import time
import types
import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image, ImageOps

import corpus as C
from gpupipe import FrameCache, FrameEncoder, FramePipeline
from gpupipe.config import Config
from gpupipe.cpu import CpuBackend, run_job, run_job_guarded
from gpupipe.errors import FrameDecodeError, FrameNotFound, FrameNotRegularFile, FrameTooLarge
from gpupipe.frames import (
    DataSource,
    FileIdentity,
    PathSource,
    SourceKey,
    default_max_source_bytes,
    parse_header,
    read_frame,
    source_label,
)
from gpupipe.frames import headers, read as frames_read
from gpupipe.plan import OutputSpec, plan_job

MiB = 1024 * 1024


def _uri_image(uri: str) -> Image.Image:
    """The URI's image as stored (no EXIF orientation applied), fully loaded."""
    im = Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2], validate=True)))
    im.load()
    return im


@pytest.fixture(scope="module")
def enc():
    with FrameEncoder(Config(), backend="cpu") as e:
        yield e


@pytest.fixture
def short_dir():
    """A directory with a short path (a Unix socket's path must fit in ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="gps", dir="/tmp" if os.path.isdir("/tmp") else None) as d:
        yield d


# --------------------------------------------------------------------------- 1. only regular files


@pytest.mark.timeout(5)  # a blocking open of the FIFO would hang here forever
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "frame.png"
    os.mkfifo(fifo)
    with pytest.raises(FrameNotRegularFile, match="is a FIFO, not a regular file") as ei:
        read_frame(fifo)
    assert ei.value.frame == str(fifo)
    assert isinstance(ei.value, FrameNotFound)  # callers catching FrameNotFound still see it


@pytest.mark.timeout(5)
def test_fifo_swapped_in_after_the_stat_is_opened_non_blocking(tmp_path, monkeypatch, png_bytes):
    """The path's stat says "regular file", then a FIFO is what gets opened: the open must not
    block, and the descriptor's fstat refuses it."""
    fifo = tmp_path / "frame.png"
    os.mkfifo(fifo)
    regular = tmp_path / "regular.png"
    regular.write_bytes(png_bytes)
    real_stat = os.stat

    def stat_lies(path, *a, **k):
        return real_stat(regular) if os.fspath(path) == str(fifo) else real_stat(path, *a, **k)

    monkeypatch.setattr(os, "stat", stat_lies)
    with pytest.raises(FrameNotRegularFile, match="is a FIFO"):
        read_frame(fifo)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_symlinks_to_devices_are_refused_without_reading(tmp_path, monkeypatch, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    link = tmp_path / "frame.jpg"
    link.symlink_to(device)
    reads = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(FrameNotRegularFile, match="is a character device, not a regular file") as ei:
        read_frame(link, max_bytes=1 << 20)
    assert ei.value.frame == str(link)
    assert reads == []


def test_directory_and_socket_are_refused(tmp_path, short_dir):
    with pytest.raises(FrameNotRegularFile, match="is a directory"):
        read_frame(tmp_path)
    path = os.path.join(short_dir, "s.png")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with pytest.raises(FrameNotRegularFile, match="is a socket, not a regular file") as ei:
            read_frame(path)
        assert ei.value.frame == path
    finally:
        srv.close()


def test_unreadable_paths_are_frame_not_found(tmp_path):
    with pytest.raises(FrameNotFound, match="no such file"):
        read_frame(tmp_path / "missing.png")
    with pytest.raises(FrameNotFound, match="cannot read"):
        read_frame(str(tmp_path / "nul\x00byte.png"))
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(FrameNotFound, match="cannot read"):
        read_frame(loop)


@pytest.mark.timeout(10)
def test_special_files_fail_alone_in_a_batch(enc, tmp_path, short_dir, png_bytes, jpeg_bytes):
    good_png, good_jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    good_png.write_bytes(png_bytes)
    good_jpg.write_bytes(jpeg_bytes)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    sock_path = os.path.join(short_dir, "s.png")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    try:
        sources_ = [good_png, fifo, good_jpg, zero, good_png, sock_path, tmp_path, png_bytes]
        for kw in ({}, {"output": "jpeg", "size": (64, 64)}, {"output": "passthrough"}):
            results = enc.encode_batch(sources_, **kw)
            assert [type(r) for r in results] == [str, FrameNotRegularFile, str, FrameNotRegularFile, str, FrameNotRegularFile, FrameNotRegularFile, str]
            assert results[0] == results[4] == enc.encode(good_png, **kw)
            assert "FIFO" in str(results[1]) and "character device" in str(results[3]) and "socket" in str(results[5])
    finally:
        srv.close()


# --------------------------------------------------------------------------- 2. a size cap


def test_file_over_max_bytes_fails_before_any_read(tmp_path, monkeypatch, png_bytes):
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    asked, got = [], []
    real_read = os.read

    def read(fd, n):
        asked.append(n)
        b = real_read(fd, n)
        got.append(len(b))
        return b

    monkeypatch.setattr(os, "read", read)
    with pytest.raises(FrameTooLarge, match=f"{len(png_bytes)} bytes exceeds max_source_bytes = {len(png_bytes) - 1}") as ei:
        read_frame(p, max_bytes=len(png_bytes) - 1)
    assert ei.value.frame == str(p) and asked == []
    frame = read_frame(p, max_bytes=len(png_bytes))
    assert frame.data == png_bytes
    assert sum(got) == len(png_bytes) and max(asked) <= len(png_bytes) + 1


def test_a_growing_file_is_never_read_past_max_bytes(tmp_path, monkeypatch):
    """fstat says 100 bytes, the file holds 1 MiB: at most max_bytes + 1 bytes are read per attempt."""
    p = tmp_path / "grows.png"
    p.write_bytes(C.write_png(np.zeros((1, 1), np.uint8)) + os.urandom(MiB))
    real_fstat, real_read = os.fstat, os.read

    def small_fstat(fd):
        st = real_fstat(fd)
        return types.SimpleNamespace(
            st_mode=st.st_mode, st_dev=st.st_dev, st_ino=st.st_ino, st_size=100, st_mtime_ns=st.st_mtime_ns, st_ctime_ns=st.st_ctime_ns
        )

    got = []
    monkeypatch.setattr(os, "fstat", small_fstat)
    monkeypatch.setattr(os, "read", lambda fd, n: got.append(len(b := real_read(fd, n))) or b)
    with pytest.raises(FrameDecodeError, match="changed while being read"):
        read_frame(p, max_bytes=150)
    assert len(got) >= 2 and sum(got) <= 2 * 101  # two attempts, each stopping one byte past the stat'ed size
    got.clear()
    with pytest.raises(FrameDecodeError, match="changed while being read"):
        read_frame(p, max_bytes=100)
    assert sum(got) <= 2 * (100 + 1)  # never more than max_bytes + 1 per attempt
    got.clear()
    with pytest.raises(FrameTooLarge, match="100 bytes exceeds max_source_bytes = 60"):
        read_frame(p, max_bytes=60)
    assert got == []


def test_in_memory_data_over_max_bytes(png_bytes):
    with pytest.raises(FrameTooLarge, match="exceeds max_source_bytes") as ei:
        read_frame(png_bytes, max_bytes=100)
    assert ei.value.frame.startswith("bytes:")
    for view in (bytearray(png_bytes), memoryview(png_bytes)):
        with pytest.raises(FrameTooLarge):
            read_frame(view, max_bytes=len(png_bytes) - 1)
        assert read_frame(view, max_bytes=len(png_bytes)).data == png_bytes


def _largest_png(pixels: int) -> bytes:
    """The largest PNG of ``pixels`` pixels the rule allows for: 1 pixel wide, 16-bit RGBA noise,
    stored (uncompressed) deflate, 8 KiB IDAT chunks."""
    rows = np.random.default_rng(0).integers(0, 65536, (pixels, 1, 4), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\x00" + r.tobytes() for r in rows)
    z = zlib.compress(raw, 0)
    idats = b"".join(C.png_chunk(b"IDAT", z[i : i + 8192]) for i in range(0, len(z), 8192))
    ihdr = struct.pack(">IIBBBBB", 1, pixels, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + C.png_chunk(b"IHDR", ihdr) + idats + C.png_chunk(b"IEND", b"")


@pytest.mark.parametrize("pixels", [1, 4096, 100_000])
def test_default_max_source_bytes_holds_the_largest_png(pixels):
    png = _largest_png(pixels)
    frame = read_frame(png, max_pixels=pixels)
    assert (frame.width, frame.height) == (1, pixels)
    cap = default_max_source_bytes(pixels)
    assert len(png) <= cap - 16 * MiB  # even without the room left for metadata
    assert read_frame(png, max_pixels=pixels, max_bytes=cap).data == png
    # A JPEG of as many pixels (noise, quality 100, no chroma subsampling) is smaller.
    side = int(pixels**0.5) or 1
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=100, subsampling=0)
    assert len(buf.getvalue()) < cap


def test_default_max_source_bytes_rule():
    p = 8192 * 8192
    assert default_max_source_bytes(p) == pytest.approx(9 * p * (1 + 5 / 16384) * (1 + 12 / 8192) + 16 * MiB, rel=1e-6)
    assert default_max_source_bytes(10) < default_max_source_bytes(11)
    with pytest.raises(ValueError):
        default_max_source_bytes(0)


# --------------------------------------------------------------------------- 3. files that change while read


def _fake_stat(st, **changes):
    d = {k: getattr(st, k) for k in ("st_mode", "st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")}
    d.update(changes)
    return types.SimpleNamespace(**d)


@pytest.mark.parametrize("field", ["st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev"])
def test_a_file_that_keeps_changing_is_frame_changed_and_its_reason_shows_no_stat(tmp_path, monkeypatch, png_bytes, field):
    from gpupipe.errors import FrameChanged

    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    st0 = os.stat(p)
    real_fstat = os.fstat
    calls = []

    def fstat(fd):
        calls.append(fd)
        st = real_fstat(fd)
        return _fake_stat(st, **{field: getattr(st, field) + 1}) if len(calls) % 2 == 0 else st

    monkeypatch.setattr(os, "fstat", fstat)
    with pytest.raises(FrameChanged) as ei:
        read_frame(p)
    assert isinstance(ei.value, FrameDecodeError)  # callers that catch FrameDecodeError still do
    for n in (st0.st_ino, st0.st_dev, st0.st_mtime_ns, st0.st_ctime_ns):
        assert str(n) not in ei.value.reason
    assert "stat" not in ei.value.reason


def test_a_frame_whose_header_is_not_the_one_it_was_admitted_by_is_frame_changed(png_bytes):
    from dataclasses import replace

    from gpupipe.errors import FrameChanged
    from gpupipe.frames import read_header
    from gpupipe.pipeline import _check_unchanged

    frame = read_frame(png_bytes)
    admitted = read_header(png_bytes)
    assert _check_unchanged(frame, admitted) is frame
    for changed in (replace(admitted, source_bytes=len(png_bytes) - 1), replace(admitted, orientation=6), replace(admitted, width=1)):
        assert isinstance(_check_unchanged(frame, changed), FrameChanged)


_IHDR_1x1 = b"\x89PNG\r\n\x1a\n" + C.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))


@pytest.mark.parametrize("data", [
    b"SECRET-TOKEN-0123456789",
    b"\xff\xd8SECRETS!",
    _IHDR_1x1 + struct.pack(">I", 4) + b"S\x00C!" + b"KEYS" + b"\0\0\0\0",  # a bad CRC in a chunk of a made-up type
    _IHDR_1x1 + struct.pack(">I", 400) + b"S\x00C!" + b"KEYS",  # a chunk running past the end
])
def test_error_reasons_never_echo_file_contents(tmp_path, data):
    p = tmp_path / "x.png"
    p.write_bytes(data)
    for read in (lambda: read_frame(p), lambda: read_frame(data), lambda: parse_header("x", data)):
        with pytest.raises(FrameDecodeError) as ei:
            read()
        for secret in ("SECRET", "KEYS", "S\\x00C", "C!"):
            assert secret not in ei.value.reason, ei.value.reason


def test_a_codec_librarys_message_quoting_the_data_is_not_echoed(enc):
    """Pillow quotes a chunk type it cannot place (``broken PNG file (chunk b'...')``): that is file content."""
    png = C.write_png(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    at = png.index(b"IDAT") - 4
    (n,) = struct.unpack(">I", png[at : at + 4])
    idat = png[at + 8 : at + 8 + n]
    bad = png[:33] + C.png_chunk(b"IDAT", idat[:50]) + struct.pack(">I", 4) + b"S\x00C!KEYS\0\0\0\0" + C.png_chunk(b"IDAT", idat[50:])
    bad += C.png_chunk(b"IEND", b"")
    for output in ("png", "jpeg"):
        (err,) = enc.encode_batch([bad], output=output)
        assert isinstance(err, FrameDecodeError) and "cannot decode PNG" in err.reason, err
        assert "S\\x00C" not in err.reason and "C!" not in err.reason and "KEYS" not in err.reason, err.reason


def test_an_unrecognised_signature_is_named_as_such():
    with pytest.raises(FrameDecodeError, match=r"not a PNG or JPEG file \(unrecognised signature\)"):
        read_frame(b"GIF89a....")


@pytest.mark.parametrize("field", ["st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev"])
def test_a_file_that_keeps_changing_is_refused(tmp_path, monkeypatch, png_bytes, field):
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    real_fstat = os.fstat
    calls = []

    def fstat(fd):  # every second fstat (the one after the read) sees a changed file
        calls.append(fd)
        st = real_fstat(fd)
        return _fake_stat(st, **{field: getattr(st, field) + 1}) if len(calls) % 2 == 0 else st

    monkeypatch.setattr(os, "fstat", fstat)
    with pytest.raises(FrameDecodeError, match="changed while being read") as ei:
        read_frame(p)
    assert ei.value.frame == str(p)
    assert len(calls) == 4  # read once more, then refused


def test_a_file_that_changed_once_is_read_again(tmp_path, monkeypatch, png_bytes):
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    real_fstat = os.fstat
    calls = []

    def fstat(fd):
        calls.append(fd)
        st = real_fstat(fd)
        return _fake_stat(st, st_mtime_ns=st.st_mtime_ns + 1) if len(calls) == 2 else st

    monkeypatch.setattr(os, "fstat", fstat)
    frame = read_frame(p)
    assert frame.data == png_bytes and len(calls) == 4
    assert frame.identity == FileIdentity.of(os.stat(p))


def test_a_short_read_is_a_change(tmp_path, monkeypatch, png_bytes):
    """Fewer bytes than the size said (the file was cut while read) counts as a change."""
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    real_read = os.read
    # The file seems to end after 100 bytes (it was cut while being read).
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 100)) if os.lseek(fd, 0, os.SEEK_CUR) < 100 else b"")
    with pytest.raises(FrameDecodeError, match="changed while being read"):
        read_frame(p)


def test_frame_identity_and_source_key(tmp_path, png_bytes):
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    frame = read_frame(p)
    key = PathSource(p).key()
    st = os.stat(p)
    assert frame.identity == FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    assert key == SourceKey("path", str(p.resolve()), identity=frame.identity)
    assert read_frame(png_bytes).identity is None
    bkey = DataSource(png_bytes).key()
    assert bkey == SourceKey("data", frames_read._digest(png_bytes).hex()) and bkey.identity is None
    assert PathSource(tmp_path / "missing.png").key() == SourceKey("path", str(tmp_path / "missing.png"))


def _same_size_pngs() -> tuple[bytes, bytes]:
    """Two different PNGs of exactly the same length (stored deflate: the length depends only on the size)."""
    rng = np.random.default_rng(5)
    out = []
    for _ in range(2):
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(b, "PNG", compress_level=0)
        out.append(b.getvalue())
    assert len(out[0]) == len(out[1]) and out[0] != out[1]
    return out[0], out[1]


def test_same_size_rewrite_with_restored_mtime_changes_the_key(tmp_path):
    a, b = _same_size_pngs()
    p = tmp_path / "f.png"
    p.write_bytes(a)
    st0 = os.stat(p)
    key0 = PathSource(p).key()
    deadline = time.monotonic() + 5
    while True:  # file timestamps tick coarsely (a few ms): rewrite until the inode change time moves
        with open(p, "r+b") as f:
            f.write(b)
        os.utime(p, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        st1 = os.stat(p)
        if st1.st_ctime_ns != st0.st_ctime_ns or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    assert (st1.st_size, st1.st_mtime_ns, st1.st_ino) == (st0.st_size, st0.st_mtime_ns, st0.st_ino)
    assert st1.st_ctime_ns != st0.st_ctime_ns
    assert PathSource(p).key() != key0
    # A replacement by rename: a new inode, even with size and mtime restored.
    q = tmp_path / "g.png"
    q.write_bytes(a)
    os.utime(q, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    os.replace(q, p)
    assert os.stat(p).st_ino != st0.st_ino and PathSource(p).key() != key0


def test_pipeline_does_not_serve_a_rewritten_frame_stale(enc, tmp_path):
    a, b = _same_size_pngs()
    p = tmp_path / "f.png"
    p.write_bytes(a)
    st0 = os.stat(p)
    pipe = FramePipeline(enc, FrameCache(8, 64 * MiB), output="png", tune_allocator=False)
    first = pipe.get(p)
    q = tmp_path / "g.png"
    q.write_bytes(b)
    os.utime(q, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    os.replace(q, p)  # same path, size and mtime; new contents
    second = pipe.get(p)
    assert np.array_equal(np.asarray(_uri_image(first)), np.asarray(Image.open(io.BytesIO(a))))
    assert np.array_equal(np.asarray(_uri_image(second)), np.asarray(Image.open(io.BytesIO(b))))


# --------------------------------------------------------------------------- 4. labels without hashing


class _RecordingBlake2b:
    """Stands in for ``hashlib.blake2b`` in gpupipe.frames.read, recording how many bytes each hash takes."""

    def __init__(self, sizes: list[int]):
        import hashlib

        self.sizes, self._real = sizes, hashlib

    def blake2b(self, data=b"", **kw):
        rec, real = self, self._real.blake2b(data, **kw)
        rec.sizes.append(memoryview(data).nbytes)

        class H:
            def update(self, d):
                rec.sizes[-1] += memoryview(d).nbytes
                real.update(d)

            def digest(self):
                return real.digest()

            def hexdigest(self):
                return real.hexdigest()

        return H()


def test_encoding_bytes_never_hashes_the_whole_frame(enc, monkeypatch, rgb_frame):
    big = np.tile(rgb_frame, (4, 4, 1))  # 1280x720: a few MB of PNG
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG", compress_level=0)
    data = buf.getvalue()
    assert len(data) > 2 * MiB

    def no_digest(d):
        raise AssertionError("the whole frame was hashed")

    sizes: list[int] = []
    monkeypatch.setattr(frames_read, "_digest", no_digest)
    monkeypatch.setattr(frames_read, "hashlib", _RecordingBlake2b(sizes))
    assert enc.encode(data).startswith("data:image/png;base64,")  # passthrough
    assert enc.encode(data, output="jpeg", size=(64, 64)).startswith("data:image/jpeg;base64,")
    with pytest.raises(FrameDecodeError) as ei:
        enc.encode(data[: len(data) // 2])
    assert max(sizes) <= 3 * 2048 + 8, sizes
    label = ei.value.frame
    assert label.startswith("bytes:") and len(label) < 40
    assert label == source_label(data[: len(data) // 2])  # stable: the same data, the same name


def test_in_memory_labels(png_bytes):
    a = source_label(png_bytes)
    assert a == source_label(bytearray(png_bytes)) == source_label(memoryview(png_bytes))
    assert a.startswith(f"bytes:{len(png_bytes)}B:")
    other = bytearray(png_bytes)
    other[len(other) // 2] ^= 1  # a change in the middle
    assert source_label(bytes(other)) != a
    assert source_label(png_bytes[:-1]) != a
    # With the key digest (the pipeline has it), the label is the digest's prefix, as before.
    d = frames_read._digest(png_bytes)
    data = DataSource(png_bytes)
    assert data.label(data.key()) == f"bytes:{d[:6].hex()}"
    words = memoryview(np.arange(10, dtype=np.uint32))  # a view whose items are not bytes
    assert source_label(words) == source_label(words.tobytes())


# --------------------------------------------------------------------------- 5. EXIF never crashes a frame


@pytest.fixture(scope="module")
def malformed_exif():
    jpg = C._pillow_bytes(Image.fromarray(C.base_pixels()), "JPEG", quality=90)
    return [(name, C.jpeg_with_app1(jpg, payload), o, raises) for name, payload, o, raises in C.malformed_exif_cases()]


def test_pillow_exif_transpose_itself_fails_on_some(malformed_exif):
    """The old decode path (ImageOps.exif_transpose) raised on these: the cases prove the bug."""
    failed = []
    for name, data, _o, raises in malformed_exif:
        im = Image.open(io.BytesIO(data))
        im.load()  # Pillow opens and decodes every one of them
        try:
            ImageOps.exif_transpose(im)
        except Exception as e:  # noqa: BLE001
            failed.append((name, type(e).__name__))
            assert raises, (name, e)
    kinds = {k for _, k in failed}
    assert len(failed) >= 4 and {"TypeError", "AttributeError"} <= kinds, failed


@pytest.mark.parametrize("spec", [OutputSpec("auto"), OutputSpec("jpeg", (32, 32)), OutputSpec("png"), OutputSpec("auto", (48, 48))])
def test_malformed_exif_gives_a_uri_with_the_browser_orientation(malformed_exif, spec):
    jobs = [plan_job(i, read_frame(data), spec) for i, (_n, data, _o, _r) in enumerate(malformed_exif)]
    results = CpuBackend(2).run(jobs)
    for (name, data, o, _r), job, uri in zip(malformed_exif, jobs, results):
        assert job.frame.orientation == o, name
        assert isinstance(uri, str), (name, uri)
        im = _uri_image(uri)
        want = C.fit_size(*((C.H, C.W) if o in (5, 6, 7, 8) else (C.W, C.H)), spec.size)
        if job.passthrough:
            assert o == 1 and im.size == want, name
        else:
            assert im.size == want, name
            assert im.getexif().get(0x0112, 1) == 1, name  # upright, with no orientation left to apply


def test_exif_orientation_values_rotate_like_pillow(rgb_frame):
    """Valid orientations 1-8: the decode is pixel-identical to Pillow's exif_transpose."""
    img = Image.fromarray(rgb_frame)
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        buf = io.BytesIO()
        img.save(buf, "PNG", exif=ex.tobytes())  # lossless, so pixels compare exactly
        data = buf.getvalue()
        frame = read_frame(data)
        assert frame.orientation == o
        out = np.asarray(_uri_image(run_job(plan_job(0, frame, OutputSpec("png")))))
        ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        assert np.array_equal(out, ref), o


@given(st.binary(max_size=200))
def test_tiff_orientation_never_raises(blob):
    for b in (blob, b"II*\x00" + blob, b"MM\x00*" + blob):
        assert 1 <= headers.tiff_orientation(b) <= 8
        assert 1 <= headers.exif_orientation(b"Exif\x00\x00" + b) <= 8


def test_unexpected_exceptions_become_the_frames_error(monkeypatch, png_bytes, jpeg_bytes):
    import gpupipe.cpu.backend as cb

    jobs = [plan_job(i, read_frame(d), OutputSpec("jpeg", (64, 64))) for i, d in enumerate([png_bytes, jpeg_bytes, png_bytes])]
    real = cb.resize_image

    def flaky(img, size):
        if img.size == (320, 180) and flaky.calls == 0:
            flaky.calls += 1
            raise TypeError("bad operand type for abs(): 'str'")
        return real(img, size)

    flaky.calls = 0
    monkeypatch.setattr(cb, "resize_image", flaky)
    out = CpuBackend(1).run(jobs)
    assert isinstance(out[0], FrameDecodeError) and "TypeError" in out[0].reason and out[0].frame == jobs[0].frame.label
    assert isinstance(out[1], str) and isinstance(out[2], str)
    flaky.calls = 0
    with pytest.raises(FrameDecodeError, match="TypeError"):
        run_job(jobs[0])
    monkeypatch.setattr(cb, "encode_image", lambda *a: (_ for _ in ()).throw(struct.error("bad")))
    r = run_job_guarded(jobs[1])
    assert isinstance(r, FrameDecodeError) and "error: bad" in r.reason


# --------------------------------------------------------------------------- 6. PNG eXIf


def _png_exif(png: bytes, orientation: int, before: bytes = b"IDAT", byteorder: str = "MM") -> bytes:
    tiff = C.tiff_ifd(byteorder, [(0x0112, 3, 1, C.exif_value(byteorder, "H", orientation))])
    return C.png_with_chunk(png, b"eXIf", tiff, before=before)


def test_png_exif_before_idat_is_the_orientation(png_bytes):
    for bo in ("II", "MM"):
        for o in range(1, 9):
            assert read_frame(_png_exif(png_bytes, o, byteorder=bo)).orientation == o
    after = _png_exif(png_bytes, 6, before=b"IEND")
    assert read_frame(after).orientation == 1  # after the pixel data: ignored, as browsers do
    bad = C.png_with_chunk(png_bytes, b"eXIf", b"MM\x00*\x00\x00\x00\x08\xff")
    assert read_frame(bad).orientation == 1
    broken = bytearray(_png_exif(png_bytes, 6))
    i = bytes(broken).find(b"eXIf")
    broken[i + 6] ^= 0xFF  # inside the chunk: its CRC no longer matches
    with pytest.raises(FrameDecodeError, match="bad CRC in the 'eXIf' chunk"):
        read_frame(bytes(broken))


def test_auto_rotates_a_png_with_exif_instead_of_passing_it_through(enc, png_bytes, rgb_frame):
    data = _png_exif(png_bytes, 6)
    uri = enc.encode(data)  # fits, but is rotated: transcoded, not passed through
    im = _uri_image(uri)
    assert im.size == (180, 320)
    png_uri = enc.encode(data, output="png")
    out = _uri_image(png_uri)
    assert np.array_equal(np.asarray(out), np.rot90(rgb_frame, -1))  # 6 = turn 90° clockwise
    assert b"eXIf" not in base64.b64decode(png_uri.partition(",")[2])  # never rotated twice
    assert enc.encode(_png_exif(png_bytes, 6, before=b"IEND")) == enc.encode(_png_exif(png_bytes, 6, before=b"IEND"), output="passthrough")


# --------------------------------------------------------------------------- 7. tRNS transparency


@pytest.fixture(scope="module")
def trns():
    return C.trns_pngs()


def _alpha(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,"), uri[:30]
    im = _uri_image(uri)
    assert im.mode == "RGBA", im.mode
    return np.asarray(im)[..., 3]


def _check_trns_results(trns, outs_png, outs_resized):
    for (name, _data, mask), full, small in zip(trns, outs_png, outs_resized):
        a = _alpha(full)
        assert np.array_equal(a == 0, mask), name  # exactly the key's pixels, no more (16-bit: all 16 bits)
        assert set(np.unique(a)) <= {0, 255}, name
        s = _alpha(small)
        assert s.shape == (20, 36), name
        assert s.min() == 0 and s.max() == 255, name  # transparent block kept through the resize
        if "gray2" not in name:
            assert s[5, 8] < 16 and s[-1, -1] == 255, name  # (Lanczos rings by a level or two)


def test_trns_transparency_is_kept_on_the_cpu_path(enc, trns):
    outs_png = [enc.encode(data, output="png") for _, data, _ in trns]
    outs_resized = [enc.encode(data, size=(36, 36)) for _, data, _ in trns]  # auto: PNG because of the alpha
    _check_trns_results(trns, outs_png, outs_resized)
    # The key colour's pixels that are not transparent stay their colour in a JPEG.
    jpg = _uri_image(enc.encode(trns[0][1], output="jpeg"))
    assert jpg.mode == "RGB"


def test_trns_key_that_matches_no_pixel_gives_a_jpeg(enc):
    rgb = C.base_pixels()
    data = C.png_with_chunk(C.write_png(rgb), b"tRNS", struct.pack(">3H", 1, 2, 3))
    assert not (rgb == (1, 2, 3)).all(-1).any()
    assert enc.encode(data, size=(36, 36)).startswith("data:image/jpeg;base64,")


def test_low_bit_gray_trns_keys_are_scaled_like_the_samples():
    """Pillow scales 2/4-bit gray samples to 8 bits but not the tRNS key; gpupipe matches them."""
    from gpupipe.cpu import decode_frame

    for depth in (2, 4):
        vals = (np.arange(C.W)[None, :] * (1 << depth) // C.W).repeat(C.H, 0).astype(np.uint8)
        for key in (0, 1, (1 << depth) - 1):
            data = C._png_low_bit_gray(vals, depth, trns=key)
            img = decode_frame(plan_job(0, read_frame(data), OutputSpec("png")))
            assert img.mode == "RGBA"
            assert np.array_equal(np.asarray(img)[..., 3] == 0, vals == key), (depth, key)


# --------------------------------------------------------------------------- the GPU backend's data path (DALI CPU)



def test_trns_transparency_on_the_gpu_backend(host_gpu_backend, trns):
    def run(spec):
        jobs = [plan_job(i, read_frame(data), spec) for i, (_n, data, _m) in enumerate(trns)]
        return host_gpu_backend.run(jobs)

    _check_trns_results(trns, run(OutputSpec("png")), run(OutputSpec("auto", (36, 36))))


def test_gpu_backend_orientation_matches_the_cpu_path(host_gpu_backend, malformed_exif, png_bytes, rgb_frame):
    """DALI's own EXIF reading differs (it rotates for a LONG-typed little-endian orientation, one
    with a count of 0, and a PNG eXIf after IDAT; not for an IFD whose entry count overstates its
    entries): the GPU path must apply the probe's orientation, as the CPU path does."""
    from gpupipe.gpu.dali_decode import orientation_ops

    datas = [data for _n, data, _o, _r in malformed_exif]
    datas += [_png_exif(png_bytes, o) for o in range(1, 9)] + [_png_exif(png_bytes, 6, before=b"IEND")]
    for spec in (OutputSpec("jpeg"), OutputSpec("jpeg", (40, 40), quality=95)):
        jobs = [plan_job(i, read_frame(d), spec) for i, d in enumerate(datas)]
        gpu = host_gpu_backend.run(jobs)
        cpu = CpuBackend(1).run(jobs)
        for job, g, c in zip(jobs, gpu, cpu):
            assert isinstance(g, str) and isinstance(c, str), (job.frame.label, g, c)
            gi, ci = np.asarray(_uri_image(g).convert("RGB"), np.int16), np.asarray(_uri_image(c).convert("RGB"), np.int16)
            assert gi.shape == ci.shape == (job.out_size[1], job.out_size[0], 3), job.frame.label
            assert np.abs(gi - ci).mean() < 8, (job.frame.label, job.frame.orientation)  # same way up
    assert orientation_ops(1) == (False, 0, 0) and orientation_ops(6) == (True, 1, 0) and orientation_ops(0) == (False, 0, 0)


def test_dali_decoder_applies_the_probe_orientation(rgb_frame, png_bytes):
    pytest.importorskip("nvidia.dali")
    from gpupipe.gpu.dali_decode import DaliDecoder

    d = DaliDecoder(None, max_batch=3, num_threads=1)
    collect = lambda js, ims: [np.array(np.asarray(im)) for im in ims]  # noqa: E731
    try:
        for o in range(1, 9):
            data = _png_exif(png_bytes, o)
            job = plan_job(0, read_frame(data), OutputSpec("jpeg"))
            (out,) = d.decode([job], collect)
            ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
            assert np.array_equal(out, ref), o  # PNG: lossless, so exactly Pillow's transpose
        # eXIf after the pixel data: ignored (DALI's own reading, like Pillow's, would rotate it).
        job = plan_job(0, read_frame(_png_exif(png_bytes, 6, before=b"IEND")), OutputSpec("jpeg"))
        (out,) = d.decode([job], collect)
        assert np.array_equal(out, rgb_frame)
    finally:
        d.close()
