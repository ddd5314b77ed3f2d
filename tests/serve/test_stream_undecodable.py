"""Request bytes that are not a valid message: INVALID_ARGUMENT on unary RPCs, logged rate-limited.

Raw bytes go out through a channel's unary_unary without a request serializer."""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.serve.wire import RateLimitedLog

UNDECODABLE = (b"\x0a\xff", b"\xff\xff\xff\xff", b"\x12\x05ab", b"\x08")
X = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def wire_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("wire") / "models"
    models.write_model(repo, "classifier", models.linear_classifier())
    with start_server(repo) as server:
        server.started_at = time.monotonic()
        yield server


def _raw_unary(address: str, method: str, data: bytes, response_class):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}", response_deserializer=response_class.FromString
        )
        return call(data, timeout=30)


@pytest.mark.parametrize("data", UNDECODABLE)
@pytest.mark.parametrize(
    ("method", "message", "response_class"),
    [
        ("ModelInfer", "ModelInferRequest", pb.ModelInferResponse),
        ("ModelMetadata", "ModelMetadataRequest", pb.ModelMetadataResponse),
        ("RepositoryModelLoad", "RepositoryModelLoadRequest", pb.RepositoryModelLoadResponse),
    ],
)
def test_undecodable_request_bytes_get_invalid_argument(wire_server, method, message, response_class, data):
    with pytest.raises(grpc.RpcError) as error:
        _raw_unary(wire_server.grpc_address, method, data, response_class)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(f"cannot parse {message}: ")
    client = stub(wire_server.grpc_address)
    got = outputs(client.ModelInfer(request("classifier", {"input": X})))
    np.testing.assert_allclose(got["logits"], models.classifier_reference(X)["logits"], rtol=1e-5)


def test_valid_raw_bytes_still_work(wire_server):
    data = request("classifier", {"input": X}).SerializeToString()
    response = _raw_unary(wire_server.grpc_address, "ModelInfer", data, pb.ModelInferResponse)
    assert response.model_name == "classifier"


def test_undecodable_requests_are_logged_rate_limited_without_tracebacks(wire_server):
    for _ in range(50):
        with pytest.raises(grpc.RpcError):
            _raw_unary(wire_server.grpc_address, "ModelInfer", b"\x0a\xff", pb.ModelInferResponse)
    log = wire_server.stderr()
    lines = [line for line in log.splitlines() if "cannot parse" in line]
    assert lines, log
    # One line per 10 s at most (this module's earlier tests sent some too).
    assert len(lines) <= 1 + (time.monotonic() - wire_server.started_at) // 10 + 1, "\n".join(lines)
    assert len(lines) < 62
    assert "Traceback" not in log


def test_rate_limited_log_counts_what_it_held_back(caplog):
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for step in range(25):
            now[0] = 100.0 + step  # one event a second for 25 s
            limited.warning("bad %s", "thing")
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing",
        "bad thing (and 9 more like it in the last 10 s)",
        "bad thing (and 9 more like it in the last 10 s)",
    ]
