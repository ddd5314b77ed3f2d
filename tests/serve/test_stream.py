"""ModelStreamInfer: every request read is answered and the stream always ends with a status.

Bad messages are sent as raw bytes (a channel's stream_stream without a request serializer)."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.serve.errors import Unavailable
from ortserve.serve.stream import StreamAnswers

X = np.ones((1, 4), np.float32)
SLOW_X = np.ones((1, 256), np.float32)
ONE_AT_A_TIME = (
    'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\nmax_batch_size: 1\n'
)
UNDECODABLE = b"\x0a\xff"  # field 1, length-delimited, with a truncated length
METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("stream") / "models"
    models.write_model(repo, "classifier", models.linear_classifier())
    models.write_model(repo, "slow", models.slow(), ONE_AT_A_TIME + "dynamic_batching { }")
    models.write_model(repo, "one_at_a_time", models.linear_classifier(), ONE_AT_A_TIME)
    with start_server(repo) as server:
        yield server


def _raw_stream(address: str, messages: list[bytes]):
    """(answers, final RpcError or None) of a stream of raw request bytes."""
    channel = grpc.insecure_channel(address)
    call = channel.stream_stream(METHOD, response_deserializer=pb.ModelStreamInferResponse.FromString)
    answers = []
    try:
        for answer in call(iter(messages), timeout=60):
            answers.append(answer)
    except grpc.RpcError as error:
        return answers, error
    finally:
        channel.close()
    return answers, None


def _good(request_id: str) -> bytes:
    return request("classifier", {"input": X}, request_id=request_id).SerializeToString()


def test_an_undecodable_message_ends_the_stream_after_answering_what_came_before(stream_server):
    before = [_good(f"before-{i}") for i in range(5)]
    answers, error = _raw_stream(stream_server.grpc_address, [*before, UNDECODABLE, _good("after")])
    assert sorted(a.infer_response.id for a in answers) == [f"before-{i}" for i in range(5)]
    assert not any(a.error_message for a in answers)
    assert error is not None, "the stream ended OK after an undecodable message"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot parse ModelInferRequest" in error.details()
    assert "cannot parse ModelInferRequest" in stream_server.stderr()
    assert "Traceback" not in stream_server.stderr()


def test_an_undecodable_first_message_ends_the_stream_with_invalid_argument(stream_server):
    answers, error = _raw_stream(stream_server.grpc_address, [UNDECODABLE, _good("after")])
    assert answers == []
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    client = stub(stream_server.grpc_address)
    assert client.ServerLive(pb.ServerLiveRequest()).live


def test_half_close_with_requests_in_flight_answers_them_all(stream_server):
    client = stub(stream_server.grpc_address)
    sent = [request("slow", {"x": SLOW_X}, request_id=str(i)) for i in range(4)]
    # The iterator ends right after the last request: the client half-closes while all of them run.
    answers = list(client.ModelStreamInfer(iter(sent), timeout=120))
    assert sorted(a.infer_response.id for a in answers) == ["0", "1", "2", "3"]
    for answer in answers:
        assert not answer.error_message
        assert outputs(answer.infer_response)["y"].shape == (1, 256)


def test_many_requests_on_one_stream_are_all_answered(stream_server):
    client = stub(stream_server.grpc_address)
    count = 2000  # more than a stream answers at a time (serve/stream.py MAX_PENDING): reading waits
    sent = (request("classifier", {"input": X * (i % 7)}, request_id=str(i)) for i in range(count))
    answers = {a.infer_response.id: a for a in client.ModelStreamInfer(sent, timeout=300)}
    assert set(answers) == {str(i) for i in range(count)}
    for i in (0, 1, 999, count - 1):
        got = outputs(answers[str(i)].infer_response)["logits"]
        np.testing.assert_allclose(got, models.classifier_reference(X * (i % 7))["logits"], rtol=1e-5)


def test_requests_reach_the_model_in_arrival_order(stream_server):
    """One instance, batches of one: the answers come in the order the requests were queued."""
    client = stub(stream_server.grpc_address)
    sent = [request("one_at_a_time", {"input": X}, request_id=str(i)) for i in range(50)]
    answers = [a.infer_response.id for a in client.ModelStreamInfer(iter(sent), timeout=120)]
    assert answers == [str(i) for i in range(50)]


def test_a_client_cancelling_its_stream_leaves_the_server_serving(stream_server):
    client = stub(stream_server.grpc_address)
    hold = threading.Event()

    def requests():
        yield request("slow", {"x": SLOW_X}, request_id="first")
        hold.wait(60)  # keeps the stream open until the test cancels it

    call = client.ModelStreamInfer(requests(), timeout=120)
    assert next(call).infer_response.id == "first"
    call.cancel()
    with pytest.raises(grpc.RpcError) as error:
        next(call)
    assert error.value.code() == grpc.StatusCode.CANCELLED
    hold.set()
    answers = list(client.ModelStreamInfer(iter([request("classifier", {"input": X}, request_id="x")])))
    assert [a.infer_response.id for a in answers] == ["x"]
    assert "Traceback" not in stream_server.stderr()


async def _collect(stream: StreamAnswers) -> tuple[list, Exception | None]:
    answers = []
    try:
        async for answer in stream.responses():
            answers.append(answer)
    except Exception as exc:  # noqa: BLE001 - the stream's end status
        return answers, exc
    return answers, None


async def _echo(request):
    await asyncio.sleep(0)
    if request == "boom":
        raise ValueError("respond failed")
    return f"answer {request}"


def _failed(request, exc):
    return f"failed {request}: {exc}"


def test_a_reader_failure_ends_the_stream_with_it_after_the_answers():
    async def requests():
        yield "a"
        yield "boom"
        yield "b"
        raise RuntimeError("the transport broke")

    answers, end = asyncio.run(_collect(StreamAnswers(requests(), _echo, _failed)))
    assert sorted(answers) == ["answer a", "answer b", "failed boom: respond failed"]
    assert isinstance(end, RuntimeError)


def test_stop_reading_ends_an_idle_stream_unavailable_and_answers_what_was_read():
    async def scenario():
        read_two = asyncio.Event()

        async def requests():
            yield "a"
            yield "b"
            read_two.set()
            await asyncio.Event().wait()  # an open, idle stream

        stream = StreamAnswers(requests(), _echo, _failed)
        collecting = asyncio.ensure_future(_collect(stream))
        await read_two.wait()
        stream.stop_reading()
        return await collecting

    answers, end = asyncio.run(scenario())
    assert sorted(answers) == ["answer a", "answer b"]
    assert isinstance(end, Unavailable)
    assert str(end) == "server is shutting down"
