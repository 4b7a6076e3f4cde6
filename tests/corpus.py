"""A corpus of real-world PNG and JPEG variants and damage, generated on the fly (issue 4 §4).

:func:`build_corpus` writes every file into a folder with Pillow, numpy, a small pure-Python
PNG writer (for what Pillow cannot write: Adam7-interlaced and 16-bit RGB/RGBA PNGs) and
byte surgery (truncations, bad CRCs, garbled entropy data, forged headers). Each
:class:`CorpusItem` records what gpupipe must do with it: produce a URI whose payload decodes
to an image of the expected display size (EXIF orientation applied), or raise a given
:class:`gpupipe.errors.FrameError` subclass. Where passing the bytes through and decoding them
legitimately differ (a file cut just before its end marker still holds every pixel), the
item records both.

:func:`corpus_summary` runs the corpus through a backend and counts the outcomes;
``scripts/corpus_report.py`` prints them.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from gpupipe.errors import FrameDecodeError, FrameError, FrameNotFound, FrameTooLarge
from gpupipe.plan import fit_size

__all__ = [
    "CorpusItem",
    "Outcome",
    "build_corpus",
    "write_png",
    "expected_outcome",
    "takes_passthrough",
    "check_result",
    "run_item",
    "corpus_summary",
    "MODES",
]

W, H = 72, 40  # not square, so a 90° EXIF rotation shows in the size

# Malformed-EXIF cases that Pillow's exif_transpose reads as a rotation although browsers do not.
_PILLOW_ROTATES = {"exif_orient_long_le", "exif_orient_long_be"}



class Verbatim:
    """Outcome of a frame whose damage only a full decode would find, on the passthrough path.

    Passthrough never decodes (that is its point), so a PNG whose compressed pixel data is
    damaged while every header, CRC and the end marker are intact comes back as a URI of the
    file's exact bytes; the decode paths refuse it. The check: the payload is the file.
    """


Outcome = Union[tuple[int, int], type[FrameError], type[Verbatim]]
"""A display size ``(width, height)`` the URI's image must have, the error class expected, or :class:`Verbatim`."""

# The ways a frame is requested in the tests: (output, size).
MODES: dict[str, tuple[str, tuple[int, int] | None]] = {
    "auto": ("auto", None),
    "passthrough": ("passthrough", None),
    "auto@32": ("auto", (32, 32)),
    "jpeg@32": ("jpeg", (32, 32)),
    "png@48x20": ("png", (48, 20)),
}


@dataclass(frozen=True)
class CorpusItem:
    """One corpus file and what gpupipe must make of it.

    ``expect``: the outcome on every path, or on the passthrough path when ``expect_decoded``
    (the outcome when the frame is decoded) differs. ``display`` is the size the header
    declares after EXIF orientation and ``orientation`` the EXIF orientation, both ``None``
    where the header cannot be read; they decide whether ``auto`` passes the bytes through.
    ``orientation`` is the one a browser applies (Chromium's reading of the EXIF); where
    Pillow's ``ImageOps.exif_transpose`` reads (or fails on) the file differently,
    ``pillow_orientation_agrees`` is false. ``transparent``: some pixels are not opaque, so an
    ``auto`` or ``png`` transcode must give a PNG with those pixels' alpha below 255.
    """

    name: str
    path: Path
    category: str
    description: str
    expect: Outcome
    expect_decoded: Outcome | None = None
    display: tuple[int, int] | None = None
    orientation: int = 1
    pillow_orientation_agrees: bool = True
    transparent: bool = False

    @property
    def valid(self) -> bool:
        """True when every path must give a URI."""
        return isinstance(self.expect, tuple) and (self.expect_decoded is None or isinstance(self.expect_decoded, tuple))


# --------------------------------------------------------------------------- pixel sources


