"""client.sequence(): streaming chunks through a stateful model, with server-held and client-carried state."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import numpy as np
import onnx_models
import pytest
from sequence_models import FEATURES, write_step_model
from serverproc import start_server

from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceServerError, SequenceError
from ortserve.client.tensors import build_infer_request
from ortserve.protos import grpc_service_pb2_grpc as pb_grpc

CHUNKS = (2, 1, 4, 1)


@pytest.fixture(scope="module")
def stateful(tmp_path_factory):
    repo = tmp_path_factory.mktemp("stateful")
    nets = {
        "held": write_step_model(repo, "held", "lstm"),
        "carried": write_step_model(repo, "carried", "lstm", idle_us=None),
    }
    onnx_models.write_model(repo, "stateless", onnx_models.linear_classifier(), config="max_batch_size: 8")
    with start_server(repo) as server:
        yield server, nets


def prefixes(x, chunks=CHUNKS):
    ends = list(itertools.accumulate(chunks))
    return [(lo, hi) for lo, hi in zip([0, *ends[:-1]], ends, strict=True)]


@pytest.mark.parametrize(
    ("model", "transport"), [("held", "stream"), ("held", "unary"), ("carried", "stream")]
)
def test_sync_sequence_matches_pytorch_after_every_chunk(stateful, model, transport):
    server, nets = stateful
    x = np.random.default_rng(1).standard_normal((sum(CHUNKS), FEATURES)).astype(np.float32)
    with InferenceClient(server.grpc_address, timeout=60) as client:
        with client.sequence(model, transport=transport) as sequence:
            assert sequence.server_held == (model == "held")
            for lo, hi in prefixes(x):
                got = sequence.step(x[lo:hi])
                assert set(got) == {"output"}
                want = nets[model].prefix_output(x[None, :hi])[0]
                np.testing.assert_allclose(got["output"], want, rtol=1e-4, atol=1e-5)
        if model == "held":  # END was sent on leaving the block: the id is no longer live
            assert isinstance(sequence.id, int) and sequence.id > 0
            message = build_infer_request("held", {"input": x[None, :1]})
            message.parameters["sequence_id"].uint64_param = sequence.id
            stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_address))
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(message, timeout=60)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert str(sequence.id) in caught.value.details() and "not live" in caught.value.details()


def test_async_sequences_interleave_in_both_modes(stateful):
    server, nets = stateful
    rng = np.random.default_rng(2)
    runs = [(model, rng.standard_normal((sum(CHUNKS), FEATURES)).astype(np.float32)) for model in
            ("held", "carried") * 4]  # fmt: skip

    async def stream(client, model, x, sequence_id):
        answers = []
        transport = "unary" if isinstance(sequence_id, str) else "stream"
        async with client.sequence(model, sequence_id=sequence_id, transport=transport) as sequence:
            for index, (lo, hi) in enumerate(prefixes(x)):
                answers.append((await sequence.step(x[lo:hi], end=index == len(CHUNKS) - 1))["output"])
        return answers

    async def main():
        async with AsyncInferenceClient(server.grpc_address, timeout=60) as client:
            return await asyncio.gather(
                *(
                    stream(client, model, x, f"async-{i}" if i % 2 else None)
                    for i, (model, x) in enumerate(runs)
                )
            )

    for (model, x), answers in zip(runs, asyncio.run(main()), strict=True):
        for (_, hi), got in zip(prefixes(x), answers, strict=True):
            np.testing.assert_allclose(got, nets[model].prefix_output(x[None, :hi])[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_sequence_errors_are_typed(stateful, transport):
    server, _ = stateful
    with InferenceClient(server.grpc_address, timeout=60) as client:
        with pytest.raises(SequenceError, match="stateless"):
            client.sequence("stateless").__enter__()
        with client.sequence("held", sequence_id=99, transport=transport) as sequence:
            assert sequence.id == 99
            sequence.step(np.zeros((1, FEATURES), np.float32))
            with pytest.raises(InferenceServerError) as caught:
                sequence.step(np.zeros((1, FEATURES + 2), np.float32))
            # A stream reports a failed step as text only.
            expected = grpc.StatusCode.INVALID_ARGUMENT if transport == "unary" else grpc.StatusCode.UNKNOWN
            assert caught.value.code == expected and "input" in caught.value.message
            sequence.step(np.zeros((2, FEATURES), np.float32), end=True)
            with pytest.raises(SequenceError, match="ended"):
                sequence.step(np.zeros((1, FEATURES), np.float32))
        with pytest.raises(ValueError, match="uint64"):
            client.sequence("held", sequence_id=0).__enter__()
