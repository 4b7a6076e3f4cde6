"""Config loading on hostile input: every bad file, value or environment variable is a bounded ConfigError, fast.

Non-regular paths (FIFO, devices, directories, sockets), oversized files, overflowing and
non-finite numbers, deep nesting, duplicate keys, alias bombs, and a fuzzer asserting that
:func:`load_config` returns a :class:`Config` or raises :class:`ConfigError`, nothing else.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import gpupipe.config as config_mod
from gpupipe import load_config
from gpupipe.config import Config, MiB, parse_size
from gpupipe.errors import ConfigError

PiB = 1024**5
MAX_MESSAGE = 1000  # characters of a message beyond the file's path


def write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "cfg.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def load_error(path: Path, gpu: int | None = None) -> ConfigError:
    """The ConfigError loading ``path`` raises; fails the test if it returns or raises anything else."""
    with pytest.raises(ConfigError) as ei:
        load_config(path, gpu)
    assert len(str(ei.value)) <= len(str(path)) + MAX_MESSAGE, str(ei.value)[:2000]
    return ei.value


def alias_bomb(levels: int = 9) -> list[str]:
    """Anchor definitions of the 'billion laughs' pattern: level i is a list of 9 references to level i-1 (9**levels leaves)."""
    names = [f"l{i}" for i in range(levels)]
    out = [f"&{names[0]} [x, x, x, x, x, x, x, x, x]"]
    out += [f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, levels)]
    return out


# --------------------------------------------------------------------------- the file itself

def _special_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "dir"
    directory.mkdir()
    paths = {"fifo": fifo, "directory": directory, "dev-zero": Path("/dev/zero"), "dev-urandom": Path("/dev/urandom")}
    for name, target in list(paths.items()):
        link = tmp_path / f"link-to-{name}"
        link.symlink_to(target)
        paths[f"symlink-to-{name}"] = link
    return paths


@pytest.mark.timeout(30)  # a blocking open or read of the FIFO would hang here
@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "dev-urandom", "symlink-to-fifo", "symlink-to-directory",
                                  "symlink-to-dev-zero", "symlink-to-dev-urandom"])
@pytest.mark.parametrize("via_env", [False, True])
def test_non_regular_paths_are_refused_at_once(tmp_path, monkeypatch, kind, via_env):
    path = _special_paths(tmp_path)[kind]
    if via_env:
        monkeypatch.setenv("GPUPIPE_CONFIG", str(path))
    with pytest.raises(ConfigError, match="not a regular file") as ei:
        load_config(None if via_env else path)
    assert str(path) in str(ei.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "symlink-to-dev-urandom", "directory"])
def test_non_regular_paths_are_never_opened(tmp_path, monkeypatch, kind):
    """The config file goes through the frames' reader (gpupipe.frames.files): a device node or
    FIFO is refused from its stat, never opened (opening a device can have effects of its own)."""
    path = _special_paths(tmp_path)[kind]
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(os.fspath(p)) or real_open(p, *a, **k))
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(path)
    assert opened == []


@pytest.mark.timeout(30)
def test_socket_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative path: AF_UNIX paths are limited to ~100 bytes
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("sock")
        err = load_error(Path("sock"))
        assert "socket" in str(err) and "sock" in str(err)
        Path("link").symlink_to("sock")
        assert "socket" in str(load_error(Path("link")))


def test_file_over_one_mib_is_refused_before_reading(tmp_path):
    err = load_error(write(tmp_path, b"#" * (MiB + 1)))
    assert "larger than 1 MiB" in str(err) and str(MiB + 1) in str(err)


def test_file_of_exactly_one_mib_is_read_whole(tmp_path):
    # The last byte is invalid UTF-8: the error proves all 1 MiB was read rather than refused.
    err = load_error(write(tmp_path, b"#" * (MiB - 1) + b"\xff"))
    assert "not UTF-8" in str(err) and f"byte {MiB - 1}" in str(err)


def test_file_that_grows_while_read_is_refused_and_read_bounded(tmp_path, monkeypatch):
    """A file whose fstat size is small but which has more bytes (it grew): at most 1 MiB + 1 bytes are read."""
    p = write(tmp_path, b"#" * (3 * MiB))
    real_fstat, real_read = os.fstat, os.read
    total = 0

    def small_fstat(fd):
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 10,
                               int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    def counting_read(fd, n):
        nonlocal total
        data = real_read(fd, n)
        total += len(data)
        return data

    monkeypatch.setattr(config_mod.os, "fstat", small_fstat)
    monkeypatch.setattr(config_mod.os, "read", counting_read)
    err = load_error(p)
    assert "grew" in str(err) and total == MiB + 1


@pytest.mark.parametrize("text", ["\x00", "defaults: {backend: \x01}", "a: \x7f\n"])
def test_non_printable_characters_are_a_config_error(tmp_path, text):
    assert "invalid YAML" in str(load_error(write(tmp_path, text)))


def test_invalid_utf8_is_a_config_error(tmp_path):
    err = load_error(write(tmp_path, b"defaults: {backend: \xc3\x28}\n"))
    assert "not UTF-8" in str(err)


def test_nul_in_path_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("cfg\0.yaml")


# --------------------------------------------------------------------------- values

HUGE_DEC = "9" * 5000  # more digits than Python converts to int by default
HUGE_BIN = "0b" + "1" * 20000
BOMB_VALUE = "[" + ", ".join(alias_bomb()) + "]"  # one flow value holding the whole bomb: 9**9 leaves when expanded


@pytest.mark.parametrize(
    "text,key",
    [
        # sizes: above 1 PiB, non-finite, overflowing
        ("defaults: {cache: {max_bytes: 1025TiB}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: 1.0e+300}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: .inf}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: -.inf}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: .nan}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: 1e400}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: '1e400'}}", "defaults.cache.max_bytes"),
        (f"defaults: {{cache: {{max_bytes: '{HUGE_DEC}GiB'}}}}", "defaults.cache.max_bytes"),
        (f"defaults: {{cache: {{max_bytes: {HUGE_DEC}}}}}", "defaults.cache.max_bytes"),
        (f"defaults: {{cache: {{max_bytes: {HUGE_BIN}}}}}", "defaults.cache.max_bytes"),
        ("defaults: {cache: {max_bytes: '1" + " " * 50000 + "!'}}", "defaults.cache.max_bytes"),
        ("defaults: {staging: {pinned_bytes: .inf}}", "defaults.staging.pinned_bytes"),
        ("gpus: {1: {staging: {max_bytes: 2048TiB}}}", "gpus.1.staging.max_bytes"),
        # integer keys above their maxima
        ("defaults: {cache: {max_entries: 10000001}}", "defaults.cache.max_entries"),
        (f"defaults: {{cache: {{max_entries: {HUGE_BIN}}}}}", "defaults.cache.max_entries"),
        ("defaults: {batch_size: 4097}", "defaults.batch_size"),
        ("gpus: {1: {batch_size: 100000}}", "gpus.1.batch_size"),
        ("defaults: {workers: 4097}", "defaults.workers"),
        ("defaults: {max_pixels: 2147483649}", "defaults.max_pixels"),
        ("defaults: {output: {size: [65536, 720]}}", "defaults.output.size[0]"),
        (f"defaults: {{output: {{size: '{HUGE_DEC}x1'}}}}", "defaults.output.size"),
        ("defaults: {output: {jpeg_quality: .inf}}", "defaults.output.jpeg_quality"),
        # scalars Python cannot build
        ("defaults: {backend: 2020-99-99}", "defaults.backend"),
        ("defaults: {backend: 2001-12-14t21:59:43.10-99:00}", "defaults.backend"),
        (f"defaults: {{batch_size: {HUGE_DEC}}}", "defaults.batch_size"),
        # the new keys
        ("defaults: {cache: {admission_timeout: 0}}", "defaults.cache.admission_timeout"),
        ("defaults: {cache: {admission_timeout: -1.5}}", "defaults.cache.admission_timeout"),
        ("defaults: {cache: {admission_timeout: .inf}}", "defaults.cache.admission_timeout"),
        ("defaults: {cache: {admission_timeout: .nan}}", "defaults.cache.admission_timeout"),
        ("defaults: {cache: {admission_timeout: 86401}}", "defaults.cache.admission_timeout"),
        ("defaults: {cache: {admission_timeout: '60'}}", "defaults.cache.admission_timeout"),
        ("defaults: {cache: {admission_timeout: true}}", "defaults.cache.admission_timeout"),
        ("gpus: {0: {cache: {admission_timeout: 1e400}}}", "gpus.0.cache.admission_timeout"),
        ("defaults: {max_source_bytes: 0}", "defaults.max_source_bytes"),
        ("defaults: {max_source_bytes: -1}", "defaults.max_source_bytes"),
        ("defaults: {max_source_bytes: .inf}", "defaults.max_source_bytes"),
        ("defaults: {max_source_bytes: lots}", "defaults.max_source_bytes"),
        ("gpus: {2: {max_source_bytes: 2048TiB}}", "gpus.2.max_source_bytes"),
        # alias bombs and long values: the message stays short
        (f"defaults: {{cache: {{max_bytes: {BOMB_VALUE}}}}}", "defaults.cache.max_bytes"),
        (f"defaults: {{batch_size: {BOMB_VALUE}}}", "defaults.batch_size"),
        (f"defaults: {{backend: {BOMB_VALUE}}}", "defaults.backend"),
        (f"defaults: {{output: {{size: {BOMB_VALUE}}}}}", "defaults.output.size"),
        (f"defaults: {{cache: {{admission_timeout: {BOMB_VALUE}}}}}", "defaults.cache.admission_timeout"),
        (f"defaults: {{max_source_bytes: {BOMB_VALUE}}}", "defaults.max_source_bytes"),
        (f"defaults: {{colour: {BOMB_VALUE}}}", "defaults.colour"),
        (f"gpus: {{0: {BOMB_VALUE}}}", "gpus.0"),
        ("defaults: {backend: '" + "x" * 200000 + "'}", "defaults.backend"),
        ("defaults: {cache: {max_bytes: '" + "x" * 200000 + "'}}", "defaults.cache.max_bytes"),
        ("defaults: {batch_size: &r [*r, *r]}", "defaults.batch_size"),
    ],
)
def test_malformed_values_name_file_and_key(tmp_path, text, key):
    p = write(tmp_path, text)
    err = load_error(p)
    assert err.key == key and str(p) in str(err) and key in str(err)


@pytest.mark.parametrize(
    "text,check",
    [
        ("defaults: {cache: {max_bytes: 1024TiB}}", lambda c: c.cache.max_bytes == PiB),
        ("defaults: {cache: {max_entries: 10000000}}", lambda c: c.cache.max_entries == 10**7),
        ("defaults: {cache: {admission_timeout: 86400}}", lambda c: c.cache.admission_timeout == 86400.0),
        ("defaults: {cache: {admission_timeout: 0.001}}", lambda c: c.cache.admission_timeout == 0.001),
        ("defaults: {batch_size: 4096, workers: 4096}", lambda c: c.batch_size == 4096 and c.workers == 4096),
        ("defaults: {max_pixels: 2147483648}", lambda c: c.max_pixels == 2**31),
        ("defaults: {output: {size: [65535, 65535]}}", lambda c: c.output.size == (65535, 65535)),
        ("defaults: {max_source_bytes: 1024TiB}", lambda c: c.max_source_bytes == PiB),
        ("defaults: {max_source_bytes: 1}", lambda c: c.max_source_bytes == 1),
        ("gpus: {1023: {batch_size: 3}}", lambda c: c.batch_size == 8),
    ],
)
def test_maxima_are_inclusive(tmp_path, text, check):
    assert check(load_config(write(tmp_path, text), gpu=0))


def test_alias_bomb_file_fails_fast_with_a_short_message(tmp_path):
    """The "billion laughs" value (441 bytes, 9**9 leaves when expanded) under a known key."""
    lines = ["defaults:", f"  cache: {{max_bytes: {BOMB_VALUE}}}"]
    p = write(tmp_path, "\n".join(lines))
    err = load_error(p)
    assert err.key == "defaults.cache.max_bytes" and "..." in str(err)


def test_top_level_alias_bomb(tmp_path):
    """The classic layout: one top-level key per level, level i a list of 9 references to level i - 1."""
    names = "abcdefghi"
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "\n".join(
        f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, 9))
    assert len(text) < 500
    assert load_error(write(tmp_path, text)).key == "a"
    gpus = "gpus:\n  0:\n    " + text.replace("\n", "\n    ")
    assert load_error(write(tmp_path, gpus)).key == "gpus.0.a"


def test_huge_integer_is_shown_by_its_size(tmp_path):
    err = load_error(write(tmp_path, f"defaults: {{batch_size: {HUGE_BIN}}}"))
    assert "20000-bit integer" in str(err)


@pytest.mark.parametrize(
    "text,key_prefix",
    [
        ("a: " + "[" * 5000 + "]" * 5000, "a.0.0.0"),
        ("a: " + "{a: " * 5000 + "1" + "}" * 5000, "a.a.a"),
        ("defaults:\n" + "".join("  " * (i + 1) + "a:\n" for i in range(200)), "defaults.a.a"),
        ("defaults: {cache: {max_bytes: " + "[" * 2000 + "]" * 2000 + "}}", "defaults.cache.max_bytes.0.0"),
    ],
)
def test_nesting_too_deep(tmp_path, text, key_prefix):
    err = load_error(write(tmp_path, text))
    assert "nested deeper than" in str(err) and err.key.startswith(key_prefix)


def test_nesting_within_the_limit_reaches_validation(tmp_path):
    err = load_error(write(tmp_path, "defaults: {cache: {max_bytes: " + "[" * 25 + "]" * 25 + "}}"))
    assert err.key == "defaults.cache.max_bytes" and "expected a size" in str(err)


def test_too_many_nodes(tmp_path):
    err = load_error(write(tmp_path, "defaults: {colour: [" + ", ".join(["1"] * 20000) + "]}"))
    assert "YAML nodes" in str(err) and err.key.startswith("defaults.colour.")


@pytest.mark.parametrize(
    "text,key",
    [
        ("defaults: {}\ndefaults: {}\n", "defaults"),
        ("defaults:\n  cache: {max_bytes: 1GiB}\n  cache: {max_entries: 3}\n", "defaults.cache"),
        ("defaults: {cache: {max_bytes: 1GiB, max_bytes: 2GiB}}", "defaults.cache.max_bytes"),
        ("gpus:\n  1:\n    batch_size: 3\n    batch_size: 4\n", "gpus.1.batch_size"),
        ("gpus:\n  1: {}\n  1: {}\n", "gpus.1"),
        ("gpus:\n  1: {}\n  0x1: {}\n", "gpus.1"),
        ("gpus:\n  1: {}\n  '1': {}\n", "gpus.1"),
        ("gpus:\n  '1': {}\n  1: {}\n", "gpus.1"),
        ("gpus:\n  '01': {}\n  1: {}\n", "gpus.1"),
        ("gpus:\n  3: {output: {format: png, format: jpeg}}\n", "gpus.3.output.format"),
    ],
)
def test_duplicate_keys(tmp_path, text, key):
    err = load_error(write(tmp_path, text))
    assert err.key == key and ("duplicate" in str(err) or "twice" in str(err))


def test_merge_key_override_is_not_a_duplicate(tmp_path):
    p = write(tmp_path, "gpus:\n  0: &g {batch_size: 3, workers: 2}\n  1: {<<: *g, batch_size: 5}\n")
    c = load_config(p, gpu=1)
    assert c.batch_size == 5 and c.workers == 2


@pytest.mark.parametrize("bad", ["1.5", "true", "-1", "first", "1024", "'-1'", "'1.5'", "' 1'", "null"])
def test_gpu_keys_must_be_non_negative_integers(tmp_path, bad):
    p = write(tmp_path, f"gpus:\n  ? {bad}\n  : {{batch_size: 2}}\n")
    err = load_error(p, gpu=1)
    assert err.key.startswith("gpus.") and "GPU index" in str(err)


def test_gpu_key_as_digit_string_selects_that_gpu(tmp_path):
    p = write(tmp_path, "gpus: {'1': {batch_size: 2}, 0x2: {batch_size: 3}}")
    assert load_config(p, gpu=1).batch_size == 2 and load_config(p, gpu=2).batch_size == 3
    assert load_config(p, gpu=0).batch_size == 8


@pytest.mark.parametrize("text", ["a: *" + "x" * 100000, "a: !" + "x" * 100000 + " 1", "{" + "k" * 100000 + ": 1}"])
def test_yaml_errors_quoting_the_document_are_bounded(tmp_path, text):
    assert "invalid YAML" in str(load_error(write(tmp_path, text)))


# --------------------------------------------------------------------------- environment

@pytest.mark.parametrize(
    "var,value",
    [
        ("GPUPIPE_CACHE_BYTES_MB", "inf"),
        ("GPUPIPE_CACHE_BYTES_MB", "-inf"),
        ("GPUPIPE_CACHE_BYTES_MB", "nan"),
        ("GPUPIPE_CACHE_BYTES_MB", "1e400"),
        ("GPUPIPE_CACHE_BYTES_MB", "1e300"),
        ("GPUPIPE_CACHE_BYTES_MB", str(1024**3 + 1)),
        ("GPUPIPE_CACHE_BYTES_MB", "9" * 100000),
        ("GPUPIPE_CACHE_MAX_ENTRIES", "10000001"),
        ("GPUPIPE_CACHE_MAX_ENTRIES", "9" * 100000),
        ("GPUPIPE_BACKEND", "x" * 100000),
    ],
)
def test_bad_env_values_are_bounded(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as ei:
        load_config()
    assert ei.value.key == var and len(str(ei.value)) < 400


def test_env_maxima_are_inclusive(monkeypatch):
    monkeypatch.setenv("GPUPIPE_CACHE_BYTES_MB", str(1024**3))
    monkeypatch.setenv("GPUPIPE_CACHE_MAX_ENTRIES", str(10**7))
    c = load_config()
    assert c.cache.max_bytes == PiB and c.cache.max_entries == 10**7


# --------------------------------------------------------------------------- parse_size

@pytest.mark.parametrize("bad", [PiB + 1, float(2 * PiB), 1e300, float("inf"), float("nan"), "1025TiB", "9" * 5000, "1" + " " * 100000 + "!"])
def test_parse_size_bounds(bad):
    with pytest.raises(ConfigError, match="cache.max_bytes") as ei:
        parse_size(bad, key="cache.max_bytes")
    assert len(str(ei.value)) < 400


def test_parse_size_accepts_one_pib():
    assert parse_size("1024TiB") == parse_size(PiB) == parse_size(float(PiB)) == PiB


# --------------------------------------------------------------------------- fuzzing

SCALARS = [
    "0", "1", "-1", "8", "90", "256", "4096", "4097", "1.5", "0.001", "60", "86401", "1e400", "1.0e+300", ".inf", "-.inf",
    ".nan", "'1'", "'0'", "true", "false", "null", "~", "1500MiB", "4GiB", "2048TiB", "'1e400'", "64kib", "1_000", "0x1F",
    "0o17", "0b101", "1:30", "2001-12-14", "auto", "gpu", "cpu", "jpeg", "png",
    "passthrough", "1280x720", "'99999x1'", "!!binary aGVsbG8=", "!!set {a, b}", "!!str 5", "!!int x", "!!float 1",
    "!!python/object:os.system x", "'x'", '"\\x00"', "*a0", "*a1", "*nope", "99999999999999999999999999999",
]
NASTY = ["2020-99-99", "2001-12-14t21:59:43.10-99:00", "9" * 4400, "0b" + "1" * 3000, "1e400", ".inf", ".nan", "*a0"]
KEYS = [
    "defaults", "gpus", "cache", "staging", "output", "max_entries", "max_bytes", "admission_timeout", "pinned_bytes", "format",
    "jpeg_quality", "size", "png_compress_level", "backend", "batch_size", "max_pixels", "max_source_bytes", "workers", "0", "1",
    "'1'", "1.5", "-1", "true", "null", "x", "<<", "? [1, 2]",
]
SECTION_KEYS = {"cache": ["max_entries", "max_bytes", "admission_timeout"], "staging": ["max_bytes", "pinned_bytes"],
                "output": ["format", "jpeg_quality", "size", "png_compress_level"]}
TOP_KEYS = ["backend", "batch_size", "max_pixels", "max_source_bytes", "workers"]


def flow_map(keys, values, max_size=5):
    return st.lists(st.tuples(keys, values), max_size=max_size).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}")


def deep(n: int, kind: str) -> str:
    return "[" * n + "]" * n if kind == "list" else "{a: " * n + "1" + "}" * n


scalar = (st.sampled_from(SCALARS) | st.sampled_from(NASTY) | st.integers(-(2**70), 2**70).map(str)
          | st.floats(allow_nan=True, allow_infinity=True).map(repr))
leaf = (scalar
        | st.builds(deep, st.integers(0, 60), st.sampled_from(["list", "map"]))
        | st.integers(1, 9).map(lambda n: "[" + ", ".join(alias_bomb(n)) + "]"))
tree = st.recursive(
    leaf,
    lambda c: (st.lists(c, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]")
               | flow_map(st.sampled_from(KEYS), c)
               | st.tuples(st.integers(0, 2), c).map(lambda t: f"&a{t[0]} {t[1]}")),
    max_leaves=20,
)
value = scalar | leaf | tree
section = st.one_of(*[flow_map(st.sampled_from(keys) | st.sampled_from(KEYS), value).map(lambda m, s=s: f"{s}: {m}")
                      for s, keys in SECTION_KEYS.items()])
setting = st.tuples(st.sampled_from(TOP_KEYS) | st.sampled_from(KEYS), value).map(lambda kv: f"{kv[0]}: {kv[1]}") | section
section_body = st.lists(setting, max_size=5).map(lambda xs: "{" + ", ".join(xs) + "}")
structured = st.tuples(
    section_body,
    flow_map(st.sampled_from(["0", "1", "'1'", "2", "1.5", "-1", "true", "0x1", "1024", "x"]), section_body | value, max_size=3),
    st.lists(st.tuples(st.sampled_from(KEYS), value), max_size=2),
).map(lambda t: f"defaults: {t[0]}\ngpus: {t[1]}\n" + "".join(f"{k}: {v}\n" for k, v in t[2]))
TOKENS = list("{}[]:,-&*!|>'\"#%@?<=~ \n\t.0123456789abcxyzeE_") + [
    "defaults:", "gpus:", "\n  cache: ", "max_bytes: ", "batch_size: ", "1500MiB", ".inf", ".nan", "&a ", "*a ", "<<: ",
    "!!binary ", "!!set ", "!!python/object ", "\n  ", "\n    ", "%YAML 1.1\n", "---\n", "...\n", "\xff", "\u2028", "\x00", "\x01", "\x1b", "\x7f", "\ufeff",
]
random_text = st.lists(st.sampled_from(TOKENS), max_size=120).map("".join)
document = structured | random_text | st.text(max_size=100) | st.binary(max_size=200) | tree


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=document, gpu=st.sampled_from([None, 0, 1]))
def test_fuzz_load_config_returns_config_or_raises_config_error(tmp_path_factory, doc, gpu):
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # floor-clamp warnings
        try:
            cfg = load_config(path, gpu)
        except ConfigError as e:
            event("ConfigError")
            assert len(str(e)) <= len(str(path)) + MAX_MESSAGE, str(e)[:2000]
        else:
            event("Config")
            assert isinstance(cfg, Config) and cfg.gpu == gpu and cfg.cache.max_bytes <= PiB

