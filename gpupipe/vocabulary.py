"""The words gpupipe uses everywhere, defined once: output formats, backends, where passthrough
runs, image kinds and their MIME types, byte units, the standard resolutions, and ``WxH`` sizes.

Modes are ``Literal`` types (plain strings in YAML, on the command line and in code); each has a
tuple of its values for validation.
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar, Union, get_args

__all__ = [
    "BACKENDS",
    "MAX_SIDE",
    "MIME",
    "OUTPUT_FORMATS",
    "PASSTHROUGH_DEVICES",
    "PNG_DECODERS",
    "PNG_DEVICES",
    "QUALITY_MAX",
    "QUALITY_MIN",
    "RESOLUTIONS",
    "BackendChoice",
    "BackendName",
    "Estimate",
    "GiB",
    "KiB",
    "Kind",
    "MiB",
    "OutputFormat",
    "PassthroughDevice",
    "PiB",
    "PngDecoder",
    "PngDevice",
    "SourceKind",
    "Target",
    "TiB",
    "choose",
    "parse_wxh",
]

OutputFormat = Literal["auto", "passthrough", "jpeg", "png"]
"""What URIs to produce: ``auto`` (pass through what already fits, else JPEG, PNG for alpha),
``passthrough`` (the source bytes as they are), ``jpeg`` or ``png`` (always re-encoded)."""
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)

BackendChoice = Literal["auto", "gpu", "cpu"]
"""Which path encodes: ``auto`` (the GPU when usable, else the CPU), ``gpu`` or ``cpu``."""
BACKENDS: tuple[BackendChoice, ...] = get_args(BackendChoice)

BackendName = Literal["cpu", "gpu"]
"""The path that encodes, once chosen: :attr:`FrameEncoder.backend <gpupipe.FrameEncoder.backend>`
and :attr:`Backend.name <gpupipe.backend.Backend.name>` (the name; the object behind it is internal)."""

PassthroughDevice = Literal["cpu", "gpu"]
"""Where the GPU backend base64-encodes passthrough frames."""
PASSTHROUGH_DEVICES: tuple[PassthroughDevice, ...] = get_args(PassthroughDevice)

PngDevice = Literal["cpu", "gpu"]
"""Where the GPU backend transcodes frames whose source is PNG."""
PNG_DEVICES: tuple[PngDevice, ...] = get_args(PngDevice)

PngDecoder = Literal["pillow", "spng", "nvcomp"]
"""What decodes PNG sources: ``pillow``; ``spng`` (libspng through imagecodecs, on the CPU path, for
8-bit RGBA and Average/Paeth-filtered RGB; Pillow for the rest or without imagecodecs); ``nvcomp`` (on the GPU backend with
``png_device: gpu``: nvCOMP inflate + a CuPy un-filter kernel for 8-bit RGB/RGBA, not interlaced; the
CPU path then uses Pillow)."""
PNG_DECODERS: tuple[PngDecoder, ...] = get_args(PngDecoder)

Estimate = Union[int, "tuple[int, int]"]
"""Bytes that work holds while in flight: ``host`` or ``(host, device)``."""

Kind = Literal["png", "jpeg"]
"""An encoded image's format, as sniffed from its magic bytes."""

SourceKind = Literal["png", "jpeg", "pixels"]
"""What a frame source reads: an encoded image (``png``, ``jpeg``) or decoded ``pixels`` (a video's frame)."""

Target = Literal["jpeg", "png", "auto"]
"""A transcode's output: ``auto`` decides between JPEG and PNG from the decoded alpha."""

MIME: dict[Kind, str] = {"png": "image/png", "jpeg": "image/jpeg"}

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
PiB = 1024**5

QUALITY_MIN, QUALITY_MAX = 1, 100
"""The JPEG quality range every input accepts (config, API, service)."""

MAX_SIDE = 65535
"""The largest width or height of an output size (JPEG's limit), in the config and the service."""

RESOLUTIONS: dict[str, tuple[int, int]] = {"1080p": (1920, 1080), "4k": (3840, 2160)}
"""The standard frame sizes of the samples, benchmarks and demos."""

_WXH = re.compile(r"\s*(\d{1,9})\s*[xX]\s*(\d{1,9})\s*")


_C = TypeVar("_C", bound=str)


def choose(value: object, choices: tuple[_C, ...]) -> _C | None:
    """The member of ``choices`` that ``value`` names (case-insensitive), or ``None``."""
    if not isinstance(value, str):
        return None
    low = value.lower()
    return next((c for c in choices if c == low), None)


def parse_wxh(text: str) -> tuple[int, int]:
    """``"1920x1080"`` → ``(1920, 1080)``; ``ValueError`` (saying what was expected) otherwise, or for a zero side."""
    m = _WXH.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"expected WIDTHxHEIGHT such as 1920x1080, got {str(text)[:60]!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1:
        raise ValueError(f"width and height must be at least 1, got {w}x{h}")
    return w, h
