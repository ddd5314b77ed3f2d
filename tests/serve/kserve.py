"""A few lines of raw KServe v2 gRPC for the server tests (the real client lives in clients/)."""

from __future__ import annotations

import math
import urllib.request

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc
from ortserve.protos.datatypes import (
    CONTENTS_FIELD,
    KSERVE_TO_NUMPY,
    deserialize_bytes_tensor,
    numpy_to_kserve,
    serialize_bytes_tensor,
)


def stub(address: str, credentials: grpc.ChannelCredentials | None = None, **options):
    """A GRPCInferenceService stub on a fresh channel (TLS when credentials are given)."""
    opts = [("grpc.max_receive_message_length", 64 << 20), *options.items()]
    if credentials is None:
        channel = grpc.insecure_channel(address, options=opts)
    else:
        channel = grpc.secure_channel(address, credentials, options=opts)
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def request(
    model: str,
    inputs: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    *,
    typed: bool = False,
    version: str = "",
    request_id: str = "",
    classification: dict[str, int] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest with raw (default) or typed contents."""
    message = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, array in inputs.items():
        datatype = numpy_to_kserve(array.dtype)
        tensor = message.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if typed:
            values = array.reshape(-1).tolist()
            if datatype == "BYTES":
                values = [v.encode() if isinstance(v, str) else v for v in values]
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
        elif datatype == "BYTES":
            message.raw_input_contents.append(serialize_bytes_tensor(array))
        else:
            message.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    for name in outputs or []:
        output = message.outputs.add(name=name)
        if classification and name in classification:
            output.parameters["classification"].int64_param = classification[name]
    return message


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The response's outputs as numpy arrays (BYTES as object arrays of bytes)."""
    result = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        shape = tuple(tensor.shape)
        if tensor.datatype == "BYTES":
            result[tensor.name] = deserialize_bytes_tensor(raw, math.prod(shape)).reshape(shape)
        else:
            result[tensor.name] = np.frombuffer(raw, dtype=KSERVE_TO_NUMPY[tensor.datatype]).reshape(shape)
    return result


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Prometheus samples as {(sample name, sorted label items): value}."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    return sum(
        value
        for (sample_name, items), value in samples.items()
        if sample_name == name and all(dict(items).get(k) == v for k, v in labels.items())
    )
