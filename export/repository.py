"""Writing a Triton-layout model repository: <repo>/<name>/config.pbtxt, labels.txt and <version>/model.onnx.

Every write is staged in a hidden temp directory inside the repository and moved in with rename, so an
error at any point leaves the repository as it was; existing versions are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import text_format

from ortserve.export.errors import RepositoryError
from ortserve.protos import model_config_pb2
from ortserve.protos import repository_layout as layout
from ortserve.protos.datatypes import KSERVE_TO_CONFIG, numpy_to_kserve
from ortserve.protos.request_limits import MAX_INPUT_DIMS, format_max_input_dims

logger = logging.getLogger(__name__)

CONFIG_FILENAME = layout.CONFIG_FILENAME
LABELS_FILENAME = layout.LABELS_FILENAME
MODEL_FILENAME = layout.DEFAULT_MODEL_FILENAME
PLATFORM = "onnxruntime_onnx"
PREFERRED_BATCH_SIZES = (4, 8, 16, 32)


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as config.pbtxt describes it (dims without the batch axis, -1 dynamic)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class WrittenVersion:
    version: int
    model_dir: Path
    version_dir: Path
    model_path: Path
    config_path: Path
    labels_path: Path | None


def check_model_name(name: str) -> None:
    """The repository's one model-name rule (ortserve.protos.repository_layout), as a RepositoryError."""
    try:
        layout.check_model_name(name)
    except layout.InvalidModelName as exc:
        raise RepositoryError(f"model name {name[:80]!r} must be a plain directory name: {exc}") from None


def read_labels(path: str | Path) -> list[str]:
    """The labels file as the server will read it (one reader for both sides)."""
    try:
        return layout.read_labels(Path(path))
    except layout.InvalidLabels as exc:
        raise RepositoryError(str(exc)) from exc


def existing_versions(model_dir: Path) -> list[int]:
    """Version numbers of the model folder (none when it does not exist yet)."""
    return list(layout.version_folders(model_dir)) if model_dir.is_dir() else []


def graph_tensors(model: onnx.ModelProto) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of the graph with Triton data types and dims (batch axis dropped)."""
    initializers = {init.name for init in model.graph.initializer}

    def info(value: onnx.ValueInfoProto) -> TensorInfo:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorInfo(value.name, KSERVE_TO_CONFIG[numpy_to_kserve(dtype)], dims[1:])

    inputs = [info(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [info(v) for v in model.graph.output]


def build_config(
    name: str,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    *,
    max_batch_size: int,
    parameters: Mapping[str, object],
    image_input: bool,
    label_output: str | None,
    max_input_dims: Mapping[str, Sequence[int]] | None = None,
) -> model_config_pb2.ModelConfig:
    """The config.pbtxt message for one ONNX model served by onnxruntime on CPU with dynamic batching;
    `max_input_dims` bounds inputs' non-batch dims (-1: none), written as parameter max_input_dims."""
    if max_batch_size < 1:
        raise RepositoryError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    config = model_config_pb2.ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size)
    config.default_model_filename = MODEL_FILENAME
    for tensor in inputs:
        entry = config.input.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
        if image_input:
            entry.format = model_config_pb2.ModelInput.FORMAT_NCHW
    for tensor in outputs:
        entry = config.output.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
        if tensor.name == label_output:
            entry.label_filename = LABELS_FILENAME
    preferred = [size for size in PREFERRED_BATCH_SIZES if size <= max_batch_size] or [max_batch_size]
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    # No max_queue_delay_microseconds: the server honours it by holding an idle instance back to fill a
    # preferred size, which cost the LSTM half its throughput (docs/performance.md); without it batches
    # form from what queued while the instance was busy, with no added latency.
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    for key, value in parameters.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        config.parameters[key].string_value = text
    if max_input_dims:
        config.parameters[MAX_INPUT_DIMS].string_value = format_max_input_dims(max_input_dims)
    return config


def write_version(
    repository: str | Path,
    name: str,
    model: onnx.ModelProto,
    config: model_config_pb2.ModelConfig,
    labels: Sequence[str] | None,
) -> WrittenVersion:
    """Add the next version of `name` to the repository (and rewrite its config/labels) atomically."""
    check_model_name(name)
    repository = Path(repository)
    try:
        repository.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create model repository {repository}: {exc}") from exc
    model_dir = repository / name
    if model_dir.exists() and not model_dir.is_dir():
        raise RepositoryError(f"{model_dir} exists and is not a directory")
    version = max(existing_versions(model_dir), default=0) + 1
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{name[:40]}.staging-", dir=repository))
    except OSError as exc:
        raise RepositoryError(f"cannot write into model repository {repository}: {exc}") from exc
    try:
        staged_model = staging / name
        staged_version = staged_model / str(version)
        staged_version.mkdir(parents=True)
        _save_onnx(model, staged_version / MODEL_FILENAME)
        (staged_model / CONFIG_FILENAME).write_text(text_format.MessageToString(config), encoding="utf-8")
        if labels is not None:
            (staged_model / LABELS_FILENAME).write_text(layout.format_labels(labels), encoding="utf-8")
        _move_in(staged_model, model_dir, version, has_labels=labels is not None)
    except layout.InvalidLabels as exc:
        raise RepositoryError(f"labels for {name!r}: {exc}") from exc
    except OSError as exc:
        raise RepositoryError(f"writing {model_dir} failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    version_dir = model_dir / str(version)
    logger.info("wrote %s version %d", model_dir, version)
    return WrittenVersion(
        version=version,
        model_dir=model_dir,
        version_dir=version_dir,
        model_path=version_dir / MODEL_FILENAME,
        config_path=model_dir / CONFIG_FILENAME,
        labels_path=model_dir / LABELS_FILENAME if labels is not None else None,
    )


def _move_in(staged_model: Path, model_dir: Path, version: int, *, has_labels: bool) -> None:
    if not model_dir.exists():
        # A brand-new model appears in one rename, complete.
        os.rename(staged_model, model_dir)
        return
    target = model_dir / str(version)
    if target.exists():
        raise RepositoryError(f"{target} appeared while exporting; refusing to overwrite it")
    os.rename(staged_model / str(version), target)
    # The model directory's config and labels follow the newest version.
    os.replace(staged_model / CONFIG_FILENAME, model_dir / CONFIG_FILENAME)
    if has_labels:
        os.replace(staged_model / LABELS_FILENAME, model_dir / LABELS_FILENAME)


def _save_onnx(model: onnx.ModelProto, path: Path) -> None:
    if model.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")
