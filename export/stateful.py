"""Stateful (streaming) export: the user's unchanged model as a step graph that carries recurrent state.

Every nn.LSTM / nn.GRU / nn.RNN module k (in `model.modules()` order) gets an extra graph input `h_in_k`
(and `c_in_k` for an LSTM) holding its initial state and an extra output `h_out_k` (`c_out_k`) holding its
final state, batch-first [B, num_layers, hidden]. The user's forward runs as written: hooks registered on
the recurrent modules for the duration of the export (and of each validation run) hand them the state and
take their final state, and are removed afterwards, so the user's model object is left as it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ortserve.export.errors import ExporterError, SpecError
from ortserve.export.onnx_export import (
    EXTERNAL_DATA_THRESHOLD,
    MODEL_FILENAME,
    ExportAttempt,
    _summary,
    _tracer_notes,
    dynamo_dims,
    output_names,
)
from ortserve.export.spec import ExportSpec

logger = logging.getLogger(__name__)

RECURRENT_TYPES: tuple[type[nn.RNNBase], ...] = (nn.LSTM, nn.GRU, nn.RNN)


@dataclass(frozen=True)
class StateTensor:
    """One carried state: graph input `input_name` feeds it, graph output `output_name` returns it."""

    input_name: str
    output_name: str
    dims: tuple[int, int]
    """[num_layers, hidden] (the batch axis comes first in the graph and is left out here, as in config)."""
    module: str
    """The recurrent module's qualified name in the user's model."""
    index: int
    """Position among the model's recurrent modules (`model.modules()` order)."""
    part: str
    """"h" (hidden state) or "c" (an LSTM's cell state)."""

    def to_dict(self) -> dict:
        return {
            "input": self.input_name,
            "output": self.output_name,
            "dims": list(self.dims),
            "module": self.module,
        }


def recurrent_modules(model: nn.Module) -> list[tuple[str, nn.RNNBase]]:
    """The model's recurrent modules in `model.modules()` order, with their qualified names."""
    return [(name or "<model>", m) for name, m in model.named_modules() if isinstance(m, RECURRENT_TYPES)]


def state_tensors(model: nn.Module) -> list[StateTensor]:
    """The states a step graph of `model` carries; SpecError when it has none or one cannot stream."""
    modules = recurrent_modules(model)
    if not modules:
        raise SpecError(
            "a stateful export needs recurrent state: the model has no nn.LSTM, nn.GRU or nn.RNN module"
        )
    states: list[StateTensor] = []
    for index, (name, module) in enumerate(modules):
        kind = type(module).__name__
        if module.bidirectional:
            raise SpecError(
                f"recurrent module {index} ({name!r}, a bidirectional {kind}) cannot stream: its backward "
                "direction reads the sequence from its end, which a stream does not have yet"
            )
        layers = module.num_layers
        hidden = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
        states.append(StateTensor(f"h_in_{index}", f"h_out_{index}", (layers, hidden), name, index, "h"))
        if isinstance(module, nn.LSTM):
            cell = (layers, module.hidden_size)
            states.append(StateTensor(f"c_in_{index}", f"c_out_{index}", cell, name, index, "c"))
    return states


def zero_states(states: Sequence[StateTensor], batch: int) -> list[torch.Tensor]:
    return [torch.zeros((batch, *s.dims), dtype=torch.float32) for s in states]


class StateInjection:
    """Hooks on the recurrent modules: hand each the state given to `run`, record its final state.

    A recurrent module called more than once per forward (or never) cannot map onto one carried state, so
    `run` refuses it. Use as a context manager: the hooks exist only inside the `with` block.
    """

    def __init__(self, model: nn.Module, states: Sequence[StateTensor]) -> None:
        self.model = model
        self.states = list(states)
        self.modules = [module for _, module in recurrent_modules(model)]
        self._given: list[torch.Tensor] | None = None
        self._finals: dict[int, list[torch.Tensor]] = {}
        self._calls: list[int] = [0] * len(self.modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> StateInjection:
        for index, module in enumerate(self.modules):
            self._handles.append(
                module.register_forward_pre_hook(self._pre_hook(index), with_kwargs=True, prepend=True)
            )
            self._handles.append(module.register_forward_hook(self._post_hook(index), with_kwargs=True))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, inputs: torch.Tensor, given: Sequence[torch.Tensor] | None) -> tuple[list, list]:
        """(user outputs flattened, final states batch-first) of the model on `inputs` from `given` states
        (None: the model's own initial state, i.e. the user's forward exactly as written)."""
        self._given = list(given) if given is not None else None
        self._finals = {}
        self._calls = [0] * len(self.modules)
        outputs = self.model(inputs)
        never = [s.module for s in self.states if self._calls[s.index] == 0]
        if never:
            raise SpecError(
                f"recurrent module(s) {sorted(set(never))} are never called by the model's forward"
            )
        finals = [self._finals[s.index][0 if s.part == "h" else 1] for s in self.states]
        return _flat_tensors(outputs), finals

    def _pre_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            self._calls[index] += 1
            if self._calls[index] > 1:
                raise SpecError(
                    f"recurrent module {index} ({self.states_of(index)[0].module!r}) is called more than "
                    "once in one forward; a step graph can carry one state per recurrent module"
                )
            if self._given is None:
                return args, kwargs
            mine = [self._given[i] for i, s in enumerate(self.states) if s.index == index]
            dtype = next(module.parameters()).dtype
            layer_first = [state.transpose(0, 1).contiguous().to(dtype) for state in mine]
            hx = (layer_first[0], layer_first[1]) if isinstance(module, nn.LSTM) else layer_first[0]
            kwargs = {key: value for key, value in kwargs.items() if key != "hx"}
            kwargs["hx"] = hx
            return args[:1], kwargs

        return hook

    def _post_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: tuple) -> None:
            final = output[1]
            parts = list(final) if isinstance(module, nn.LSTM) else [final]
            self._finals[index] = [part.transpose(0, 1).to(torch.float32) for part in parts]

        return hook

    def states_of(self, index: int) -> list[StateTensor]:
        return [s for s in self.states if s.index == index]


