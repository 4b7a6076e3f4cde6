"""Prometheus metrics of the frame service (``GET /metrics``), on a registry of its own.

Request counters, the latency histogram, batches and their sizes, queue depth and rejects are
kept as requests come; the caches' and encoders' figures are read from
:meth:`~gpupipe.FramePipeline.stats` and the backend's counters at each scrape, so they are
never out of step with the pipelines. Every cache and encoder series carries the labels
``pipeline`` (``gpu0``, ``gpu1``, ... or ``cpu``) and ``backend`` (``gpu`` or ``cpu``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .lanes import Lane
    from .pressure import PressureMonitor

__all__ = ["ServiceMetrics"]

log = logging.getLogger("gpupipe.serve.metrics")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

# (metric name, CacheStats field, help, counter?)
_CACHE_FIELDS = (
    ("gpupipe_cache_hits", "hits", "Lookups answered from the cache.", True),
    ("gpupipe_cache_misses", "misses", "Lookups that started an encode.", True),
    ("gpupipe_cache_joined", "joined", "Lookups that waited for an encode another request started.", True),
    ("gpupipe_cache_loads", "loads", "Encodes started.", True),
    ("gpupipe_cache_load_failures", "load_failures", "Encodes that failed.", True),
    ("gpupipe_cache_evictions", "evictions", "Entries evicted by a bound.", True),
    ("gpupipe_cache_evicted_bytes", "evicted_bytes", "Bytes of entries evicted by a bound.", True),
    (
        "gpupipe_cache_oversize_rejects",
        "oversize_rejects",
        "Values or work larger than the whole budget (returned, not cached).",
        True,
    ),
    ("gpupipe_cache_admission_waits", "admission_waits", "Reservations that waited for budget held by work in flight.", True),
    ("gpupipe_cache_admission_timeouts", "admission_timeouts", "Reservations that gave up (BudgetTimeout).", True),
    ("gpupipe_cache_entries", "entries", "Entries cached.", False),
    ("gpupipe_cache_bytes", "bytes", "Bytes held by cached entries (host + device).", False),
    ("gpupipe_cache_inflight_bytes", "inflight_bytes", "Bytes reserved by encodes in flight, inside the budget.", False),
    (
        "gpupipe_cache_oversize_inflight_bytes",
        "oversize_inflight_bytes",
        "Bytes held by the one oversize encode allowed outside the budget.",
        False,
    ),
    ("gpupipe_cache_peak_bytes", "peak_bytes", "Highest bytes + in-flight bytes seen.", False),
    ("gpupipe_cache_max_bytes", "max_bytes", "The byte budget.", False),
    ("gpupipe_cache_max_entries", "max_entries", "The entry bound.", False),
)


class _PipelineCollector(Collector):
    """Reads every lane's cache stats and backend counters at scrape time."""

    def __init__(self, lanes: list[Lane], pressure: PressureMonitor | None) -> None:
        self.lanes = lanes
        self.pressure = pressure

    def collect(self) -> Iterator[Any]:
        labels = ["pipeline", "backend"]
        fams = {
            name: (CounterMetricFamily if counter else GaugeMetricFamily)(name, doc, labels=labels)
            for name, _, doc, counter in _CACHE_FIELDS
        }
        cpu_jobs = CounterMetricFamily(
            "gpupipe_cpu_jobs",
            "Frames encoded on the CPU path (on a GPU pipeline: frames it routed or fell back to the CPU).",
            labels=labels,
        )
        fallbacks = CounterMetricFamily("gpupipe_gpu_fallbacks", "GPU batches that fell back to the CPU path.", labels=labels)
        gpu_jobs = CounterMetricFamily(
            "gpupipe_gpu_jobs", "Encodes started on a GPU pipeline that did not run on its CPU path.", labels=labels
        )
        backend = GaugeMetricFamily(
            "gpupipe_backend_counter", "Every counter the pipeline's backend reports, by name.", labels=[*labels, "name"]
        )
        device_mem = GaugeMetricFamily(
            "gpupipe_device_memory_bytes",
            "GPU pipelines: device and pinned memory by kind (device_total, device_used: every allocation on the device, "
            "DALI's and nvImageCodec's included; staging_pool_*, cupy_default_pool_*: CuPy pools; pinned_staging_*).",
            labels=[*labels, "kind"],
        )
        for lane in self.lanes:
            lv = [lane.name, lane.backend]
            s = lane.pipeline.stats()
            for name, field, _, _ in _CACHE_FIELDS:
                fams[name].add_metric(lv, getattr(s, field))
            counters = lane.backend_stats()
            cpu = int(counters.get("cpu_jobs", 0))
            cpu_jobs.add_metric(lv, cpu)
            fallbacks.add_metric(lv, int(counters.get("cpu_fallbacks", 0)))
            gpu_jobs.add_metric(lv, max(0, s.loads - s.load_failures - cpu) if lane.backend == "gpu" else 0)
            for k, v in sorted(counters.items()):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    backend.add_metric([*lv, k], v)
            for k, v in sorted(lane.device_memory().items()):
                device_mem.add_metric([*lv, k.removesuffix("_bytes")], v)
        yield from fams.values()
        yield from (cpu_jobs, gpu_jobs, fallbacks, backend, device_mem)
        if self.pressure is not None:
            p = self.pressure
            yield GaugeMetricFamily(
                "gpupipe_memory_pressure", "1 while available memory is below the pressure threshold.", value=int(p.pressure)
            )
            yield GaugeMetricFamily(
                "gpupipe_memory_available_bytes", "Memory available to the service at the last check.", value=p.available or 0
            )
            yield GaugeMetricFamily("gpupipe_memory_pressure_threshold_bytes", "The pressure threshold.", value=p.threshold)
            yield CounterMetricFamily(
                "gpupipe_pressure_sheds", "Checks that shed cached entries under memory pressure.", value=p.sheds
            )
            yield CounterMetricFamily(
                "gpupipe_pressure_shed_entries", "Cached entries shed under memory pressure.", value=p.shed_entries
            )
            yield CounterMetricFamily(
                "gpupipe_pressure_shed_bytes", "Bytes of cached entries shed under memory pressure.", value=p.shed_bytes
            )


