"""Allocator tuning: applied once, reported, skippable by environment, and reported as not applied
(with one warning) where it cannot work: another malloc interposed, or glibc's threshold inherited.

The interposed-allocator tests preload Debian's jemalloc (``libjemalloc2``) and tcmalloc
(``libtcmalloc-minimal4``) into a fresh interpreter. Where a library is missing they skip, unless
``ALLOCATORS_REQUIRED=1`` (set by .ci/run, which installs both) makes that a failure.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import platform
import subprocess
import sys
import warnings

import pytest

from gpupipe import memory

REQUIRED = os.environ.get("ALLOCATORS_REQUIRED") == "1"  # read at import: the autouse fixture only clears GPUPIPE_*
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# What a user sees in a fresh process: two encoders and a pipeline start (each asks for the tuning),
# then the encoder's info and stats, the report line, the CLI's report, and the warnings raised.
_PROBE = """
import json, warnings
from gpupipe import FrameCache, FrameEncoder, FramePipeline
from gpupipe.config import Config
from gpupipe.info import environment_report
from gpupipe.memory import allocator_tuning
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    enc = FrameEncoder(Config(), backend="cpu")
    FrameEncoder(Config(), backend="cpu").close()
    FramePipeline(enc, FrameCache(8, 64 << 20))
print(json.dumps({
    "info": enc.info().get("allocator"),
    "stats": enc.counters(),
    "line": allocator_tuning(),
    "report": environment_report(Config())["allocator"],
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "image_blocks_max": __import__("PIL.Image").Image.core.get_blocks_max(),
}))
enc.close()
"""


def _probe(**env: str) -> dict:
    unset = ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "PILLOW_BLOCKS_MAX")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    r = subprocess.run([sys.executable, "-c", _PROBE], check=False, env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _preloadable(*names: str) -> str:
    """The soname of the first of ``names`` the dynamic linker can find (``ldconfig``'s cache)."""
    for name in names:
        if found := ctypes.util.find_library(name):
            return found
    if REQUIRED:
        pytest.fail(f"lib{names[0]} is missing, and ALLOCATORS_REQUIRED=1")
    pytest.skip(f"lib{names[0]} is missing")


def _assert_not_applied(out: dict, allocator: str, why: str) -> None:
    reason = out["line"]  # the line reports print (bench, soak)
    assert reason.startswith("not applied: ") and why in reason, reason
    tuning = [w for w in out["warnings"] if "not applied" in w]
    assert len(tuning) == 1 and tuning[0].startswith("AllocatorTuningWarning: ") and why in tuning[0], out["warnings"]
    assert out["info"] == {"applied": False, "allocator": allocator, "reason": reason}
    assert out["report"] == out["info"]
    assert out["stats"]["allocator_tuned"] == 0


def test_opt_out_by_environment(monkeypatch):
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory, "_warned", False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv("GPUPIPE_MALLOC_TUNE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit opt-out warns about nothing
        assert memory.release_large_allocations() is False
    assert memory.allocator_tuning() == "not applied: GPUPIPE_MALLOC_TUNE=0"
    assert memory.allocator_status().applied is False


@glibc_only
def test_applied_once_on_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert memory.release_large_allocations(1 << 20) is True
    assert memory.release_large_allocations(1 << 22) is True  # idempotent: the first setting stays
    assert memory.allocator_tuning() == "glibc mmap threshold fixed at 1048576 bytes"
    assert memory.allocator_status() == memory.AllocatorStatus(True, "glibc", "glibc mmap threshold fixed at 1048576 bytes")


@glibc_only
def test_glibc_process_reports_the_tuning_applied():
    out = _probe()
    assert out["info"] == {"applied": True, "allocator": "glibc", "reason": f"glibc mmap threshold fixed at {memory.DEFAULT_THRESHOLD} bytes"}
    assert out["stats"]["allocator_tuned"] == 1
    assert not [w for w in out["warnings"] if "allocator" in w.lower()], out["warnings"]
    assert out["image_blocks_max"] == memory.IMAGE_BLOCKS_KEPT  # Pillow reuses freed image blocks


@glibc_only
def test_pillow_blocks_max_from_the_environment_is_left_in_force():
    assert _probe(PILLOW_BLOCKS_MAX="0")["image_blocks_max"] == 0


@glibc_only
@pytest.mark.parametrize(
    ("allocator", "names", "soname_part"),
    [("jemalloc", ("jemalloc",), "libjemalloc.so"), ("tcmalloc", ("tcmalloc_minimal", "tcmalloc"), "libtcmalloc")],
)
def test_interposed_malloc_is_reported_not_applied(allocator, names, soname_part):
    out = _probe(LD_PRELOAD=_preloadable(*names))
    _assert_not_applied(out, allocator, f"malloc is {allocator} ({soname_part}")
    assert "via LD_PRELOAD), not glibc's" in out["line"]


@glibc_only
@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "33554432", "MALLOC_MMAP_THRESHOLD_=33554432 set in the environment"),
        (
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=33554432",
            "glibc.malloc.mmap_threshold=33554432 set in the environment",
        ),
    ],
)
def test_inherited_threshold_is_reported_not_applied(name, value, why):
    _assert_not_applied(_probe(**{name: value}), "glibc", why)


def test_opt_out_process_reports_why_without_a_warning():
    out = _probe(GPUPIPE_MALLOC_TUNE="0")
    assert out["report"] == {"applied": False, "allocator": out["report"]["allocator"], "reason": "not applied: GPUPIPE_MALLOC_TUNE=0"}
    assert out["stats"]["allocator_tuned"] == 0
    assert not [w for w in out["warnings"] if "allocator" in w.lower()], out["warnings"]
    assert out["image_blocks_max"] == 0  # Pillow's default: no image blocks kept


@glibc_only
def test_trims_are_rate_limited_and_only_where_the_tuning_is_applied(monkeypatch):
    calls: list[int] = []

    class FakeLibc:
        def malloc_trim(self, pad):
            calls.append(pad)
            return 1

    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: FakeLibc())
    clock = [1000.0]
    monkeypatch.setattr(memory.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(memory, "_last_trim", -1e9)
    monkeypatch.setattr(memory, "_applied", None)
    assert memory.trim_free_memory() is False and calls == []  # tuning not in force: nothing to do
    monkeypatch.setattr(memory, "_applied", memory.DEFAULT_THRESHOLD)
    assert memory.trim_free_memory() is True and calls == [0]
    clock[0] += memory.TRIM_INTERVAL_S / 2
    assert memory.trim_free_memory() is False and calls == [0]
    clock[0] += memory.TRIM_INTERVAL_S
    assert memory.trim_free_memory() is True and calls == [0, 0]


def test_each_pipeline_load_ends_with_a_trim(monkeypatch, frame_files):
    from gpupipe import FrameCache, FrameEncoder, FramePipeline

    trims: list[int] = []
    monkeypatch.setattr("gpupipe.pipeline.trim_free_memory", lambda: trims.append(1) or True)
    png, jpg = frame_files
    with FramePipeline(FrameEncoder(backend="cpu"), FrameCache(8, 1 << 26)) as pipe:
        pipe.get(png)
        pipe.get(png)  # a hit: no load, no trim
        pipe.get_many([png, jpg])
    assert len(trims) == 2
