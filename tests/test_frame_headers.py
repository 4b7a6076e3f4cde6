"""The one header parser (gpupipe.frames.headers) against Pillow, and the estimate it sizes.

Before gpupipe.frames, the budget's header (footprint.py) and the frame's probe (sources.py) were
two parsers with different rules: the budget's never read a PNG's eXIf orientation, counted a
palette PNG as 4 channels and a gray JPEG as 3, and guessed alpha from the channel count. Here
the header the budget reads from a file's first bytes must be the frame's own header, and both
must say what Pillow says.
"""

from __future__ import annotations

import io
import struct
import warnings

import pytest
from PIL import Image

import corpus as C
from gpupipe.config import Config
from gpupipe.encoder import FrameEncoder
from gpupipe.errors import FrameError
from gpupipe.footprint import cpu_footprint, gpu_footprint
from gpupipe.frames import parse_header, read_frame, read_header
from gpupipe.frames.headers import parse_prefix
from gpupipe.plan import OutputSpec, passes_through, plan_job


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[C.CorpusItem]:
    return C.build_corpus(tmp_path_factory.mktemp("corpus"))


def _pillow(data: bytes) -> tuple[tuple[int, int], int, Image.Image]:
    """Pillow's ``(size, channels, image)`` of an encoded frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corpus's malformed EXIF
        im = Image.open(io.BytesIO(data))
    return im.size, len(im.getbands()), im


def _pillow_orientation(im: Image.Image) -> int | None:
    """Pillow's EXIF orientation (a tag that is not 1-8 counts as none, as exif_transpose counts
    it); ``None`` where Pillow cannot read it (a PNG cut before its end)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corpus's malformed EXIF
        try:
            o = im.getexif().get(0x0112, 1)
        except OSError:
            return None
    return o if isinstance(o, int) and 1 <= o <= 8 else 1


def test_the_budget_header_is_the_frame_header_and_agrees_with_pillow(items):
    checked = 0
    for item in items:
        if not isinstance(item.expect, tuple) and item.expect_decoded is None:
            continue  # refused frames: no header to compare
        try:
            frame = read_frame(item.path)
        except FrameError:
            continue
        header = read_header(item.path)  # what the pipeline's estimate reads: the file's first bytes
        assert header == frame.header, item.name
        size, channels, im = _pillow(frame.data)
        assert (header.width, header.height) == size, item.name
        assert header.channels == channels, (item.name, header.channels, channels)
        # Where Pillow reads EXIF unlike browsers (the corpus says where), the browsers' reading.
        pillow = _pillow_orientation(im) if item.pillow_orientation_agrees else None
        want = item.orientation if pillow is None else pillow
        assert header.orientation == want, (item.name, header.orientation, want)
        checked += 1
    assert checked > 70


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3), ("CMYK", 4)])
def test_jpeg_components_come_from_the_sof_count_byte(mode, channels):
    """The SOF's component count is at offset 9 from its marker (FF Cn Lh Ll P Yh Yl Xh Xl Nf);
    offset 10 is the first component's id, which only a gray JPEG's count matches."""
    b = io.BytesIO()
    Image.new(mode, (33, 17)).save(b, "JPEG")
    data = b.getvalue()
    sof = data.index(b"\xff\xc0")
    assert data[sof + 9] == channels and (data[sof + 10] == channels) == (mode == "L")
    h = parse_header("x", data)
    assert (h.width, h.height, h.channels, h.native_rgb) == (33, 17, channels, mode == "RGB")


