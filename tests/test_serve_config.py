"""Config keys of the frame service (serve.*, cache.max_bytes: auto, cache.pressure_*), the memory
readers behind ``auto`` (host RAM, cgroup v1 and v2), and how ``gpupipe serve`` lays out its pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupipe import hostmem
from gpupipe.config import Config, ServeConfig, configured_gpus, load_config
from gpupipe.errors import ConfigError

MiB = 1024**2
GiB = 1024**3


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_serve_keys(tmp_path):
    p = _write(tmp_path, "defaults:\n  serve: {max_batch_delay: 0, max_queue: 10, request_timeout: 5, send_timeout: 2.5}\n")
    s = load_config(p).serve
    assert s == ServeConfig(max_batch_delay=0.0, max_queue=10, request_timeout=5.0, send_timeout=2.5)
    assert Config().serve == ServeConfig() and ServeConfig().max_batch_delay == 0.005
    assert load_config(p).to_dict()["serve"]["max_queue"] == 10


@pytest.mark.parametrize("text,key", [
    ("serve: {max_batch_delay: 2}", "defaults.serve.max_batch_delay"),
    ("serve: {max_batch_delay: -0.1}", "defaults.serve.max_batch_delay"),
    ("serve: {max_batch_delay: .nan}", "defaults.serve.max_batch_delay"),
    ("serve: {max_queue: 0}", "defaults.serve.max_queue"),
    ("serve: {max_queue: 1.5}", "defaults.serve.max_queue"),
    ("serve: {request_timeout: 0}", "defaults.serve.request_timeout"),
    ("serve: {send_timeout: true}", "defaults.serve.send_timeout"),
    ("serve: {batch: 3}", "defaults.serve.batch"),
    ("serve: 3", "defaults.serve"),
    ("cache: {pressure_interval: 0}", "defaults.cache.pressure_interval"),
    ("cache: {pressure_available: -1}", "defaults.cache.pressure_available"),
    ("cache: {pressure_available: lots}", "defaults.cache.pressure_available"),
    ("cache: {max_bytes: automatic}", "defaults.cache.max_bytes"),
    ("cache: {max_bytes_auto: true}", "defaults.cache.max_bytes_auto"),
])
def test_bad_serve_and_pressure_values_name_their_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, f"defaults:\n  {text}\n"))
    assert e.value.key == key


def test_cache_max_bytes_auto_is_sized_from_the_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(hostmem, "memory_limit", lambda: 16 * GiB)
    p = _write(tmp_path, "defaults:\n  cache: {max_bytes: auto}\ngpus:\n  1: {cache: {max_bytes: 2GiB}}\n  2: {cache: {max_bytes: AUTO}}\n")
    c = load_config(p)
    assert c.cache.max_bytes == int(16 * GiB * 0.30) and c.cache.max_bytes_auto
    assert load_config(p, 1).cache.max_bytes == 2 * GiB and not load_config(p, 1).cache.max_bytes_auto
    assert load_config(p, 2).cache.max_bytes_auto
    monkeypatch.setenv("GPUPIPE_CACHE_BYTES_MB", "512")
    c = load_config(p)
    assert c.cache.max_bytes == 512 * MiB and not c.cache.max_bytes_auto


def test_pressure_keys(tmp_path):
    assert Config().cache.pressure_available is None and Config().cache.pressure_interval == 1.0
    for text, want in (("auto", None), ("null", None), ("0", 0), ("512MiB", 512 * MiB)):
        c = load_config(_write(tmp_path, f"defaults:\n  cache: {{pressure_available: {text}, pressure_interval: 0.5}}\n"))
        assert c.cache.pressure_available == want and c.cache.pressure_interval == 0.5


def test_configured_gpus(tmp_path, monkeypatch):
    assert configured_gpus(None) == []
    p = _write(tmp_path, "gpus:\n  3: {}\n  '1': {batch_size: 4}\n")
    assert configured_gpus(p) == [1, 3]
    monkeypatch.setenv("GPUPIPE_CONFIG", str(p))
    assert configured_gpus() == [1, 3]
    with pytest.raises(ConfigError):
        configured_gpus(_write(tmp_path, "gpus:\n  x: {}\n"))


# --------------------------------------------------------------------------- memory readers


@pytest.mark.parametrize("limit,share", [(3 * GiB, 0.10), (6 * GiB, 0.20), (24 * GiB, 0.30)])
def test_auto_budget_tiers(limit, share):
    assert hostmem.auto_cache_bytes(limit) == int(limit * share)


def test_auto_budget_clamps_and_unknown_limit(monkeypatch):
    assert hostmem.auto_cache_bytes(256 * MiB) == 64 * MiB
    assert hostmem.auto_cache_bytes(1024 * GiB) == 20 * GiB
    monkeypatch.setattr(hostmem, "memory_limit", lambda: None)
    assert hostmem.auto_cache_bytes() == 1500 * MiB


@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """A fake /proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup for hostmem."""
    (tmp_path / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree:  1000 kB\nMemAvailable:   8192000 kB\n")
    monkeypatch.setattr(hostmem, "_PROC_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(hostmem, "_PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(hostmem, "_CGROUP_ROOT", tmp_path / "sys")
    (tmp_path / "sys").mkdir()
    return tmp_path


def test_host_memory_without_a_cgroup_limit(fake_proc):
    (fake_proc / "cgroup").write_text("0::/\n")
    assert hostmem.host_total() == 16384000 * 1024
    assert hostmem.cgroup_limit() is None and hostmem.cgroup_working_set() is None
    assert hostmem.memory_limit() == 16384000 * 1024
    assert hostmem.available_memory() == 8192000 * 1024


def test_cgroup_v2_limit_and_working_set(fake_proc):
    (fake_proc / "cgroup").write_text("0::/user.slice/job\n")
    d = fake_proc / "sys" / "user.slice" / "job"
    d.mkdir(parents=True)
    (d / "memory.max").write_text(f"{2 * GiB}\n")
    (d / "memory.current").write_text(f"{GiB}\n")
    (d / "memory.stat").write_text(f"anon 100\nactive_file 5\ninactive_file {256 * MiB}\n")
    assert hostmem.cgroup_limit() == 2 * GiB
    assert hostmem.cgroup_working_set() == GiB - 256 * MiB
    assert hostmem.memory_limit() == 2 * GiB
    assert hostmem.available_memory() == 2 * GiB - (GiB - 256 * MiB)
    (d / "memory.max").write_text("max\n")
    assert hostmem.cgroup_limit() is None and hostmem.memory_limit() == 16384000 * 1024


def test_cgroup_v1_limit_seen_from_inside_a_container(fake_proc):
    (fake_proc / "cgroup").write_text("5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    d = fake_proc / "sys" / "memory"  # the container's namespace shows its cgroup as the mount's root
    d.mkdir()
    (d / "memory.limit_in_bytes").write_text(f"{4 * GiB}\n")
    (d / "memory.usage_in_bytes").write_text(f"{3 * GiB}\n")
    (d / "memory.stat").write_text(f"cache 1\ninactive_file 7\ntotal_inactive_file {GiB}\n")
    assert hostmem.cgroup_limit() == 4 * GiB
    assert hostmem.available_memory() == 2 * GiB
    (d / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert hostmem.cgroup_limit() is None


def test_unreadable_proc_gives_none(fake_proc):
    (fake_proc / "meminfo").unlink()
    assert hostmem.host_total() is None and hostmem.available_memory() is None and hostmem.memory_limit() is None


# --------------------------------------------------------------------------- pipelines of `gpupipe serve`


def test_serve_pipelines_one_per_usable_gpu_with_auto_split(tmp_path, monkeypatch):
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    from gpupipe.serve import server

    monkeypatch.setattr(hostmem, "memory_limit", lambda: 24 * GiB)
    monkeypatch.setattr("gpupipe.gpu.gpu_available", lambda i: (i in (0, 1), "fake" if i in (0, 1) else "no such device"))
    p = _write(tmp_path, "defaults:\n  cache: {max_bytes: auto}\ngpus:\n  0: {}\n  1: {batch_size: 16}\n  5: {}\n")
    lanes, base = server._lane_configs(p)
    assert [(n, b) for n, _, b in lanes] == [("gpu0", "gpu"), ("gpu1", "gpu")]
    total = hostmem.auto_cache_bytes(24 * GiB)
    assert [c.cache.max_bytes for _, c, _ in lanes] == [total // 2, total // 2]
    assert lanes[1][1].batch_size == 16 and base.gpu is None
    p2 = _write(tmp_path, "defaults:\n  cache: {max_bytes: 1GiB}\ngpus:\n  0: {cache: {max_bytes: 3GiB}}\n  1: {}\n")
    assert [c.cache.max_bytes for _, c, _ in server._lane_configs(p2)[0]] == [3 * GiB, GiB]


def test_serve_pipeline_is_the_cpu_one_without_a_gpu(tmp_path, monkeypatch):
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    from gpupipe.errors import BackendUnavailable
    from gpupipe.serve import server

    monkeypatch.setattr("gpupipe.gpu.gpu_available", lambda i: (False, "no CUDA device"))
    lanes, _ = server._lane_configs(_write(tmp_path, "gpus:\n  0: {}\n  1: {}\n"))
    assert [(n, b) for n, _, b in lanes] == [("cpu", "cpu")]
    with pytest.raises(BackendUnavailable, match="GPU 0: no CUDA device"):
        server._lane_configs(_write(tmp_path, "defaults: {backend: gpu}\n"))
    lanes, _ = server._lane_configs(_write(tmp_path, "defaults: {backend: cpu}\n"))
    assert [n for n, _, _ in lanes] == ["cpu"]
