"""Prometheus metrics of the server (names `ortserve_*`; see docs/metrics.md). The registry is passed in."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector

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


class ServerMetrics:
    """Every metric the server exports, registered on one registry (plus process/platform collectors)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        if GC_COLLECTOR is not None:
            GCCollector(registry=registry)
        labels = MODEL_LABELS
        self.success = Counter(
            "ortserve_inference_request_success",
            "Inference requests answered successfully.",
            labels,
            registry=registry,
        )
        self.failure = Counter(
            "ortserve_inference_request_failure",
            "Inference requests that failed after the model was resolved, by reason.",
            (*labels, "reason"),
            registry=registry,
        )
        self.inference_count = Counter(
            "ortserve_inference_count",
            "Inferences performed (batch rows, not requests).",
            labels,
            registry=registry,
        )
        self.exec_count = Counter(
            "ortserve_inference_exec_count", "Model executions (batches run).", labels, registry=registry
        )
        self.pending = Gauge(
            "ortserve_inference_pending_request_count",
            "Requests received and not yet answered (queued or running).",
            labels,
            registry=registry,
        )

        def histogram(name: str, what: str, buckets=LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, what, labels, buckets=buckets, registry=registry)

        self.request_duration = histogram(
            "ortserve_inference_request_duration_seconds",
            "End-to-end time of successful requests in the server.",
        )
        self.queue_duration = histogram(
            "ortserve_inference_queue_duration_seconds",
            "Time successful requests waited in the scheduler queue.",
        )
        self.compute_input_duration = histogram(
            "ortserve_inference_compute_input_duration_seconds",
            "Time to merge the inputs of the request's batch.",
        )
        self.compute_infer_duration = histogram(
            "ortserve_inference_compute_infer_duration_seconds",
            "onnxruntime run time of the request's batch.",
        )
        self.compute_output_duration = histogram(
            "ortserve_inference_compute_output_duration_seconds",
            "Time to split the outputs of the request's batch.",
        )
        self.batch_size = histogram(
            "ortserve_inference_batch_size",
            "Rows per model execution (batch size formed by the batcher).",
            BATCH_BUCKETS,
        )
        self.model_ready = Gauge(
            "ortserve_model_ready",
            "1 while the model version is ready, else 0; `provider` is the onnxruntime execution provider.",
            (*labels, "provider"),
            registry=registry,
        )

    def for_model(self, model: str, version: str) -> ModelMetrics:
        """Children bound to one model version (label lookups stay off the hot path)."""
        return ModelMetrics(self, model, version)


class ModelMetrics:
    """The metrics of one model version."""

    def __init__(self, metrics: ServerMetrics, model: str, version: str):
        self._metrics, self._labels = metrics, (model, version)
        self.success = metrics.success.labels(model, version)
        self.inference_count = metrics.inference_count.labels(model, version)
        self.exec_count = metrics.exec_count.labels(model, version)
        self.pending = metrics.pending.labels(model, version)
        self.request_duration = metrics.request_duration.labels(model, version)
        self.queue_duration = metrics.queue_duration.labels(model, version)
        self.compute_input_duration = metrics.compute_input_duration.labels(model, version)
        self.compute_infer_duration = metrics.compute_infer_duration.labels(model, version)
        self.compute_output_duration = metrics.compute_output_duration.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)

    def failure(self, reason: str) -> None:
        """Count one failed request."""
        self._metrics.failure.labels(*self._labels, reason).inc()

    def set_ready(self, provider: str, ready: bool) -> None:
        """Mark the version (un)ready on the provider it runs on."""
        self._metrics.model_ready.labels(*self._labels, provider).set(1 if ready else 0)
