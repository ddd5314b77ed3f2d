"""Graceful shutdown: after SIGTERM new RPCs get UNAVAILABLE, admitted ones are answered (nothing
CANCELLED), open streams end with a status, --exit-timeout-secs bounds the exit, a second signal exits."""

from __future__ import annotations

import collections
import signal
import threading
import time

import grpc
import numpy as np
import onnx_models as models
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kserve import outputs, request, sample, scrape, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

ONE_THREAD = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
X = np.ones((1, 4), np.float32)
SLOW_X = np.ones((1, 256), np.float32)
# 17 GFLOP a row at one thread: warm-up (one row, twice) takes about a second, STUCK_X minutes.
STUCK_X = np.ones((512, 256), np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("shutdown") / "models"
    models.write_model(repo, "classifier", models.linear_classifier())
    models.write_model(
        repo, "small", models.slow(rows=256, depth=8), ONE_THREAD + "max_batch_size: 8\ndynamic_batching { }"
    )
    return repo


@pytest.fixture(scope="module")
def stuck_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("stuck") / "models"
    models.write_model(repo, "classifier", models.linear_classifier())
    models.write_model(repo, "stuck", models.slow(rows=128, depth=1024), ONE_THREAD + "max_batch_size: 0\n")
    return repo


def _wait_pending(server, model: str, at_least: int, timeout: float = 120.0) -> float:
    """Wait until the server counts `at_least` requests of `model` received and not answered."""
    give_up = time.monotonic() + timeout
    while True:
        pending = sample(scrape(server.metrics_url), "ortserve_inference_pending_request_count", model=model)
        if pending >= at_least:
            return pending
        assert time.monotonic() < give_up, f"{model}: {pending} pending, waited for {at_least}"
        time.sleep(0.02)


def _wait_exit(server, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    code = server.process.wait(timeout)
    return code, time.monotonic() - started


def test_sigterm_with_16_clients_in_flight_cancels_nothing(repo):
    results: list[tuple[bool, float, object, str]] = []  # (sent before the signal, done at, code, details)
    signalled_at: list[float] = []
    with start_server(repo, "--exit-timeout-secs", "60") as server:

        def client_loop():
            client = stub(server.grpc_address)
            while True:
                before = not signalled_at
                try:
                    answer = client.ModelInfer(request("small", {"x": SLOW_X}), timeout=120)
                    assert outputs(answer)["y"].shape == (1, 256)
                    results.append((before, time.monotonic(), grpc.StatusCode.OK, ""))
                except grpc.RpcError as error:
                    results.append((before, time.monotonic(), error.code(), error.details()))
                    return

        threads = [threading.Thread(target=client_loop) for _ in range(16)]
        for thread in threads:
            thread.start()
        in_flight = _wait_pending(server, "small", 8)
        signalled_at.append(time.monotonic())
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        code, exit_s = _wait_exit(server, 60)
    codes = collections.Counter(result[2] for result in results)
    drained = [r for r in results if r[0] and r[2] == grpc.StatusCode.OK and r[1] > signalled_at[0]]
    drain_s = max((r[1] for r in drained), default=signalled_at[0]) - signalled_at[0]
    print(f"pending at SIGTERM >= {in_flight:.0f}; answered OK after it: {len(drained)} in {drain_s:.2f} s; "
          f"codes {dict(codes)}; exit {exit_s:.2f} s after the last client")  # fmt: skip
    assert grpc.StatusCode.CANCELLED not in codes, "\n".join(
        map(
            str,
            [
                (before, round(done - signalled_at[0], 3), str(code), details)
                for before, done, code, details in results
            ],
        )
    )
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, results
    assert codes[grpc.StatusCode.UNAVAILABLE] == 16, "every client ends on UNAVAILABLE (then retries)"
    assert drained, "no request in flight at SIGTERM was answered"
    assert code == 0, server.stderr()


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def _open_stream(client, first: pb.ModelInferRequest, more: list[pb.ModelInferRequest] = ()):
    """A stream that sends its requests and stays open (no half-close) until `release` is set."""
    release = threading.Event()

    def requests():
        yield first
        yield from more
        release.wait(120)

    return client.ModelStreamInfer(requests(), timeout=120), release


def _drain_stream(call) -> tuple[list, grpc.RpcError | None]:
    answers = []
    try:
        for answer in call:
            answers.append(answer)
    except grpc.RpcError as error:
        return answers, error
    return answers, None


def test_open_streams_end_with_a_status_and_do_not_hold_the_exit(repo):
    with start_server(repo, "--exit-timeout-secs", "120") as server:
        client = stub(server.grpc_address)
        idle, release_idle = _open_stream(client, request("classifier", {"input": X}, request_id="idle"))
        assert next(idle).infer_response.id == "idle"
        busy_requests = [
            request("small", {"x": np.ones((8, 256), np.float32)}, request_id=str(i)) for i in range(3)
        ]
        busy, release_busy = _open_stream(client, busy_requests[0], busy_requests[1:])
        _wait_pending(server, "small", 1)
        server.process.send_signal(signal.SIGTERM)
        idle_answers, idle_end = _drain_stream(idle)
        busy_answers, busy_end = _drain_stream(busy)
        code, exit_s = _wait_exit(server, 60)
        release_idle.set()
        release_busy.set()
    assert idle_answers == []
    assert idle_end is not None and idle_end.code() == grpc.StatusCode.UNAVAILABLE
    assert "server is shutting down" in idle_end.details()
    assert sorted(a.infer_response.id for a in busy_answers) == ["0", "1", "2"]
    assert not any(a.error_message for a in busy_answers)
    assert busy_end is not None and busy_end.code() == grpc.StatusCode.UNAVAILABLE
    assert code == 0, server.stderr()
    assert exit_s < 60, f"open streams held the exit for {exit_s:.1f} s (--exit-timeout-secs 120)"


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_while_draining_new_rpcs_get_unavailable_and_a_second_signal_exits_at_once(stuck_repo, second):
    with start_server(stuck_repo, "--exit-timeout-secs", "600") as server:
        client = stub(server.grpc_address)
        stuck = client.ModelInfer.future(request("stuck", {"x": STUCK_X}), timeout=600)
        _wait_pending(server, "stuck", 1)
        server.process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + 60
        while _health(server.grpc_address) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < give_up, "health stayed SERVING after SIGTERM"
            time.sleep(0.02)
        for call in (
            lambda: client.ModelInfer(request("classifier", {"input": X}), timeout=30),
            lambda: client.ServerLive(pb.ServerLiveRequest(), timeout=30),
            lambda: list(client.ModelStreamInfer(iter([request("classifier", {"input": X})]), timeout=30)),
        ):
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error.value.details() == "server is shutting down"
        assert server.process.poll() is None, "the exit did not wait for the stuck request"
        server.process.send_signal(second)
        code, exit_s = _wait_exit(server, 30)
        with pytest.raises(grpc.RpcError) as error:
            stuck.result(timeout=60)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert code == -second
    print(f"second {second.name}: exited {exit_s:.2f} s after it")


def test_exit_timeout_bounds_the_exit_with_a_request_still_running(stuck_repo):
    with start_server(stuck_repo, "--exit-timeout-secs", "1") as server:
        client = stub(server.grpc_address)
        stuck = client.ModelInfer.future(request("stuck", {"x": STUCK_X}), timeout=600)
        _wait_pending(server, "stuck", 1)
        server.process.send_signal(signal.SIGTERM)
        code, exit_s = _wait_exit(server, 60)
        with pytest.raises(grpc.RpcError) as error:
            stuck.result(timeout=60)
        log = server.stderr()
    print(f"--exit-timeout-secs 1 with a request running: exit code {code} after {exit_s:.2f} s")
    assert code == 1, log
    assert exit_s < 10, f"--exit-timeout-secs 1 took {exit_s:.1f} s"
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "exit timeout" in log
