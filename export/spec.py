"""Declarative export specification: what the ONNX model's interface is and how hard it is checked."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ortserve.export.errors import SpecError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
KINDS = ("image", "sequence")
INPUT_DTYPES = ("uint8", "float32")
EXPORTERS = ("auto", "dynamo", "torchscript")
PRECISIONS = ("fp32", "fp16", "int8")
STATE_MODES = ("server", "client")
# (atol, rtol) when the spec gives none. fp16 keeps about 3 significant digits, and its error grows with the
# activations' scale (0.06 on random-weight ResNet-50 logits of ~110): onnxruntime's own fp16 parity checks
# allow atol 0.1 (rtol 0.05; 0.01 here).
# int8: the float graph is validated at fp32's tolerance before it is quantized; the int8 graph itself is
# proven by top-1 agreement with PyTorch on real samples (export/int8_proof.py).
DEFAULT_TOLERANCE: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "fp16": (1e-1, 1e-2),
    "int8": (1e-4, 1e-3),
}
# None of these equals the default trace batch (3), so validation always runs off the traced shape.
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 7, 32)
DEFAULT_TIME_LENGTHS: tuple[int, ...] = (1, 3, 17, 64)
# The time steps a served sequence model accepts by default (config parameter max_input_dims): memory grows
# with T (an 8 MB LSTM request took 361 MB), and 4096 steps cover the sequence lengths these models are
# validated and typically used at while keeping one request's footprint bounded. Raise it per export.
DEFAULT_MAX_SEQUENCE_LENGTH = 4096


@dataclass(frozen=True)
class Preprocessing:
    """How raw input becomes what the network expects; uint8 means it happens inside the ONNX graph."""

    input_dtype: str = "float32"
    """uint8: the graph takes NCHW pixels in [0, 255]; float32: the caller sends ready input."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    """Per-channel mean subtracted after scaling to [0, 1] (image models)."""
    std: tuple[float, ...] = IMAGENET_STD
    """Per-channel standard deviation divided by after the mean (image models)."""

    @property
    def in_graph(self) -> bool:
        return self.input_dtype == "uint8"

    def to_dict(self, kind: str) -> dict:
        """The JSON-able description clients read (config.pbtxt parameter `preprocessing`)."""
        if kind == "sequence":
            return {"input_dtype": self.input_dtype, "layout": "NTF", "in_graph": False}
        return {
            "input_dtype": self.input_dtype,
            "in_graph": self.in_graph,
            "scale": 1.0 / 255.0,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW",
        }


@dataclass(frozen=True)
class ExportSpec:
    """Everything that defines the exported interface and its validation; build it with image()/sequence()."""

    kind: str
    """image ([B, C, H, W]) or sequence (batch-first [B, T, F])."""
    example_shape: tuple[int, ...]
    """Example input shape without the batch axis: (C, H, W) or (T, F)."""
    input_name: str = "input"
    """ONNX and config.pbtxt input tensor name."""
    output_name: str = "output"
    """ONNX and config.pbtxt output tensor name (suffixed _1, _2... when the model returns a tuple)."""
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    """Tensor name -> {axis: symbolic name}; None derives batch (and time) axes from the kind."""
    opset: int = 18
    """ONNX opset requested from the exporter."""
    atol: float | None = None
    """Absolute tolerance in |onnx - torch| <= atol + rtol * |torch|; None: the precision's default."""
    rtol: float | None = None
    """Relative tolerance in |onnx - torch| <= atol + rtol * |torch|; None: the precision's default."""
    precision: str = "fp32"
    """fp32; fp16: weights and arithmetic in float16 (for GPUs); int8: quantized on CPU (export/quantize.py).
    Inputs and outputs keep their types."""
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    """Batch sizes validated against PyTorch."""
    time_lengths: tuple[int, ...] = DEFAULT_TIME_LENGTHS
    """Time lengths validated for sequence models with a dynamic time axis."""
    trace_batch: int = 3
    """Batch size of the traced example; moved off batch_sizes if it collides."""
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    """Input dtype and in-graph normalisation (image models)."""
    exporter: str = "auto"
    """auto (dynamo, falling back to torchscript), dynamo or torchscript."""
    seed: int = 0
    """Seed of the random validation inputs."""
    stateful: bool = False
    """Export a streaming step graph: each LSTM/GRU state is an extra input and output (see stateful.py)."""
    state: str = "server"
    """stateful only: server (config sequence_batching keeps the state) or client (the client carries it)."""
    max_sequence_length: int | None = DEFAULT_MAX_SEQUENCE_LENGTH
    """Most time steps the server accepts (sequence models with a dynamic time axis); None: no bound."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.exporter not in EXPORTERS:
            raise SpecError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.precision not in PRECISIONS:
            raise SpecError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.preprocessing.input_dtype not in INPUT_DTYPES:
            raise SpecError(
                f"input dtype must be one of {INPUT_DTYPES}, got {self.preprocessing.input_dtype!r}"
            )
        want_rank = 3 if self.kind == "image" else 2
        if len(self.example_shape) != want_rank or any(int(d) < 1 for d in self.example_shape):
            layout = "(C, H, W)" if self.kind == "image" else "(T, F)"
            raise SpecError(
                f"{self.kind} example shape must be {layout} of positive ints, got {self.example_shape}"
            )
        if self.kind == "sequence" and self.preprocessing.in_graph:
            raise SpecError("uint8 input (in-graph image normalisation) only applies to image models")
        if self.kind == "image" and self.preprocessing.in_graph:
            channels = self.example_shape[0]
            if len(self.preprocessing.mean) != channels or len(self.preprocessing.std) != channels:
                raise SpecError(f"mean and std need {channels} values (one per channel)")
            if any(s <= 0 for s in self.preprocessing.std):
                raise SpecError("std values must be positive")
        if self.state not in STATE_MODES:
            raise SpecError(f"state must be one of {STATE_MODES}, got {self.state!r}")
        if self.stateful and self.kind != "sequence":
            raise SpecError("a stateful (streaming) export needs a sequence model ([B, T, F] input)")
        if self.stateful and self.precision == "int8":
            raise SpecError("int8 is not available for stateful (streaming) exports: export them fp32")
        if min(self.tolerance) < 0:
            raise SpecError("atol and rtol must be >= 0")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise SpecError("batch sizes must be positive")
        if self.kind == "sequence" and (not self.time_lengths or any(t < 1 for t in self.time_lengths)):
            raise SpecError("time lengths must be positive")
        if self.kind == "sequence" and self.max_sequence_length is not None:
            longest = max(*self.time_lengths, self.example_shape[0])
            if self.max_sequence_length < longest:
                raise SpecError(
                    f"max sequence length {self.max_sequence_length} is below the longest validated or "
                    f"example length {longest}"
                )
        axes = self.resolved_dynamic_axes()
        if self.input_name not in axes:
            raise SpecError(f"dynamic axes name no input {self.input_name!r}: {dict(axes)}")
        rank = want_rank + 1
        for axis in axes[self.input_name]:
            if not 0 <= axis < rank:
                raise SpecError(f"dynamic axis {axis} is outside input rank {rank}")

    @classmethod
    def image(
        cls,
        image_size: int = 224,
        *,
        channels: int = 3,
        input_dtype: str = "uint8",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **options,
    ) -> ExportSpec:
        """An image classifier taking [B, channels, image_size, image_size]."""
        pre = Preprocessing(input_dtype=input_dtype, mean=tuple(mean), std=tuple(std))
        return cls(
            kind="image", example_shape=(channels, image_size, image_size), preprocessing=pre, **options
        )

    @classmethod
    def sequence(cls, time_steps: int, features: int, **options) -> ExportSpec:
        """A batch-first sequence model taking [B, time_steps, features] (float32)."""
        return cls(kind="sequence", example_shape=(time_steps, features), **options)

    def replace(self, **changes) -> ExportSpec:
        return dataclasses.replace(self, **changes)

    def resolved_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Dynamic axes per tensor; the batch axis of the input is always dynamic."""
        if self.dynamic_axes is None:
            input_axes = {0: "batch", 1: "time"} if self.kind == "sequence" else {0: "batch"}
            return {self.input_name: input_axes}
        axes = {str(name): {int(a): str(d) for a, d in ax.items()} for name, ax in self.dynamic_axes.items()}
        axes.setdefault(self.input_name, {})
        axes[self.input_name].setdefault(0, "batch")
        return axes

    @property
    def tolerance(self) -> tuple[float, float]:
        """(atol, rtol): the spec's own, or the precision's default for either left unset."""
        atol, rtol = DEFAULT_TOLERANCE[self.precision]
        return (atol if self.atol is None else self.atol, rtol if self.rtol is None else self.rtol)

    @property
    def time_is_dynamic(self) -> bool:
        return self.kind == "sequence" and 1 in self.resolved_dynamic_axes()[self.input_name]

    def max_input_dims(self, input_dims: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Bounds of the input's non-batch dims for config parameter max_input_dims ({} when none): the
        time axis at max_sequence_length, the rest unbounded."""
        if not self.time_is_dynamic or self.max_sequence_length is None or not input_dims:
            return {}
        return {
            self.input_name: tuple(
                self.max_sequence_length if axis == 0 else -1 for axis in range(len(input_dims))
            )
        }

    def trace_batch_size(self) -> int:
        """The traced batch size, kept off the validated ones so a frozen batch axis is caught."""
        batch = self.trace_batch
        while batch in self.batch_sizes:
            batch += 1
        return batch

    def trace_time_length(self) -> tuple[int, str | None]:
        """The traced time length and a note when the requested one had to move off a validated length."""
        wanted = self.example_shape[0]
        if not self.time_is_dynamic or wanted not in self.time_lengths:
            return wanted, None
        length = wanted + 1
        while length in self.time_lengths:
            length += 1
        return length, (
            f"traced at time length {length} instead of {wanted}: {wanted} is a validated length, "
            "and tracing there would hide a time axis frozen at trace length"
        )


def parse_dynamic_axes(text: str) -> dict[str, dict[int, str]]:
    """Parse --dynamic-axes JSON like '{"input": {"0": "batch", "1": "time"}}' (a list of axes also works)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"--dynamic-axes is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError('--dynamic-axes must be an object like {"input": {"0": "batch"}}')
    axes: dict[str, dict[int, str]] = {}
    for name, value in raw.items():
        if isinstance(value, list):
            value = {axis: f"{name}_dim{axis}" for axis in value}
        if not isinstance(value, dict):
            raise SpecError(f"--dynamic-axes entry {name!r} must map axis -> name")
        try:
            axes[str(name)] = {int(axis): str(dim) for axis, dim in value.items()}
        except ValueError as exc:
            raise SpecError(f"--dynamic-axes entry {name!r} has a non-integer axis") from exc
    return axes
