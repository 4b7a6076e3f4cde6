"""Configuration: per-GPU budgets and output settings from YAML, with environment overrides.

A config file has two top-level sections, both optional::

    defaults:            # applies to every GPU (and to the CPU path)
      cache: {max_entries: 256, max_bytes: 1500MiB}
      staging: {max_bytes: 2GiB, pinned_bytes: 256MiB}
      output: {format: auto, jpeg_quality: 90, size: null, png_compress_level: 1}
      backend: auto
      batch_size: 8
      max_pixels: 67108864
      workers: null
    gpus:
      0: {cache: {max_bytes: 4GiB}}   # overrides for GPU 0 only

:func:`load_config` merges ``defaults`` with the chosen GPU's section, then applies the
environment overrides ``GPUPIPE_CACHE_BYTES_MB``, ``GPUPIPE_CACHE_MAX_ENTRIES`` and
``GPUPIPE_BACKEND``. ``GPUPIPE_CONFIG`` names the file when no path is given.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

__all__ = [
    "CacheConfig",
    "StagingConfig",
    "OutputConfig",
    "Config",
    "load_config",
    "parse_size",
    "MiB",
    "GiB",
    "CACHE_BYTES_FLOOR",
]

log = logging.getLogger("gpupipe.config")

KiB = 1024
MiB = 1024**2
GiB = 1024**3
CACHE_BYTES_FLOOR = 64 * MiB
"""Smallest accepted cache byte budget; smaller budgets are clamped up with a warning."""

OUTPUT_FORMATS = ("auto", "passthrough", "jpeg", "png")
BACKENDS = ("auto", "gpu", "cpu")
PASSTHROUGH_DEVICES = ("cpu", "gpu")

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": KiB,
    "m": 1000**2, "mb": 1000**2, "mib": MiB,
    "g": 1000**3, "gb": 1000**3, "gib": GiB,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any, *, key: str = "size", source: str | None = None) -> int:
    """Parse a byte size: an int (bytes) or a string such as ``"1500MiB"``, ``"4GiB"``, ``"512MB"``.

    Raises :class:`ConfigError` naming ``key`` for negative, non-numeric or unknown-unit values.
    """
    if isinstance(value, bool):
        raise ConfigError(f"expected a size, got a boolean {value!r}", source=source, key=key)
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ConfigError(
                f"unparsable size {value!r} (use bytes or e.g. '1500MiB', '4GiB', '512MB')",
                source=source,
                key=key,
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise ConfigError(f"expected a size, got {type(value).__name__} {value!r}", source=source, key=key)
    if n < 0:
        raise ConfigError(f"size must not be negative, got {value!r}", source=source, key=key)
    return n


@dataclass(frozen=True)
class CacheConfig:
    """Bounds of the frame cache: at most ``max_entries`` URIs and ``max_bytes`` bytes (host + device)."""

    max_entries: int = 256
    max_bytes: int = 1500 * MiB


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

    format: str = "auto"
    jpeg_quality: int = 90
    size: tuple[int, int] | None = None
    png_compress_level: int = 1


@dataclass(frozen=True)
class Config:
    """A resolved configuration for one GPU (or the CPU path).

    ``gpu`` is the GPU index the config was resolved for (``None``: defaults only) and
    ``source`` the file it came from (``None``: built-in defaults).
    """

    cache: CacheConfig = field(default_factory=CacheConfig)
    staging: StagingConfig = field(default_factory=StagingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    backend: str = "auto"
    batch_size: int = 8
    max_pixels: int = 8192 * 8192
    workers: int | None = None
    gpu: int | None = None
    source: str | None = None
    passthrough_device: str = "cpu"  # GPU backend: where passthrough frames are base64-encoded (cpu | gpu)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (sizes in bytes), e.g. for ``gpupipe info``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "__dataclass_fields__"):
                v = {g.name: (list(getattr(v, g.name)) if isinstance(getattr(v, g.name), tuple) else getattr(v, g.name)) for g in fields(v)}
            out[f.name] = v
        return out


# --------------------------------------------------------------------------- validation

def _check_mapping(obj: Any, key: str, source: str) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise ConfigError(f"expected a mapping, got {type(obj).__name__}", source=source, key=key)
    return obj


def _int(value: Any, key: str, source: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {type(value).__name__} {value!r}", source=source, key=key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"must be {rng}, got {value}", source=source, key=key)
    return value


def _choice(value: Any, key: str, source: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}; got {value!r}", source=source, key=key)
    return value.lower()


def _size_pair(value: Any, key: str, source: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not m:
            raise ConfigError(f"expected [width, height] or 'WxH', got {value!r}", source=source, key=key)
        value = [int(m.group(1)), int(m.group(2))]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"expected [width, height] or null, got {value!r}", source=source, key=key)
    w = _int(value[0], f"{key}[0]", source, lo=1)
    h = _int(value[1], f"{key}[1]", source, lo=1)
    return (w, h)


_SECTION_KEYS = {
    "cache": {"max_entries", "max_bytes"},
    "staging": {"max_bytes", "pinned_bytes"},
    "output": {"format", "jpeg_quality", "size", "png_compress_level"},
}
_SCALAR_KEYS = {"backend", "batch_size", "max_pixels", "workers", "passthrough_device"}


def _apply_section(cfg: Config, data: Mapping[str, Any], prefix: str, source: str) -> Config:
    """Overlay one ``defaults``/``gpus.N`` mapping onto ``cfg``, validating every key."""
    for k in data:
        if k not in _SECTION_KEYS and k not in _SCALAR_KEYS:
            known = ", ".join(sorted(set(_SECTION_KEYS) | _SCALAR_KEYS))
            raise ConfigError(f"unknown key (known: {known})", source=source, key=f"{prefix}{k}")
    if "cache" in data:
        sec = _check_mapping(data["cache"], f"{prefix}cache", source)
        _unknown(sec, "cache", prefix, source)
        c = cfg.cache
        if "max_entries" in sec:
            c = replace(c, max_entries=_int(sec["max_entries"], f"{prefix}cache.max_entries", source, lo=1))
        if "max_bytes" in sec:
            key = f"{prefix}cache.max_bytes"
            c = replace(c, max_bytes=_clamp_cache_bytes(parse_size(sec["max_bytes"], key=key, source=source), key, source))
        cfg = replace(cfg, cache=c)
    if "staging" in data:
        sec = _check_mapping(data["staging"], f"{prefix}staging", source)
        _unknown(sec, "staging", prefix, source)
        s = cfg.staging
        for name in ("max_bytes", "pinned_bytes"):
            if name in sec:
                s = replace(s, **{name: parse_size(sec[name], key=f"{prefix}staging.{name}", source=source)})
        cfg = replace(cfg, staging=s)
    if "output" in data:
        sec = _check_mapping(data["output"], f"{prefix}output", source)
        _unknown(sec, "output", prefix, source)
        o = cfg.output
        if "format" in sec:
            o = replace(o, format=_choice(sec["format"], f"{prefix}output.format", source, OUTPUT_FORMATS))
        if "jpeg_quality" in sec:
            o = replace(o, jpeg_quality=_int(sec["jpeg_quality"], f"{prefix}output.jpeg_quality", source, 1, 100))
        if "size" in sec:
            o = replace(o, size=_size_pair(sec["size"], f"{prefix}output.size", source))
        if "png_compress_level" in sec:
            o = replace(o, png_compress_level=_int(sec["png_compress_level"], f"{prefix}output.png_compress_level", source, 0, 9))
        cfg = replace(cfg, output=o)
    if "backend" in data:
        cfg = replace(cfg, backend=_choice(data["backend"], f"{prefix}backend", source, BACKENDS))
    if "batch_size" in data:
        cfg = replace(cfg, batch_size=_int(data["batch_size"], f"{prefix}batch_size", source, lo=1))
    if "max_pixels" in data:
        cfg = replace(cfg, max_pixels=_int(data["max_pixels"], f"{prefix}max_pixels", source, lo=1))
    if "workers" in data:
        w = data["workers"]
        cfg = replace(cfg, workers=None if w is None else _int(w, f"{prefix}workers", source, lo=1))
    if "passthrough_device" in data:
        dev = _choice(data["passthrough_device"], f"{prefix}passthrough_device", source, PASSTHROUGH_DEVICES)
        cfg = replace(cfg, passthrough_device=dev)
    return cfg


def _unknown(sec: Mapping[str, Any], name: str, prefix: str, source: str) -> None:
    for k in sec:
        if k not in _SECTION_KEYS[name]:
            known = ", ".join(sorted(_SECTION_KEYS[name]))
            raise ConfigError(f"unknown key (known: {known})", source=source, key=f"{prefix}{name}.{k}")


def _clamp_cache_bytes(n: int, key: str, source: str) -> int:
    if n < CACHE_BYTES_FLOOR:
        msg = f"{source}: {key} = {n} bytes is below the floor of {CACHE_BYTES_FLOOR // MiB} MiB; clamped to the floor"
        warnings.warn(msg, stacklevel=4)
        log.warning(msg)
        return CACHE_BYTES_FLOOR
    return n


# --------------------------------------------------------------------------- loading

def _read_yaml(path: Path) -> Mapping[str, Any]:
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", source=src) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file: {e}", source=src) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", source=src) from None
    data = _check_mapping(data, "<top level>", src)
    for k in data:
        if k not in ("defaults", "gpus"):
            raise ConfigError("unknown top-level key (known: defaults, gpus)", source=src, key=str(k))
    return data


def load_config(path: str | os.PathLike[str] | None = None, gpu: int | None = None) -> Config:
    """Load the configuration for ``gpu`` (an index; ``None`` for defaults only).

    ``path`` defaults to ``$GPUPIPE_CONFIG``, else the built-in defaults are used. The
    ``gpus.<gpu>`` section, if present, overrides ``defaults``; environment overrides
    (``GPUPIPE_CACHE_BYTES_MB``, ``GPUPIPE_CACHE_MAX_ENTRIES``, ``GPUPIPE_BACKEND``) apply last.
    Raises :class:`ConfigError` naming the file and key path for any invalid entry.
    """
    cfg = Config(gpu=gpu)
    if path is None:
        path = os.environ.get("GPUPIPE_CONFIG") or None
    if path is not None:
        p = Path(path)
        src = str(p)
        data = _read_yaml(p)
        cfg = replace(cfg, source=src)
        cfg = _apply_section(cfg, _check_mapping(data.get("defaults"), "defaults", src), "defaults.", src)
        gpus = data.get("gpus")
        if gpus is not None:
            gpus = _check_mapping(gpus, "gpus", src)
            per_gpu: dict[int, Mapping[str, Any]] = {}
            for k, v in gpus.items():
                try:
                    idx = int(k)
                    if idx < 0 or isinstance(k, bool):
                        raise ValueError
                except (TypeError, ValueError):
                    raise ConfigError("GPU index must be a non-negative integer", source=src, key=f"gpus.{k}") from None
                per_gpu[idx] = _check_mapping(v, f"gpus.{k}", src)
                # Validate every GPU's section, not just the selected one, so typos surface early.
                _apply_section(cfg, per_gpu[idx], f"gpus.{k}.", src)
            if gpu is not None and gpu in per_gpu:
                cfg = _apply_section(cfg, per_gpu[gpu], f"gpus.{gpu}.", src)
    return _apply_env(cfg)


def _apply_env(cfg: Config) -> Config:
    env = os.environ
    if (v := env.get("GPUPIPE_CACHE_BYTES_MB")) not in (None, ""):
        try:
            mb = float(v)  # type: ignore[arg-type]
            if mb < 0 or mb != mb:
                raise ValueError
        except ValueError:
            raise ConfigError(f"expected a non-negative number of MiB, got {v!r}", source="environment", key="GPUPIPE_CACHE_BYTES_MB") from None
        n = _clamp_cache_bytes(int(mb * MiB), "GPUPIPE_CACHE_BYTES_MB", "environment")
        cfg = replace(cfg, cache=replace(cfg.cache, max_bytes=n))
    if (v := env.get("GPUPIPE_CACHE_MAX_ENTRIES")) not in (None, ""):
        try:
            n = int(v)  # type: ignore[arg-type]
            if n < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"expected a positive integer, got {v!r}", source="environment", key="GPUPIPE_CACHE_MAX_ENTRIES") from None
        cfg = replace(cfg, cache=replace(cfg.cache, max_entries=n))
    if (v := env.get("GPUPIPE_BACKEND")) not in (None, ""):
        cfg = replace(cfg, backend=_choice(v, "GPUPIPE_BACKEND", "environment", BACKENDS))
    return cfg