class ServiceMetrics:
    """The service's metrics on a :class:`~prometheus_client.CollectorRegistry` of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gpupipe_http_requests", "HTTP requests answered, by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "gpupipe_http_request_duration_seconds",
            "Time from a request's arrival until its response was sent.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.response_bytes = Counter(
            "gpupipe_http_response_bytes", "Response body bytes sent, by endpoint.", ["endpoint"], registry=r
        )
        self.batches = Counter("gpupipe_batches", "Batches run (get_many calls), by pipeline.", ["pipeline"], registry=r)
        self.batch_size = Histogram(
            "gpupipe_batch_size", "Frames per batch, by pipeline.", ["pipeline"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "gpupipe_batch_duration_seconds", "Time a batch ran, by pipeline.", ["pipeline"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("gpupipe_queue_depth", "Requests waiting for a batch.", registry=r)
        self.queue_full = Counter(
            "gpupipe_queue_full_rejects", "Requests refused with 503 because serve.max_queue requests were waiting.", registry=r
        )
        self.timeouts = Counter("gpupipe_request_timeouts", "Requests answered 504 after serve.request_timeout.", registry=r)
        self.send_timeouts = Counter(
            "gpupipe_send_timeouts", "Responses cut off because the client took no data for serve.send_timeout.", registry=r
        )
        self.schedules = Gauge("gpupipe_schedules_open", "Schedules open (POST /v1/schedules not yet deleted).", registry=r)
        self.video_requests = Counter(
            "gpupipe_http_video_frame_requests",
            "Requests for a video clip's frame, by endpoint, how the frame was picked (frame: by index; t: by time) and status.",
            ["endpoint", "by", "status"],
            registry=r,
        )
        self.lookups = Counter(
            "gpupipe_requests_by_cache_state",
            "Frame requests by what the cache held when they came: hit or miss.",
            ["state"],
            registry=r,
        )

    def watch(self, lanes: list[Lane], pressure: PressureMonitor | None) -> None:
        """Report ``lanes``' caches and backends, and ``pressure``'s figures, at every scrape."""
        self.registry.register(_PipelineCollector(lanes, pressure))
