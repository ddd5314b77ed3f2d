"""What a sequence model keeps between requests: its implicit-state pairs (Triton's `sequence_batching.state`)
checked against the ONNX model, and the sequence parameters of a request.

The state tensors are the server's business: they are not in config `input`/`output`, clients never see them;
each step feeds the stored `input_name` tensors and stores the `output_name` tensors the model returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ortserve.protos import model_config_pb2
from ortserve.protos.datatypes import CONFIG_TO_KSERVE, KSERVE_TO_NUMPY

from .errors import InvalidArgument, ModelLoadError, clip
from .model_config import ONNX_TO_KSERVE, OnnxTensor

SEQUENCE_ID, SEQUENCE_START, SEQUENCE_END = "sequence_id", "sequence_start", "sequence_end"
# Triton's default when max_sequence_idle_microseconds is 0 (one second).
DEFAULT_IDLE_US = 1_000_000
# Live sequences at most when the oldest strategy names no max_candidate_sequences.
DEFAULT_MAX_SEQUENCES = 65_536


@dataclass(frozen=True)
class StatePair:
    """One implicit state: fed as `input_name`, read back from `output_name`, shape [rows, *dims]."""

    input_name: str
    output_name: str
    dims: tuple[int, ...]
    datatype: str
    dtype: np.dtype

    def zeros(self, rows: int) -> np.ndarray:
        return np.zeros((rows, *self.dims), dtype=self.dtype)


@dataclass(frozen=True)
class SequencePolicy:
    """The sequence batcher's settings of one model (from config `sequence_batching`)."""

    states: tuple[StatePair, ...]
    idle_s: float
    max_sequences: int


def sequence_policy(
    config: model_config_pb2.ModelConfig, inputs: Sequence[OnnxTensor], outputs: Sequence[OnnxTensor]
) -> SequencePolicy | None:
    """Check `sequence_batching` against the ONNX model; None when the model has none."""
    if not config.HasField("sequence_batching"):
        return None
    name, batching = config.name, config.sequence_batching
    where = f"model '{name}': sequence_batching"
    if config.max_batch_size <= 0:
        raise ModelLoadError(f"{where} needs max_batch_size > 0 (state tensors are batch-first)")
    if batching.WhichOneof("strategy_choice") == "direct":
        raise ModelLoadError(f"{where}: the direct strategy is not supported, use oldest")
    if batching.control_input:
        raise ModelLoadError(f"{where}: control_input is not supported (state is implicit)")
    if not batching.state:
        raise ModelLoadError(f"{where} names no state; ortserve keeps implicit state only")
    onnx_inputs, onnx_outputs = {t.name: t for t in inputs}, {t.name: t for t in outputs}
    pairs = []
    for state in batching.state:
        pairs.append(_state_pair(where, state, onnx_inputs, onnx_outputs))
    if len({p.input_name for p in pairs}) != len(pairs) or len({p.output_name for p in pairs}) != len(pairs):
        raise ModelLoadError(f"{where}: a state input_name or output_name is given twice")
    idle_us = batching.max_sequence_idle_microseconds or DEFAULT_IDLE_US
    candidates = batching.oldest.max_candidate_sequences if batching.HasField("oldest") else 0
    if candidates < 0:
        raise ModelLoadError(f"{where}: max_candidate_sequences must be >= 0, got {candidates}")
    return SequencePolicy(tuple(pairs), idle_us / 1e6, candidates or DEFAULT_MAX_SEQUENCES)


def _state_pair(where, state, onnx_inputs, onnx_outputs) -> StatePair:
    here = f"{where}: state '{state.input_name}'/'{state.output_name}'"
    tensors = []
    for kind, tensor_name, known in (
        ("input", state.input_name, onnx_inputs),
        ("output", state.output_name, onnx_outputs),
    ):
        tensor = known.get(tensor_name)
        if tensor is None:
            raise ModelLoadError(f"{here}: {kind} '{tensor_name}' is not in the ONNX model {sorted(known)}")
        tensors.append(tensor)
    config_type = model_config_pb2.DataType.Name(state.data_type)
    kserve = CONFIG_TO_KSERVE.get(config_type)
    if kserve is None or kserve == "BYTES":
        raise ModelLoadError(f"{here}: data_type {config_type} is not supported for a state")
    for tensor in tensors:
        if ONNX_TO_KSERVE.get(tensor.type) != kserve:
            raise ModelLoadError(f"{here}: data_type {config_type}, the ONNX model has {tensor.type}")
        if not tensor.shape or tensor.shape[0] is not None:
            raise ModelLoadError(f"{here}: '{tensor.name}' needs a dynamic first (batch) dimension")
        model_dims = [-1 if d is None else d for d in tensor.shape[1:]]
        if len(model_dims) != len(state.dims) or any(
            m not in (-1, d) for m, d in zip(model_dims, state.dims, strict=True)
        ):
            raise ModelLoadError(
                f"{here}: dims {list(state.dims)} disagree with the ONNX model's {model_dims} "
                "(dims exclude the batch dimension)"
            )
    if any(d < 0 for d in state.dims):
        raise ModelLoadError(f"{here}: dims {list(state.dims)} must be fixed")
    for initial in state.initial_state:
        if initial.WhichOneof("state_data") != "zero_data":
            raise ModelLoadError(f"{here}: only initial_state zero_data is supported")
    return StatePair(state.input_name, state.output_name, tuple(state.dims), kserve, KSERVE_TO_NUMPY[kserve])


@dataclass(frozen=True, slots=True)
class SequenceFlags:
    """The sequence parameters of one request: id (None when absent), START and END."""

    id: int | str | None
    start: bool
    end: bool


def sequence_flags(model: str, parameters) -> SequenceFlags:
    """Read `sequence_id` (uint64/int64 or string; 0 and "" mean none), `sequence_start`, `sequence_end`."""
    sequence_id: int | str | None = None
    if SEQUENCE_ID in parameters:
        param = parameters[SEQUENCE_ID]
        choice = param.WhichOneof("parameter_choice")
        if choice not in ("int64_param", "uint64_param", "string_param"):
            raise InvalidArgument(
                f"model '{model}': parameter sequence_id must be a uint64 or a string, got {choice or 'none'}"
            )
        sequence_id = getattr(param, choice) or None
    flags = []
    for key in (SEQUENCE_START, SEQUENCE_END):
        value = False
        if key in parameters:
            param = parameters[key]
            if param.WhichOneof("parameter_choice") != "bool_param":
                raise InvalidArgument(f"model '{model}': parameter {key} must be a bool")
            value = param.bool_param
        flags.append(value)
    start, end = flags
    if (start or end) and sequence_id is None:
        which = " and ".join(k for k, f in zip((SEQUENCE_START, SEQUENCE_END), flags, strict=True) if f)
        raise InvalidArgument(f"model '{model}': {which} needs a non-zero or non-empty sequence_id")
    return SequenceFlags(sequence_id, start, end)


def describe_id(sequence_id: int | str) -> str:
    """A sequence id for an error message (a client's string id is clipped)."""
    return str(sequence_id) if isinstance(sequence_id, int) else clip(sequence_id)
