"""Config loading: defaults, per-GPU overrides, environment overrides, the floor clamp, every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupipe import load_config
from gpupipe.config import CACHE_BYTES_FLOOR, Config, GiB, MiB, parse_size
from gpupipe.errors import ConfigError, ConfigWarning

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_builtin_defaults():
    c = load_config()
    assert c.cache.max_entries == 256 and c.cache.max_bytes == 1500 * MiB
    assert c.output.format == "auto" and c.output.jpeg_quality == 90 and c.output.size is None
    assert c.backend == "auto" and c.max_pixels == 8192 * 8192 and c.source is None


@pytest.mark.parametrize(
    "text,expected",
    [(0, 0), (123, 123), ("1500MiB", 1500 * MiB), ("4GiB", 4 * GiB), ("512MB", 512_000_000), ("1.5 GiB", int(1.5 * GiB)), ("64kib", 65536), ("10b", 10)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["-5MiB", -1, "lots", "12 parsecs", True, [1], "1e9"])
def test_parse_size_errors_name_the_key(bad):
    with pytest.raises(ConfigError, match="cache.max_bytes"):
        parse_size(bad, key="cache.max_bytes")


def test_per_gpu_override(tmp_path):
    p = write(tmp_path, """
defaults:
  cache: {max_bytes: 2GiB, max_entries: 100}
  output: {jpeg_quality: 80, size: [1280, 720]}
gpus:
  0: {cache: {max_bytes: 6GiB}}
  1:
    cache: {max_entries: 50}
    staging: {max_bytes: 1GiB}
    backend: cpu
