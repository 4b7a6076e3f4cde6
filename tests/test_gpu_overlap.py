"""The GPU transcode's three phases without a GPU: DALI decode | nvImageCodec encode | host strings.

The structure is proved by the order of events, never by timing: batch k's host strings wait
(bounded) until batch k+1's device work has started, so the run completes with every wait
satisfied only if the phases overlap; a slot is reused only after the encode of the batch that
last used it; results stay in order; a failure while building one frame's string is that frame's
alone; staging bytes all come back. Then the same on the real device layer with DALI's and
nvImageCodec's CPU backends, and :class:`~gpupipe.gpu.host_strings.HostStrings` itself.
"""

from __future__ import annotations

import itertools
import threading

import pytest
from test_gpu_logic import FakeOps, _backend, _labelled

from gpupipe.cpu import CpuBackend, run_job
from gpupipe.errors import FrameError
from gpupipe.gpu.host_strings import HostStrings, _split
from gpupipe.gpu.stage_clock import StageClock
from gpupipe.plan import OutputSpec, plan_job


class ThreePhase(FakeOps):
    """Records ``(event, batch, slot)``; ``transcode_strings`` of batch k waits until batch k+1's
    decode and encode have started (bounded, so a serial runner fails instead of hanging)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.events: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()
        self.n = 0
        self.began: dict[int, threading.Event] = {}
        self.encoding: dict[int, threading.Event] = {}
        self.waited: list[bool] = []

    def _ev(self, table, k):
        with self.lock:
            return table.setdefault(k, threading.Event())

    def _log(self, *e):
        with self.lock:
            self.events.append(e)

    def transcode_begin(self, jobs, slot=0):
        with self.lock:
            k = self.n
            self.n += 1
        self._log("begin", k, slot)
        self._ev(self.began, k).set()
        return (k, slot, list(jobs))

    def transcode_encode(self, handle):
        k, slot, jobs = handle
        self._log("encode", k, slot)
        self._ev(self.encoding, k).set()
        out = [run_job(j) for j in jobs]
        self._log("encoded", k, slot)  # the slot is free from here on
        return (k, slot, out)

    def transcode_strings(self, handle):
        k, slot, out = handle
        self.waited.append(self._ev(self.began, k + 1).wait(5) and self._ev(self.encoding, k + 1).wait(5))
        self._log("strings", k, slot)
        return out

    def transcode_end(self, handle):
        return self.transcode_strings(self.transcode_encode(handle))

    def passthrough_begin(self, jobs, slot=0):
        return [run_job(j) for j in jobs]

    def passthrough_end(self, handle):
        return handle


def test_strings_of_batch_k_are_built_while_batch_k_plus_1_is_on_the_device(png_bytes, jpeg_bytes):
    from gpupipe.gpu.backend import ThreePhaseOps

    ops = ThreePhase(10_000)
    assert isinstance(ops, ThreePhaseOps)
    be = _backend(ops, batch=2)
    jobs = [plan_job(i, f, OutputSpec("jpeg", (40, 40))) for i, f in enumerate(_labelled([png_bytes, jpeg_bytes] * 5))]
    last = 4
    ops._ev(ops.began, last + 1).set()  # there is no batch 5: the last strings need not wait
    ops._ev(ops.encoding, last + 1).set()
    assert be.run(jobs) == CpuBackend(1).run(jobs)  # in order
    ev = ops.events
    assert len(ops.waited) == 5 and all(ops.waited)  # every batch's strings saw the next batch on the device
    for k in range(4):  # and the next batch's device work started before this batch's strings were done
        assert ev.index(("begin", k + 1, (k + 1) % 2)) < ev.index(("strings", k, k % 2))
    assert [s for e, _, s in ev if e == "begin"] == [0, 1, 0, 1, 0]
    for k in range(2, 5):  # a slot is reused only after the encode of the batch that last used it
        assert ev.index(("encoded", k - 2, k % 2)) < ev.index(("begin", k, k % 2))
    st = be.staging_stats()
    assert st["inflight_bytes"] == 0 and 0 < st["peak_inflight_bytes"] <= st["max_bytes"]
    stages = be.clock.totals()
    assert {"process", "finish", "host"} <= set(stages) and stages["host"]["calls"] == 5
    be.close()


def test_no_overlap_runs_the_three_phases_of_each_batch_in_turn(png_bytes):
    ops = ThreePhase(10_000)
    for t in (ops.began, ops.encoding):
        for k in range(5):
            ops._ev(t, k).set()
    be = _backend(ops, batch=1, overlap=False)
    jobs = [plan_job(i, f, OutputSpec("jpeg")) for i, f in enumerate(_labelled([png_bytes] * 3))]
    assert be.run(jobs) == CpuBackend(1).run(jobs)
    assert [e for e, _, _ in ops.events] == ["begin", "encode", "encoded", "strings"] * 3
    be.close()


def test_a_failed_encode_fails_its_batch_once_and_the_frames_still_get_results(png_bytes, jpeg_bytes):
    """An unexpected error in the device part of batch 1 (its strings phase never runs) sends that
    batch to the CPU path; the other batches, overlapping it, are unaffected."""

    class EncodeFails(ThreePhase):
        def transcode_encode(self, handle):
            if handle[0] == 1:
                raise RuntimeError("nvImageCodec: encoder said no")
            return super().transcode_encode(handle)

    ops = EncodeFails(10_000)
    for t in (ops.began, ops.encoding):
        for k in range(6):
            ops._ev(t, k).set()
    be = _backend(ops, batch=2)
    jobs = [plan_job(i, f, OutputSpec("jpeg")) for i, f in enumerate(_labelled([png_bytes, jpeg_bytes] * 3))]
    with pytest.warns(Warning):
        assert be.run(jobs) == CpuBackend(1).run(jobs)
    assert [k for e, k, _ in ops.events if e == "strings"] == [0, 2]
    assert be.staging_stats()["inflight_bytes"] == 0 and be.staging_stats()["cpu_fallbacks"] == 2
    be.close()


# --------------------------------------------------------------------------- the device layer on CPU stand-ins


def _layer(batch=2, threads=3, clock=None):
    from dataclasses import replace

    from gpupipe.config import Config
    from gpupipe.gpu.device import DeviceLayer

    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    cfg = replace(Config(), batch_size=batch, png_device="gpu")
    return cfg, DeviceLayer(cfg, device_id=None, dali_threads=1, string_threads=threads, clock=clock)


def test_device_layer_declares_three_phases_and_builds_the_same_uris(png_bytes, jpeg_bytes):
    from gpupipe.gpu.backend import GpuBackend, ThreePhaseOps

    clock = StageClock()
    cfg, layer = _layer(clock=clock)
    layer.strings.min_bytes = 0  # even tiny batches go to the threads here
    assert isinstance(layer, ThreePhaseOps)
    be = GpuBackend(cfg, ops=layer, workers=1, clock=clock)
    jobs = [plan_job(i, f, OutputSpec("jpeg", (48, 48))) for i, f in enumerate(_labelled([png_bytes, jpeg_bytes] * 3))]
    one = [plan_job(0, f, OutputSpec("jpeg", (48, 48))) for f in _labelled([png_bytes])]
    out = be.run(jobs)
    assert all(isinstance(u, str) and u.startswith("data:image/jpeg;base64,") for u in out)
    assert out[0] == be.run(one)[0]  # batching and threads do not change a frame's URI
    stages = clock.totals()
    assert {"process", "finish", "host", "host_string"} <= set(stages)
    assert all(t["cpu_s"] >= 0 and t["wall_s"] >= 0 for t in stages.values())
    assert be.info()["overlap_stages"].startswith("decode | encode | host strings")
    be.close()


def test_a_string_that_cannot_be_built_fails_only_its_frame(png_bytes, jpeg_bytes, monkeypatch):
    from gpupipe.gpu import device

    _cfg, layer = _layer(batch=4)
    jobs = [
        plan_job(i, f, OutputSpec("jpeg", (32, 32), quality=q))
        for i, (f, q) in enumerate(zip(_labelled([png_bytes, jpeg_bytes] * 2), (90, 91, 90, 90)))
    ]
    real = device.build_uri
    calls = []

    def flaky(mime, data):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("base64_encode wrote 0 bytes, expected 12")
        return real(mime, data)

    monkeypatch.setattr(device, "build_uri", flaky)
    out = layer.transcode_strings(layer.transcode_encode(layer.transcode_begin(jobs, 0)))
    bad = [i for i, r in enumerate(out) if isinstance(r, FrameError)]
    assert len(bad) == 1 and "building its URI failed" in out[bad[0]].reason and jobs[bad[0]].frame.label in str(out[bad[0]])
    assert all(isinstance(r, str) for i, r in enumerate(out) if i not in bad)
    layer.close()


# --------------------------------------------------------------------------- HostStrings


def test_host_strings_keep_order_use_several_threads_and_contain_errors():
    clock = StageClock()
    hs = HostStrings(3, min_bytes=0, clock=clock)
    names = set()

    def fn(x):
        names.add(threading.current_thread().name)
        if x == 5:
            raise ValueError("no")
        return x * 2

    out = hs.map(fn, list(range(9)), [1] * 9, lambda i, e: ("err", i, type(e).__name__))
    assert out == [0, 2, 4, 6, 8, ("err", 5, "ValueError"), 12, 14, 16]
    assert (
        threading.current_thread().name in names and len(names) >= 2
    )  # the calling thread and the workers (a worker may take two runs)
    assert clock.totals()["host_string"]["calls"] == 3
    small = HostStrings(3, min_bytes=1 << 20)
    names.clear()
    assert small.map(fn, [1, 2], [10, 10], lambda i, e: None) == [2, 4] and names == {threading.current_thread().name}
    hs.close()
    small.close()


@pytest.mark.parametrize(
    "sizes,parts", [([1] * 7, 3), ([100, 1, 1, 1], 2), ([1, 1, 1, 100], 3), ([5], 4), (list(range(1, 20)), 5)]
)
def test_split_covers_every_item_once_in_order(sizes, parts):
    b = _split(sizes, parts)
    assert b[0][0] == 0 and b[-1][1] == len(sizes) and len(b) <= parts
    assert all(lo < hi for lo, hi in b) and all(x[1] == y[0] for x, y in itertools.pairwise(b))


def test_stage_clock_profiles_each_call(tmp_path):
    import pstats

    clock = StageClock()
    clock.enable_profiling()
    for _ in range(2):
        with clock.stage("host_string"):
            sum(range(1000))
    assert clock.dump_profile(tmp_path / "p.prof") == 2
    assert pstats.Stats(str(tmp_path / "p.prof")).total_calls > 0
    clock.enable_profiling(False)
    assert clock.dump_profile(tmp_path / "q.prof") == 0
