"""FramePipeline: cache keys, resolver short-circuit, batch path, failures leave the cache exact."""

from __future__ import annotations

import os
import threading

import pytest

from gpupipe import FrameCache, FrameEncoder, FramePipeline, open_pipeline
from gpupipe.config import MiB
from gpupipe.errors import FrameDecodeError, FrameNotFound


@pytest.fixture
def enc():
    with FrameEncoder(backend="cpu") as e:
        yield e


def exact(cache: FrameCache) -> None:
    s = cache.stats()
    assert s.bytes == sum(len(cache.peek(k)) for k in cache.keys())
    assert s.entries == len(cache.keys()) and s.bytes <= s.max_bytes and s.inflight_bytes == 0


def test_hits_after_first_load(enc, frame_files):
    p, j = frame_files
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    a = pipe.get(p)
    assert pipe.get(p) is a and pipe.get(str(p)) is a
    s = pipe.stats()
    assert (s.hits, s.misses, s.loads, s.entries) == (2, 1, 1, 1)
    exact(pipe.cache)


def test_output_settings_are_part_of_the_key(enc, frame_files):
    p, _ = frame_files
    cache = FrameCache(10, 64 * MiB)
    full = FramePipeline(enc, cache).get(p)
    small = FramePipeline(enc, cache, size=(160, 90)).get(p)
    assert full != small and len(cache) == 2


def test_rewritten_file_is_not_served_stale(enc, tmp_path, png_bytes, jpeg_bytes):
    f = tmp_path / "frame.img"
    f.write_bytes(png_bytes)
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    assert pipe.get(f).startswith("data:image/png")
    f.write_bytes(jpeg_bytes)
    os.utime(f, ns=(1, 1))
    assert pipe.get(f).startswith("data:image/jpeg")


def test_bytes_sources_key_on_content(enc, png_bytes):
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    pipe.get(png_bytes)
    pipe.get(bytes(bytearray(png_bytes)))
    assert pipe.stats().hits == 1


def test_resolver_short_circuits(enc, frame_files):
    p, j = frame_files
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB), resolver=lambda s: "data:image/png;base64,AAAA" if str(s) == str(p) else None)
    assert pipe.get(p) == "data:image/png;base64,AAAA"
    s = pipe.stats()
    assert s.hits == s.misses == s.entries == 0
    assert pipe.get(j).startswith("data:image/jpeg")
    assert pipe.stats().entries == 1


def test_failures_are_not_cached_and_accounting_stays_exact(enc, tmp_path, frame_files, png_bytes):
    p, _ = frame_files
    bad = tmp_path / "bad.png"
    bad.write_bytes(png_bytes[:100])
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    pipe.get(p)
    for _ in range(2):
        with pytest.raises(FrameDecodeError, match="bad.png"):
            pipe.get(bad)
        with pytest.raises(FrameNotFound):
            pipe.get(tmp_path / "nope.png")
        exact(pipe.cache)
    s = pipe.stats()
    assert s.entries == 1 and s.load_failures == 4 and s.loads == 5


def test_get_many_batches_misses_and_isolates_failures(enc, tmp_path, frame_files):
    p, j = frame_files
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB), size=(160, 90))
    first = pipe.get(p)
    out = pipe.get_many([p, j, tmp_path / "missing.png", j, p])
    assert out[0] == first and out[4] == first and out[1] == out[3]
    assert isinstance(out[2], FrameNotFound)
    s = pipe.stats()
    assert s.entries == 2
    exact(pipe.cache)