""")
    base = load_config(p)
    g0 = load_config(p, gpu=0)
    g1 = load_config(p, gpu=1)
    g7 = load_config(p, gpu=7)
    assert base.cache.max_bytes == 2 * GiB and base.cache.max_entries == 100 and base.source == str(p)
    assert g0.cache.max_bytes == 6 * GiB and g0.cache.max_entries == 100 and g0.gpu == 0
    assert g1.cache.max_bytes == 2 * GiB and g1.cache.max_entries == 50
    assert g1.staging.max_bytes == 1 * GiB and g1.backend == "cpu"
    assert g7 == load_config(p, gpu=7) and g7.cache.max_bytes == 2 * GiB
    assert g0.output.size == (1280, 720) and g0.output.jpeg_quality == 80


def test_env_overrides(tmp_path, monkeypatch):
    p = write(tmp_path, "defaults: {cache: {max_bytes: 2GiB}}\n")
    monkeypatch.setenv("GPUPIPE_CONFIG", str(p))
    assert load_config().cache.max_bytes == 2 * GiB
    monkeypatch.setenv("GPUPIPE_CACHE_BYTES_MB", "700")
    monkeypatch.setenv("GPUPIPE_CACHE_MAX_ENTRIES", "33")
    monkeypatch.setenv("GPUPIPE_BACKEND", "CPU")
    c = load_config()
    assert c.cache.max_bytes == 700 * MiB and c.cache.max_entries == 33 and c.backend == "cpu"


@pytest.mark.parametrize(
    "var,value",
    [("GPUPIPE_CACHE_BYTES_MB", "lots"), ("GPUPIPE_CACHE_BYTES_MB", "-3"), ("GPUPIPE_CACHE_MAX_ENTRIES", "0"),
     ("GPUPIPE_CACHE_MAX_ENTRIES", "x"), ("GPUPIPE_BACKEND", "tpu")],
)
def test_bad_env_values(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_config()


def test_floor_clamp_warns(tmp_path, monkeypatch):
    p = write(tmp_path, "defaults: {cache: {max_bytes: 1MiB}}\n")
    with pytest.warns(ConfigWarning, match="floor"):
        assert load_config(p).cache.max_bytes == CACHE_BYTES_FLOOR
    monkeypatch.setenv("GPUPIPE_CACHE_BYTES_MB", "10")
    with pytest.warns(ConfigWarning, match="GPUPIPE_CACHE_BYTES_MB"):
        assert load_config().cache.max_bytes == CACHE_BYTES_FLOOR


@pytest.mark.parametrize(
    "text,key",
    [
        ("defaults: {cache: {max_bytes: -1}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: huge}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_entries: 0}}", "defaults.cache.max_entries"),
        ("defaults: {cache: {max_entries: '5'}}", "defaults.cache.max_entries"),
        ("defaults: {cache: {max_entires: 5}}", "defaults.cache.max_entires"),
        ("defaults: {cache: 5}", "defaults.cache"),
        ("defaults: {colour: red}", "defaults.colour"),
        ("defaults: {output: {format: webp}}", "defaults.output.format"),
        ("defaults: {output: {jpeg_quality: 101}}", "defaults.output.jpeg_quality"),
        ("defaults: {output: {size: [1280]}}", "defaults.output.size"),
        ("defaults: {output: {size: [0, 720]}}", "defaults.output.size[0]"),
        ("defaults: {backend: tpu}", "defaults.backend"),
        ("defaults: {batch_size: 0}", "defaults.batch_size"),
        ("defaults: {staging: {pinned_bytes: -2}}", "defaults.staging.pinned_bytes"),
        ("gpus: {1: {cache: {max_bytes: nope}}}", "gpus.1.cache.max_bytes"),
        ("gpus: {first: {}}", "gpus.first"),
        ("gpus: [1, 2]", "gpus"),
        ("extras: 1", "extras"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.key == key and str(p) in str(ei.value) and key in str(ei.value)


def test_error_in_another_gpus_section_is_reported(tmp_path):
    p = write(tmp_path, "gpus: {0: {}, 3: {cache: {max_bytes: '12 parsecs'}}}")
    with pytest.raises(ConfigError, match="gpus.3.cache.max_bytes"):
        load_config(p, gpu=0)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "defaults: {cache: [unclosed"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a list\n- at the top\n"))


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "")).cache.max_bytes == 1500 * MiB


@pytest.mark.parametrize("name", ["default.yaml", "h100-4k.yaml"])
def test_shipped_configs_load(name):
    path = ROOT / "configs" / name
    for gpu in (None, 0, 1):
        c = load_config(path, gpu)
        assert c.cache.max_bytes >= CACHE_BYTES_FLOOR


def test_shipped_two_gpu_example_differs_per_gpu():
    path = ROOT / "configs" / "h100-4k.yaml"
    assert load_config(path, 0).cache.max_bytes != load_config(path, 1).cache.max_bytes


def test_admission_timeout_and_max_source_bytes(tmp_path):
    c = load_config()
    assert c.cache.admission_timeout == 60.0 and c.max_source_bytes is None
    p = write(tmp_path, """
defaults:
  cache: {admission_timeout: 5}
  max_source_bytes: 64MiB
gpus:
  1: {cache: {admission_timeout: 0.25}, max_source_bytes: null}
  2: {max_source_bytes: 1000}