def base_pixels(width: int = W, height: int = H, channels: int = 3, seed: int = 1) -> np.ndarray:
    """A deterministic gradient-plus-noise test image, ``height``×``width``×``channels`` uint8."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    planes = [40 + 180 * x + 0 * y, 30 + 200 * y + 0 * x, 120 + 100 * np.sin(6 * x + 3 * y)]
    img = np.stack(planes, axis=-1) + rng.normal(0, 6, (height, width, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 4:
        a = np.full((height, width, 1), 255, np.uint8)
        a[: height // 2, : width // 2] = 90
        img = np.concatenate([img, a], axis=-1)
    return img


def _pillow_bytes(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- a minimal PNG writer

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data and CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png(pixels: np.ndarray, interlace: bool = False) -> bytes:
    """A PNG of ``pixels`` (H×W, or H×W×C with C in 1–4; uint8 or uint16), optionally Adam7-interlaced.

    Pillow cannot write interlaced PNGs nor 16-bit RGB(A), so the tests write them with this.
    Every scanline uses filter 0 (None); the zlib stream is standard.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    raw = pixels.astype(">u2") if depth == 16 else pixels.astype(np.uint8)

    def scanlines(sub: np.ndarray) -> bytes:
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            return b""  # an empty Adam7 pass is left out entirely
        rows = np.ascontiguousarray(sub).reshape(sub.shape[0], -1).view(np.uint8)
        return b"".join(b"\x00" + r.tobytes() for r in rows)

    if interlace:
        data = b"".join(scanlines(raw[ys::dy, xs::dx]) for xs, ys, dx, dy in _ADAM7)
    else:
        data = scanlines(raw)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, _COLOR_TYPE[c], 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(data, 6)) + png_chunk(b"IEND", b"")


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """``(tag, start, end)`` of each chunk (start at its length field, end after its CRC)."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        out.append((tag, pos, pos + 12 + length))
        pos += 12 + length
    return out


def _jpeg_marker(data: bytes, marker: int) -> int:
    """Offset of the first ``FF <marker>`` segment before the scan data."""
    pos = 2
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF, pos
        m = data[pos + 1]
        if m == marker:
            return pos
        if m == 0xDA:
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    raise ValueError(f"marker FF{marker:02X} not found")


def _scan_range(data: bytes) -> tuple[int, int]:
    """``(start, end)`` of the entropy-coded data of the first scan."""
    sos = _jpeg_marker(data, 0xDA)
    (length,) = struct.unpack(">H", data[sos + 2 : sos + 4])
    start = sos + 2 + length
    end = len(data) - 2  # up to EOI for a baseline file (one scan)
    return start, end


# --------------------------------------------------------------------------- EXIF and tRNS builders


def tiff_ifd(byteorder: str, entries: list[tuple[int, int, int, bytes]], *, ifd: int = 8, next_ifd: int = 0, count: int | None = None) -> bytes:
    """A TIFF structure (an EXIF payload) with one IFD of ``entries`` ``(tag, type, count, 4 value bytes)``.

    ``byteorder`` is ``"II"`` (little-endian) or ``"MM"`` (big-endian); ``ifd`` the IFD's offset
    (padding fills the gap), ``next_ifd`` the next-IFD pointer, ``count`` the declared number of
    entries (default: the real one). Nothing is checked: this writes malformed EXIF on purpose.
    """
    e = "<" if byteorder == "II" else ">"
    out = byteorder.encode() + struct.pack(e + "HI", 42, ifd) + b"\x00" * max(0, ifd - 8)
    out += struct.pack(e + "H", len(entries) if count is None else count)
    for tag, typ, cnt, value in entries:
        out += struct.pack(e + "HHI", tag, typ, cnt) + value
    return out + struct.pack(e + "I", next_ifd)


def exif_value(byteorder: str, fmt: str, *values: Any) -> bytes:
    """4 value bytes of an IFD entry: ``values`` packed with ``fmt`` in ``byteorder``, zero-padded."""
    b = struct.pack(("<" if byteorder == "II" else ">") + fmt, *values)
    return b + b"\x00" * (4 - len(b))


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` (e.g. ``b"Exif\\0\\0" + tiff``) right after SOI."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def png_with_chunk(png: bytes, tag: bytes, data: bytes, before: bytes = b"IDAT") -> bytes:
    """``png`` with a ``tag`` chunk inserted before its first ``before`` chunk (``IDAT`` or ``IEND``)."""
    pos = next(s for t, s, _ in _png_chunks(png) if t == before)
    return png[:pos] + png_chunk(tag, data) + png[pos:]


def malformed_exif_cases() -> list[tuple[str, bytes, int, bool]]:
    """``(name, APP1 payload, orientation a browser applies, Pillow's exif_transpose raises)`` for
    malformed EXIF in both byte orders.

    The browser's orientation follows Chromium's rule: the first IFD's 0x0112 entry, a SHORT
    with a count of 1 and a value of 1–8, read while the data holds the entries.
    """
    out: list[tuple[str, bytes, int, bool]] = []
    for bo, end in (("II", "le"), ("MM", "be")):
        six = (0x0112, 3, 1, exif_value(bo, "H", 6))

        def add(name: str, tiff: bytes, orientation: int, raises: bool = False, raw: bool = False) -> None:
            out.append((f"exif_{name}_{end}", tiff if raw else b"Exif\x00\x00" + tiff, orientation, raises))

        add("valid6", tiff_ifd(bo, [six]), 6)
        add("ifd_past_end", tiff_ifd(bo, [six])[:4] + exif_value(bo, "I", 0x7FFFFFF0) + b"\x00" * 20, 1)
        add("count_huge", tiff_ifd(bo, [six], count=0xFFFF), 6)
        add("orient_long", tiff_ifd(bo, [(0x0112, 4, 1, exif_value(bo, "I", 6))]), 1)
        add("orient_ascii", tiff_ifd(bo, [(0x0112, 2, 4, b"abc\x00")]), 1)
        add("orient_count0", tiff_ifd(bo, [(0x0112, 3, 0, exif_value(bo, "H", 6))]), 1)
        for v in (0, 9, 65535):
            add(f"orient{v}", tiff_ifd(bo, [(0x0112, 3, 1, exif_value(bo, "H", v))]), 1)
        full = tiff_ifd(bo, [six, (0x010F, 2, 100, exif_value(bo, "I", 26))])
        add("truncated_after_orientation", full[:30], 6)
        add("truncated_in_orientation", full[:16], 1)
        add("app1_cut", b"Exi", 1, raw=True)
        add("ifd_loop", tiff_ifd(bo, [six, (0x8769, 4, 1, exif_value(bo, "I", 8))], next_ifd=8), 6)
        add("next_ifd_past_end", tiff_ifd(bo, [six], next_ifd=0x7FFFFF00), 6)
        # Wrong types for other tags: Pillow reads them, then fails writing the EXIF back.
        add("ycbcr_sshort", tiff_ifd(bo, [six, (0x0213, 8, 1, exif_value(bo, "h", -2))]), 6, True)
        add("xres_ascii", tiff_ifd(bo, [six, (0x011A, 2, 1, b"x\x00\x00\x00")]), 6, True)
        add("software_float", tiff_ifd(bo, [six, (0x0131, 11, 1, exif_value(bo, "f", 1.5))]), 6, True)
        add("exififd_sshort", tiff_ifd(bo, [six, (0x8769, 8, 1, exif_value(bo, "h", -30))]), 6, True)
    out.append(("exif_bad_byteorder", b"Exif\x00\x00XX" + tiff_ifd("II", [(0x0112, 3, 1, exif_value("II", "H", 6))])[2:], 1, False))
    return out


def trns_pngs() -> list[tuple[str, bytes, np.ndarray]]:
    """``(name, PNG, transparent mask)`` of gray and truecolour PNGs whose ``tRNS`` chunk names one
    transparent value, at 2, 8 and 16 bits; the mask is True where a browser shows transparency.

    The 16-bit ones also hold pixels whose high bytes equal the key's but whose low bytes do
    not: those stay opaque (a decoder keeping only 8 bits would get them wrong).
    """
    rgb = base_pixels()
    gray = rgb[..., 1].copy()
    key_rgb, key_gray = (10, 200, 30), 7
    mask = np.zeros((H, W), bool)
    mask[4:16, 6:30] = True
    rgb[mask] = key_rgb
    gray[mask] = key_gray
    rgb[(rgb == key_rgb).all(-1) & ~mask] += 1  # no stray key pixels elsewhere
    gray[(gray == key_gray) & ~mask] += 1
    near = np.zeros((H, W), bool)
    near[24:34, 40:60] = True
    rgb16 = rgb.astype(np.uint16) * 257
    gray16 = gray.astype(np.uint16) * 257
    rgb16[near] = np.array(key_rgb, np.uint16) * 257 + 1  # same high bytes as the key, not the key
    gray16[near] = key_gray * 257 + 1
    g2 = (np.arange(W)[None, :] * 4 // W).repeat(H, 0).astype(np.uint8)  # 2-bit gray: 0..3
    out = [
        ("png_rgb_trns.png", png_with_chunk(write_png(rgb), b"tRNS", struct.pack(">3H", *key_rgb)), mask),
        ("png_gray8_trns.png", png_with_chunk(write_png(gray), b"tRNS", struct.pack(">H", key_gray)), mask),
        ("png_gray16_trns.png", png_with_chunk(write_png(gray16), b"tRNS", struct.pack(">H", key_gray * 257)), mask),
        ("png_rgb16_trns.png", png_with_chunk(write_png(rgb16), b"tRNS", struct.pack(">3H", *(k * 257 for k in key_rgb))), mask),
        ("png_rgb16_trns_interlaced.png", png_with_chunk(write_png(rgb16, interlace=True), b"tRNS", struct.pack(">3H", *(k * 257 for k in key_rgb))), mask),
        ("png_gray2_trns.png", _png_low_bit_gray(g2, 2, trns=1), g2 == 1),
    ]
    return out


def _png_low_bit_gray(values: np.ndarray, depth: int, trns: int | None = None) -> bytes:
    """A ``depth``-bit (1, 2 or 4) grayscale PNG of ``values`` (H×W, each below ``2**depth``), with an optional tRNS key."""
    h, w = values.shape
    per = 8 // depth
    padded = np.zeros((h, -(-w // per) * per), np.uint8)
    padded[:, :w] = values
    groups = padded.reshape(h, -1, per)
    packed = np.zeros(groups.shape[:2], np.uint8)
    for k in range(per):
        packed |= groups[:, :, k] << (8 - depth * (k + 1))
    raw = b"".join(b"\x00" + row.tobytes() for row in packed)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)
    extra = png_chunk(b"tRNS", struct.pack(">H", trns)) if trns is not None else b""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------- the corpus


def build_corpus(directory: str | Path) -> list[CorpusItem]:
    """Write the corpus into ``directory`` and return its items (deterministic contents)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    items: list[CorpusItem] = []
    rgb = base_pixels()
    rgba = base_pixels(channels=4)
    img = Image.fromarray(rgb, "RGB")

    def add(name: str, data: bytes | None, category: str, description: str, expect: Outcome, **kw: Any) -> None:
        p = root / name
        if data is not None:
            p.write_bytes(data)
        if isinstance(expect, tuple) and "display" not in kw:
            kw["display"] = expect
        items.append(CorpusItem(name, p, category, description, expect, **kw))

    size = (W, H)
    # ---- valid PNG variants
    png_rgb = _pillow_bytes(img, "PNG")
    add("png_rgb.png", png_rgb, "png", "8-bit RGB PNG (the baseline)", size)
    add("png_rgba.png", _pillow_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), "png", "8-bit RGBA PNG, part translucent", size)
    pal = img.quantize(64)
    add("png_palette.png", _pillow_bytes(pal, "PNG"), "png", "palette (colour type 3) PNG", size)
    pal_t = img.quantize(64)
    add("png_palette_trns.png", _pillow_bytes(pal_t, "PNG", transparency=0), "png", "palette PNG with a tRNS chunk", size)
    gray = img.convert("L")
    add("png_gray.png", _pillow_bytes(gray, "PNG"), "png", "8-bit grayscale PNG", size)
    add("png_gray_trns.png", _pillow_bytes(gray, "PNG", transparency=int(np.asarray(gray)[0, 0])), "png", "grayscale PNG with tRNS", size)
    add("png_gray_alpha.png", _pillow_bytes(Image.fromarray(rgba, "RGBA").convert("LA"), "PNG"), "png", "gray+alpha PNG", size)
    g16 = (np.asarray(gray).astype(np.uint16) * 257) ^ np.uint16(0x0055)
    add("png_gray16.png", write_png(g16), "png", "16-bit grayscale PNG", size)
    add("png_gray16_pillow.png", _pillow_bytes(Image.fromarray(g16), "PNG"), "png", "16-bit grayscale PNG written by Pillow", size)
    add("png_rgb16.png", write_png(rgb.astype(np.uint16) * 257), "png", "16-bit RGB PNG", size)
    add("png_rgba16.png", write_png(rgba.astype(np.uint16) * 257), "png", "16-bit RGBA PNG", size)
    add("png_interlaced_rgb.png", write_png(rgb, interlace=True), "png", "Adam7-interlaced RGB PNG", size)
    add("png_interlaced_rgba.png", write_png(rgba, interlace=True), "png", "Adam7-interlaced RGBA PNG", size)
    add("png_interlaced_gray16.png", write_png(g16, interlace=True), "png", "Adam7-interlaced 16-bit gray PNG", size)
    add("png_interlaced_3x2.png", write_png(rgb[:2, :3], interlace=True), "png", "interlaced PNG with empty Adam7 passes", (3, 2))
    add("png_1x1.png", _pillow_bytes(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "tiny", "1x1 PNG", (1, 1))
    add("png_1x1_interlaced.png", write_png(rgb[:1, :1], interlace=True), "tiny", "1x1 interlaced PNG", (1, 1))

    # ---- valid JPEG variants
    jpg = _pillow_bytes(img, "JPEG", quality=90)
    jpg_plain = jpg
    add("jpeg_baseline.jpg", jpg, "jpeg", "baseline 4:2:0 JPEG", size)
    add("jpeg_444.jpg", _pillow_bytes(img, "JPEG", quality=95, subsampling=0), "jpeg", "4:4:4 JPEG", size)
    add("jpeg_progressive.jpg", _pillow_bytes(img, "JPEG", quality=90, progressive=True), "jpeg", "progressive JPEG", size)
    add("jpeg_cmyk.jpg", _pillow_bytes(img.convert("CMYK"), "JPEG", quality=90), "jpeg", "CMYK JPEG", size)
    add("jpeg_gray.jpg", _pillow_bytes(gray, "JPEG", quality=90), "jpeg", "grayscale JPEG", size)
    for o, disp in ((6, (H, W)), (3, (W, H)), (8, (H, W)), (5, (H, W))):
        exif = Image.Exif()
        exif[0x0112] = o
        add(
            f"jpeg_exif{o}.jpg",
            _pillow_bytes(img, "JPEG", quality=90, exif=exif.tobytes()),
            "exif",
            f"JPEG with EXIF orientation {o}",
            disp,
            orientation=o,
        )
    # ---- malformed EXIF: a URI every time, with the orientation a browser applies
    for name, payload, o, raises in malformed_exif_cases():
        disp = (H, W) if o in (5, 6, 7, 8) else (W, H)
        add(
            f"{name}.jpg",
            jpeg_with_app1(jpg_plain, payload),
            "exif-malformed",
            f"JPEG with malformed EXIF ({name}); browsers apply orientation {o}"
            + ("; Pillow's exif_transpose raises on it" if raises else ""),
            disp,
            orientation=o,
            pillow_orientation_agrees=not raises and name not in _PILLOW_ROTATES,
        )
    # ---- PNG eXIf: honoured before IDAT, ignored after it (the PNG spec, Chromium, Safari)
    tiff6 = tiff_ifd("MM", [(0x0112, 3, 1, exif_value("MM", "H", 6))])
    add("png_exif6.png", png_with_chunk(png_rgb, b"eXIf", tiff6), "exif", "PNG with an eXIf chunk (orientation 6) before IDAT", (H, W), orientation=6)
    add(
        "png_exif6_after_idat.png",
        png_with_chunk(png_rgb, b"eXIf", tiff6, before=b"IEND"),
        "exif",
        "PNG with an eXIf chunk (orientation 6) after IDAT: browsers ignore it (Pillow does not)",
        size,
        pillow_orientation_agrees=False,
    )
    add(
        "png_exif_malformed.png",
        png_with_chunk(png_rgb, b"eXIf", tiff_ifd("II", [(0x0112, 3, 1, exif_value("II", "H", 6))], count=0)[:6]),
        "exif-malformed",
        "PNG with a truncated eXIf chunk (Pillow's exif_transpose raises struct.error on it)",
        size,
        pillow_orientation_agrees=False,
    )
    # ---- tRNS transparency in gray and truecolour PNGs
    for name, data, _mask in trns_pngs():
        add(name, data, "png", f"{name[:-4]}: one transparent value named by tRNS", size, transparent=True)
    add("jpeg_1x1.jpg", _pillow_bytes(Image.new("RGB", (1, 1), (10, 200, 10)), "JPEG"), "tiny", "1x1 JPEG", (1, 1))
    add("jpeg_restart.jpg", _pillow_bytes(img, "JPEG", quality=90, restart_marker_blocks=1), "jpeg", "JPEG with restart markers", size)

    # ---- wrong extension
    add("png_named.jpg", png_rgb, "extension", "a PNG with a .jpg name", size)
    add("jpeg_named.png", jpg, "extension", "a JPEG with a .png name", size)

    # ---- huge declared dimensions
    big = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    huge_png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", big) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")
    add("huge_png_100000x100000.png", huge_png, "huge", "valid PNG header declaring 100000x100000", FrameTooLarge)
    sof = _jpeg_marker(jpg, 0xC0)
    huge_jpg = jpg[: sof + 5] + struct.pack(">HH", 65000, 65000) + jpg[sof + 9 :]
    add("huge_jpeg_65000x65000.jpg", huge_jpg, "huge", "JPEG whose SOF declares 65000x65000", FrameTooLarge)
    # Just under the default max_pixels (8192^2): the header passes, the data is a few bytes.
    bomb = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)
    bomb_png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bomb) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 5000)) + png_chunk(b"IEND", b"")
    add(
        "bomb_png_8000x8000.png",
        bomb_png,
        "huge",
        "PNG declaring 8000x8000 (under max_pixels) with 5 KB of pixel data",
        Verbatim,
        expect_decoded=FrameDecodeError,
        display=(8000, 8000),
    )
    bomb_jpg = jpg[: sof + 5] + struct.pack(">HH", 8000, 8000) + jpg[sof + 9 :]
    add(
        "bomb_jpeg_8000x8000.jpg",
        bomb_jpg,
        "huge",
        "JPEG whose SOF declares 8000x8000 (under max_pixels) over a 72x40 scan; libjpeg pads the missing rows",
        Verbatim,
        expect_decoded=(8000, 8000),
        display=(8000, 8000),
    )
    zero = struct.pack(">IIBBBBB", 0, 40, 8, 2, 0, 0, 0)
    add(
        "png_zero_width.png",
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", zero) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""),
        "huge",
        "PNG declaring a 0-pixel width",
        FrameDecodeError,
    )

    # ---- truncated
    chunks = _png_chunks(png_rgb)
    idat = next((s, e) for t, s, e in chunks if t == b"IDAT")
    iend = next(s for t, s, e in chunks if t == b"IEND")
    add("trunc_png_signature.png", png_rgb[:6], "truncated", "PNG cut inside its signature", FrameDecodeError)
    add("trunc_png_header.png", png_rgb[:20], "truncated", "PNG cut inside IHDR", FrameDecodeError)
    add("trunc_png_after_ihdr.png", png_rgb[:33], "truncated", "PNG cut right after IHDR", FrameDecodeError, display=size)
    add("trunc_png_mid_idat.png", png_rgb[: (idat[0] + idat[1]) // 2], "truncated", "PNG cut in the middle of IDAT", FrameDecodeError, display=size)
    add(
        "trunc_png_before_iend.png",
        png_rgb[:iend],
        "truncated",
        "PNG cut just before IEND (every pixel is there)",
        FrameDecodeError,
        expect_decoded=size,
        display=size,
    )
    inter = write_png(rgb, interlace=True)
    add("trunc_png_interlaced.png", inter[: len(inter) * 2 // 3], "truncated", "interlaced PNG cut mid-IDAT", FrameDecodeError, display=size)
    start, end = _scan_range(jpg)
    dqt = _jpeg_marker(jpg, 0xDB)
    add("trunc_jpeg_soi.jpg", jpg[:3], "truncated", "JPEG cut after its first bytes", FrameDecodeError)
    add("trunc_jpeg_header.jpg", jpg[: dqt + 10], "truncated", "JPEG cut before its frame header (SOF)", FrameDecodeError)
    add("trunc_jpeg_mid_scan.jpg", jpg[: (start + end) // 2], "truncated", "JPEG cut in the middle of the scan", FrameDecodeError, display=size)
    add("trunc_jpeg_before_eoi.jpg", jpg[:-2], "truncated", "JPEG cut just before EOI", FrameDecodeError, display=size)
    prog = _pillow_bytes(img, "JPEG", quality=90, progressive=True)
    add("trunc_jpeg_progressive.jpg", prog[: len(prog) // 2], "truncated", "progressive JPEG cut halfway", FrameDecodeError, display=size)

    # ---- corrupt
    ihdr_crc = bytearray(png_rgb)
    ihdr_crc[29] ^= 0xFF  # the IHDR CRC is bytes 29..32
    add("corrupt_png_ihdr_crc.png", bytes(ihdr_crc), "corrupt", "PNG with a wrong IHDR CRC", FrameDecodeError, display=size)
    idat_crc = bytearray(png_rgb)
    idat_crc[idat[1] - 1] ^= 0xFF
    add(
        "corrupt_png_idat_crc.png",
        bytes(idat_crc),
        "corrupt",
        "PNG with a wrong IDAT CRC (pixel data intact; Pillow does not check IDAT CRCs)",
        size,
    )
    bad_zlib = bytearray(png_rgb)
    s = idat[0] + 8
    for i in range(s + 10, s + 40):
        bad_zlib[i] ^= 0x5A
    body = bytes(bad_zlib[idat[0] + 4 : idat[1] - 4])
    bad_zlib[idat[1] - 4 : idat[1]] = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    add(
        "corrupt_png_zlib.png",
        bytes(bad_zlib),
        "corrupt",
        "PNG whose IDAT holds a damaged zlib stream (CRC recomputed)",
        Verbatim,
        expect_decoded=FrameDecodeError,
        display=size,
    )
    rnd = random.Random(4)
    garbled = bytearray(jpg)
    for i in range(start + (end - start) // 4, start + (end - start) // 2):
        garbled[i] = rnd.randrange(0, 0xFF)  # never 0xFF: no accidental markers
    add(
        "corrupt_jpeg_entropy.jpg",
        bytes(garbled),
        "corrupt",
        "JPEG with garbled Huffman-coded scan data",
        size,
    )
    dht = _jpeg_marker(jpg, 0xC4)
    bad_dht = bytearray(jpg)
    for i in range(dht + 5, dht + 5 + 16):  # the 16 code-length counts
        bad_dht[i] = 0xFF
    add("corrupt_jpeg_dht.jpg", bytes(bad_dht), "corrupt", "JPEG with an impossible Huffman table", FrameDecodeError, display=size)
    bad_marker = bytearray(jpg)
    bad_marker[dqt] = 0x00
    add("corrupt_jpeg_marker.jpg", bytes(bad_marker), "corrupt", "JPEG with a broken marker before SOF", FrameDecodeError)

    # ---- not images at all / not there
    add("empty.png", b"", "junk", "zero-byte file", FrameDecodeError)
    add("random.jpg", random.Random(7).randbytes(4096), "junk", "4 KiB of random bytes", FrameDecodeError)
    add("text.png", b"this is not an image\n" * 20, "junk", "a text file named .png", FrameDecodeError)
    add("missing.png", None, "missing", "no such file", FrameNotFound)
    (root / "folder.png").mkdir(exist_ok=True)
    add("folder.png", None, "missing", "a directory named like a frame", FrameNotFound)
    return items


# --------------------------------------------------------------------------- checking results


def takes_passthrough(item: CorpusItem, output: str, size: tuple[int, int] | None) -> bool:
    """Whether gpupipe's planner passes ``item``'s bytes through for ``output``/``size`` (see plan.py)."""
    if output == "passthrough":
        return True
    if output != "auto" or item.display is None:
        return False
    return fit_size(*item.display, size) == item.display and item.orientation == 1


def expected_outcome(item: CorpusItem, output: str, size: tuple[int, int] | None) -> Outcome:
    """What ``item`` must give when requested as ``output`` fitted into ``size``."""
    exp = item.expect
    if item.expect_decoded is not None and not takes_passthrough(item, output, size):
        exp = item.expect_decoded
    if isinstance(exp, tuple) and size is not None and output != "passthrough":
        exp = fit_size(exp[0], exp[1], size)
    return exp


ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_uri(uri: str, orientation: int | None = None) -> Image.Image:
    """Pillow image of a data URI's payload, fully loaded, shown upright.

    ``orientation``: the EXIF orientation to apply (as a browser reads the file); ``None``:
    whatever Pillow's ``exif_transpose`` reads.
    """
    head, _, payload = uri.partition(",")
    assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head[:40]
    raw = base64.b64decode(payload, validate=True)
    im = Image.open(io.BytesIO(raw))
    assert im.format == ("PNG" if head == "data:image/png;base64" else "JPEG"), (head, im.format)
    im.load()
    if orientation is None:
        return ImageOps.exif_transpose(im)
    method = ORIENTATION_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def _short(result: object) -> str:
    """``result`` for an assertion message: a URI cut to its start and length."""
    if isinstance(result, str):
        return f"a URI {result[:48]!r}... ({len(result)} chars)"
    return repr(result)


def check_result(item: CorpusItem, output: str, size: tuple[int, int] | None, result: object) -> str:
    """Assert ``result`` (a URI, or the exception raised) is what ``item`` must give; returns the outcome's name."""
    exp = expected_outcome(item, output, size)
    if exp is Verbatim:
        assert isinstance(result, str), f"{item.name} [{output} {size}]: expected a verbatim URI, got {_short(result)}"
        payload = base64.b64decode(result.partition(",")[2], validate=True)
        assert payload == item.path.read_bytes(), f"{item.name} [{output} {size}]: passthrough changed the bytes"
        return "passed through verbatim (damage needs a decode to see)"
    if isinstance(exp, tuple):
        assert isinstance(result, str), f"{item.name} [{output} {size}]: expected a URI of {exp}, got {_short(result)}"
        where = f"{item.name} [{output} {size}]"
        if takes_passthrough(item, output, size):
            payload = base64.b64decode(result.partition(",")[2], validate=True)
            assert payload == item.path.read_bytes(), f"{where}: passthrough changed the bytes"
            im = decode_uri(result, orientation=item.orientation)  # shown as a browser shows the file
        else:
            im = decode_uri(result)
            # A transcode is upright already: it must carry no orientation of its own.
            assert im.getexif().get(0x0112, 1) == 1, f"{where}: the transcode carries an EXIF orientation"
            if item.transparent and output in ("auto", "png"):
                assert result.startswith("data:image/png;"), f"{where}: transparency lost (not a PNG)"
                assert im.mode == "RGBA" and im.getchannel("A").getextrema()[0] < 255, f"{where}: transparency lost"
        assert im.size == exp, f"{where}: image is {im.size}, expected {exp}"
        return "valid"
    assert isinstance(result, exp), f"{item.name} [{output} {size}]: expected {exp.__name__}, got {_short(result)}"
    assert result.frame and result.reason, result  # names the frame and says why
    return exp.__name__


def run_item(encoder: Any, item: CorpusItem, output: str, size: tuple[int, int] | None) -> tuple[object, float]:
    """``(URI or the exception raised, seconds)`` for one encode of ``item``."""
    t0 = time.perf_counter()
    try:
        result: object = encoder.encode(item.path, output=output, size=size)
    except Exception as e:  # noqa: BLE001 - the caller checks the type
        result = e
    return result, time.perf_counter() - t0


def corpus_summary(backend: str = "cpu", directory: str | Path | None = None) -> dict[str, Any]:
    """Run the whole corpus through ``FrameEncoder(backend=...)`` in every mode and count the outcomes.

    Returns ``{"backend", "files", "modes": {mode: {outcome: count}}, "unexpected": [...],
    "slowest_s"}``; ``unexpected`` lists results that break the corpus's expectations.
    """
    import tempfile

    from gpupipe import FrameEncoder
    from gpupipe.config import Config

    with tempfile.TemporaryDirectory() as tmp:
        items = build_corpus(directory or tmp)
        modes: dict[str, Counter] = {}
        unexpected: list[str] = []
        slowest = 0.0
        with FrameEncoder(Config(), backend=backend) as enc:
            for mode, (output, size) in MODES.items():
                counts: Counter = Counter()
                for item in items:
                    result, dt = run_item(enc, item, output, size)
                    slowest = max(slowest, dt)
                    try:
                        counts[check_result(item, output, size, result)] += 1
                    except AssertionError as e:
                        unexpected.append(str(e))
                        counts["UNEXPECTED " + type(result).__name__] += 1
                modes[mode] = dict(sorted(counts.items()))
    return {"backend": backend, "files": len(items), "modes": modes, "unexpected": unexpected, "slowest_s": slowest}
