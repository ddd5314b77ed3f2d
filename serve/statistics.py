"""Triton ModelStatistics of one model version, and the one place requests and batches are recorded.

Triton's statistics need exact integer nanosecond sums and per-batch-size timings that Prometheus
histograms do not keep, so they are counted here; `ModelRecorder` updates both. All updates run on
the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ortserve.protos import grpc_service_pb2

from .batcher import Result
from .metrics import ModelMetrics


@dataclass
class Duration:
    """A Triton StatisticDuration: how many, and their total nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_proto(self, message) -> None:
        message.count, message.ns = self.count, self.ns


@dataclass
class BatchStats:
    """Per batch size: compute durations of the executions of that size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """The counters behind one ModelStatistics message."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def to_proto(self, name: str, version: str) -> grpc_service_pb2.ModelStatistics:
        message = grpc_service_pb2.ModelStatistics(
            name=name,
            version=version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
        )
        stats = message.inference_stats
        for phase in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            getattr(self, phase).to_proto(getattr(stats, phase))
        for size in sorted(self.batches):
            batch, entry = self.batches[size], message.batch_stats.add(batch_size=size)
            for phase in ("compute_input", "compute_infer", "compute_output"):
                getattr(batch, phase).to_proto(getattr(entry, phase))
        return message


class ModelRecorder:
    """Records requests and batches of one model version in its statistics and its Prometheus metrics."""

    def __init__(self, metrics: ModelMetrics):
        self.metrics = metrics
        self.stats = ModelStats()

    def request_started(self) -> None:
        self.metrics.pending += 1

    def request_succeeded(self, result: Result, duration_ns: int, rows: int) -> None:
        stats = self.stats
        stats.success.add(duration_ns)
        stats.queue.add(result.queue_ns)
        stats.compute_input.add(result.compute_input_ns)
        stats.compute_infer.add(result.compute_infer_ns)
        stats.compute_output.add(result.compute_output_ns)
        stats.inference_count += rows
        stats.last_inference_ms = time.time_ns() // 1_000_000
        self.metrics.request_succeeded(
            rows,
            duration_ns / 1e9,
            result.queue_ns / 1e9,
            result.compute_input_ns / 1e9,
            result.compute_infer_ns / 1e9,
            result.compute_output_ns / 1e9,
        )

    def request_failed(self, reason: str, duration_ns: int, started: bool) -> None:
        if started:
            self.metrics.pending -= 1
        self.stats.fail.add(duration_ns)
        self.metrics.failure(reason)

    def batch_executed(self, size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        stats = self.stats
        stats.execution_count += 1
        batch = stats.batches.get(size)
        if batch is None:
            batch = stats.batches[size] = BatchStats()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)
        self.metrics.batch_executed(size)