""")
    g0, g1, g2 = (load_config(p, gpu=g) for g in (0, 1, 2))
    assert g0.cache.admission_timeout == 5.0 and isinstance(g0.cache.admission_timeout, float)
    assert g0.max_source_bytes == 64 * MiB
    assert g1.cache.admission_timeout == 0.25 and g1.max_source_bytes is None
    assert g2.cache.admission_timeout == 5.0 and g2.max_source_bytes == 1000
    d = g0.to_dict()
    assert d["cache"]["admission_timeout"] == 5.0 and d["max_source_bytes"] == 64 * MiB


def test_shipped_default_yaml_matches_builtin_defaults():
    path = ROOT / "configs" / "default.yaml"
    assert load_config(path) == Config(source=str(path))


def test_every_environment_variable_is_declared_and_documented():
    import re

    from gpupipe.env import ENV_VARS

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(GPUPIPE_[A-Z_]+)` \|", readme, re.M))
    assert documented == set(ENV_VARS)
    code = "\n".join(p.read_text() for p in (ROOT / "gpupipe").rglob("*.py") if p.name != "env.py")
    assert not re.search(r"environ(\.get)?\(?\[?[\"']GPUPIPE_", code), "read GPUPIPE_* variables through gpupipe.env.env()"
    assert set(re.findall(r"env\(\"(GPUPIPE_[A-Z_]+)\"\)", code)) == set(ENV_VARS)


def test_cache_max_bytes_env_uses_the_yaml_units(monkeypatch):
    monkeypatch.setenv("GPUPIPE_CACHE_MAX_BYTES", "512MB")
    assert load_config().cache.max_bytes == 512_000_000
    monkeypatch.setenv("GPUPIPE_CACHE_BYTES_MB", "100")  # MiB, but the size string wins
    assert load_config().cache.max_bytes == 512_000_000
    monkeypatch.delenv("GPUPIPE_CACHE_MAX_BYTES")
    assert load_config().cache.max_bytes == 100 * MiB
    monkeypatch.setenv("GPUPIPE_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="GPUPIPE_CACHE_MAX_BYTES"):
        load_config()


@pytest.mark.parametrize(
    "text, path",
    [
        ("cache:\n  max_bytes: 2GiB\n", "defaults.cache.max_bytes"),
        ("cache: {}\n", "defaults.cache"),
        ("backend: cpu\n", "defaults.backend"),
        ("defaults: {}\noutput: {format: jpeg}\n", "defaults.output.format"),
    ],
)
def test_a_setting_at_the_top_level_is_told_where_it_belongs(tmp_path, text, path):
    """A top-level ``cache:`` (the README's tables name keys such as ``cache.max_bytes``) is
    refused with the nesting it needs and the exact path it would have there."""
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    msg = str(exc.value)
    assert "put it under defaults: (or gpus: N:" in msg and msg.endswith(f"as {path}"), msg
    assert exc.value.key == path.split(".")[1]


def test_an_unknown_top_level_key_names_the_two_sections(tmp_path):
    with pytest.raises(ConfigError, match="the top level holds only defaults: and gpus:") as exc:
        load_config(write(tmp_path, "defualts: {}\n"))
    assert exc.value.key == "defualts"


def test_the_readme_shows_the_nesting_and_its_example_loads(tmp_path):
    """The README's configuration section has a YAML example of ``defaults:`` and ``gpus: N:``;
    it loads, and the keys it annotates resolve where it says."""
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, re.S | re.M)
    assert blocks, "no YAML example in the README's configuration section"
    p = write(tmp_path, blocks[0])
    assert load_config(p).cache.max_bytes == 1500 * MiB and load_config(p, gpu=1).cache.max_bytes == 4 * GiB
    assert "defaults.cache.max_bytes" in blocks[0]


def test_gpu_path_section_is_validated_and_becomes_dali_arguments(tmp_path):
    from gpupipe.config import GpuPathConfig

    assert GpuPathConfig().dali_decoder_args() == {}  # DALI's own defaults until measured
    p = tmp_path / "c.yaml"
    p.write_text(
        "defaults:\n  gpu_path: {string_threads: 3, hw_decoder_load: 1, preallocate_width_hint: 3840,"
        " preallocate_height_hint: 2160, hybrid_huffman_threshold: 0}\n"
    )
    g = load_config(p).gpu_path
    assert g.host_string_threads() == 3
    assert g.dali_decoder_args() == {
        "hw_decoder_load": 1.0,
        "preallocate_width_hint": 3840,
        "preallocate_height_hint": 2160,
        "hybrid_huffman_threshold": 0,
    }
    for bad, key in [
        ("hw_decoder_load: 1.5", "hw_decoder_load"),
        ("hw_decoder_load: .nan", "hw_decoder_load"),
        ("hw_decoder_load: high", "hw_decoder_load"),
        ("string_threads: 0", "string_threads"),
        ("preallocate_width_hint: -1", "preallocate_width_hint"),
        ("hw_decoder_lod: 1", "hw_decoder_lod"),
    ]:
        p.write_text(f"defaults:\n  gpu_path: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=key):
            load_config(p)
