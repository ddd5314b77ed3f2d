"""Protobuf <-> numpy for ModelInfer, with every check a request must pass before it is queued.

Inputs come from `raw_input_contents` (np.frombuffer, no copy) or typed `contents`; outputs always go
out as `raw_output_contents`. Bad requests raise InvalidArgument naming the model, the tensor, what was
expected and what came.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ortserve.protos import grpc_service_pb2
from ortserve.protos.datatypes import (
    CONTENTS_FIELD,
    KSERVE_TO_NUMPY,
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
)

from .errors import InvalidArgument, clip
from .model_config import TensorSpec
from .request_limits import RequestLimits
from .request_shapes import check_shape, shape_text

CLASSIFICATION = "classification"
NO_LIMITS = RequestLimits()
# Outputs classification can rank (top-k by value); BYTES has no order worth a score.
NUMERIC = frozenset(KSERVE_TO_NUMPY) - {"BYTES"}


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


def _where(model: str, tensor: str) -> str:
    return f"model '{model}': input '{clip(tensor)}'"


def decode_request(
    model: str,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    max_batch_size: int,
    request: grpc_service_pb2.ModelInferRequest,
    limits: RequestLimits = NO_LIMITS,
) -> DecodedRequest:
    """Check a ModelInferRequest against the model and turn it into numpy arrays."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"model '{model}': expected {len(request.inputs)} raw_input_contents (one per input), "
            f"got {len(raw)}"
        )
    requested = _requested_outputs(model, outputs, request.outputs)
    arrays: dict[str, np.ndarray] = {}
    rows, rows_from = 1, ""
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        spec = inputs.get(name)
        if spec is None:
            raise InvalidArgument(
                f"model '{model}': expected inputs {list(inputs)}, got unexpected input '{clip(name)}'"
            )
        where = _where(model, name)
        if name in arrays:
            raise InvalidArgument(f"{where}: expected once, given more than once")
        if tensor.datatype != spec.datatype:
            raise InvalidArgument(
                f"{where}: expected datatype {spec.datatype}, got {clip(tensor.datatype) or '(none)'}"
            )
        shape = tuple(tensor.shape)
        count = check_shape(where, spec, shape, max_batch_size, limits)
        if max_batch_size > 0:
            if rows_from and shape[0] != rows:
                raise InvalidArgument(
                    f"{where}: expected the batch size {rows} of input '{rows_from}', "
                    f"got batch size {shape[0]}"
                )
            rows, rows_from = shape[0], name
        data = raw[index] if raw else None
        if data is not None and spec.datatype != "BYTES" and not tensor.HasField("contents"):
            # The common case (what every client sends), checked inline: no copy of the data.
            if len(data) != count * spec.dtype.itemsize:
                _raw_size_error(where, spec, shape, count, data)
            arrays[name] = np.frombuffer(data, dtype=spec.dtype).reshape(shape)
        else:
            arrays[name] = _decode_data(where, spec, shape, count, tensor, data)
    if len(arrays) < len(inputs):
        missing = [name for name, spec in inputs.items() if name not in arrays and not spec.optional]
        if missing:
            raise InvalidArgument(
                f"model '{model}': missing input '{missing[0]}': expected inputs {list(inputs)}, "
                f"got {list(arrays)}"
            )
    return DecodedRequest(arrays, rows, requested)


def decode_work(request: grpc_service_pb2.ModelInferRequest) -> int:
    """An upper bound of the items decoding needs Python work for (BYTES items, typed values): large
    ones are decoded off the event loop. Raw numeric contents cost nothing (np.frombuffer)."""
    work = 0
    raw = request.raw_input_contents
    for index, tensor in enumerate(request.inputs):
        if tensor.datatype == "BYTES" and index < len(raw):
            work += len(raw[index]) // 4
        if tensor.HasField("contents"):
            work += sum(len(values) for _, values in tensor.contents.ListFields())
    return work


