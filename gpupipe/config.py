"""Configuration: per-GPU budgets and output settings from YAML, with environment overrides.

A config file has two top-level sections, both optional::

    defaults:            # applies to every GPU (and to the CPU path)
      cache: {max_entries: 256, max_bytes: 1500MiB, admission_timeout: 60,
              pressure_available: auto, pressure_interval: 1}
      serve: {max_batch_delay: 0.005, max_queue: 256, request_timeout: 30, send_timeout: 30,
              cors_origins: loopback}
      staging: {max_bytes: 2GiB, pinned_bytes: 256MiB}
      output: {format: auto, jpeg_quality: 90, size: null, png_compress_level: 1}
      backend: auto
      batch_size: 8
      max_pixels: 67108864
      max_source_bytes: null
      workers: null
      schedule: {read_ahead: 16}
      video: {max_decoders: 4}
    gpus:
      0: {cache: {max_bytes: 4GiB}}   # overrides for GPU 0 only

:func:`load_config` merges ``defaults`` with the chosen GPU's section, then applies the
environment overrides ``GPUPIPE_CACHE_BYTES_MB``, ``GPUPIPE_CACHE_MAX_ENTRIES`` and
``GPUPIPE_BACKEND``. ``GPUPIPE_CONFIG`` names the file when no path is given.

The file is untrusted input: it must be a regular file of at most 1 MiB of UTF-8 holding at
most 10,000 YAML nodes, nested at most 32 levels deep, with no duplicate keys, and every
value must lie within the ``_MAX_*`` bounds below (the README's configuration table lists
them). Anything else is a :class:`ConfigError` naming the file and key path, whose message
shows at most a few hundred characters of the offending value.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .env import env
from .errors import ConfigError, ConfigWarning
from .frames.files import FileRefused, open_regular, read_upto
from .vocabulary import (
    BACKENDS,
    MAX_SIDE,
    OUTPUT_FORMATS,
    PASSTHROUGH_DEVICES,
    PNG_DECODERS,
    PNG_DEVICES,
    QUALITY_MAX,
    QUALITY_MIN,
    BackendChoice,
    GiB,
    KiB,
    MiB,
    OutputFormat,
    PassthroughDevice,
    PiB,
    PngDecoder,
    PngDevice,
    choose,
    parse_wxh,
)

__all__ = [
    "CACHE_BYTES_FLOOR",
    "MAX_GPU_INDEX",
    "CacheConfig",
    "Config",
    "GiB",
    "GpuPathConfig",
    "MiB",
    "OutputConfig",
    "ScheduleConfig",
    "ServeConfig",
    "StagingConfig",
    "VideoConfig",
    "configured_gpus",
    "load_config",
    "parse_size",
]

CACHE_BYTES_FLOOR = 64 * MiB
"""Smallest accepted cache byte budget; smaller budgets are clamped up with a warning."""


# Bounds on values (documented in the README's configuration table).
_MAX_SIZE = PiB  # every byte size
_MAX_CACHE_ENTRIES = 10**7
_MAX_ADMISSION_TIMEOUT = 86400.0  # seconds
_MAX_BATCH_DELAY = 1.0  # seconds
_MAX_QUEUE = 1_000_000
_MAX_BATCH_SIZE = 4096
_MAX_WORKERS = 4096
_MAX_PIXELS = 2**31
MAX_GPU_INDEX = 1023
"""The largest GPU index a config (``gpus: {N: ...}``) or ``--gpu`` accepts."""
_MAX_READ_AHEAD = 10**6  # frames
_MAX_DECODERS = 1024  # open video decoders per encoder
_MAX_CORS_ORIGINS = 1000  # entries of serve.cors_origins
_MAX_ORIGIN_CHARS = 300  # a scheme, a host name of at most 253 characters, a port
# Bounds on the file itself.
_MAX_FILE_BYTES = MiB
_MAX_DEPTH = 32  # nesting levels below the top-level mapping
_MAX_NODES = 10_000  # YAML nodes and alias references per file; also entries per mapping after merge keys (<<)
_MAX_TEXT = 64  # characters of a size, 'WxH' or number string; longer ones are refused unparsed

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": KiB,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": MiB,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": GiB,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")


# --------------------------------------------------------------------------- bounded rendering


class _BoundedRepr(reprlib.Repr):
    """``reprlib.Repr`` that also never renders an integer's full digits (``repr`` of a huge int raises in Python >= 3.11)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:
            return f"<{x.bit_length()}-bit integer>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 6
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 80
_MAX_SHOWN = 300


