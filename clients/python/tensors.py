"""numpy <-> ModelInferRequest/Response conversion, as raw contents, via the shared datatype table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ortserve.protos import datatypes
from ortserve.protos import grpc_service_pb2 as pb

# Triton's classification extension: this output parameter asks for the top-k as "score:index:label".
CLASSIFICATION_PARAMETER = "classification"


def _raw_contents(array: np.ndarray) -> tuple[str, bytes]:
    datatype = datatypes.numpy_to_kserve(array.dtype)
    if datatype == "BYTES":
        return datatype, datatypes.serialize_bytes_tensor(array)
    # The protocol is little-endian; tobytes() writes row-major whatever the array's strides.
    return datatype, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def build_infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Iterable[str] | str | None = None,
    version: str = "",
    classification_top_k: int | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest with every input as raw contents; `classification_top_k` asks for top-k labels."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype, raw = _raw_contents(array)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(raw)
    for name in [outputs] if isinstance(outputs, str) else outputs or ():
        requested = request.outputs.add(name=name)
        if classification_top_k is not None:
            requested.parameters[CLASSIFICATION_PARAMETER].int64_param = classification_top_k
    return request


def _output_array(output: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None) -> np.ndarray:
    shape = tuple(output.shape)
    count = int(np.prod(shape, dtype=np.int64))
    try:
        dtype = datatypes.KSERVE_TO_NUMPY[output.datatype]
    except KeyError:
        raise ValueError(f"output {output.name!r} has unsupported datatype {output.datatype!r}") from None
    if raw is None:  # typed contents: servers may answer that way when the request had no raw inputs
        values = list(getattr(output.contents, datatypes.CONTENTS_FIELD[output.datatype]))
        array = np.empty(len(values), dtype=object) if output.datatype == "BYTES" else np.array(values, dtype)
        if output.datatype == "BYTES":
            array[:] = values
    elif output.datatype == "BYTES":
        array = datatypes.deserialize_bytes_tensor(raw, count)
    else:
        # astype copies to a writable array in native byte order.
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if array.size != count:
        raise ValueError(
            f"output {output.name!r} holds {array.size} elements, its shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def parse_infer_response(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Output name -> numpy array in the response's shape (BYTES as an object array of bytes)."""
    raws = list(response.raw_output_contents)
    if raws and len(raws) != len(response.outputs):
        raise ValueError(f"response has {len(response.outputs)} outputs but {len(raws)} raw contents")
    return {
        output.name: _output_array(output, raws[index] if raws else None)
        for index, output in enumerate(response.outputs)
    }


def parse_classification(array: np.ndarray) -> list[list[tuple[str, float]]]:
    """Rows of "score:index[:label]" items -> per row a list of (label, score); the index when unlabelled."""
    rows = array.reshape(array.shape[0] if array.ndim > 1 else 1, -1)
    result = []
    for row in rows:
        entries = []
        for item in row:
            text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
            parts = text.split(":", 2)
            if len(parts) < 2:
                raise ValueError(f"classification item {text!r} is not 'score:index:label'")
            entries.append((parts[2] if len(parts) == 3 else parts[1], float(parts[0])))
        result.append(entries)
    return result
