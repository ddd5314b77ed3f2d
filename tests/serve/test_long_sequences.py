"""One long sequence against a quick model: the server keeps answering while it runs, gives its memory back
afterwards (and once idle after a large batch), and refuses what would exceed the memory budget. Queued
requests whose client cancelled or whose `timeout` parameter expired never run."""

from __future__ import annotations

import time

import grpc
import numpy as np
import onnx_models as models
import pytest
import sequence_model
from kserve import outputs, request, sample, scrape, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

ONE_AT_A_TIME = "max_batch_size: 1\ndynamic_batching { %s }\n"
SHORT = {"x": sequence_model.sequence(8)}
LONG = {"x": sequence_model.sequence(sequence_model.LONG_STEPS)}
STATE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def lstm_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("long") / "models"
    lstm = sequence_model.lstm()
    models.write_model(repo, "lstm", lstm, "max_batch_size: 8\ndynamic_batching { }")
    models.write_model(repo, "lstm_cancel", lstm, ONE_AT_A_TIME % "")
    policy = "default_queue_policy { allow_timeout_override: true }"
    models.write_model(repo, "lstm_timeout", lstm, ONE_AT_A_TIME % policy)
    models.write_model(
        repo, "lstm_levels", lstm, ONE_AT_A_TIME % "priority_levels: 2 default_priority_level: 2"
    )
    with start_server(repo) as server:
        yield server


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    """A memory budget that one long sequence exceeds (it needs ~250 MB) and warm-up (batch 8) does not."""
    repo = tmp_path_factory.mktemp("tight") / "models"
    models.write_model(repo, "lstm", sequence_model.lstm(), "max_batch_size: 8\ndynamic_batching { }")
    with start_server(repo, "--max-request-memory-bytes", str(64 << 20)) as server:
        yield server


def _pending(server, model: str) -> float:
    return sample(scrape(server.metrics_url), "ortserve_inference_pending_request_count", model=model)


def _wait_pending(server, model: str, count: int) -> None:
    """Wait until the server has received (and not yet answered) `count` requests for `model`."""
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while _pending(server, model) != count:
        assert time.monotonic() < deadline, f"{model}: never {count} requests in flight"
        time.sleep(0.01)


def _resident_mib(server) -> float:
    with open(f"/proc/{server.process.pid}/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _execution_count(client, model: str) -> int:
    return client.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0].execution_count


def test_server_live_answers_while_a_long_sequence_runs_and_memory_comes_back(lstm_server):
    client = stub(lstm_server.grpc_address)
    for _ in range(50):  # the model is quick: its small batches run on the event loop
        client.ModelInfer(request("lstm", SHORT))
    baseline = _resident_mib(lstm_server)
    long = client.ModelInfer.future(request("lstm", LONG), timeout=600)
    _wait_pending(lstm_server, "lstm", 1)  # decoded and queued or running
    answered_meanwhile = 0
    while not long.done():
        client.ServerLive(pb.ServerLiveRequest(), timeout=600)
        answered_meanwhile += not long.done()
    assert outputs(long.result())["h"].shape == (1, sequence_model.HIDDEN)
    assert answered_meanwhile >= 1, "ServerLive waited for the long sequence: it ran on the event loop"
    grown = _resident_mib(lstm_server) - baseline
    # Without shrinking the arena the server stayed ~250 MB bigger after this request.
    assert grown < 64, f"resident memory stayed {grown:.0f} MiB above its level before the long sequence"
    assert outputs(client.ModelInfer(request("lstm", SHORT)))["h"].shape == (1, sequence_model.HIDDEN)


def test_an_idle_model_gives_back_the_arena_its_large_batches_grew(lstm_server):
    client = stub(lstm_server.grpc_address)
    shrinks = sample(scrape(lstm_server.metrics_url), "ortserve_arena_shrinks_total", model="lstm")
    baseline = _resident_mib(lstm_server)
    # 8 x 2048 x 8 elements: 4x the load-time probe, not outsized, so it is not shrunk as it ends (~20 MB).
    rows = {"x": sequence_model.sequence(2048, rows=8)}
    assert outputs(client.ModelInfer(request("lstm", rows)))["h"].shape == (8, sequence_model.HIDDEN)
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while sample(scrape(lstm_server.metrics_url), "ortserve_arena_shrinks_total", model="lstm") <= shrinks:
        assert time.monotonic() < deadline, "the model's arena was never shrunk once idle"
        time.sleep(0.05)
    grown = _resident_mib(lstm_server) - baseline
    assert grown < 16, f"resident memory stayed {grown:.0f} MiB above its level before the batch"


def test_a_request_over_the_memory_budget_is_refused_with_resource_exhausted(tight_server):
    client = stub(tight_server.grpc_address)
    with pytest.raises(grpc.RpcError) as error:
        client.ModelInfer(request("lstm", LONG), timeout=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error.value.details()
    for part in ("model 'lstm' version 1", f"x [1, {sequence_model.LONG_STEPS}, 8]", "MiB of intermediate"):
        assert part in details
    assert "budget of 64 MiB" in details and "--max-request-memory-bytes" in details
    rows = np.concatenate([SHORT["x"]] * 8)
    assert outputs(client.ModelInfer(request("lstm", {"x": rows})))["h"].shape == (8, sequence_model.HIDDEN)


def _behind_a_long_run(server, client, model: str):
    """Start a long sequence on `model` (one instance, batches of 1); return its future once it is in."""
    long = client.ModelInfer.future(request(model, LONG), timeout=600)
    _wait_pending(server, model, 1)
    return long


def test_a_queued_request_whose_client_cancelled_is_never_run(lstm_server):
    client = stub(lstm_server.grpc_address)
    long = _behind_a_long_run(lstm_server, client, "lstm_cancel")
    queued = client.ModelInfer.future(request("lstm_cancel", SHORT), timeout=600)
    _wait_pending(lstm_server, "lstm_cancel", 2)
    queued.cancel()
    _wait_pending(lstm_server, "lstm_cancel", 1)  # the server saw the cancellation
    long.result()
    client.ModelInfer(request("lstm_cancel", SHORT))
    assert _execution_count(client, "lstm_cancel") == 2, "a request whose client had cancelled was run"


def test_the_timeout_parameter_fails_a_queued_request_on_time(lstm_server):
    client = stub(lstm_server.grpc_address)
    long = _behind_a_long_run(lstm_server, client, "lstm_timeout")
    message = request("lstm_timeout", SHORT)
    message.parameters["timeout"].int64_param = 50_000  # 50 ms in the queue at most
    with pytest.raises(grpc.RpcError) as error:
        client.ModelInfer(message, timeout=600)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "request timeout expired" in error.value.details()
    long.result()
    assert _execution_count(client, "lstm_timeout") == 1


def test_priority_parameter_is_checked_against_the_priority_levels(lstm_server):
    client = stub(lstm_server.grpc_address)
    for priority in (0, 1, 2):
        message = request("lstm_levels", SHORT)
        message.parameters["priority"].uint64_param = priority
        assert outputs(client.ModelInfer(message))["h"].shape == (1, sequence_model.HIDDEN)
    message.parameters["priority"].uint64_param = 3
    with pytest.raises(grpc.RpcError) as error:
        client.ModelInfer(message)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "priority 3 is above the model's 2 priority levels" in error.value.details()