def test_concurrent_requests_load_each_frame_once(enc, frame_files):
    p, j = frame_files
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    outs = []
    threads = [threading.Thread(target=lambda s=s: outs.append(pipe.get(s))) for s in [p, j] * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(outs) == 16 and pipe.stats().loads == 2


def test_open_pipeline_uses_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {cache: {max_entries: 7, max_bytes: 100MiB}}\ngpus: {2: {cache: {max_entries: 3}}}\n")
    with open_pipeline(cfg, backend="cpu") as pipe:
        assert pipe.cache.max_entries == 7 and pipe.cache.max_bytes == 100 * MiB
    with open_pipeline(cfg, gpu=2, backend="cpu") as pipe:
        assert pipe.cache.max_entries == 3


def test_in_memory_frames_are_hashed_once_per_miss(enc, frame_files, monkeypatch):
    """The cache key's digest also names the frame in errors: a miss hashes the data once."""
    import gpupipe.frames.read as frames_read

    calls = []
    real = frames_read._digest
    monkeypatch.setattr(frames_read, "_digest", lambda d: calls.append(len(d)) or real(d))
    p, _ = frame_files
    data = p.read_bytes()
    bad = data[:100]  # truncated: fails after the key is computed
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    assert pipe.get(data).startswith("data:image/")
    assert calls == [len(data)]
    with pytest.raises(FrameDecodeError) as ei:
        pipe.get(bad)
    assert ei.value.frame == f"bytes:{real(bad)[:6].hex()}"
    out = pipe.get_many([bad, data, bad])
    assert isinstance(out[0], FrameDecodeError) and out[0].frame == ei.value.frame and out[1].startswith("data:")
    assert calls == [len(data), len(bad), len(bad), len(data), len(bad)]  # one per key, none for labels
    exact(pipe.cache)


# ---------------------------------------------------------------- admission under load


def test_get_many_shares_loads_across_threads(enc, tmp_path, png_bytes):
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}.png"
        p.write_bytes(png_bytes)
        paths.append(p)
    pipe = FramePipeline(enc, FrameCache(10, 64 * MiB))
    barrier = threading.Barrier(8)
    out = []

    def worker():
        barrier.wait(10)
        out.append(pipe.get_many(paths))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    s = pipe.stats()
    assert len(out) == 8 and all(r == out[0] for r in out) and all(isinstance(u, str) for u in out[0])
    assert s.loads == 4 and s.misses == 4 and s.hits + s.joined == 28
    exact(pipe.cache)


def test_budget_timeout_fails_only_that_frame(enc, frame_files):
    from gpupipe.errors import BudgetTimeout

    p, j = frame_files
    cache = FrameCache(10, 64 * MiB, admission_timeout=0.2)
    pipe = FramePipeline(enc, cache)
    ok = pipe.get(j)  # cached before the budget is taken
    with cache.reserve(64 * MiB - 100_000):  # work in flight elsewhere holds nearly everything
        results = pipe.get_many([p, j])
    assert isinstance(results[0], BudgetTimeout) and results[0].frame == str(p)
    assert results[1] == ok
    assert cache.stats().admission_timeouts == 1 and p not in cache
    assert pipe.get(p).startswith("data:image/png")  # and it succeeds once the budget is free
    exact(cache)


def test_oversize_work_is_returned_uncached_without_evicting(enc, tmp_path, rgb_frame):
    import io

    from PIL import Image

    big = tmp_path / "big.png"
    Image.fromarray(rgb_frame).resize((1280, 720)).save(big, "PNG")
    small = tmp_path / "small.jpg"
    Image.fromarray(rgb_frame).resize((32, 18)).save(small, "JPEG")
    cache = FrameCache(10, 2 * MiB)
    pipe = FramePipeline(enc, cache, output="jpeg")
    pipe.get(small)
    uri = pipe.get(big)  # decoding 1280x720 RGB alone needs more than 2 MiB in flight
    s = cache.stats()
    assert uri.startswith("data:image/jpeg") and len(uri) < 2 * MiB
    assert str(big.resolve()) not in [k.source.name for k in cache.keys()] and s.entries == 1 and s.evictions == 0
    assert s.oversize_rejects == 1 and s.peak_bytes <= 2 * MiB
    Image.open(io.BytesIO(__import__("base64").b64decode(uri.split(",", 1)[1]))).verify()


def test_encoder_alone_tunes_the_allocator(monkeypatch):
    import gpupipe.encoder as encoder_mod

    calls = []
    monkeypatch.setattr(encoder_mod, "release_large_allocations", lambda: calls.append(1) or True)
    with FrameEncoder(backend="cpu"):
        pass
    with FrameEncoder(backend="cpu", tune_allocator=False):
        pass
    assert calls == [1]


def test_core_loads_no_tooling(tmp_path, png_bytes):
    """Importing gpupipe and encoding through open_pipeline loads neither the tooling nor its dependencies."""
    import subprocess
    import sys

    f = tmp_path / "f.png"
    f.write_bytes(png_bytes)
    code = (
        "import sys, gpupipe\n"
        f"with gpupipe.open_pipeline(backend='cpu') as p: assert p.get({str(f)!r}).startswith('data:image/png')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('gpupipe.tools', 'matplotlib', 'imageio_ffmpeg', 'cupy', 'nvidia')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
