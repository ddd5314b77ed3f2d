"""Streaming a sequence through a stateful model, one chunk per call: the logic both clients share.

Two modes, chosen from the model's config:
- server-held state (config `sequence_batching`, Triton's implicit state): each step carries the
  `sequence_id`, `sequence_start` on the first step and `sequence_end` on the last; the server keeps
  the state.
- client-carried state (a plain model whose state is visible): every input NAME_in[_K] with an output
  NAME_out[_K] is a state; the client sends zeros first, then what the previous step returned. Any
  replica can continue any sequence.
Either way `step(chunk)` sends one chunk (one sequence: the batch dimension is added) and returns the
model's outputs for the sequence so far, state left out and the batch dimension removed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ortserve.protos import datatypes
from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2 as mc

from . import tensors
from .errors import SequenceError

STATE_INPUT = re.compile(r"^(?P<stem>.+)_in(?P<index>_\d+)?$")
MAX_UINT64 = (1 << 64) - 1


@dataclass(frozen=True)
class StateTensor:
    """A state the client carries: fed as `input_name`, returned as `output_name`, [1, *dims] zeros first."""

    input_name: str
    output_name: str
    dims: tuple[int, ...]
    dtype: np.dtype


def _dtype(data_type: int) -> np.dtype:
    return datatypes.KSERVE_TO_NUMPY[datatypes.CONFIG_TO_KSERVE[mc.DataType.Name(data_type)]]


@dataclass(frozen=True)
class StreamPlan:
    """How to stream through one model, read from its config."""

    model: str
    version: str
    inputs: tuple[tuple[str, tuple[int, ...], np.dtype], ...]
    """The user's inputs: (name, dims without the batch dimension, dtype)."""
    server_held: bool
    carried: tuple[StateTensor, ...] = ()

    @classmethod
    def from_config(cls, config: mc.ModelConfig, version: str) -> StreamPlan:
        if config.max_batch_size <= 0:
            raise SequenceError(
                f"model {config.name!r} does not batch (max_batch_size 0); sequence() needs batch-first "
                "inputs and state"
            )
        outputs = {o.name: o for o in config.output}
        carried = []
        if not config.HasField("sequence_batching"):
            for tensor in config.input:
                match = STATE_INPUT.match(tensor.name)
                output = match and outputs.get(f"{match['stem']}_out{match['index'] or ''}")
                if output and list(output.dims) == list(tensor.dims) and all(d > 0 for d in tensor.dims):
                    carried.append(
                        StateTensor(tensor.name, output.name, tuple(tensor.dims), _dtype(tensor.data_type))
                    )
            if not carried:
                raise SequenceError(
                    f"model {config.name!r} keeps no sequence state: it has no sequence_batching and no "
                    "state inputs NAME_in[_K] with outputs NAME_out[_K]"
                )
        state_names = {s.input_name for s in carried}
        inputs = tuple(
            (t.name, tuple(t.dims), _dtype(t.data_type)) for t in config.input if t.name not in state_names
        )
        return cls(config.name, version, inputs, config.HasField("sequence_batching"), tuple(carried))

    def new_id(self, sequence_id: int | str | None) -> int | str:
        """The caller's id, checked, or a random non-zero uint64."""
        if sequence_id is None:
            return secrets.randbits(63) | 1
        if isinstance(sequence_id, str):
            if not sequence_id:
                raise ValueError("sequence_id must not be empty")
            return sequence_id
        if not 0 < int(sequence_id) <= MAX_UINT64:
            raise ValueError(f"sequence_id must be a non-zero uint64, got {sequence_id}")
        return int(sequence_id)


class SequenceSteps:
    """The state of one streamed sequence, without any transport: build each request, read each answer."""

    def __init__(self, plan: StreamPlan, sequence_id: int | str | None, outputs: list[str] | None):
        self.plan = plan
        self.id = plan.new_id(sequence_id) if plan.server_held else None
        self.outputs = outputs
        self.started = False
        self.ended = False
        self._state = {s.input_name: np.zeros((1, *s.dims), s.dtype) for s in plan.carried}

    def request(
        self, chunk: Mapping[str, np.ndarray] | np.ndarray, end: bool = False
    ) -> pb.ModelInferRequest:
        """The request of the next step (one sequence: each array gets a batch dimension of 1)."""
        if self.ended:
            raise SequenceError(f"sequence {self.id!r} of model {self.plan.model!r} has ended")
        if isinstance(chunk, Mapping):
            named = dict(chunk)
        elif len(self.plan.inputs) == 1:
            named = {self.plan.inputs[0][0]: chunk}
        else:
            names = [name for name, _, _ in self.plan.inputs]
            raise ValueError(f"model {self.plan.model!r} has inputs {names}; pass a dict name -> array")
        dtypes = {name: dtype for name, _, dtype in self.plan.inputs}
        feeds = {
            name: np.asarray(array, dtype=dtypes.get(name, np.asarray(array).dtype))[None]
            for name, array in named.items()
        }
        feeds.update(self._state)
        outputs = self.outputs
        if outputs is not None and self.plan.carried:
            outputs = [*outputs, *(s.output_name for s in self.plan.carried if s.output_name not in outputs)]
        request = tensors.build_infer_request(self.plan.model, feeds, outputs, self.plan.version)
        if self.plan.server_held:
            key = "string_param" if isinstance(self.id, str) else "uint64_param"
            setattr(request.parameters["sequence_id"], key, self.id)
            if not self.started:
                request.parameters["sequence_start"].bool_param = True
            if end:
                request.parameters["sequence_end"].bool_param = True
        self.ended = end  # a failed END step cannot be continued either: the server may have ended it
        return request

    def answer(self, response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
        """The step's outputs (state kept for the next step, batch dimension removed)."""
        self.started = True
        arrays = tensors.parse_infer_response(response)
        for state in self.plan.carried:
            self._state[state.input_name] = arrays.pop(state.output_name)
        return {name: array[0] for name, array in arrays.items()}

    def closing_request(self) -> pb.ModelInferRequest | None:
        """What ends a server-held sequence whose last step did not say END: one zero time step with END.

        None when nothing must be sent (client-carried state, nothing sent yet, or already ended)."""
        if not self.plan.server_held or not self.started or self.ended:
            return None
        filler = {
            name: np.zeros([1 if d < 0 else d for d in dims], dtype) for name, dims, dtype in self.plan.inputs
        }
        return self.request(filler, end=True)
