"""Protobuf <-> numpy for ModelInfer, with every check a request must pass before it is queued.

Inputs come from `raw_input_contents` (np.frombuffer, no copy) or typed `contents`; outputs always go
out as `raw_output_contents`. Bad requests raise InvalidArgument naming the model, the tensor, what was
expected and what came.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ortserve.protos import grpc_service_pb2
from ortserve.protos.datatypes import CONTENTS_FIELD, deserialize_bytes_tensor, serialize_bytes_tensor

from .errors import InvalidArgument
from .model_config import TensorSpec

CLASSIFICATION = "classification"


class RequestedOutput(NamedTuple):
    """An output the client asked for; `classification` > 0 asks for top-k strings instead."""

    name: str
    classification: int = 0


@dataclass(slots=True)
class DecodedRequest:
    """A checked request: numpy inputs, rows in its batch (1 when not batched), outputs to return."""

    inputs: dict[str, np.ndarray]
    rows: int
    outputs: tuple[RequestedOutput, ...]


def _shape(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _where(model: str, tensor: str) -> str:
    return f"model '{model}': input '{tensor}'"


def decode_request(
    model: str,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    max_batch_size: int,
    request: grpc_service_pb2.ModelInferRequest,
) -> DecodedRequest:
    """Check a ModelInferRequest against the model and turn it into numpy arrays."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"model '{model}': expected {len(request.inputs)} raw_input_contents (one per input), "
            f"got {len(raw)}"
        )
    arrays: dict[str, np.ndarray] = {}
    rows, rows_from = 1, ""
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        spec = inputs.get(name)
        if spec is None:
            raise InvalidArgument(
                f"model '{model}': unexpected input '{name}', expected one of {list(inputs)}"
            )
        if name in arrays:
            raise InvalidArgument(f"{_where(model, name)}: given more than once")
        if tensor.datatype != spec.datatype:
            raise InvalidArgument(
                f"{_where(model, name)}: expected datatype {spec.datatype}, got {tensor.datatype or '(none)'}"
            )
        shape = tuple(tensor.shape)
        _check_shape(model, spec, shape, max_batch_size)
        if max_batch_size > 0:
            if rows_from and shape[0] != rows:
                raise InvalidArgument(
                    f"{_where(model, name)}: batch size {shape[0]} differs from input '{rows_from}' "
                    f"batch size {rows}"
                )
            rows, rows_from = shape[0], name
        data = raw[index] if raw else None
        if data is not None and spec.datatype != "BYTES" and not tensor.HasField("contents"):
            # The common case (what every client sends), checked inline: no copy of the data.
            if len(data) != math.prod(shape) * spec.dtype.itemsize:
                _raw_size_error(_where(model, name), spec, shape, data)
            arrays[name] = np.frombuffer(data, dtype=spec.dtype).reshape(shape)
        else:
            arrays[name] = _decode_data(_where(model, name), spec, shape, tensor, data)
    if len(arrays) < len(inputs):
        missing = [name for name, spec in inputs.items() if name not in arrays and not spec.optional]
        if missing:
            raise InvalidArgument(
                f"model '{model}': missing input '{missing[0]}', expected inputs {list(inputs)}"
            )
    return DecodedRequest(arrays, rows, _requested_outputs(model, outputs, request.outputs))


def _check_shape(model: str, spec: TensorSpec, shape: tuple[int, ...], max_batch_size: int) -> None:
    expected = spec.batched_dims if max_batch_size > 0 else spec.dims
    fits = len(shape) == len(expected)
    if fits:
        for want, got in zip(expected, shape, strict=True):
            if got < 0 or (want != -1 and want != got):
                fits = False
                break
    if not fits:
        batch_note = " (first dimension is the batch)" if max_batch_size > 0 else ""
        raise InvalidArgument(
            f"{_where(model, spec.name)}: expected shape {_shape(expected)}{batch_note}, got {_shape(shape)}"
        )
    if max_batch_size > 0 and not 1 <= shape[0] <= max_batch_size:
        raise InvalidArgument(
            f"{_where(model, spec.name)}: batch size {shape[0]} is outside 1..max_batch_size {max_batch_size}"
        )


