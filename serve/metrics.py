"""Prometheus metrics of the server (names `ortserve_*`; see docs/metrics.md). The registry is passed in.

The per-model numbers are plain integers and bucket lists, updated on the event loop thread and turned
into metric families only when /metrics is scraped (a collector). prometheus_client's own Counter and
Histogram take a lock and do several Python calls per update; with eleven updates per request that was
a measurable share of a small model's request cost (docs/performance.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import GC_COLLECTOR, CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.utils import floatToGoString

MODEL_LABELS = ("model", "version")
# Seconds; from 100 us (tiny models) to 30 s (long queues of big models).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

PREFIX = "ortserve_"
COUNTERS = {  # name -> help; ModelMetrics attribute = name without the prefix
    "inference_request_success": "Inference requests answered successfully.",
    "inference_count": "Inferences performed (batch rows, not requests).",
    "inference_exec_count": "Model executions (batches run).",
    "sequence_started": "Sequences started (requests with sequence_start) of a sequence model.",
    "sequence_ended": "Sequences ended by a request with sequence_end.",
    "sequence_expired": "Sequences freed after max_sequence_idle_microseconds without a request.",
    "arena_shrinks": "onnxruntime arenas given back by an instance idle after batches that grew them.",
}
FAILURE = (
    "inference_request_failure",
    "Inference requests that failed after the model was resolved, by reason.",
)
PENDING = ("inference_pending_request_count", "Requests received and not yet answered (queued or running).")
LIVE_SEQUENCES = ("sequences_live", "Sequences open now (their state held by the server).")
READY = (
    "model_ready",
    "1 while the model version is ready, else 0; `provider` is the onnxruntime execution provider.",
)
HISTOGRAMS = {  # name -> help; the buckets are ModelMetrics'
    "inference_request_duration_seconds": "End-to-end time of successful requests in the server.",
    "inference_queue_duration_seconds": "Time successful requests waited in the scheduler queue.",
    "inference_compute_input_duration_seconds": "Time to merge the inputs of the request's batch.",
    "inference_compute_infer_duration_seconds": "onnxruntime run time of the request's batch.",
    "inference_compute_output_duration_seconds": "Time to split the outputs of the request's batch.",
    "inference_batch_size": "Rows per model execution (batch size formed by the batcher).",
}


class Buckets:
    """One histogram series: a count per bucket (the last one is +Inf) and the sum of the values."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        # bisect_left: a value equal to a bound belongs in that bound's bucket (Prometheus `le`).
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """(le, cumulative count) pairs ending with +Inf, and the sum, for the exposition."""
        counts, total = list(self.counts), self.total  # copy first: the event loop keeps observing
        pairs, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            pairs.append((floatToGoString(bound), running))
        return pairs, total


class ModelMetrics:
    """The numbers of one model version. Updated on the event loop thread only, read when scraped."""

    def __init__(self, model: str, version: str):
        self.labels = (model, version)
        self.inference_request_success = 0
        self.inference_count = 0
        self.inference_exec_count = 0
        self.sequence_started = 0
        self.sequence_ended = 0
        self.sequence_expired = 0
        self.arena_shrinks = 0
        self.sequences_live = 0
        self.pending = 0
        self.failures: dict[str, int] = {}
        self.ready: dict[str, int] = {}
        self.request_duration = Buckets(LATENCY_BUCKETS)
        self.queue_duration = Buckets(LATENCY_BUCKETS)
        self.compute_input_duration = Buckets(LATENCY_BUCKETS)
        self.compute_infer_duration = Buckets(LATENCY_BUCKETS)
        self.compute_output_duration = Buckets(LATENCY_BUCKETS)
        self.batch_size = Buckets(BATCH_BUCKETS)
        self.histograms = {
            "inference_request_duration_seconds": self.request_duration,
            "inference_queue_duration_seconds": self.queue_duration,
            "inference_compute_input_duration_seconds": self.compute_input_duration,
            "inference_compute_infer_duration_seconds": self.compute_infer_duration,
            "inference_compute_output_duration_seconds": self.compute_output_duration,
            "inference_batch_size": self.batch_size,
        }

    def request_succeeded(
        self, rows: int, duration_s: float, queue_s: float, input_s: float, infer_s: float, output_s: float
    ) -> None:
        """One successful request of `rows` rows and its phase times."""
        self.pending -= 1
        self.inference_request_success += 1
        self.inference_count += rows
        self.request_duration.observe(duration_s)
        self.queue_duration.observe(queue_s)
        self.compute_input_duration.observe(input_s)
        self.compute_infer_duration.observe(infer_s)
        self.compute_output_duration.observe(output_s)

    def failure(self, reason: str) -> None:
        """Count one failed request."""
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def batch_executed(self, size: int) -> None:
        """Count one model execution of `size` rows."""
        self.inference_exec_count += 1
        self.batch_size.observe(size)

    def arena_shrunk(self) -> None:
        """Count one idle instance's arena shrink."""
        self.arena_shrinks += 1

    def set_ready(self, provider: str, ready: bool) -> None:
        """Mark the version (un)ready on the provider it runs on."""
        self.ready[provider] = 1 if ready else 0


class ServerMetrics:
    """Every metric the server exports, on one registry (plus the process/platform/GC collectors)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        if GC_COLLECTOR is not None:
            GCCollector(registry=registry)
        registry.register(_ModelCollector(self._models))

    def for_model(self, model: str, version: str) -> ModelMetrics:
        """The metrics of one model version (the same object again after a reload: series continue)."""
        key = (model, version)
        if key not in self._models:
            self._models[key] = ModelMetrics(model, version)
        return self._models[key]


class _ModelCollector:
    """Turns every ModelMetrics into Prometheus families at scrape time (called from the HTTP thread)."""

    def __init__(self, models: dict[tuple[str, str], ModelMetrics]):
        self._models = models

    def describe(self) -> list[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._models.values()))

    @staticmethod
    def _families(models: list[ModelMetrics]) -> Iterator[Metric]:
        for name, what in COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, what, labels=MODEL_LABELS)
            for model in models:
                family.add_metric(model.labels, getattr(model, name))
            yield family
        yield _per_key(
            CounterMetricFamily(PREFIX + FAILURE[0], FAILURE[1], labels=(*MODEL_LABELS, "reason")),
            models,
            lambda model: model.failures,
        )
        family = GaugeMetricFamily(PREFIX + PENDING[0], PENDING[1], labels=MODEL_LABELS)
        for model in models:
            family.add_metric(model.labels, model.pending)
        yield family
        family = GaugeMetricFamily(PREFIX + LIVE_SEQUENCES[0], LIVE_SEQUENCES[1], labels=MODEL_LABELS)
        for model in models:
            family.add_metric(model.labels, model.sequences_live)
        yield family
        for name, what in HISTOGRAMS.items():
            family = HistogramMetricFamily(PREFIX + name, what, labels=MODEL_LABELS)
            for model in models:
                buckets, total = model.histograms[name].cumulative()
                family.add_metric(model.labels, buckets, total)
            yield family
        yield _per_key(
            GaugeMetricFamily(PREFIX + READY[0], READY[1], labels=(*MODEL_LABELS, "provider")),
            models,
            lambda model: model.ready,
        )


def _per_key(family, models: list[ModelMetrics], values):
    """A family with one sample per model and key of the dict `values(model)` (the key is the last label)."""
    for model in models:
        for key, value in list(values(model).items()):
            family.add_metric((*model.labels, key), value)
    return family
