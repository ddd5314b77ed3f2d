"""Status codes reach the caller as InferenceServerError(code, message); retries only where safe."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from client_repository import IMAGE_SIZE, SLOW_SIZE
from serverproc import start_server

from ortserve.client import InferenceClient, InferenceServerError, RetryPolicy


def test_unknown_model_is_not_found(client: InferenceClient):
    for call in (
        lambda: client.model_metadata("no_such_model"),
        lambda: client.model_config("no_such_model"),
        lambda: client.infer("no_such_model", {"x": np.zeros((1, 2), np.float32)}),
        lambda: client.classify("no_such_model", np.zeros((4, 4), np.uint8)),
    ):
        with pytest.raises(InferenceServerError) as caught:
            call()
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert "no_such_model" in caught.value.message
        assert str(caught.value).startswith("NOT_FOUND: ")
        assert isinstance(caught.value.__cause__, grpc.RpcError)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32),  # wrong dtype
        np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE + 1), np.uint8),  # wrong shape
        np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.uint8),  # batch dimension missing
    ],
    ids=["dtype", "shape", "rank"],
)
def test_bad_input_is_invalid_argument(client: InferenceClient, array: np.ndarray):
    with pytest.raises(InferenceServerError) as caught:
        client.infer("image_u8", {"image": array})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image" in caught.value.message
    assert client.is_server_live()  # the server stays up


def test_unknown_input_name_is_invalid_argument(client: InferenceClient):
    with pytest.raises(InferenceServerError) as caught:
        client.infer("image_u8", {"pixels": np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_tiny_deadline_against_a_slow_model(client: InferenceClient):
    with pytest.raises(InferenceServerError) as caught:
        client.infer("slow", {"x": np.ones((1, SLOW_SIZE), np.float32)}, timeout=0.01)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.attempts == 1  # DEADLINE_EXCEEDED is never retried


def test_default_deadline_applies_to_every_call(address: str):
    with InferenceClient(address, timeout=0.01) as client:
        with pytest.raises(InferenceServerError) as caught:
            client.infer("slow", {"x": np.ones((1, SLOW_SIZE), np.float32)})
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_server_down_is_unavailable_after_retries(dead_address: str):
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
    with InferenceClient(dead_address, retries=policy) as client:
        with pytest.raises(InferenceServerError) as caught:
            client.is_server_ready()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.attempts == 4
        with pytest.raises(InferenceServerError) as infer:
            client.infer("image_u8", {"image": np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)})
        assert infer.value.code == grpc.StatusCode.UNAVAILABLE and infer.value.attempts == 4


def test_load_and_unload_are_never_retried(dead_address: str):
    with InferenceClient(dead_address, retries=RetryPolicy(initial_backoff_s=0.01)) as client:
        for call in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerError) as caught:
                call("image_u8")
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.attempts == 1


def test_infer_retries_can_be_switched_off(dead_address: str):
    policy = RetryPolicy(initial_backoff_s=0.01, retry_infer=False)
    with InferenceClient(dead_address, retries=policy) as client:
        with pytest.raises(InferenceServerError) as caught:
            client.infer("image_u8", {"image": np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)})
    assert caught.value.attempts == 1


def test_client_side_mistakes_are_value_errors(client: InferenceClient):
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="HOST:PORT"):
        InferenceClient("http://localhost:8001")
    with pytest.raises(ValueError, match="both private_key and certificate_chain"):
        InferenceClient("localhost:8001", private_key=b"key")
    with pytest.raises(ValueError, match="top_k"):
        client.classify("image_u8", np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8), top_k=0)
    with pytest.raises(TypeError, match="cannot read an image"):
        client.classify("image_u8", [42])


def test_the_same_client_recovers_once_the_server_is_up(repository, dead_address: str):
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.05, max_backoff_s=0.2)
    with InferenceClient(dead_address, retries=policy, timeout=30) as client:
        with pytest.raises(InferenceServerError) as caught:
            client.is_server_live()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        port = dead_address.rsplit(":", 1)[1]
        with start_server(repository, "--grpc-port", port, "--allow-metrics", "false"):
            assert client.is_server_live() is True
            assert client.infer("sequence", {"sequence": np.ones((1, 2, 4), np.float32)})[
                "summary"
            ].shape == (1, 4)
