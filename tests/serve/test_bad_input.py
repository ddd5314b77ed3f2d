"""Bad requests get the right status code and a message naming model, tensor, expected and received."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from kserve import request

from ortserve.protos import grpc_service_pb2 as pb

X = np.zeros((1, 4), np.float32)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _raw(model="classifier", name="input", datatype="FP32", shape=(1, 4), raw=None):
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.append(X.tobytes() if raw is None else raw)
    return message


def _duplicated():
    message = request("classifier", {"input": X})
    message.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    message.raw_input_contents.append(X.tobytes())
    return message


def _raw_and_typed():
    message = request("classifier", {"input": X})
    message.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    return message


def _raw_count_mismatch():
    message = request("add_two", {"a": np.zeros((1, 2), np.float32), "b": np.zeros((1, 2), np.float32)})
    del message.raw_input_contents[1]
    return message


def _typed_wrong_field():
    message = pb.ModelInferRequest(model_name="classifier")
    message.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.int_contents.extend([1, 2, 3, 4])
    return message


def _typed_wrong_count():
    message = pb.ModelInferRequest(model_name="classifier")
    message.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3])
    return message


def _fp16_typed():
    message = pb.ModelInferRequest(model_name="identity_fp16")
    message.inputs.add(name="x", datatype="FP16", shape=[1, 3]).contents.fp32_contents.extend([1, 2, 3])
    return message


def _no_data():
    message = pb.ModelInferRequest(model_name="classifier")
    message.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    return message


def _batch_mismatch():
    return request("add_two", {"a": np.zeros((1, 2), np.float32), "b": np.zeros((2, 2), np.float32)})


def _bad_classification():
    message = request("classifier", {"input": X}, ["logits"])
    message.outputs[0].parameters["classification"].string_param = "two"
    return message


CASES = {
    "unknown model": (pb.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, ["nope"]),
    "unknown version": (request("classifier", {"input": X}, version="7"), grpc.StatusCode.NOT_FOUND,
                        ["classifier", "version 7"]),
    "missing input": (request("add_two", {"a": np.zeros((1, 2), np.float32)}), INVALID,
                      ["add_two", "missing input 'b'"]),
    "unexpected input": (request("classifier", {"input": X, "extra": X}), INVALID,
                         ["classifier", "unexpected input 'extra'"]),
    "duplicated input": (_duplicated(), INVALID, ["classifier", "input 'input'", "more than once"]),
    "wrong datatype": (request("classifier", {"input": X.astype(np.float64)}), INVALID,
                       ["model 'classifier': input 'input': expected datatype FP32, got FP64"]),
    "wrong shape": (request("classifier", {"input": np.zeros((1, 5), np.float32)}), INVALID,
                    ["classifier", "input 'input'", "[-1, 4]", "[1, 5]"]),
    "wrong rank": (request("classifier", {"input": np.zeros(4, np.float32)}), INVALID,
                   ["classifier", "input 'input'", "[-1, 4]", "[4]"]),
    "batch above max": (request("classifier", {"input": np.zeros((9, 4), np.float32)}), INVALID,
                        ["classifier", "input 'input'", "batch size 9", "max_batch_size 8"]),
    "unbatched shape": (request("fixed", {"x": np.zeros((1, 4), np.float32)}), INVALID,
                        ["fixed", "input 'x'", "expected shape [4]", "[1, 4]"]),
    "batch sizes differ": (_batch_mismatch(), INVALID, ["add_two", "batch size 2", "batch size 1"]),
    "raw size": (_raw(raw=b"\0" * 12), INVALID,
                 ["classifier", "input 'input'", "expected 16 bytes", "got 12"]),
    "raw and typed": (_raw_and_typed(), INVALID, ["classifier", "input 'input'", "got both"]),
    "raw count": (_raw_count_mismatch(), INVALID, ["add_two", "expected 2 raw_input_contents", "got 1"]),
    "typed wrong field": (_typed_wrong_field(), INVALID, ["classifier", "input 'input'", "fp32_contents",
                                                          "int_contents"]),
    "typed wrong count": (_typed_wrong_count(), INVALID, ["classifier", "input 'input'", "expected 4 values",
                                                          "got 3"]),
    "fp16 typed": (_fp16_typed(), INVALID, ["identity_fp16", "input 'x'", "FP16", "raw_input_contents"]),
    "no data": (_no_data(), INVALID, ["classifier", "input 'input'", "no data"]),
    "negative dim": (_raw(shape=(-1, 4)), INVALID, ["classifier", "input 'input'", "[-1, 4]"]),
    "bytes truncated": (_raw("identity_bytes", "x", "BYTES", (1, 3), b"\x05\0\0\0ab"), INVALID,
                        ["identity_bytes", "input 'x'", "at least 12 bytes"]),
    "unknown output": (request("classifier", {"input": X}, ["nope"]), INVALID,
                       ["classifier", "unexpected output 'nope'"]),
    "bad classification": (_bad_classification(), INVALID,
                           ["classifier", "output 'logits'", "classification"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_is_refused_precisely(client, case):
    message, code, fragments = CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        client.ModelInfer(message)
    assert error.value.code() == code, error.value.details()
    for fragment in fragments:
        assert fragment in error.value.details()


def test_server_keeps_serving_after_bad_input(client, server):
    assert server.process.poll() is None
    assert client.ServerLive(pb.ServerLiveRequest()).live
    client.ModelInfer(request("classifier", {"input": X}))
    assert "Traceback" not in server.stderr()
