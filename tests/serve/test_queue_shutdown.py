"""Queue policy (full queue, queue timeout), client deadlines, and graceful shutdown with work in flight."""

from __future__ import annotations

import signal
import time

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, sample, scrape, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

SLOW = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\nmax_batch_size: 1\n'
X = np.ones((1, 256), np.float32)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("slow") / "models"
    slow = models.slow()
    models.write_model(
        repo, "slow_queue", slow, SLOW + "dynamic_batching { default_queue_policy { max_queue_size: 2 } }"
    )
    models.write_model(
        repo,
        "slow_timeout",
        slow,
        SLOW + "dynamic_batching { default_queue_policy { default_timeout_microseconds: 1000 } }",
    )
    # About a second a run on this machine, whatever its speed: a wide margin over the late requests' 50 ms
    # deadline.
    depth = models.slow_depth_for(1.0)
    models.write_model(repo, "slow_deadline", models.slow(depth=depth), SLOW + "dynamic_batching { }")
    with start_server(repo) as server:
        yield server


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    """Poll `condition()` (server state: metrics, statistics) until true; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def wait_pending(server, model: str, count: int) -> None:
    """Wait until the server has received and not yet answered `count` requests for `model`."""
    wait_for(
        lambda: (
            sample(scrape(server.metrics_url), "ortserve_inference_pending_request_count", model=model)
            == count
        ),
        f"{count} requests for {model} in flight",
    )


def _settle(futures):
    """(successes, errors) of grpc futures."""
    ok, errors = 0, []
    for future in futures:
        try:
            future.result(timeout=120)
            ok += 1
        except grpc.RpcError as error:
            errors.append(error)
    return ok, errors


def test_full_queue_answers_unavailable(slow_server):
    client = stub(slow_server.grpc_address)
    ok, errors = _settle([client.ModelInfer.future(request("slow_queue", {"x": X})) for _ in range(12)])
    assert ok >= 1
    assert errors, "12 concurrent requests on one slow instance with max_queue_size 2 were all queued"
    for error in errors:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "exceeds maximum queue size" in error.details()
    failures = sample(
        scrape(slow_server.metrics_url), "ortserve_inference_request_failure_total", model="slow_queue"
    )
    assert failures == len(errors)


def test_queue_timeout_answers_unavailable(slow_server):
    client = stub(slow_server.grpc_address)
    ok, errors = _settle([client.ModelInfer.future(request("slow_timeout", {"x": X})) for _ in range(4)])
    assert ok >= 1
    assert errors, "requests queued behind a slow run for longer than the 1 ms queue timeout all ran"
    for error in errors:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "request timeout expired" in error.details()
    samples = scrape(slow_server.metrics_url)
    assert sample(
        samples, "ortserve_inference_request_failure_total", model="slow_timeout", reason="queue_timeout"
    ) == len(errors)


def test_requests_past_their_deadline_are_dropped_not_run(slow_server):
    client = stub(slow_server.grpc_address)

    def executions() -> int:
        stats = client.ModelStatistics(pb.ModelStatisticsRequest(name="slow_deadline")).model_stats[0]
        return stats.execution_count

    def dropped() -> float:
        samples = scrape(slow_server.metrics_url)
        return sum(
            sample(samples, "ortserve_inference_request_failure_total", model="slow_deadline", reason=reason)
            for reason in ("cancelled", "deadline_exceeded")
        )

    # The claim holds only when the first run outlasts the late requests' deadlines. On a loaded machine the
    # client can be descheduled long enough after the first request started that its run is nearly over: such
    # a try proves nothing either way, so it is repeated rather than judged.
    for _ in range(3):
        runs_before, dropped_before = executions(), dropped()
        first = client.ModelInfer.future(request("slow_deadline", {"x": X}))
        wait_pending(slow_server, "slow_deadline", 1)  # the first request has reached the instance
        sent = time.monotonic()
        late = [client.ModelInfer.future(request("slow_deadline", {"x": X}), timeout=0.05) for _ in range(3)]
        first.result(timeout=120)
        first_outlasted_s = time.monotonic() - sent
        for future in late:
            with pytest.raises(grpc.RpcError) as error:
                future.result(timeout=120)
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_pending(slow_server, "slow_deadline", 0)  # failures are counted as they leave the pending count
        # gRPC itself refuses, uncounted, a request whose deadline passed before it reached the server; a try
        # in which all three were refused that way never queued one, so it proves nothing either.
        if first_outlasted_s >= 0.3 and dropped() > dropped_before:
            break
    else:
        pytest.fail("in 3 tries the first run never outlasted by 0.3 s late requests that reached the server")
    assert executions() - runs_before == 1, "a request whose client had given up was still run"
    assert dropped() - dropped_before <= 3


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(tmp_path):
    repo = tmp_path / "models"
    models.write_model(repo, "slow", models.slow(), SLOW + "dynamic_batching { }")
    with start_server(repo, "--exit-timeout-secs", "60") as server:
        client = stub(server.grpc_address)
        futures = [client.ModelInfer.future(request("slow", {"x": X})) for _ in range(4)]
        wait_pending(server, "slow", 4)  # the requests reached the server before the signal
        server.process.send_signal(signal.SIGTERM)
        for future in futures:
            np.testing.assert_equal(outputs(future.result(timeout=120))["y"].shape, (1, 256))
        assert server.process.wait(timeout=60) == 0
        assert "shutting down" in server.stderr()
        with pytest.raises(grpc.RpcError):
            client.ModelInfer(request("slow", {"x": X}), timeout=5)
