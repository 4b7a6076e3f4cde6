"""The bad-input corpus (issue 4 §4): every file gives a valid URI or a FrameError, fast, on both backends.

The corpus (tests/corpus.py) is generated into a temporary folder. Each file goes through
``FrameEncoder.encode`` in several modes (passthrough, auto, transcodes with a size), through
``encode_batch`` as one batch, from bytes as well as paths, and through a ``FramePipeline``
whose small ``FrameCache`` must keep its accounting exact after every failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import Counter

import pytest

import corpus as C
from gpupipe import FrameCache, FrameEncoder, FramePipeline
from gpupipe.config import Config
from gpupipe.errors import FrameDecodeError, FrameError, FrameNotFound, FrameTooLarge

DEADLINE_S = 2.0
HANG_S = 20.0  # past this a call is reported as hung instead of waiting on it


def _gpu_ok() -> bool:
    from gpupipe.gpu import gpu_available

    return gpu_available(0)[0]


GPU_OK = _gpu_ok()


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[C.CorpusItem]:
    return C.build_corpus(tmp_path_factory.mktemp("corpus"))


def _encoder(backend: str) -> FrameEncoder:
    enc = FrameEncoder(Config(), backend=backend)
    # Warm up (imports, thread pools, the GPU context) so that deadlines measure the frame.
    enc.encode_batch([_png_sample()], output="jpeg", size=(16, 16))
    return enc


def _png_sample() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(C.base_pixels()).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cpu_encoder():
    enc = _encoder("cpu")
    yield enc
    enc.close()


@pytest.fixture(scope="module")
def gpu_encoder():
    enc = _encoder("gpu")
    yield enc
    enc.close()


def _call(fn, *args, **kw) -> tuple[object, float]:
    """``(result or the exception raised, seconds)``; a call running past HANG_S fails the test as a hang."""
    pool = cf.ThreadPoolExecutor(1)
    t0 = time.perf_counter()

    def run():
        try:
            return fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - the caller checks the type
            return e

    fut = pool.submit(run)
    try:
        result = fut.result(timeout=HANG_S)
    except cf.TimeoutError:
        pool.shutdown(wait=False)
        pytest.fail(f"{fn.__name__}{args!r} hung for more than {HANG_S} s")
    pool.shutdown(wait=False)
    return result, time.perf_counter() - t0


def _check_all(encoder: FrameEncoder, items: list[C.CorpusItem], mode: str, from_bytes: bool = False) -> Counter:
    output, size = C.MODES[mode]
    problems, counts = [], Counter()
    for item in items:
        if from_bytes:
            if not item.path.is_file():
                continue
            src: object = item.path.read_bytes()
        else:
            src = item.path
        result, dt = _call(encoder.encode, src, output=output, size=size)
        if isinstance(result, BaseException) and not isinstance(result, FrameError):
            problems.append(f"{item.name}: {type(result).__name__} escaped: {result!r}")
            continue
        if dt > DEADLINE_S:
            problems.append(f"{item.name}: took {dt:.2f} s")
        try:
            if from_bytes and isinstance(result, FrameError):
                assert result.frame.startswith("bytes:"), result.frame
            else:
                assert not isinstance(result, FrameError) or result.frame == str(item.path), result
            counts[C.check_result(item, output, size, result)] += 1
        except AssertionError as e:
            problems.append(str(e)[:400])
    assert not problems, "\n".join(problems)
    return counts


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_covers_the_issue(items):
    names = [i.name for i in items]
    assert len(names) == len(set(names))
    cats = Counter(i.category for i in items)
    assert {"png", "jpeg", "exif", "tiny", "extension", "huge", "truncated", "corrupt", "junk", "missing"} <= set(cats)
    must = {
        "png_palette.png", "png_palette_trns.png", "png_gray.png", "png_gray_alpha.png", "png_gray16.png",
        "png_rgb16.png", "png_interlaced_rgb.png", "jpeg_progressive.jpg", "jpeg_cmyk.jpg", "jpeg_exif6.jpg",
        "jpeg_exif3.jpg", "png_1x1.png", "jpeg_1x1.jpg", "huge_png_100000x100000.png", "huge_jpeg_65000x65000.jpg",
        "trunc_png_header.png", "trunc_png_mid_idat.png", "trunc_png_before_iend.png", "trunc_jpeg_mid_scan.jpg",
        "trunc_jpeg_before_eoi.jpg", "corrupt_png_ihdr_crc.png", "corrupt_jpeg_entropy.jpg", "empty.png",
        "random.jpg", "png_named.jpg", "jpeg_named.png",
    }
    assert must <= set(names)
    for i in items:
        if i.category != "missing":
            assert i.path.is_file(), i.name


def test_corpus_files_are_what_they_claim(items):
    """The generator is right: valid files decode with Pillow to the recorded size and mode."""
    from PIL import Image, ImageOps

    by = {i.name: i for i in items}
    for name, mode, interlaced in [
        ("png_palette.png", "P", False),
        ("png_gray16.png", "I;16", False),
        ("png_rgb16.png", "RGB", False),
        ("png_interlaced_rgb.png", "RGB", True),
        ("png_interlaced_gray16.png", "I;16", True),
        ("jpeg_cmyk.jpg", "CMYK", False),
        ("png_gray_alpha.png", "LA", False),
    ]:
        with Image.open(by[name].path) as im:
            assert im.mode.startswith(mode), (name, im.mode)
            assert bool(im.info.get("interlace")) == interlaced, name
            im.load()
            assert im.size == by[name].expect
    with Image.open(by["png_interlaced_rgb.png"].path) as a, Image.open(by["png_rgb.png"].path) as b:
        assert a.tobytes() == b.tobytes()  # the interlaced writer is lossless and correct
    with Image.open(by["jpeg_progressive.jpg"].path) as im:
        assert im.info.get("progressive") or im.info.get("progression")
    with Image.open(by["jpeg_exif6.jpg"].path) as im:
        assert im.size == (C.W, C.H) and ImageOps.exif_transpose(im).size == (C.H, C.W)
    for i in items:
        if i.valid:
            with Image.open(i.path) as im:
                im.load()
                if i.pillow_orientation_agrees:
                    assert ImageOps.exif_transpose(im).size == i.expect, i.name
                else:  # Pillow reads this EXIF otherwise than browsers: check the stored size
                    o = i.orientation
                    assert (im.size if o < 5 else im.size[::-1]) == i.expect, i.name


# --------------------------------------------------------------------------- the CPU backend


@pytest.mark.parametrize("mode", list(C.MODES))
def test_each_file_cpu(cpu_encoder, items, mode):
    counts = _check_all(cpu_encoder, items, mode)
    assert counts["valid"] >= 30
    assert counts["FrameTooLarge"] == 2 and counts["FrameNotFound"] == 2


@pytest.mark.parametrize("mode", ["auto", "jpeg@32"])
def test_each_file_cpu_from_bytes(cpu_encoder, items, mode):
    _check_all(cpu_encoder, items, mode, from_bytes=True)


@pytest.mark.parametrize("mode", ["auto", "png@48x20"])
def test_batch_over_the_whole_corpus(cpu_encoder, items, mode):
    output, size = C.MODES[mode]
    paths = [i.path for i in items]
    t0 = time.perf_counter()
    results = cpu_encoder.encode_batch(paths, output=output, size=size)
    assert time.perf_counter() - t0 < DEADLINE_S * len(paths)
    assert len(results) == len(items)
    for item, r in zip(items, results):
        assert isinstance(r, (str, FrameError)), (item.name, r)
        C.check_result(item, output, size, r)
    # Order is kept: the good ones are the URIs of their own files.
    single = {i.name: cpu_encoder.encode(i.path, output=output, size=size) for i in items[:3] if i.valid}
    for item, r in zip(items[:3], results[:3]):
        if item.name in single:
            assert r == single[item.name]


def _assert_accounting(cache: FrameCache) -> None:
    s = cache.stats()
    keys = cache.keys()
    values = [cache.peek(k) for k in keys]
    assert s.entries == len(keys) <= cache.max_entries
    assert s.bytes == s.host_bytes == sum(len(v) for v in values)
    assert s.device_bytes == 0 and s.inflight_bytes == 0
    assert s.bytes <= cache.max_bytes


@pytest.mark.parametrize("mode", ["auto", "jpeg@32"])
def test_pipeline_accounting_stays_exact(cpu_encoder, items, mode):
    output, size = C.MODES[mode]
    cache = FrameCache(max_entries=6, max_bytes=40_000)
    pipe = FramePipeline(cpu_encoder, cache, output=output, size=size)
    failures = 0
    for order in (items, items[::-1]):  # the second round starts with the frames most recently cached
        for item in order:
            before = cache.stats()
            result, dt = _call(pipe.get, item.path)
            assert dt < DEADLINE_S, (item.name, dt)
            assert isinstance(result, (str, FrameError)), f"{item.name}: {result!r} escaped"
            C.check_result(item, output, size, result)
            after = cache.stats()
            _assert_accounting(cache)
            key = pipe.key(item.path)
            if isinstance(result, FrameError):
                failures += 1
                assert after.load_failures == before.load_failures + 1, item.name
                assert after.loads == before.loads + 1 and after.hits == before.hits
                assert key not in cache
            elif after.hits == before.hits:  # a miss: loaded, and cached unless its work exceeded the budget
                assert after.loads == before.loads + 1 and after.load_failures == before.load_failures
                oversize = after.oversize_rejects > before.oversize_rejects
                assert (key in cache) == (not oversize), item.name
                assert oversize or len(result) <= cache.max_bytes, item.name
    s = cache.stats()
    assert s.load_failures == failures > 0
    assert s.hits + s.misses == 2 * len(items)
    assert s.hits > 0  # the second round finds the small valid frames still cached


def test_pipeline_get_many_over_the_corpus(cpu_encoder, items):
    cache = FrameCache(max_entries=8, max_bytes=50_000)
    pipe = FramePipeline(cpu_encoder, cache, output="auto", size=(32, 32))
    paths = [i.path for i in items]
    for _ in range(2):
        results = pipe.get_many(paths)
        assert len(results) == len(items)
        for item, r in zip(items, results):
            C.check_result(item, "auto", (32, 32), r)
        _assert_accounting(cache)


def test_error_types_where_predictable(cpu_encoder, items):
    by = {i.name: i for i in items}
    for name, exc in [
        ("missing.png", FrameNotFound),
        ("folder.png", FrameNotFound),
        ("huge_png_100000x100000.png", FrameTooLarge),
        ("huge_jpeg_65000x65000.jpg", FrameTooLarge),
        ("empty.png", FrameDecodeError),
        ("trunc_png_mid_idat.png", FrameDecodeError),
        ("corrupt_png_ihdr_crc.png", FrameDecodeError),
        ("corrupt_jpeg_dht.jpg", FrameDecodeError),
    ]:
        for output in ("passthrough", "auto", "jpeg"):
            with pytest.raises(exc) as ei:
                cpu_encoder.encode(by[name].path, output=output, size=(32, 32))
            assert ei.value.frame == str(by[name].path) and ei.value.reason


def test_summary_counts(items):
    s = C.corpus_summary("cpu")
    assert s["unexpected"] == []
    assert s["files"] == len(items)
    for mode, counts in s["modes"].items():
        assert sum(counts.values()) == len(items), mode
    assert s["slowest_s"] < DEADLINE_S


# --------------------------------------------------------------------------- the GPU backend


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason="no usable CUDA device")
@pytest.mark.parametrize("mode", list(C.MODES))
def test_each_file_gpu(gpu_encoder, items, mode):
    assert gpu_encoder.backend == "gpu"
    _check_all(gpu_encoder, items, mode)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason="no usable CUDA device")
def test_batch_and_pipeline_gpu(gpu_encoder, items):
    paths = [i.path for i in items]
    results = gpu_encoder.encode_batch(paths, output="auto", size=(32, 32))
    assert len(results) == len(items)
    for item, r in zip(items, results):
        C.check_result(item, "auto", (32, 32), r)
    cache = FrameCache(max_entries=6, max_bytes=40_000)
    pipe = FramePipeline(gpu_encoder, cache, output="jpeg", size=(32, 32))
    for item in items:
        result, _ = _call(pipe.get, item.path)
        assert isinstance(result, (str, FrameError)), f"{item.name}: {result!r} escaped"
        C.check_result(item, "jpeg", (32, 32), result)
        s = cache.stats()
        assert s.entries <= 6 and s.bytes <= 40_000 and s.inflight_bytes == 0
        total = 0
        for k in cache.keys():
            v = cache.peek(k)
            total += len(v) if isinstance(v, str) else v.host_bytes + v.device_bytes
        assert s.bytes == total