def test_a_prefix_gives_the_whole_frames_header_or_error_or_asks_for_more(items):
    """parse_prefix over every cut of every corpus file: ``None``, or exactly parse_header's answer."""
    for item in items:
        if not item.path.is_file():
            continue
        data = item.path.read_bytes()
        try:
            whole: object = parse_header(item.name, data)
        except FrameError as e:
            whole = e
        cuts = sorted({*range(0, len(data), max(1, len(data) // 150)), *range(0, min(len(data), 80))})
        for cut in cuts:
            try:
                got: object = parse_prefix(item.name, data[:cut], len(data))
            except FrameError as e:
                got = e
            assert got is None or got == whole, (item.name, cut, got, whole)
        assert parse_prefix(item.name, data, len(data)) == whole if not isinstance(whole, FrameError) else True


def _png_with_big_chunk_then_exif(png: bytes, orientation: int) -> bytes:
    """A PNG whose eXIf chunk comes after 200 KB of text: past the 64 KiB a header read starts with."""
    text = C.png_with_chunk(png, b"tEXt", b"Comment\0" + b"x" * 200_000)
    tiff = C.tiff_ifd("MM", [(0x0112, 3, 1, C.exif_value("MM", "H", orientation))])
    return C.png_with_chunk(text, b"eXIf", tiff)


def test_a_png_exif_orientation_behind_large_chunks_reaches_the_budget(tmp_path, png_bytes):
    data = _png_with_big_chunk_then_exif(png_bytes, 6)
    p = tmp_path / "rotated.png"
    p.write_bytes(data)
    header = read_header(p)
    assert header.orientation == 6 and header == read_frame(p).header and header.display_size == (180, 320)


def test_the_estimate_is_made_for_the_plan_the_frame_gets(items):
    """passes_through() on the budget's header decides as plan_job() on the frame (the old budget
    header read no PNG orientation: a rotated PNG was estimated as a passthrough and transcoded)."""
    for item in items:
        try:
            frame = read_frame(item.path)
        except FrameError:
            continue
        header = read_header(item.path)
        for output, size in C.MODES.values():
            spec = OutputSpec(output, size)
            try:
                planned = plan_job(0, frame, spec).passthrough
            except FrameError:  # a passthrough of a visibly truncated stream
                planned = True
            assert passes_through(header.display_size, header.orientation, spec) == planned, (item.name, output, size)


def test_a_rotated_png_is_estimated_as_the_transcode_it_gets(tmp_path, png_bytes):
    data = C.png_with_chunk(png_bytes, b"eXIf", C.tiff_ifd("MM", [(0x0112, 3, 1, C.exif_value("MM", "H", 6))]))
    p = tmp_path / "exif6.png"
    p.write_bytes(data)
    with FrameEncoder(Config(), backend="cpu", tune_allocator=False) as enc:
        estimate, header = enc.footprint(p, OutputSpec("auto"))
    assert header.orientation == 6
    assert estimate > cpu_footprint(header, OutputSpec("passthrough")) + 320 * 180 * 4  # it decodes the pixels


def test_the_gpu_estimate_sends_a_png_with_trns_to_the_cpu_path_as_the_backend_does():
    """``auto`` re-encodes a frame that may have alpha on the CPU path (routes_to_cpu): a gray or RGB
    PNG with a tRNS chunk too, and a palette PNG without one goes to the device."""
    from gpupipe.gpu.backend import routes_to_cpu

    spec = OutputSpec("auto", (32, 32))
    for name, data, _mask in C.trns_pngs():
        frame = read_frame(data)
        header = parse_header(name, data)
        assert header.may_have_alpha and routes_to_cpu(plan_job(0, frame, spec)), name
        assert gpu_footprint(header, spec, png_on_device=True) == (cpu_footprint(header, spec), 0), name
    pal = io.BytesIO()
    Image.fromarray(C.base_pixels()).quantize(64).save(pal, "PNG")
    header = parse_header("palette", pal.getvalue())
    assert header.channels == 1 and not header.may_have_alpha
    assert not routes_to_cpu(plan_job(0, read_frame(pal.getvalue()), spec))
    assert gpu_footprint(header, spec, png_on_device=True)[1] > 0


def test_a_jpeg_cut_inside_its_frame_header_has_no_size():
    b = io.BytesIO()
    Image.new("RGB", (8, 8)).save(b, "JPEG")
    data = b.getvalue()
    sof = data.index(b"\xff\xc0")
    assert struct.unpack(">HH", data[sof + 5 : sof + 9]) == (8, 8)
    with pytest.raises(FrameError, match=r"no frame header \(SOF\)"):
        parse_header("cut", data[: sof + 9])  # the size is there, the component count is not
    assert parse_prefix("cut", data[: sof + 9], len(data)) is None