def _raw_size_error(where: str, spec: TensorSpec, shape: tuple[int, ...], count: int, raw: bytes) -> None:
    raise InvalidArgument(
        f"{where}: expected {count * spec.dtype.itemsize} bytes of raw contents for shape "
        f"{shape_text(shape)} of {spec.datatype}, got {len(raw)}"
    )


def _decode_data(
    where: str, spec: TensorSpec, shape: tuple[int, ...], count: int, tensor, raw: bytes | None
) -> np.ndarray:
    typed = tensor.contents.ListFields() if tensor.HasField("contents") else []
    if raw is not None and typed:
        raise InvalidArgument(f"{where}: expected raw_input_contents or typed contents, got both")
    if raw is not None:
        if spec.datatype == "BYTES":
            try:
                return deserialize_bytes_tensor(raw, count, text=True).reshape(shape)
            except ValueError as exc:
                raise InvalidArgument(
                    f"{where}: expected {count} length-prefixed UTF-8 BYTES items for shape "
                    f"{shape_text(shape)}, got {exc}"
                ) from None
        if len(raw) != count * spec.dtype.itemsize:
            _raw_size_error(where, spec, shape, count, raw)
        return np.frombuffer(raw, dtype=spec.dtype).reshape(shape)
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidArgument(
            f"{where}: expected raw_input_contents ({spec.datatype} has no typed contents), got "
            + (", ".join(descriptor.name for descriptor, _ in typed) or "no data")
        )
    if not typed and count:
        raise InvalidArgument(f"{where}: expected raw_input_contents or contents.{field}, got no data")
    names = [descriptor.name for descriptor, _ in typed]
    if typed and names != [field]:
        raise InvalidArgument(
            f"{where}: expected typed contents of {spec.datatype} in {field}, got {', '.join(names)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"{where}: expected {count} values in {field} for shape {shape_text(shape)}, got {len(values)}"
        )
    if spec.datatype == "BYTES":
        return _as_strings(where, values).reshape(shape)
    try:
        array = np.array(list(values), dtype=spec.dtype)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument(
            f"{where}: expected {spec.datatype} values, got values that do not fit {spec.datatype} "
            f"({clip(str(exc))})"
        ) from None
    return array.reshape(shape)


def _as_strings(where: str, items) -> np.ndarray:
    """onnxruntime string tensors take str (it would turn bytes into "b'...'"): decode UTF-8."""
    result = np.empty(len(items), dtype=object)
    try:
        result[:] = [item.decode("utf-8") for item in items]
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{where}: expected UTF-8 BYTES items (an ONNX string tensor), got {exc.reason} at byte "
            f"{exc.start} of an item"
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
        spec = outputs.get(tensor.name)
        if spec is None:
            raise InvalidArgument(
                f"model '{model}': expected outputs {list(outputs)}, "
                f"got unexpected output '{clip(tensor.name)}'"
            )
        where = f"model '{model}': output '{tensor.name}'"
        if tensor.name in seen:
            raise InvalidArgument(f"{where}: expected once, requested more than once")
        seen.add(tensor.name)
        top_k = 0
        if CLASSIFICATION in tensor.parameters:
            top_k = _top_k(where, spec, tensor.parameters[CLASSIFICATION])
        result.append(RequestedOutput(tensor.name, top_k))
    return tuple(result)


def _top_k(where: str, spec: TensorSpec, param) -> int:
    """The k of a `classification` parameter, refused before the model runs when it cannot be honoured."""
    choice = param.WhichOneof("parameter_choice")
    top_k = getattr(param, choice) if choice in ("int64_param", "uint64_param") else 0
    if top_k < 1:
        got = f"{choice}={clip(getattr(param, choice))}" if choice else "no value"
        raise InvalidArgument(f"{where}: classification expects a positive int64_param, got {got}")
    if spec.datatype not in NUMERIC:
        raise InvalidArgument(
            f"{where}: classification expects a numeric output, got datatype {spec.datatype}"
        )
    return top_k


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
