"""What a KServe v2 server says about its own work over a window: the instances' busy fraction (time in
onnxruntime over wall time) and the mean batch, from ModelStatistics' batch_stats.

Only ortserve (and Triton) fill batch_stats; for other contenders `read` finds none and the window reports
nothing rather than a zero.
"""

from __future__ import annotations

import logging
import time

import grpc

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc

logger = logging.getLogger("bench")


class BatchStatsProbe:
    """start() ... stop(): `busy_fraction` (onnxruntime time / wall time / instances), `mean_batch` (rows
    per onnxruntime run), `run_ms` (per onnxruntime run), `request_ms` (a request's time in the server,
    decoding to encoding) and `queue_ms` (its wait for an instance) of one model over the window."""

    def __init__(self, target: str, model: str, timeout_s: float = 5.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._model, self._timeout_s = model, timeout_s
        self._instances = self._count_instances()
        self._first: tuple[int, ...] | None = None
        self._started = 0.0

    def _count_instances(self) -> int:
        try:
            config = self._stub.ModelConfig(pb.ModelConfigRequest(name=self._model), timeout=self._timeout_s)
        except grpc.RpcError:
            return 1
        return max(1, sum(group.count or 1 for group in config.config.instance_group))

    def _read(self) -> tuple[int, ...] | None:
        """(onnxruntime ns, runs, rows, requests, request ns, queue ns) so far; None without batch stats."""
        request = pb.ModelStatisticsRequest(name=self._model)
        try:
            reply = self._stub.ModelStatistics(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            logger.debug("no statistics for %s: %s", self._model, exc)
            return None
        batches = [b for model in reply.model_stats for b in model.batch_stats]
        if not batches:
            return None
        infer_ns = sum(b.compute_infer.ns for b in batches)
        runs = sum(b.compute_infer.count for b in batches)
        rows = sum(b.batch_size * b.compute_infer.count for b in batches)
        requests = reply.model_stats[0].inference_stats
        return infer_ns, runs, rows, requests.success.count, requests.success.ns, requests.queue.ns

    def start(self) -> None:
        self._first = self._read()
        self._started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._started
        last = self._read()
        self._channel.close()
        if self._first is None or last is None:
            return {}
        infer_ns, runs, rows, requests, request_ns, queue_ns = (
            b - a for a, b in zip(self._first, last, strict=True)
        )
        return {
            "busy_fraction": infer_ns / 1e9 / max(wall, 1e-9) / self._instances,
            "mean_batch": rows / runs if runs else float("nan"),
            "run_ms": infer_ns / 1e6 / runs if runs else float("nan"),
            "request_ms": request_ns / 1e6 / requests if requests else float("nan"),
            "queue_ms": queue_ns / 1e6 / requests if requests else float("nan"),
        }


class Probes:
    """Several window probes as one: started in order, their stop() results merged."""

    def __init__(self, *probes) -> None:
        self._probes = probes

    def start(self) -> None:
        for probe in self._probes:
            probe.start()

    def stop(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for probe in self._probes:
            merged.update(probe.stop())
        return merged
