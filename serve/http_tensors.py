"""KServe v2 REST bodies <-> gRPC's ModelInferRequest / ModelInferResponse: REST has no data plane of its own.

A REST infer body is a JSON header, optionally followed by the binary tensor extension's bytes: inputs with
`parameters.binary_data_size` take their bytes from there in order, and outputs asked for with
`parameters.binary_data` (or request `parameters.binary_data_output`) go back the same way, the header's
length in `Inference-Header-Content-Length`. Every input travels on as `raw_input_contents`, so
`decode_request` then checks shapes, datatypes and sizes exactly as for gRPC. Bad bodies raise
InvalidArgument.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos.datatypes import KSERVE_TO_NUMPY, deserialize_bytes_tensor, serialize_bytes_tensor

from .errors import InvalidArgument, clip

BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
MAX_DIM = 2**63 - 1
# JSON value types per datatype kind: ints may become floats, never the reverse; true/false only for BOOL.
_JSON_TYPES = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float)}
_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}


@dataclass
class RestInferRequest:
    """The protobuf request, and which outputs the client wants back as binary data."""

    request: pb.ModelInferRequest
    binary_outputs: frozenset[str]
    binary_default: bool


def parse_header(body: bytes, header_length: int | None) -> tuple[dict, memoryview]:
    """Split a body into its JSON header (an object) and the binary section after it."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(body)
    elif not 0 <= header_length <= len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes"
        )
    try:
        header = json.loads(view[:header_length].tobytes())
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {clip(str(exc))}") from None
    if not isinstance(header, dict):
        raise InvalidArgument(f"the request body must be a JSON object, got {type(header).__name__}")
    return header, view[header_length:]


def _field(where: str, body: Mapping, key: str, kind: type | tuple[type, ...], default=None):
    value = body.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        names = " or ".join(t.__name__ for t in _types(kind))
        raise InvalidArgument(f"{where}: '{key}' must be {names}, got {clip(value)}")
    return value


def _types(kind) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _set_parameters(where: str, target, parameters: Mapping, skip: tuple[str, ...] = ()) -> None:
    """JSON parameters into a protobuf InferParameter map (bool, int, float or string values)."""
    for key, value in parameters.items():
        if key in skip:
            continue
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            param.int64_param = value
        elif isinstance(value, int) and 0 <= value < 2**64:  # e.g. a uint64 sequence_id
            param.uint64_param = value
        elif isinstance(value, float):
            param.double_param = value
        elif isinstance(value, str):
            param.string_param = value
        else:
            raise InvalidArgument(
                f"{where}: parameter '{clip(key)}' must be a boolean, integer, number or string, "
                f"got {clip(value)}"
            )


def _shape(where: str, tensor: Mapping) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
        raise InvalidArgument(f"{where}: 'shape' must be a list of non-negative integers, got {clip(shape)}")
    return shape


