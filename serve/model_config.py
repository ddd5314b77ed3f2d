"""Model configuration: read config.pbtxt and complete it from the ONNX model, like Triton's auto-complete.

`read_config` parses the file (if any); `complete_static` fills what needs no model (name, platform, version
policy, file name); `complete_io` fills and checks inputs, outputs and max_batch_size against the model's
onnxruntime session. Every problem raises ModelLoadError with a reason that names the model and tensor.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from ortserve.protos import model_config_pb2
from ortserve.protos import repository_layout as layout
from ortserve.protos.datatypes import CONFIG_TO_KSERVE, KSERVE_TO_CONFIG, KSERVE_TO_NUMPY

from .errors import ModelLoadError

CONFIG_FILENAME = layout.CONFIG_FILENAME
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DEFAULT_MODEL_FILENAME = layout.DEFAULT_MODEL_FILENAME

# onnxruntime's type strings, derived from the one KServe table (numpy names, except three).
_ONNX_NAMES = {"float32": "float", "float64": "double", "object": "string"}
ONNX_TO_KSERVE: dict[str, str] = {
    f"tensor({_ONNX_NAMES.get(dtype.name, dtype.name)})": kserve for kserve, dtype in KSERVE_TO_NUMPY.items()
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as served: KServe datatype, dims without the batch dimension (-1 = any)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    dtype: np.dtype
    optional: bool = False

    @functools.cached_property
    def batched_dims(self) -> tuple[int, ...]:
        """The dims with the batch dimension in front (-1: any size)."""
        return (-1, *self.dims)


@dataclass(frozen=True)
class OnnxTensor:
    """What onnxruntime tells about a model input or output."""

    name: str
    type: str
    shape: tuple[int | None, ...]

    @classmethod
    def from_node_arg(cls, arg) -> OnnxTensor:
        return cls(
            arg.name, arg.type, tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in arg.shape)
        )


def read_config(model_dir: Path, strict: bool, name: str = "") -> tuple[model_config_pb2.ModelConfig, bool]:
    """Parse NAME/config.pbtxt; return it and whether it set max_batch_size explicitly (even to 0).
    `name`: the model's served name (default: the folder's)."""
    name = name or model_dir.name
    path = model_dir / CONFIG_FILENAME
    config = model_config_pb2.ModelConfig()
    if not path.is_file():
        if strict:
            raise ModelLoadError(f"model '{name}': {CONFIG_FILENAME} is required with --strict-model-config")
        return config, False
    try:
        text = layout.inside(model_dir, CONFIG_FILENAME, CONFIG_FILENAME).read_text(encoding="utf-8")
    except layout.PathOutsideModel as exc:
        raise ModelLoadError(f"model '{name}': {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"model '{name}': cannot read {CONFIG_FILENAME}: {exc}") from None
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelLoadError(f"model '{name}': cannot parse {CONFIG_FILENAME}: {exc}") from None
    # proto3 cannot tell an explicit 0 from a missing field; the text can.
    return config, bool(re.search(r"^\s*max_batch_size\s*:", text, re.MULTILINE))


def complete_static(config: model_config_pb2.ModelConfig, name: str) -> None:
    """Fill and check the fields that need no model: name, platform, version policy, file name."""
    if config.name and config.name != name:
        raise ModelLoadError(
            f"model '{name}': config.pbtxt names it '{config.name}'; the directory name must match"
        )
    config.name = name
    if config.platform and config.platform != PLATFORM:
        raise ModelLoadError(
            f"model '{name}': platform '{config.platform}' is not supported, expected '{PLATFORM}'"
        )
    if config.backend and config.backend != BACKEND:
        raise ModelLoadError(
            f"model '{name}': backend '{config.backend}' is not supported, expected '{BACKEND}'"
        )
    config.platform, config.backend = PLATFORM, BACKEND
    scheduling = config.WhichOneof("scheduling_choice")
    if scheduling not in (None, "dynamic_batching", "sequence_batching"):
        raise ModelLoadError(f"model '{name}': {scheduling} is not supported")
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if not config.default_model_filename:
        config.default_model_filename = DEFAULT_MODEL_FILENAME


def complete_io(
    config: model_config_pb2.ModelConfig,
    inputs: Sequence[OnnxTensor],
    outputs: Sequence[OnnxTensor],
    *,
    max_batch_size_given: bool,
    strict: bool,
    default_max_batch_size: int,
) -> None:
    """Fill and check inputs, outputs, max_batch_size and dynamic batching against the ONNX model.

    The state tensors `sequence_batching.state` names are the server's, not the client's: they are left
    out of config input/output (and may not be listed there).
    """
    name = config.name
    if config.HasField("sequence_batching"):
        hidden = {s.input_name for s in config.sequence_batching.state}
        hidden |= {s.output_name for s in config.sequence_batching.state}
        for entry in (*config.input, *config.output):
            if entry.name in hidden:
                raise ModelLoadError(
                    f"model '{name}': '{entry.name}' is a sequence_batching state; "
                    "state tensors are not listed in config input/output"
                )
        inputs = [t for t in inputs if t.name not in hidden]
        outputs = [t for t in outputs if t.name not in hidden]
    if not max_batch_size_given and not strict:
        batchable = all(t.shape and t.shape[0] is None for t in (*inputs, *outputs))
        config.max_batch_size = default_max_batch_size if batchable else 0
        if batchable and config.WhichOneof("scheduling_choice") is None:
            config.dynamic_batching.SetInParent()
    if config.max_batch_size < 0:
        raise ModelLoadError(f"model '{name}': max_batch_size must be >= 0, got {config.max_batch_size}")
    batched = config.max_batch_size > 0
    _complete_tensors(name, "input", config.input, inputs, batched, strict)
    _complete_tensors(name, "output", config.output, outputs, batched, strict)
    if config.HasField("dynamic_batching"):
        if not batched:
            raise ModelLoadError(f"model '{name}': dynamic_batching needs max_batch_size > 0")
        for size in config.dynamic_batching.preferred_batch_size:
            if not 1 <= size <= config.max_batch_size:
                raise ModelLoadError(
                    f"model '{name}': preferred_batch_size {size} is outside "
                    f"1..max_batch_size {config.max_batch_size}"
                )


def _complete_tensors(
    name, kind, entries, model_tensors: Sequence[OnnxTensor], batched: bool, strict: bool
) -> None:
    by_name = {t.name: t for t in model_tensors}
    for entry in entries:
        if entry.name not in by_name:
            raise ModelLoadError(
                f"model '{name}': {kind} '{entry.name}' in config.pbtxt is not in the ONNX model "
                f"{sorted(by_name)}"
            )
        if entry.HasField("reshape"):
            raise ModelLoadError(f"model '{name}': {kind} '{entry.name}': reshape is not supported")
    configured = {entry.name: entry for entry in entries}
    for tensor in model_tensors:
        entry = configured.get(tensor.name)
        if entry is None:
            if strict:
                raise ModelLoadError(f"model '{name}': {kind} '{tensor.name}' is missing from config.pbtxt")
            entry = entries.add(name=tensor.name)
        _complete_tensor(name, kind, entry, tensor, batched)


def _complete_tensor(name, kind, entry, tensor: OnnxTensor, batched: bool) -> None:
    where = f"model '{name}': {kind} '{tensor.name}'"
    kserve = ONNX_TO_KSERVE.get(tensor.type)
    if kserve is None:
        raise ModelLoadError(f"{where}: ONNX type {tensor.type} is not supported")
    config_type = model_config_pb2.DataType.Name(entry.data_type)
    if entry.data_type == model_config_pb2.TYPE_INVALID:
        entry.data_type = model_config_pb2.DataType.Value(KSERVE_TO_CONFIG[kserve])
    elif CONFIG_TO_KSERVE.get(config_type) != kserve:
        raise ModelLoadError(f"{where}: config.pbtxt says {config_type}, the ONNX model has {tensor.type}")
    shape = tensor.shape
    if batched:
        if not shape or shape[0] is not None:
            raise ModelLoadError(
                f"{where}: max_batch_size > 0 needs a dynamic first (batch) dimension, "
                f"the ONNX model has {list(shape)}"
            )
        shape = shape[1:]
    model_dims = [-1 if dim is None else dim for dim in shape]
    if not entry.dims:
        entry.dims.extend(model_dims)
        return
    if len(entry.dims) != len(model_dims):
        raise ModelLoadError(
            f"{where}: config.pbtxt dims {list(entry.dims)} have another rank than "
            f"the ONNX model's {model_dims}" + (" (dims exclude the batch dimension)" if batched else "")
        )
    merged = []
    for config_dim, model_dim in zip(entry.dims, model_dims, strict=True):
        if config_dim != -1 and model_dim != -1 and config_dim != model_dim:
            raise ModelLoadError(
                f"{where}: config.pbtxt dims {list(entry.dims)} disagree with the ONNX model's {model_dims}"
            )
        merged.append(model_dim if config_dim == -1 else config_dim)
    del entry.dims[:]
    entry.dims.extend(merged)


def tensor_specs(entries) -> dict[str, TensorSpec]:
    """Served tensor specs, in config order, from completed ModelInput/ModelOutput entries."""
    specs = {}
    for entry in entries:
        datatype = CONFIG_TO_KSERVE[model_config_pb2.DataType.Name(entry.data_type)]
        specs[entry.name] = TensorSpec(
            entry.name,
            datatype,
            tuple(entry.dims),
            KSERVE_TO_NUMPY[datatype],
            getattr(entry, "optional", False),
        )
    return specs
