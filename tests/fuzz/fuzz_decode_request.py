"""atheris fuzz target for the request decoder: bytes -> ModelInferRequest -> decode_request.

Any exception other than InvalidArgument, a message over MESSAGE_LIMIT characters (client input echoed
whole), or a decoded array that disagrees with the request's shape is a finding.

    python tests/fuzz/fuzz_decode_request.py -runs=20000 CORPUS_DIR    # bounded by count
    python tests/fuzz/fuzz_decode_request.py --seeds CORPUS_DIR         # write the seed requests first

The first byte picks the model spec; the rest is parsed as a ModelInferRequest (unparseable bytes are
skipped: undecodable messages are gRPC's to refuse, not the decoder's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["ortserve"]):
    import numpy as np
    from google.protobuf.message import DecodeError

    from ortserve.protos import grpc_service_pb2 as pb
    from ortserve.protos.datatypes import KSERVE_TO_NUMPY, serialize_bytes_tensor
    from ortserve.serve.errors import InvalidArgument
    from ortserve.serve.model_config import TensorSpec
    from ortserve.serve.request_limits import RequestLimits
    from ortserve.serve.tensors import decode_request

MESSAGE_LIMIT = 600


def _spec(name: str, datatype: str, dims) -> TensorSpec:
    return TensorSpec(name, datatype, tuple(dims), KSERVE_TO_NUMPY[datatype])


def _io(*specs: TensorSpec) -> dict[str, TensorSpec]:
    return {spec.name: spec for spec in specs}


# (name, inputs, outputs, max_batch_size, limits): what the server's test models look like.
MODELS = [
    ("classifier", _io(_spec("input", "FP32", [4])), _io(_spec("logits", "FP32", [3])), 8, RequestLimits()),
    (
        "add_two",
        _io(_spec("a", "FP32", [2]), _spec("b", "FP32", [2])),
        _io(_spec("sum", "FP32", [2]), _spec("difference", "FP32", [2])),
        4,
        RequestLimits(),
    ),
    ("strings", _io(_spec("x", "BYTES", [3])), _io(_spec("y", "BYTES", [3])), 8, RequestLimits()),
    ("fixed", _io(_spec("x", "FP32", [4])), _io(_spec("y", "FP32", [4])), 0, RequestLimits()),
    (
        "sequence",
        _io(_spec("x", "FP32", [-1, 8])),
        _io(_spec("y", "FP32", [-1, 12])),
        4,
        RequestLimits(max_dims={"x": (64, -1)}),
    ),
    (
        "two_dynamic",
        _io(_spec("x", "FP32", [-1, -1])),
        _io(_spec("y", "FP32", [-1, -1])),
        2**62,
        RequestLimits(allow_zero_size_dims=True),
    ),
    (
        "integers",
        _io(_spec("i8", "INT8", [-1]), _spec("u16", "UINT16", [2]), _spec("b", "BOOL", [1])),
        _io(_spec("y", "INT64", [-1])),
        0,
        RequestLimits(),
    ),
]


def check(data: bytes) -> None:
    if not data:
        return
    name, inputs, outputs, max_batch_size, limits = MODELS[data[0] % len(MODELS)]
    request = pb.ModelInferRequest()
    try:
        request.ParseFromString(data[1:])
    except DecodeError:
        return
    try:
        decoded = decode_request(name, inputs, outputs, max_batch_size, request, limits)
    except InvalidArgument as exc:
        if len(str(exc)) > MESSAGE_LIMIT:
            raise AssertionError(f"message of {len(str(exc))} chars: {str(exc)[:200]}...") from None
        return
    for tensor in request.inputs:
        array = decoded.inputs[tensor.name]
        if array.shape != tuple(tensor.shape) or array.dtype != inputs[tensor.name].dtype:
            raise AssertionError(f"{tensor.name}: decoded {array.shape} {array.dtype}, asked {tensor.shape}")


def seed_requests() -> list[bytes]:
    """One good request per model (and a few near misses), prefixed with the model's index."""

    def message(index: int, tensors, outputs=()) -> bytes:
        request = pb.ModelInferRequest(model_name=MODELS[index][0])
        for tensor_name, datatype, array in tensors:
            request.inputs.add(name=tensor_name, datatype=datatype, shape=array.shape)
            raw = serialize_bytes_tensor(array) if datatype == "BYTES" else array.tobytes()
            request.raw_input_contents.append(raw)
        for output in outputs:
            request.outputs.add(name=output).parameters["classification"].int64_param = 2
        return bytes([index]) + request.SerializeToString()

    zeros = np.zeros
    typed = pb.ModelInferRequest(model_name="classifier")
    typed.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
    return [
        message(0, [("input", "FP32", zeros((1, 4), np.float32))], ["logits"]),
        bytes([0]) + typed.SerializeToString(),
        message(1, [("a", "FP32", zeros((2, 2), np.float32)), ("b", "FP32", zeros((2, 2), np.float32))]),
        message(2, [("x", "BYTES", np.array([["a", "bc", ""]], dtype=object))]),
        message(3, [("x", "FP32", zeros(4, np.float32))]),
        message(4, [("x", "FP32", zeros((1, 5, 8), np.float32))]),
        message(5, [("x", "FP32", zeros((1, 0, 3), np.float32))]),
        message(
            6,
            [
                ("i8", "INT8", zeros(3, np.int8)),
                ("u16", "UINT16", zeros(2, np.uint16)),
                ("b", "BOOL", zeros(1, np.bool_)),
            ],
        ),
    ]


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--seeds":
        corpus = Path(argv[2])
        corpus.mkdir(parents=True, exist_ok=True)
        for index, seed in enumerate(seed_requests()):
            (corpus / f"seed-{index}").write_bytes(seed)
        return
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
