"""An asyncio KServe v2 gRPC load generator: closed loop (N in flight) or open loop (fixed rate).

Every contender gets the same prebuilt, serialized `ModelInferRequest` bytes: the stub's request serializer
is the identity and its response deserializer keeps the bytes, so the client does the same (minimal) work for
each server. One response per run is parsed and checked before the window (right output, right shape).

Phases: warm-up (not recorded), then a measured window. A request counts towards throughput when it completes
inside the window; its latency is recorded when it was sent inside it (the requests still in flight at the
window's end are awaited). Every loop is bounded both by time (window length, plus a drain deadline) and by
count (`max_requests`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import grpc
import numpy as np

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos.datatypes import KSERVE_TO_NUMPY, numpy_to_kserve

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_READY = "/inference.GRPCInferenceService/ModelReady"
REPOSITORY_INDEX = "/inference.GRPCInferenceService/RepositoryIndex"
# Large images: lift grpc's 4 MiB default so that a batch of 128 float32 224x224 images (77 MB) fits.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class RequestSpec:
    """What to send: one request of `batch` rows of a single input tensor."""

    model_name: str
    input_name: str
    array: np.ndarray  # includes the batch dimension

    @property
    def datatype(self) -> str:
        return numpy_to_kserve(self.array.dtype)


def build_request(spec: RequestSpec) -> bytes:
    """The serialized ModelInferRequest, tensor data in `raw_input_contents` (what real clients send)."""
    request = pb.ModelInferRequest(model_name=spec.model_name)
    tensor = request.inputs.add()
    tensor.name = spec.input_name
    tensor.datatype = spec.datatype
    tensor.shape.extend(spec.array.shape)
    request.raw_input_contents.append(np.ascontiguousarray(spec.array).tobytes())
    return request.SerializeToString()


def check_response(raw: bytes, expected_rows: int) -> list[int]:
    """Parse one response and return its first output's shape; raise ValueError when it is not usable."""
    response = pb.ModelInferResponse.FromString(raw)
    if not response.outputs:
        raise ValueError("response has no outputs")
    output = response.outputs[0]
    shape = list(output.shape)
    if not shape or shape[0] != expected_rows:
        raise ValueError(f"output {output.name!r} has shape {shape}, expected {expected_rows} rows")
    count = math.prod(shape)
    if response.raw_output_contents:
        itemsize = KSERVE_TO_NUMPY[output.datatype].itemsize
        if len(response.raw_output_contents[0]) != count * itemsize:
            raise ValueError(f"output {output.name!r}: {len(response.raw_output_contents[0])} raw bytes")
    return shape