def _raw_size_error(where: str, spec: TensorSpec, shape: tuple[int, ...], raw: bytes) -> None:
    expected = math.prod(shape) * spec.dtype.itemsize
    raise InvalidArgument(
        f"{where}: expected {expected} bytes of raw contents for shape {_shape(shape)} of {spec.datatype}, "
        f"got {len(raw)}"
    )


def _decode_data(
    where: str, spec: TensorSpec, shape: tuple[int, ...], tensor, raw: bytes | None
) -> np.ndarray:
    count = math.prod(shape)
    typed = tensor.contents.ListFields() if tensor.HasField("contents") else []
    if raw is not None and typed:
        raise InvalidArgument(f"{where}: has both raw_input_contents and typed contents, send one")
    if raw is not None:
        if spec.datatype == "BYTES":
            try:
                return _as_strings(where, deserialize_bytes_tensor(raw, count)).reshape(shape)
            except ValueError as exc:
                raise InvalidArgument(f"{where}: {exc}") from None
        if len(raw) != count * spec.dtype.itemsize:
            _raw_size_error(where, spec, shape, raw)
        return np.frombuffer(raw, dtype=spec.dtype).reshape(shape)
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidArgument(f"{where}: {spec.datatype} has no typed contents, send raw_input_contents")
    if not typed and count:
        raise InvalidArgument(f"{where}: no data, expected raw_input_contents or contents.{field}")
    names = [descriptor.name for descriptor, _ in typed]
    if typed and names != [field]:
        raise InvalidArgument(
            f"{where}: typed contents of {spec.datatype} go in {field}, got {', '.join(names)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"{where}: expected {count} values in {field} for shape {_shape(shape)}, got {len(values)}"
        )
    if spec.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return _as_strings(where, array).reshape(shape)
    try:
        array = np.array(list(values), dtype=spec.dtype)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument(f"{where}: values do not fit {spec.datatype}: {exc}") from None
    return array.reshape(shape)


def _as_strings(where: str, items: np.ndarray) -> np.ndarray:
    """onnxruntime string tensors take str (it would turn bytes into "b'...'"): decode UTF-8."""
    result = np.empty(items.shape, dtype=object)
    try:
        result[:] = [item.decode("utf-8") for item in items]
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{where}: BYTES items must be UTF-8 for an ONNX string tensor: {exc}"
        ) from None
    return result


@functools.lru_cache(maxsize=1024)
def _all_outputs(names: tuple[str, ...]) -> tuple[RequestedOutput, ...]:
    """What a request that names no outputs gets: every output, raw (the same tuple for every request)."""
    return tuple(RequestedOutput(name) for name in names)


def _requested_outputs(
    model: str, outputs: Mapping[str, TensorSpec], requested
) -> tuple[RequestedOutput, ...]:
    if not requested:
        return _all_outputs(tuple(outputs))
    result, seen = [], set()
    for tensor in requested:
        if tensor.name not in outputs:
            raise InvalidArgument(
                f"model '{model}': unexpected output '{tensor.name}', expected one of {list(outputs)}"
            )
        if tensor.name in seen:
            raise InvalidArgument(f"model '{model}': output '{tensor.name}' requested more than once")
        seen.add(tensor.name)
        top_k = 0
        if CLASSIFICATION in tensor.parameters:
            param = tensor.parameters[CLASSIFICATION]
            choice = param.WhichOneof("parameter_choice")
            top_k = getattr(param, choice) if choice in ("int64_param", "uint64_param") else 0
            if top_k < 1:
                raise InvalidArgument(
                    f"model '{model}': output '{tensor.name}': classification expects a positive "
                    "int64_param, "
                    f"got {choice}={getattr(param, choice) if choice else None}"
                )
        result.append(RequestedOutput(tensor.name, top_k))
    return tuple(result)


def encode_outputs(
    response: grpc_service_pb2.ModelInferResponse, outputs: Sequence[tuple[str, str, np.ndarray]]
) -> None:
    """Append (name, datatype, array) outputs to the response, data in raw_output_contents."""
    for name, datatype, array in outputs:
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            response.raw_output_contents.append(serialize_bytes_tensor(array))
        else:
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
