"""FrameEncoder.warm_up starts every stage a request can reach, and `gpupipe serve` warms each pipeline
up before it listens, so that no request pays start-up (on a GPU: CUDA, DALI, nvJPEG, nvImageCodec)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpupipe import FrameEncoder
from gpupipe.config import Config


def test_warm_up_runs_every_route_on_the_cpu_path():
    cfg = replace(Config(), batch_size=3)
    with FrameEncoder(cfg, backend="cpu") as enc:
        seconds = enc.warm_up()
        # JPEG and PNG frames, two batches of each, through four routes.
        assert enc.counters()["cpu_jobs"] == 4 * 2 * (2 * 3) and seconds > 0


def test_warm_up_builds_dali_pipelines_of_both_slots_and_the_encoder(monkeypatch):
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import DeviceLayer

    cfg = replace(Config(), batch_size=2, passthrough_device="gpu", png_device="gpu")
    ops = DeviceLayer(cfg, device_id=None, dali_threads=1)  # the GPU data path on DALI's and nvImageCodec's CPU backends
    encoded: list[int] = []
    real_encode = ops.jpeg.encode
    monkeypatch.setattr(ops.jpeg, "encode", lambda images, q: encoded.append(len(images)) or real_encode(images, q))
    monkeypatch.setattr("gpupipe.encoder.select_backend", lambda requested, config: ("gpu", "stand-in device layer"))
    monkeypatch.setattr("gpupipe.gpu.GpuBackend", lambda config: GpuBackend(config, ops=ops, workers=1))
    with FrameEncoder(cfg, backend="gpu") as enc:
        assert enc.backend == "gpu"
        enc.warm_up()
        # Pipelines keyed (resize, slot): with and without a resize, on both overlap slots.
        assert set(ops.decoder._pipes) == {(True, 0), (True, 1), (False, 0), (False, 1)}
        assert sum(encoded) == 2 * 2 * (2 * 2)  # JPEG output, with and without a resize, 2 batches of each kind
        assert enc.counters()["dali_runs"] >= 4 and enc.counters()["dali_failed_runs"] == 0


def test_serve_warms_every_pipeline_up_before_it_listens(tmp_path, monkeypatch):
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    from gpupipe.serve import server

    warmed: list[str] = []
    monkeypatch.setattr(FrameEncoder, "warm_up", lambda self: warmed.append(self.backend) or 0.01)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {backend: cpu}\n")
    lanes, _ = server.build_lanes(cfg)
    try:
        assert warmed == ["cpu"] and [lane.name for lane in lanes] == ["cpu"]
    finally:
        for lane in lanes:
            lane.pipeline.close()


@pytest.mark.gpu
def test_warm_up_on_the_device_leaves_nothing_to_start():
    from gpupipe import load_config

    cfg = replace(load_config(gpu=0), batch_size=4)
    with FrameEncoder(cfg, backend="gpu") as enc:
        first = enc.warm_up()
        again = enc.warm_up()
        stats = enc.counters()
    assert stats["dali_runs"] >= 8 and stats["dali_failed_runs"] == 0 and stats["device_lost"] == 0
    assert first > 0 and again > 0


def test_serve_on_the_gpu_backend_starts_dali_and_nvimagecodec_before_it_listens(tmp_path, monkeypatch):
    """`gpupipe serve`'s pipelines on the GPU backend (its data path on DALI's and nvImageCodec's CPU
    backends, the serving defaults: PNG sources and passthrough on the CPU path): by the time
    ``build_lanes`` returns, which is before the service listens and ``/healthz`` answers, DALI's
    pipelines of both overlap slots are built and have run, and nvImageCodec has encoded. Then
    ``/metrics`` carries the lane's device memory figures (here: pinned staging only, no device)."""
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    from gpupipe.gpu.backend import GpuBackend
    from gpupipe.gpu.device import DeviceLayer
    from gpupipe.serve import server
    from gpupipe.serve.metrics import _PipelineCollector

    layers: list[DeviceLayer] = []
    encoded: list[int] = []

    def backend(config):
        ops = DeviceLayer(config, device_id=None, dali_threads=1)
        real_encode = ops.jpeg.encode
        monkeypatch.setattr(ops.jpeg, "encode", lambda images, q: encoded.append(len(images)) or real_encode(images, q))
        layers.append(ops)
        return GpuBackend(config, ops=ops, workers=1)

    monkeypatch.setattr("gpupipe.encoder.select_backend", lambda requested, config: ("gpu", "stand-in device layer"))
    monkeypatch.setattr("gpupipe.gpu.GpuBackend", backend)
    monkeypatch.setattr("gpupipe.gpu.gpu_available", lambda i=0: (True, "stand-in device layer"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("defaults: {backend: gpu, batch_size: 2}\n")
    lanes, _ = server.build_lanes(cfg)
    try:
        (ops,) = layers
        assert {slot for _, slot in ops.decoder._pipes} == {0, 1} and ops.decoder.runs >= 4 and sum(encoded) >= 4
        assert [lane.backend for lane in lanes] == ["gpu"]
        fams = {f.name: f for f in _PipelineCollector(lanes, None).collect()}
        mem = {s.labels["kind"]: s.value for s in fams["gpupipe_device_memory_bytes"].samples}
        assert mem["pinned_staging_limit"] > 0 and "pinned_staging" in mem
        assert lanes[0].pipeline.encoder.info()["device_memory"].keys() >= {"pinned_staging_bytes"}
    finally:
        for lane in lanes:
            lane.pipeline.close()