class WindowProbe(Protocol):
    """Measures the server over the window: start() at its first edge, stop() -> numbers at its last."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, float]: ...


@dataclass
class LoadResult:
    """The measured window of one load run."""

    mode: str
    concurrency: int
    target_rate: float | None
    window_s: float
    completed: int
    errors: int
    throughput_rps: float
    latency_ms: dict[str, float]
    client_cpu_s: float
    first_error: str | None = None
    dropped: int = 0
    server: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    values = np.asarray(latencies_s) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean())}


class _Recorder:
    """Throughput: successes completing inside [start, end]. Latency: every success sent inside the window,
    however late it completes (dropping the slow tail at the window's end would flatter the percentiles).
    Errors: every failure sent or completed inside the window."""

    def __init__(self, start: float, end: float, max_requests: int) -> None:
        self.start, self.end, self.max_requests = start, end, max_requests
        self.latencies: list[float] = []
        self.completed = 0
        self.errors = 0
        self.first_error: str | None = None

    @property
    def full(self) -> bool:
        return self.completed + self.errors >= self.max_requests

    def record(self, sent: float, done: float, error: BaseException | None) -> None:
        sent_inside = self.start <= sent < self.end
        done_inside = self.start <= done <= self.end
        if error is not None:
            if sent_inside or done_inside:
                self.errors += 1
                if self.first_error is None:
                    self.first_error = _describe(error)
            return
        if done_inside:
            self.completed += 1
        if sent_inside:
            self.latencies.append(done - sent)


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


class LoadGenerator:
    """Holds the channels to one server; run `closed_loop` / `open_loop` on it inside one event loop."""

    def __init__(self, target: str, request: bytes, rows: int, channels: int = 1, timeout_s: float = 30.0):
        self.target = target
        self.request = request
        self.rows = rows
        self.timeout_s = timeout_s
        self._channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(channels)]
        identity = lambda data: data  # noqa: E731 - the bytes are prebuilt, the response is kept raw
        self._calls = [
            channel.unary_unary(MODEL_INFER, request_serializer=identity, response_deserializer=identity)
            for channel in self._channels
        ]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> LoadGenerator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def check(self) -> list[int]:
        """One request, fully parsed: proves the server answers this request with the right shape."""
        raw = await self._calls[0](self.request, timeout=self.timeout_s)
        return check_response(raw, self.rows)

    async def _one(self, call, recorder: _Recorder, sent: float) -> None:
        error: BaseException | None = None
        try:
            await call(self.request, timeout=self.timeout_s)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as exc:
            error = exc
        recorder.record(sent, time.perf_counter(), error)

    async def _watch_window(self, start: float, end: float, probe: WindowProbe | None) -> tuple[float, dict]:
        """Sleep to the window's edges; there sample this process's CPU and start/stop the server probe."""
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu_start = time.process_time()
        if probe is not None:
            probe.start()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu = time.process_time() - cpu_start
        server = probe.stop() if probe is not None else {}
        # The probe's poller thread runs in this process; its CPU is the harness's, not the client's.
        return cpu - server.get("monitor_cpu_s", 0.0), server

    async def closed_loop(
        self,
        concurrency: int,
        warmup_s: float,
        window_s: float,
        max_requests: int = 1_000_000,
        probe: WindowProbe | None = None,
    ) -> LoadResult:
        """`concurrency` workers, each sending its next request as soon as the previous one answers."""
        start = time.perf_counter() + warmup_s
        recorder = _Recorder(start, start + window_s, max_requests)

        async def worker(index: int) -> None:
            call = self._calls[index % len(self._calls)]
            while not recorder.full:
                now = time.perf_counter()
                if now >= recorder.end:
                    return
                await self._one(call, recorder, now)

        watcher = asyncio.ensure_future(self._watch_window(start, recorder.end, probe))
        workers = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
        _, pending = await asyncio.wait(workers, timeout=warmup_s + window_s + self.timeout_s + 5.0)
        for task in pending:
            task.cancel()
        elapsed = min(time.perf_counter(), recorder.end) - start
        client_cpu, server = await self._finish_watch(watcher, recorder, probe)
        return self._result("closed", concurrency, None, elapsed, recorder, client_cpu, 0, server)

    @staticmethod
    async def _finish_watch(watcher: asyncio.Future, recorder: _Recorder, probe: WindowProbe | None):
        """The watcher's numbers; when max_requests ended the window early, stop it where the work did."""
        if recorder.full and not watcher.done():
            watcher.cancel()
            return float("nan"), (probe.stop() if probe is not None else {})
        return await watcher

    async def open_loop(
        self,
        rate: float,
        warmup_s: float,
        window_s: float,
        max_requests: int = 1_000_000,
        max_in_flight: int = 1024,
        probe: WindowProbe | None = None,
    ) -> LoadResult:
        """Send at a fixed rate whatever the server does; latency counts from the scheduled send time.

        Counting from the schedule (not from when the client got round to it) keeps the client's own lag from
        hiding queueing. A send that would exceed `max_in_flight` is dropped and counted, never queued.
        """
        if rate <= 0:
            raise ValueError(f"open-loop rate must be positive, got {rate}")
        t0 = time.perf_counter()
        start = t0 + warmup_s
        recorder = _Recorder(start, start + window_s, max_requests)
        watcher = asyncio.ensure_future(self._watch_window(start, recorder.end, probe))
        in_flight: set[asyncio.Task] = set()
        dropped = 0
        index = 0
        while not recorder.full:
            scheduled = t0 + index / rate
            if scheduled >= recorder.end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                dropped += scheduled >= start
            else:
                call = self._calls[index % len(self._calls)]
                task = asyncio.ensure_future(self._one(call, recorder, scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            index += 1
        if in_flight:
            await asyncio.wait(list(in_flight), timeout=self.timeout_s + 5.0)
        for task in list(in_flight):
            task.cancel()
        elapsed = min(time.perf_counter(), recorder.end) - start
        client_cpu, server = await self._finish_watch(watcher, recorder, probe)
        return self._result("open", 0, rate, elapsed, recorder, client_cpu, dropped, server)

    def _result(
        self, mode, concurrency, rate, elapsed, recorder: _Recorder, cpu, dropped, server
    ) -> LoadResult:
        elapsed = max(elapsed, 1e-9)
        return LoadResult(
            mode=mode,
            concurrency=concurrency,
            target_rate=rate,
            window_s=elapsed,
            completed=recorder.completed,
            errors=recorder.errors,
            throughput_rps=recorder.completed / elapsed,
            latency_ms=latency_summary(recorder.latencies),
            client_cpu_s=cpu,
            first_error=recorder.first_error,
            dropped=dropped,
            server=server,
        )


def channels_for(concurrency: int, streams_per_channel: int) -> int:
    """One channel (one HTTP/2 connection) per `streams_per_channel` requests in flight."""
    return max(1, math.ceil(concurrency / max(1, streams_per_channel)))


async def wait_model_ready(target: str, model_name: str, timeout_s: float) -> None:
    """Poll ModelReady until the model answers ready; raise ValueError at once when the repository index
    says its load failed (UNAVAILABLE with a reason), else TimeoutError naming the last failure."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with grpc.aio.insecure_channel(target) as channel:
        ready_call = channel.unary_unary(
            MODEL_READY,
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        index_call = channel.unary_unary(
            REPOSITORY_INDEX,
            request_serializer=pb.RepositoryIndexRequest.SerializeToString,
            response_deserializer=pb.RepositoryIndexResponse.FromString,
        )
        while time.monotonic() < deadline:
            try:
                response = await ready_call(pb.ModelReadyRequest(name=model_name), timeout=2.0)
                if response.ready:
                    return
                last = "ready=false"
                reason = await _load_failure(index_call, model_name)
                if reason:
                    raise ValueError(f"model {model_name!r} at {target} failed to load: {reason}")
            except grpc.aio.AioRpcError as exc:
                last = _describe(exc)
            await asyncio.sleep(0.2)
    raise TimeoutError(f"model {model_name!r} at {target} not ready after {timeout_s:.0f}s ({last})")


async def _load_failure(index_call, model_name: str) -> str | None:
    """The reason the repository index gives for a model whose load failed; None while it may still load
    (or when the server has no repository index: then only the timeout ends the wait)."""
    try:
        index = await index_call(pb.RepositoryIndexRequest(), timeout=2.0)
    except grpc.aio.AioRpcError:
        return None
    for model in index.models:
        if model.name == model_name and model.state == "UNAVAILABLE" and model.reason:
            return model.reason
    return None