def _clip(text: str, limit: int = _MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any) -> str:
    """A value for an error message: its repr, cut to at most ``_MAX_SHOWN`` characters without building the full repr.

    Bounded for any value a YAML document can produce, including self-referencing lists and
    alias bombs (lists that share sub-lists and would expand to gigabytes).
    """
    return _clip(_REPR.repr(value))


def _key_part(k: Any) -> str:
    """One component of a dotted key path: a string key as written (cut to 60 characters), anything else bounded-repr'd."""
    return _clip(k, 60) if isinstance(k, str) else _clip(_REPR.repr(k), 60)


# --------------------------------------------------------------------------- sizes


def parse_size(value: Any, *, key: str = "size", source: str | None = None) -> int:
    """Parse a byte size: an int (bytes) or a string such as ``"1500MiB"``, ``"4GiB"``, ``"512MB"``.

    Raises :class:`ConfigError` naming ``key`` for negative, non-numeric, non-finite or
    unknown-unit values and for sizes above 1 PiB.
    """
    if isinstance(value, bool):
        raise ConfigError(f"expected a size, got a boolean {value!r}", source=source, key=key)
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():  # inf and nan are not
        n = int(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _SIZE_RE.fullmatch(text) if len(text) <= _MAX_TEXT else None
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ConfigError(
                f"unparsable size {_show(value)} (use bytes or e.g. '1500MiB', '4GiB', '512MB')",
                source=source,
                key=key,
            )
        x = float(m.group(1)) * _UNITS[unit]  # finite: at most _MAX_TEXT digits
        n = int(x) if x <= _MAX_SIZE else _MAX_SIZE + 1
    else:
        raise ConfigError(f"expected a size, got {type(value).__name__} {_show(value)}", source=source, key=key)
    if n < 0:
        raise ConfigError(f"size must not be negative, got {_show(value)}", source=source, key=key)
    if n > _MAX_SIZE:
        raise ConfigError(f"size must be at most 1 PiB ({_MAX_SIZE} bytes), got {_show(value)}", source=source, key=key)
    return n


# --------------------------------------------------------------------------- the resolved config


@dataclass(frozen=True)
class CacheConfig:
    """Bounds of the frame cache: at most ``max_entries`` URIs and ``max_bytes`` bytes (host + device).

    ``admission_timeout``: seconds a cache reservation waits for in-flight work to release
    byte budget before it fails.

    ``max_bytes_auto`` is true when ``max_bytes`` was given as ``auto`` and sized from the
    memory this process may use (:func:`gpupipe.hostmem.auto_cache_bytes`); ``gpupipe serve``
    then splits it across its pipelines. ``pressure_available`` (bytes; ``None``: 5% of the
    memory limit, at least 128 MiB; ``0``: off) and ``pressure_interval`` (seconds) drive the
    server's memory-pressure shedding: while less memory than that is available, it sheds
    cached entries (see :mod:`gpupipe.serve.pressure`).
    """

    max_entries: int = 256
    max_bytes: int = 1500 * MiB
    admission_timeout: float = 60.0
    max_bytes_auto: bool = False
    pressure_available: int | None = None
    pressure_interval: float = 1.0


@dataclass(frozen=True)
class StagingConfig:
    """GPU staging budget: ``max_bytes`` of device memory (CuPy pool limit) and ``pinned_bytes`` of pinned host memory."""

    max_bytes: int = 2 * GiB
    pinned_bytes: int = 256 * MiB


@dataclass(frozen=True)
class OutputConfig:
    """What URIs to produce.

    ``format``: ``auto`` (passthrough when the source already fits ``size``, else JPEG, or PNG
    when the frame has non-opaque alpha), ``passthrough`` (the source bytes as they are),
    ``jpeg`` or ``png`` (always re-encoded). ``size``: ``None`` or ``(width, height)``; frames
    are scaled down to fit inside it with their aspect ratio kept, never up.
    """

    format: OutputFormat = "auto"
    jpeg_quality: int = 90
    size: tuple[int, int] | None = None
    png_compress_level: int = 1


@dataclass(frozen=True)
class ServeConfig:
    """``gpupipe serve``: how requests are batched and bounded.

    Requests from every client are coalesced into batches of up to ``batch_size`` frames,
    waiting at most ``max_batch_delay`` seconds for a batch to fill; at most ``max_queue``
    requests wait for a batch (more are answered 503 with ``Retry-After``); a request that has
    no answer after ``request_timeout`` seconds is answered 504; a client that does not take a
    chunk of its response within ``send_timeout`` seconds is disconnected.

    ``cors_origins``: which web pages may read the answers (CORS, :mod:`gpupipe.serve.cors`):
    ``"loopback"`` (``null`` and ``http(s)://`` localhost, 127.0.0.0/8 or ``[::1]`` origins, any
    port), ``"*"`` (any), or a tuple of exact origins such as ``"https://render.example.com"`` or
    ``"null"`` (an empty tuple: no CORS headers).
    """

    max_batch_delay: float = 0.005
    max_queue: int = 256
    request_timeout: float = 30.0
    send_timeout: float = 30.0
    cors_origins: str | tuple[str, ...] = "loopback"


@dataclass(frozen=True)
class ScheduleConfig:
    """Declared schedules (:meth:`FramePipeline.schedule <gpupipe.FramePipeline.schedule>`).

    ``read_ahead``: how many positions ahead of a schedule's cursor frames are encoded in the
    background, in batches of ``batch_size``; 0 turns read-ahead off.
    """

    read_ahead: int = 16


@dataclass(frozen=True)
class VideoConfig:
    """Video sources (:class:`gpupipe.VideoFrame`).

    ``max_decoders``: how many clips an encoder keeps a decoder open for (its pool); opening one
    more closes the least recently used idle one.
    """

    max_decoders: int = 4


@dataclass(frozen=True)
class GpuPathConfig:
    """Tuning of the GPU backend's stages (ignored by the CPU backend).

    ``string_threads``: host threads that build one batch's URI strings (``None``: up to 4, at most
    one per core). ``hw_decoder_load``: the share of JPEG work DALI gives the hardware JPEG decoder
    (NVJPG engines of A100/H100/H200-class GPUs), 0–1; ``None`` keeps DALI's own default (0.65 in
    DALI 2.4): gpupipe has not measured a better value yet (``scripts/gpu_session.sh`` step
    ``hwdec`` measures 0, 0.65 and 1). ``preallocate_width_hint`` / ``preallocate_height_hint``:
    the frame size the hardware decoder preallocates for (0: none). ``hybrid_huffman_threshold``:
    pixels above which nvJPEG uses its hybrid Huffman decoder (``None``: DALI's default). All but
    ``string_threads`` are passed to DALI's ``fn.decoders.image`` and matter only on a GPU.
    """

    string_threads: int | None = None
    hw_decoder_load: float | None = None
    preallocate_width_hint: int = 0
    preallocate_height_hint: int = 0
    hybrid_huffman_threshold: int | None = None

    def dali_decoder_args(self) -> dict[str, float | int]:
        """The arguments for DALI's ``mixed`` ``fn.decoders.image`` that differ from DALI's defaults."""
        out: dict[str, float | int] = {}
        if self.hw_decoder_load is not None:
            out["hw_decoder_load"] = float(self.hw_decoder_load)
        if self.preallocate_width_hint:
            out["preallocate_width_hint"] = int(self.preallocate_width_hint)
        if self.preallocate_height_hint:
            out["preallocate_height_hint"] = int(self.preallocate_height_hint)
        if self.hybrid_huffman_threshold is not None:
            out["hybrid_huffman_threshold"] = int(self.hybrid_huffman_threshold)
        return out

    def host_string_threads(self) -> int:
        """``string_threads``, or its default: up to 4, at most one per core."""
        return self.string_threads or max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Config:
    """A resolved configuration for one GPU (or the CPU path).

    ``max_source_bytes`` is the largest encoded frame file accepted (``None``: the frame
    reader derives it from ``max_pixels``). ``gpu`` is the GPU index the config was resolved
    for (``None``: defaults only) and ``source`` the file it came from (``None``: built-in
    defaults).
    """

    cache: CacheConfig = field(default_factory=CacheConfig)
    staging: StagingConfig = field(default_factory=StagingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    gpu_path: GpuPathConfig = field(default_factory=GpuPathConfig)
    backend: BackendChoice = "auto"
    batch_size: int = 8
    max_pixels: int = 8192 * 8192
    max_source_bytes: int | None = None
    workers: int | None = None
    gpu: int | None = None
    source: str | None = None
    passthrough_device: PassthroughDevice = "cpu"  # GPU backend: where passthrough frames are base64-encoded
    png_device: PngDevice = "cpu"  # GPU backend: where frames with a PNG source are transcoded
    png_decoder: PngDecoder = "spng"  # what decodes PNG sources (vocabulary.PngDecoder)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (sizes in bytes), e.g. for ``gpupipe info``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "__dataclass_fields__"):
                v = {
                    g.name: (list(getattr(v, g.name)) if isinstance(getattr(v, g.name), tuple) else getattr(v, g.name))
                    for g in fields(v)
                }
            out[f.name] = v
        return out


# --------------------------------------------------------------------------- value checks
# Each check takes (value, key path, source) and returns the validated value or raises ConfigError.

Check = Callable[[Any, str, str], Any]


def _check_mapping(obj: Any, key: str, source: str) -> Mapping[Any, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise ConfigError(f"expected a mapping, got {type(obj).__name__}", source=source, key=key)
    return obj


def _int(value: Any, key: str, source: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {type(value).__name__} {_show(value)}", source=source, key=key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"must be {rng}, got {_show(value)}", source=source, key=key)
    return value


_C = TypeVar("_C", bound=str)


def _choice(value: Any, key: str, source: str, choices: tuple[_C, ...]) -> _C:
    chosen = choose(value, choices)
    if chosen is None:
        raise ConfigError(f"must be one of {', '.join(choices)}; got {_show(value)}", source=source, key=key)
    return chosen


def _size(value: Any, key: str, source: str, lo: int = 0) -> int:
    n = parse_size(value, key=key, source=source)
    if n < lo:
        raise ConfigError(f"size must be at least {lo} bytes, got {_show(value)}", source=source, key=key)
    return n


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def _cache_bytes(value: Any, key: str, source: str) -> int:
    if _is_auto(value):
        from .hostmem import auto_cache_bytes

        return auto_cache_bytes()
    return _clamp_cache_bytes(parse_size(value, key=key, source=source), key, source, stacklevel=5)


def _pressure_bytes(value: Any, key: str, source: str) -> int | None:
    return None if value is None or _is_auto(value) else parse_size(value, key=key, source=source)


def _fraction(value: Any, key: str, source: str) -> float:
    """A number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number between 0 and 1, got {type(value).__name__} {_show(value)}", source=source, key=key)
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise ConfigError(f"must be between 0 and 1, got {_show(value)}", source=source, key=key)
    return float(value)


def _delay(value: Any, key: str, source: str, lo: float, hi: float) -> float:
    """A number of seconds in ``[lo, hi]`` (``lo`` may be 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number of seconds, got {type(value).__name__} {_show(value)}", source=source, key=key)
    if not lo <= value <= hi:  # also false for nan
        raise ConfigError(f"must be a number of seconds between {lo:g} and {hi:g}, got {_show(value)}", source=source, key=key)
    return float(value)


def _seconds(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number of seconds, got {type(value).__name__} {_show(value)}", source=source, key=key)
    if not 0 < value <= _MAX_ADMISSION_TIMEOUT:  # also false for nan
        raise ConfigError(
            f"must be a finite number of seconds > 0 and <= {_MAX_ADMISSION_TIMEOUT:g}, got {_show(value)}",
            source=source,
            key=key,
        )
    return float(value)


def _size_pair(value: Any, key: str, source: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = list(parse_wxh(value[: _MAX_TEXT + 1]))
        except ValueError:
            raise ConfigError(f"expected [width, height] or 'WxH', got {_show(value)}", source=source, key=key) from None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"expected [width, height] or null, got {_show(value)}", source=source, key=key)
    w = _int(value[0], f"{key}[0]", source, 1, MAX_SIDE)
    h = _int(value[1], f"{key}[1]", source, 1, MAX_SIDE)
    return (w, h)


# A serialised origin as browsers send it: lower-case scheme and host, an optional port, nothing after.
_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.\-]*://(?:\[[0-9a-f:.]+\]|[a-z0-9\-._~%!$&'()*+,;=]+)(?::([0-9]{1,5}))?")


def _cors_origins(value: Any, key: str, source: str) -> str | tuple[str, ...]:
    """``loopback``, ``*``, or a list of exact origins (``scheme://host[:port]`` or ``null``); ``[]``: none."""
    if isinstance(value, str):
        if value.strip().lower() in ("loopback", "*"):
            return value.strip().lower()
        raise ConfigError(
            f"must be loopback, '*' or a list of origins such as ['http://localhost:3000']; got {_show(value)}",
            source=source,
            key=key,
        )
    if not isinstance(value, list):
        raise ConfigError(
            f"expected loopback, '*' or a list of origins, got {type(value).__name__} {_show(value)}", source=source, key=key
        )
    if len(value) > _MAX_CORS_ORIGINS:
        raise ConfigError(f"at most {_MAX_CORS_ORIGINS} origins, got {len(value)}", source=source, key=key)
    out: list[str] = []
    for i, origin in enumerate(value):
        k = f"{key}[{i}]"
        if not isinstance(origin, str):
            raise ConfigError(f"expected an origin string, got {type(origin).__name__} {_show(origin)}", source=source, key=k)
        if origin in ("*", "loopback"):
            raise ConfigError(
                f"{origin!r} stands alone: write cors_origins: {origin!r}, not a list holding it", source=source, key=k
            )
        m = _ORIGIN_RE.fullmatch(origin) if len(origin) <= _MAX_ORIGIN_CHARS else None
        if origin != "null" and (m is None or (m.group(1) is not None and not 0 < int(m.group(1)) <= 65535)):
            raise ConfigError(
                "expected an origin as browsers send it: scheme://host[:port] in lower case with no path or "
                f"trailing slash (e.g. 'http://localhost:3000'), or 'null'; got {_show(origin)}",
                source=source,
                key=k,
            )
        out.append(origin)
    return tuple(out)


def _optional(check: Check) -> Check:
    """``check`` that also accepts ``null`` (kept as ``None``)."""
    return lambda value, key, source: None if value is None else check(value, key, source)


_SECTIONS: dict[str, dict[str, Check]] = {
    "cache": {
        "max_entries": partial(_int, lo=1, hi=_MAX_CACHE_ENTRIES),
        "max_bytes": _cache_bytes,
        "admission_timeout": _seconds,
        "pressure_available": _pressure_bytes,
        "pressure_interval": partial(_delay, lo=0.05, hi=3600.0),
    },
    "staging": {"max_bytes": _size, "pinned_bytes": _size},
    "output": {
        "format": partial(_choice, choices=OUTPUT_FORMATS),
        "jpeg_quality": partial(_int, lo=QUALITY_MIN, hi=QUALITY_MAX),
        "size": _size_pair,
        "png_compress_level": partial(_int, lo=0, hi=9),
    },
    "serve": {
        "max_batch_delay": partial(_delay, lo=0.0, hi=_MAX_BATCH_DELAY),
        "max_queue": partial(_int, lo=1, hi=_MAX_QUEUE),
        "request_timeout": _seconds,
        "send_timeout": _seconds,
        "cors_origins": _cors_origins,
    },
    "schedule": {"read_ahead": partial(_int, lo=0, hi=_MAX_READ_AHEAD)},
    "video": {"max_decoders": partial(_int, lo=1, hi=_MAX_DECODERS)},
    "gpu_path": {
        "string_threads": _optional(partial(_int, lo=1, hi=256)),
        "hw_decoder_load": _optional(_fraction),
        "preallocate_width_hint": partial(_int, lo=0, hi=65535),
        "preallocate_height_hint": partial(_int, lo=0, hi=65535),
        "hybrid_huffman_threshold": _optional(partial(_int, lo=0, hi=_MAX_PIXELS)),
    },
}
_SCALARS: dict[str, Check] = {
    "backend": partial(_choice, choices=BACKENDS),
    "batch_size": partial(_int, lo=1, hi=_MAX_BATCH_SIZE),
    "max_pixels": partial(_int, lo=1, hi=_MAX_PIXELS),
    "max_source_bytes": _optional(partial(_size, lo=1)),
    "workers": _optional(partial(_int, lo=1, hi=_MAX_WORKERS)),
    "passthrough_device": partial(_choice, choices=PASSTHROUGH_DEVICES),
    "png_device": partial(_choice, choices=PNG_DEVICES),
    "png_decoder": partial(_choice, choices=PNG_DECODERS),
}


def _apply_section(cfg: Config, data: Mapping[Any, Any], prefix: str, source: str) -> Config:
    """Overlay one ``defaults``/``gpus.N`` mapping onto ``cfg``, validating every key against ``_SECTIONS``/``_SCALARS``."""
    for k, v in data.items():
        key = prefix + _key_part(k)
        if k in _SECTIONS:
            checks = _SECTIONS[k]
            updates = {}
            for name, value in _check_mapping(v, key, source).items():
                if name not in checks:
                    raise ConfigError(
                        f"unknown key (known: {', '.join(sorted(checks))})", source=source, key=f"{key}.{_key_part(name)}"
                    )
                updates[name] = checks[name](value, f"{key}.{name}", source)
                if (k, name) == ("cache", "max_bytes"):
                    updates["max_bytes_auto"] = _is_auto(value)
            cfg = replace(cfg, **{k: replace(getattr(cfg, k), **updates)})
        elif k in _SCALARS:
            cfg = replace(cfg, **{k: _SCALARS[k](v, key, source)})
        else:
            known = ", ".join(sorted(set(_SECTIONS) | set(_SCALARS)))
            raise ConfigError(f"unknown key (known: {known})", source=source, key=key)
    return cfg


def _gpu_index(k: Any, source: str) -> int:
    """A ``gpus`` key as a device index: a YAML integer or a string of decimal digits, 0 to ``MAX_GPU_INDEX``."""
    if isinstance(k, int) and not isinstance(k, bool):
        idx = k
    elif isinstance(k, str) and re.fullmatch(r"[0-9]{1,6}", k):
        idx = int(k)
    else:
        idx = -1
    if not 0 <= idx <= MAX_GPU_INDEX:
        raise ConfigError(
            f"GPU index must be an integer between 0 and {MAX_GPU_INDEX}", source=source, key=f"gpus.{_key_part(k)}"
        )
    return idx


def _clamp_cache_bytes(n: int, key: str, source: str, stacklevel: int) -> int:
    if n < CACHE_BYTES_FLOOR:
        msg = f"{source}: {key} = {n} bytes is below the floor of {CACHE_BYTES_FLOOR // MiB} MiB; clamped to the floor"
        warnings.warn(msg, ConfigWarning, stacklevel=stacklevel)
        return CACHE_BYTES_FLOOR
    return n


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for untrusted config files.

    Raises :class:`ConfigError` naming the key path for a duplicate key in any mapping,
    nesting deeper than ``_MAX_DEPTH`` levels, more than ``_MAX_NODES`` nodes (alias
    references included) or a mapping that merge keys (``<<``) grow past ``_MAX_NODES``
    entries. Composition therefore never recurses deeper than ``_MAX_DEPTH`` and the work
    done is linear in the file's size.
    """

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self._path: list[str] = []  # key path of the node being composed
        self._paths: dict[yaml.Node, str] = {}  # key path of each composed node (its first occurrence)
        self._count = 0

    def _where(self, path: str | None = None) -> str:
        p = ".".join(self._path) if path is None else path
        return p or "<top level>"

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # index: None for the root and for mapping keys, the key's node for a mapping value, an int for a list item.
        if parent is not None:
            if isinstance(index, int):
                part = str(index)
            elif isinstance(index, yaml.ScalarNode):
                part = _clip(index.value, 60)
            else:
                part = "<key>" if index is None else "<complex key>"
            self._path.append(part)
        try:
            self._count += 1
            if len(self._path) > _MAX_DEPTH:
                raise ConfigError(f"nested deeper than {_MAX_DEPTH} levels", source=self.source, key=self._where())
            if self._count > _MAX_NODES:
                raise ConfigError(f"more than {_MAX_NODES} YAML nodes and aliases", source=self.source, key=self._where())
            node = super().compose_node(parent, index)
            if node is not None:
                self._paths.setdefault(node, ".".join(self._path))
            return node
        finally:
            if parent is not None:
                self._path.pop()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # merged keys may be overridden; only explicit ones count
                    continue
                k = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(k, key_node)
                except TypeError:  # unhashable: SafeConstructor reports it
                    continue
                if first is not key_node:
                    path = self._paths.get(node, "")
                    raise ConfigError(
                        f"duplicate key (lines {first.start_mark.line + 1} and {key_node.start_mark.line + 1})",
                        source=self.source,
                        key=f"{path}.{_key_part(k)}" if path else _key_part(k),
                    )
        return super().construct_mapping(node, deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:  # a scalar Python cannot build: an int of > 4300 digits, date 2020-13-45
            if isinstance(e, ConfigError):
                raise
            what = f"{node.tag.rsplit(':', 1)[-1]} {_show(node.value)}" if isinstance(node, yaml.ScalarNode) else node.tag
            raise ConfigError(
                f"invalid value {_clip(what, 120)}: {_clip(str(e), 200)}",
                source=self.source,
                key=self._where(self._paths.get(node, "")),
            ) from None

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        super().flatten_mapping(node)  # recurses through this override for merged mappings
        if len(node.value) > _MAX_NODES:
            raise ConfigError(
                f"merge keys (<<) expand this mapping past {_MAX_NODES} entries",
                source=self.source,
                key=self._where(self._paths.get(node, "")),
            )


def _read_text(path: Path) -> str:
    """The file's text: a regular file of at most ``_MAX_FILE_BYTES`` bytes of UTF-8, read without
    blocking or reading past the bound (:mod:`gpupipe.frames.files`)."""
    src = str(path)
    try:
        with open_regular(path, _MAX_FILE_BYTES) as (fd, _st):
            data = read_upto(fd, _MAX_FILE_BYTES + 1)  # one more than allowed, to notice a file that grew after fstat
    except FileRefused as e:
        raise ConfigError(_refusal(e), source=src) from None
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError("config file is larger than 1 MiB (it grew while being read)", source=src)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file is not UTF-8: {e.reason} at byte {e.start}", source=src) from None


def _refusal(e: FileRefused) -> str:
    """What a config file that was not read is told as."""
    if e.problem == "missing":
        return "config file not found"
    if e.problem == "not_regular":
        return f"config path is {e.what}, not a regular file"
    if e.problem == "too_large":
        return f"config file is larger than 1 MiB ({e.size} bytes)"
    return f"cannot read config file: {_clip(str(e.cause if e.cause is not None else e))}"


def _read_yaml(path: Path) -> Mapping[Any, Any]:
    src = str(path)
    text = _read_text(path)
    loader = None
    try:
        loader = _Loader(text, src)  # refuses non-printable characters already
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        if isinstance(
            e, yaml.MarkedYAMLError
        ):  # keep the line/column marks, cut what quotes the document (an anchor name, a tag)
            e.context, e.problem, e.note = (_clip(t, 200) if isinstance(t, str) else t for t in (e.context, e.problem, e.note))
        raise ConfigError(f"invalid YAML: {_clip(str(e), 1000)}", source=src) from None
    finally:
        if loader is not None:
            loader.dispose()
    data = _check_mapping(data, "<top level>", src)
    for k in data:
        if k not in ("defaults", "gpus"):
            raise ConfigError(_top_level_message(k, data[k]), source=src, key=_key_part(k))
    return data


def _top_level_message(key: Any, value: Any) -> str:
    """Why a top-level key other than ``defaults``/``gpus`` is refused: a setting (``cache:``,
    ``backend:``) is told the path it belongs at, anything else what the top level holds."""
    if key not in _SECTIONS and key not in _SCALARS:
        return "unknown top-level key (the top level holds only defaults: and gpus:)"
    path = _key_part(key)
    if key in _SECTIONS and isinstance(value, Mapping) and value:
        path += "." + _key_part(next(iter(value)))
    return f"a setting, not a top-level key: put it under defaults: (or gpus: N: for GPU N only), as defaults.{path}"


def load_config(path: str | os.PathLike[str] | None = None, gpu: int | None = None) -> Config:
    """Load the configuration for ``gpu`` (an index; ``None`` for defaults only).

    ``path`` defaults to ``$GPUPIPE_CONFIG``, else the built-in defaults are used. The
    ``gpus.<gpu>`` section, if present, overrides ``defaults``; environment overrides
    (``GPUPIPE_CACHE_BYTES_MB``, ``GPUPIPE_CACHE_MAX_ENTRIES``, ``GPUPIPE_BACKEND``) apply last.
    Raises :class:`ConfigError` naming the file and key path for any invalid entry, and for a
    path that is not a regular file of at most 1 MiB.
    """
    cfg = Config(gpu=gpu)
    if path is None:
        path = env("GPUPIPE_CONFIG")
    if path is not None:
        p = Path(path)
        src = str(p)
        data = _read_yaml(p)
        cfg = replace(cfg, source=src)
        cfg = _apply_section(cfg, _check_mapping(data.get("defaults"), "defaults", src), "defaults.", src)
        per_gpu: dict[int, Mapping[Any, Any]] = {}
        for k, v in _check_mapping(data.get("gpus"), "gpus", src).items():
            idx = _gpu_index(k, src)
            if idx in per_gpu:
                raise ConfigError("GPU index given twice (e.g. as 1 and '1')", source=src, key=f"gpus.{idx}")
            per_gpu[idx] = _check_mapping(v, f"gpus.{idx}", src)
            # Validate every GPU's section, not just the selected one, so typos surface early.
            _apply_section(cfg, per_gpu[idx], f"gpus.{idx}.", src)
        if gpu is not None and gpu in per_gpu:
            cfg = _apply_section(cfg, per_gpu[gpu], f"gpus.{gpu}.", src)
    return _apply_env(cfg)


def configured_gpus(path: str | os.PathLike[str] | None = None) -> list[int]:
    """The GPU indexes that the config file's ``gpus:`` section names, in ascending order.

    ``path`` defaults to ``$GPUPIPE_CONFIG``; no file gives ``[]``. Raises :class:`ConfigError`
    as :func:`load_config` does for a file it cannot read or an invalid index.
    """
    if path is None:
        path = env("GPUPIPE_CONFIG")
    if path is None:
        return []
    src = str(path)
    data = _read_yaml(Path(path))
    return sorted({_gpu_index(k, src) for k in _check_mapping(data.get("gpus"), "gpus", src)})


def _apply_env(cfg: Config) -> Config:
    if v := env("GPUPIPE_CACHE_BYTES_MB"):
        try:
            mb = float(v) if len(v) <= _MAX_TEXT else math.nan
        except ValueError:
            mb = math.nan
        if not 0 <= mb <= _MAX_SIZE // MiB:  # also false for nan
            raise ConfigError(
                f"expected a number of MiB between 0 and {_MAX_SIZE // MiB} (1 PiB), got {_show(v)}",
                source="environment",
                key="GPUPIPE_CACHE_BYTES_MB",
            )
        n = _clamp_cache_bytes(int(mb * MiB), "GPUPIPE_CACHE_BYTES_MB", "environment", stacklevel=4)
        cfg = replace(cfg, cache=replace(cfg.cache, max_bytes=n, max_bytes_auto=False))
    if v := env("GPUPIPE_CACHE_MAX_BYTES"):
        key = "GPUPIPE_CACHE_MAX_BYTES"
        n = _clamp_cache_bytes(parse_size(v, key=key, source="environment"), key, "environment", stacklevel=4)
        cfg = replace(cfg, cache=replace(cfg.cache, max_bytes=n, max_bytes_auto=False))
    if v := env("GPUPIPE_CACHE_MAX_ENTRIES"):
        try:
            n = int(v) if len(v) <= _MAX_TEXT else 0
        except ValueError:
            n = 0
        if not 1 <= n <= _MAX_CACHE_ENTRIES:
            raise ConfigError(
                f"expected an integer between 1 and {_MAX_CACHE_ENTRIES}, got {_show(v)}",
                source="environment",
                key="GPUPIPE_CACHE_MAX_ENTRIES",
            )
        cfg = replace(cfg, cache=replace(cfg.cache, max_entries=n))
    if v := env("GPUPIPE_BACKEND"):
        cfg = replace(cfg, backend=_choice(v, "GPUPIPE_BACKEND", "environment", BACKENDS))
    return cfg
