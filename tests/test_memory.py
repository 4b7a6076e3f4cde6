"""Allocator tuning: applied once, reported, and skippable by environment."""

from __future__ import annotations

import platform

import pytest

from gpupipe import memory


def test_opt_out_by_environment(monkeypatch):
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setenv("GPUPIPE_MALLOC_TUNE", "0")
    assert memory.release_large_allocations() is False
    assert memory.allocator_tuning() == "allocator defaults"
    monkeypatch.delenv("GPUPIPE_MALLOC_TUNE")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4096")
    assert memory.release_large_allocations() is False
    assert "environment" in memory.allocator_tuning()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_once_on_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert memory.release_large_allocations(1 << 20) is True
    assert memory.release_large_allocations(1 << 22) is True  # idempotent: the first setting stays
    assert memory.allocator_tuning() == "glibc mmap threshold fixed at 1048576 bytes"