class StepModel(nn.Module):
    """forward(input, *states) -> (*user outputs, *final states): the graph torch.onnx.export sees."""

    def __init__(self, injection: StateInjection) -> None:
        super().__init__()
        self.network = injection.model
        # A plain attribute, not a submodule: the injection holds the same model.
        object.__setattr__(self, "injection", injection)

    def forward(self, inputs: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, finals = self.injection.run(inputs, states)
        return (*outputs, *finals)


def step_names(spec: ExportSpec, states: Sequence[StateTensor], n_outputs: int) -> tuple[list, list]:
    """(graph input names, graph output names) of the step graph."""
    inputs = [spec.input_name, *(s.input_name for s in states)]
    outputs = [*output_names(spec, n_outputs), *(s.output_name for s in states)]
    return inputs, outputs


def export_step(
    network: nn.Module,
    example: torch.Tensor,
    spec: ExportSpec,
    states: Sequence[StateTensor],
    exporter: str,
    directory: Path,
    n_outputs: int,
) -> ExportAttempt:
    """Export the step graph of `network` with `exporter` to directory/model.onnx; raises ExporterError."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILENAME
    input_names, names = step_names(spec, states, n_outputs)
    example_states = tuple(zero_states(states, example.shape[0]))
    captured = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(captured),
        StateInjection(network, states) as injection,
    ):
        warnings.simplefilter("always")
        step = StepModel(injection)
        try:
            if exporter == "dynamo":
                _dynamo(step, example, example_states, spec, path, input_names, names)
            elif exporter == "torchscript":
                _torchscript(step, example, example_states, spec, path, input_names, names)
            else:
                raise ValueError(f"unknown exporter {exporter!r}")
        except SpecError:
            raise
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported, then maybe retried
            logger.debug("%s exporter output:\n%s", exporter, captured.getvalue())
            raise ExporterError(f"{exporter} exporter failed on the step graph: {_summary(exc)}") from exc
    logger.debug("%s exporter output:\n%s", exporter, captured.getvalue())
    return ExportAttempt(exporter=exporter, path=path, notes=_tracer_notes(caught))


def _input_axes(spec: ExportSpec) -> dict[int, str]:
    return spec.resolved_dynamic_axes()[spec.input_name]


def _dynamo(
    step: StepModel,
    example: torch.Tensor,
    example_states: tuple[torch.Tensor, ...],
    spec: ExportSpec,
    path: Path,
    input_names: list[str],
    names: list[str],
) -> None:
    input_shapes = dynamo_dims(_input_axes(spec))
    batch = input_shapes[0]
    program = torch.onnx.export(
        step,
        (example, *example_states),
        None,
        dynamo=True,
        input_names=input_names,
        output_names=names,
        # forward(inputs, *states): the var-positional states form one nested entry.
        dynamic_shapes=(input_shapes, tuple({0: batch} for _ in example_states)),
        opset_version=spec.opset,
    )
    size = sum(t.numel() * t.element_size() for t in step.network.state_dict().values())
    program.save(str(path), external_data=size > EXTERNAL_DATA_THRESHOLD)


def _torchscript(
    step: StepModel,
    example: torch.Tensor,
    example_states: tuple[torch.Tensor, ...],
    spec: ExportSpec,
    path: Path,
    input_names: list[str],
    names: list[str],
) -> None:
    batch = _input_axes(spec)[0]
    axes = {spec.input_name: _input_axes(spec)}
    for name in [*input_names[1:], *names]:
        axes.setdefault(name, {0: batch})
    torch.onnx.export(
        step,
        (example, *example_states),
        str(path),
        dynamo=False,
        input_names=input_names,
        output_names=names,
        dynamic_axes=axes,
        opset_version=spec.opset,
    )


def _flat_tensors(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flat_tensors(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _flat_tensors(item)]
    raise TypeError(f"model returned {type(output).__name__}; expected tensors")