def _flatten(data) -> list:
    """Flat or nested JSON lists -> one flat list (iteratively: a deep nest cannot exhaust the stack)."""
    if not isinstance(data, list):
        return [data]
    flat, stack = [], [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def json_tensor_bytes(where: str, datatype: str, shape: list[int], data) -> bytes:
    """The raw bytes of a JSON `data` list (flat or nested) for a tensor of `datatype` and `shape`."""
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise InvalidArgument(f"{where}: expected {count} values for shape {shape}, got {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(item, str) for item in flat):
            bad = next(item for item in flat if not isinstance(item, str))
            raise InvalidArgument(f"{where}: BYTES data must be JSON strings, got {clip(bad)}")
        items = np.empty(count, dtype=object)
        items[:] = [item.encode("utf-8", "surrogatepass") for item in flat]
        return serialize_bytes_tensor(items)
    if datatype not in KSERVE_TO_NUMPY:
        raise InvalidArgument(f"{where}: datatype {clip(datatype)} is not a KServe v2 datatype")
    if datatype == "FP16":
        raise InvalidArgument(f"{where}: FP16 cannot travel as JSON data, send it as binary data")
    dtype = KSERVE_TO_NUMPY[datatype]
    # Checked item by item: numpy's own inference would turn [0, 2**63] into float64 and True into 1.
    if not all(type(item) in _JSON_TYPES[dtype.kind] for item in flat):
        bad = next(item for item in flat if type(item) not in _JSON_TYPES[dtype.kind])
        raise InvalidArgument(f"{where}: {datatype} data must be {_KIND_NAMES[dtype.kind]}, got {clip(bad)}")
    if dtype.kind in "iu" and flat:
        info = np.iinfo(dtype)
        if min(flat) < info.min or max(flat) > info.max:
            raise InvalidArgument(f"{where}: values do not fit {datatype} ({info.min}..{info.max})")
    try:
        return np.array(flat, dtype=dtype).tobytes()
    except OverflowError:
        raise InvalidArgument(f"{where}: values do not fit {datatype}") from None


def to_infer_request(model: str, version: str, header: Mapping, binary: memoryview) -> RestInferRequest:
    """A REST infer header (and its binary section) as the ModelInferRequest gRPC would have received."""
    where = f"model '{model}'"
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.id = _field(where, header, "id", str, "")
    parameters = _field(where, header, "parameters", dict, {})
    binary_default = _field(where, parameters, BINARY_DATA_OUTPUT, bool, False)
    _set_parameters(where, request.parameters, parameters, skip=(BINARY_DATA_OUTPUT,))
    inputs = _field(where, header, "inputs", list)
    if not inputs:
        raise InvalidArgument(f"{where}: 'inputs' must be a non-empty list of tensors")
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InvalidArgument(f"{where}: each input must be a JSON object, got {clip(tensor)}")
        name = _field(where, tensor, "name", str, "")
        tensor_where = f"{where}: input '{clip(name)}'"
        datatype = _field(tensor_where, tensor, "datatype", str, "")
        shape = _shape(tensor_where, tensor)
        tensor_parameters = _field(tensor_where, tensor, "parameters", dict, {})
        message = request.inputs.add(name=name, datatype=datatype, shape=shape)
        _set_parameters(tensor_where, message.parameters, tensor_parameters, skip=(BINARY_DATA_SIZE,))
        size = _field(tensor_where, tensor_parameters, BINARY_DATA_SIZE, int)
        if size is not None:
            if "data" in tensor:
                raise InvalidArgument(f"{tensor_where}: has both 'data' and binary_data_size, send one")
            if not 0 <= size <= len(binary) - offset:
                raise InvalidArgument(
                    f"{tensor_where}: binary_data_size {size} does not fit the {len(binary) - offset} "
                    "binary bytes left in the body"
                )
            request.raw_input_contents.append(binary[offset : offset + size].tobytes())
            offset += size
        elif "data" in tensor:
            request.raw_input_contents.append(
                json_tensor_bytes(tensor_where, datatype, shape, tensor["data"])
            )
        else:
            raise InvalidArgument(f"{tensor_where}: no 'data' and no binary_data_size parameter")
    if offset != len(binary):
        raise InvalidArgument(
            f"{where}: {len(binary) - offset} binary bytes in the body are claimed by no binary_data_size"
        )
    binary_outputs = set()
    for tensor in _field(where, header, "outputs", list, []):
        if not isinstance(tensor, dict):
            raise InvalidArgument(f"{where}: each requested output must be a JSON object, got {clip(tensor)}")
        name = _field(where, tensor, "name", str, "")
        output_where = f"{where}: output '{clip(name)}'"
        output_parameters = _field(output_where, tensor, "parameters", dict, {})
        if _field(output_where, output_parameters, BINARY_DATA, bool, binary_default):
            binary_outputs.add(name)
        message = request.outputs.add(name=name)
        _set_parameters(output_where, message.parameters, output_parameters, skip=(BINARY_DATA,))
    return RestInferRequest(request, frozenset(binary_outputs), binary_default)


def parameter_value(param: pb.InferParameter):
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None


def _json_data(datatype: str, shape, raw: bytes) -> list:
    count = math.prod(shape)
    if datatype == "BYTES":
        items = deserialize_bytes_tensor(raw, count)
        return [item.decode("utf-8", "backslashreplace") for item in items]
    return np.frombuffer(raw, dtype=KSERVE_TO_NUMPY[datatype]).tolist()


def from_infer_response(response: pb.ModelInferResponse, rest: RestInferRequest) -> tuple[bytes, int | None]:
    """The REST answer: (body, JSON header length when a binary section follows, else None)."""
    outputs, binary = [], []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        parameters = {key: parameter_value(value) for key, value in tensor.parameters.items()}
        wanted = rest.binary_outputs if rest.request.outputs else ()
        if tensor.name in wanted or (not rest.request.outputs and rest.binary_default):
            parameters[BINARY_DATA_SIZE] = len(raw)
            binary.append(raw)
        else:
            entry["data"] = _json_data(tensor.datatype, tensor.shape, raw)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    body = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = {key: parameter_value(value) for key, value in response.parameters.items()}
    body["outputs"] = outputs
    header = json.dumps(body, separators=(",", ":")).encode()
    if not binary:
        return header, None
    return b"".join([header, *binary]), len(header)
