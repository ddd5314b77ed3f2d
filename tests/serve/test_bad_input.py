"""Bad requests get the right status code and a short message naming model, tensor, expected and received;
after every one the server still answers a good request correctly (the table is in bad_input_cases.py)."""

from __future__ import annotations

import grpc
import numpy as np
import onnx_models as models
import pytest
from bad_input_cases import CASES
from bad_input_repo import GRU_FEATURES, GRU_HIDDEN, write_bad_input_repository
from kserve import outputs, request, stub

# A message that echoes client input whole (a 100 KB name, a rank-10000 shape) would pass this many chars.
MESSAGE_LIMIT = 400
GOOD = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)


@pytest.fixture(scope="module")
def bad_input_server(tmp_path_factory, start_ortserve):
    repo = tmp_path_factory.mktemp("bad_input") / "models"
    write_bad_input_repository(repo)
    with start_ortserve(repo) as server:
        yield server


@pytest.fixture(scope="module")
def bad_client(bad_input_server):
    return stub(bad_input_server.grpc_address, **{"grpc.max_send_message_length": 64 << 20})


def _answers_correctly(client, server) -> None:
    assert server.process.poll() is None, server.stderr()
    answer = outputs(client.ModelInfer(request("classifier", {"input": GOOD}, ["logits"])))
    np.testing.assert_allclose(answer["logits"], models.classifier_reference(GOOD)["logits"], rtol=1e-6)


def test_the_table_has_100_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_is_refused_precisely(bad_client, bad_input_server, case):
    message, code, fragments = CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        bad_client.ModelInfer(message)
    details = error.value.details()
    assert error.value.code() == code, details
    for fragment in fragments:
        assert fragment in details
    assert len(details) <= MESSAGE_LIMIT, details
    _answers_correctly(bad_client, bad_input_server)


def test_zero_length_sequence_never_reaches_the_gru(bad_client, bad_input_server):
    """A [1, 0, 8] sequence aborts onnxruntime on this export (SIGABRT): refused, and the GRU still runs."""
    empty = request("gru", {"x": np.zeros((1, 0, GRU_FEATURES), np.float32)})
    with pytest.raises(grpc.RpcError) as error:
        bad_client.ModelInfer(empty)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    x = np.linspace(-1, 1, 2 * 5 * GRU_FEATURES, dtype=np.float32).reshape(2, 5, GRU_FEATURES)
    y = outputs(bad_client.ModelInfer(request("gru", {"x": x})))["y"]
    assert y.shape == (2, 5, 2 * GRU_HIDDEN) and np.isfinite(y).all()
    _answers_correctly(bad_client, bad_input_server)


def test_declared_zero_size_dims_are_served(bad_client):
    """allow_zero_size_dims "true": an empty sequence runs and comes back empty."""
    answer = outputs(bad_client.ModelInfer(request("series_zero_ok", {"x": np.zeros((1, 0, 2), np.float32)})))
    assert answer["y"].shape == (1, 0, 2)


def test_sequence_at_its_bound_is_served(bad_client):
    x = np.ones((1, 64, GRU_FEATURES), np.float32)
    assert outputs(bad_client.ModelInfer(request("gru", {"x": x})))["y"].shape == (1, 64, 2 * GRU_HIDDEN)


def test_large_string_tensors_are_decoded(bad_client):
    """200,000 strings, varied and uniform (decoded off the event loop), come back as they went."""
    varied = np.array([f"item {i} é" for i in range(200_000)], dtype=object).reshape(1, -1)
    uniform = np.full((1, 200_000), "abc", dtype=object)
    empty = np.full((2, 100_000), "", dtype=object)
    for array in (varied, uniform, empty):
        answer = outputs(bad_client.ModelInfer(request("strings", {"x": array})))["y"]
        assert answer.shape == array.shape
        assert [v.decode() for v in answer.reshape(-1)] == list(array.reshape(-1))


def test_no_traceback_in_the_log(bad_input_server, bad_client):
    _answers_correctly(bad_client, bad_input_server)
    assert "Traceback" not in bad_input_server.stderr()
