"""atheris fuzz target for the request decoder: bytes -> ModelInferRequest -> decode_request.

Any exception other than InvalidArgument, a message over MESSAGE_LIMIT characters (client input echoed
whole), or a decoded array that disagrees with the request's shape is a finding.

    python tests/fuzz/fuzz_decode_request.py -runs=20000 CORPUS_DIR    # bounded by count
    python tests/fuzz/fuzz_decode_request.py --seeds CORPUS_DIR         # write the seed requests first

The first byte picks the model spec; the second picks how the rest becomes a request: parsed as a
serialized ModelInferRequest (unparseable bytes are skipped: undecodable messages are gRPC's to refuse, not
the decoder's), or built field by field with edge dims (2**62, -1, 0...) a byte mutator rarely writes.
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


# Dims a byte-level mutator rarely writes as varints: the structured half of the target picks from these.
EDGE_DIMS = (0, 1, 2, 3, 4, 8, 64, 65, -1, 2**31, 2**32 - 1, 2**40, 2**62, 2**63 - 1, -(2**63))
NAMES = ("input", "x", "a", "b", "i8", "u16", "logits", "y", "sum", "")
DATATYPES = tuple(KSERVE_TO_NUMPY) + ("", "fp32")


def structured_request(data: bytes, inputs, outputs) -> pb.ModelInferRequest:
    """A request built field by field from the fuzzer's bytes, mostly with the model's own tensor names and
    datatypes, so the edge dims (2**62, 0, -1...) reach the shape checks."""
    fdp = atheris.FuzzedDataProvider(data)
    request = pb.ModelInferRequest()
    names = [*inputs, *inputs, *NAMES]
    datatypes = [spec.datatype for spec in inputs.values()] * 4 + list(DATATYPES)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        tensor = request.inputs.add(name=fdp.PickValueInList(names), datatype=fdp.PickValueInList(datatypes))
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            tensor.shape.append(fdp.PickValueInList(list(EDGE_DIMS)))
        choice = fdp.ConsumeIntInRange(0, 3)
        if choice == 1:
            tensor.contents.fp32_contents.extend([1.0] * fdp.ConsumeIntInRange(0, 16))
        elif choice == 2:
            tensor.contents.int_contents.extend(
                [fdp.ConsumeInt(4) for _ in range(fdp.ConsumeIntInRange(0, 8))]
            )
        elif choice == 3:
            tensor.contents.bytes_contents.extend(
                [fdp.ConsumeBytes(3) for _ in range(fdp.ConsumeIntInRange(0, 8))]
            )
        if choice == 0 or fdp.ConsumeBool():
            request.raw_input_contents.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        output = request.outputs.add(name=fdp.PickValueInList([*outputs, *NAMES]))
        if fdp.ConsumeBool():
            output.parameters["classification"].int64_param = fdp.ConsumeIntInRange(-2, 5)
    return request


def check(data: bytes) -> None:
    """Byte 0 picks the model; an odd byte 1 builds the request field by field, an even one parses the rest
    as a serialized ModelInferRequest."""
    if len(data) < 2:
        return
    name, inputs, outputs, max_batch_size, limits = MODELS[data[0] % len(MODELS)]
    if data[1] % 2:
        request = structured_request(data[2:], inputs, outputs)
    else:
        request = pb.ModelInferRequest()
        try:
            request.ParseFromString(data[2:])
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
        return bytes([index, 0]) + request.SerializeToString()

    zeros = np.zeros
    typed = pb.ModelInferRequest(model_name="classifier")
    typed.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
    return [
        message(0, [("input", "FP32", zeros((1, 4), np.float32))], ["logits"]),
        bytes([0, 0]) + typed.SerializeToString(),
        bytes([5, 1]) + bytes(range(64)),
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
