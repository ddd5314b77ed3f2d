"""The benchmark's models: exported once to ONNX (cached), then laid out for each contender.

Every contender serves the very same model.onnx: ortserve's two repositories hard-link it (batching on and
off differ only in config.pbtxt), MLServer's model-settings.json points at it, raw onnxruntime loads it.
Weights are random (speed does not depend on them); the export runs ortserve's exporter in a subprocess
(`bench.export_models`) so this process never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format

from ortserve.protos import model_config_pb2
from ortserve.protos.datatypes import numpy_to_kserve

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPORT_TIMEOUT_S = 1800  # resnet50 with validation at several batch sizes takes minutes on 2 cores
LSTM_TIME_STEPS = 8
LSTM_FEATURES = 8
ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: what to export and what one request carries."""

    name: str
    kind: str  # image | sequence
    arch: str  # torchvision architecture, or "lstm"
    input_dtype: str  # uint8 | float32
    precision: str = "fp32"  # fp32 | fp16 | int8 (weights and arithmetic; the input stays input_dtype)

    def sample(self, rows: int, image_size: int, seed: int = 0) -> np.ndarray:
        """A deterministic random input of `rows` rows (the same bytes for every contender)."""
        rng = np.random.default_rng(seed)
        if self.kind == "sequence":
            return rng.standard_normal((rows, LSTM_TIME_STEPS, LSTM_FEATURES), dtype=np.float32)
        shape = (rows, 3, image_size, image_size)
        if self.input_dtype == "uint8":
            return rng.integers(0, 256, size=shape, dtype=np.uint8)
        return rng.standard_normal(shape, dtype=np.float32)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet18_uint8", "image", "resnet18", "uint8"),
        ModelSpec("resnet18_float32", "image", "resnet18", "float32"),
        ModelSpec("resnet50_uint8", "image", "resnet50", "uint8"),
        ModelSpec("resnet50_float32", "image", "resnet50", "float32"),
        ModelSpec("lstm", "sequence", "lstm", "float32"),
        # The execution-provider sweep (`--provider`): fp32 and fp16 exports of the same network.
        ModelSpec("resnet50_uint8_fp16", "image", "resnet50", "uint8", precision="fp16"),
        ModelSpec("resnet18_uint8_fp16", "image", "resnet18", "uint8", precision="fp16"),
        # int8 (`--precision int8`: static QDQ for the ResNets, dynamic for the LSTM) beside their fp32.
        ModelSpec("resnet18_uint8_int8", "image", "resnet18", "uint8", precision="int8"),
        ModelSpec("resnet50_uint8_int8", "image", "resnet50", "uint8", precision="int8"),
        ModelSpec("lstm_int8", "sequence", "lstm", "float32", precision="int8"),
    )
}


@dataclass(frozen=True)
class OnnxModel:
    """An exported model on disk and its single input/output."""

    spec: ModelSpec
    path: Path
    input_name: str
    output_name: str
    output_row_shape: tuple[int, ...]
    output_datatype: str

    @property
    def config_path(self) -> Path:
        """The exporter's config.pbtxt (NAME/config.pbtxt beside NAME/1/model.onnx)."""
        return self.path.parent.parent / "config.pbtxt"


def export_onnx(spec: ModelSpec, cache: Path, image_size: int, rebuild: bool = False) -> OnnxModel:
    """Export `spec` into `cache` (once) and describe the result."""
    key = spec.name if spec.kind == "sequence" else f"{spec.name}_{image_size}"
    workdir = cache / "onnx" / key
    onnx_path = workdir / "repository" / spec.name / "1" / "model.onnx"
    if rebuild and workdir.exists():
        shutil.rmtree(workdir)
    if not onnx_path.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        _run_exporter(spec, workdir, image_size)
        if not onnx_path.is_file():
            raise RuntimeError(f"exporter wrote no {onnx_path}")
    return describe(spec, onnx_path)


def describe(spec: ModelSpec, onnx_path: Path) -> OnnxModel:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    output = session.get_outputs()[0]
    row_shape = tuple(int(d) for d in output.shape[1:])
    datatype = numpy_to_kserve(np.dtype(ORT_TO_NUMPY[output.type]))
    return OnnxModel(spec, onnx_path, model_input.name, output.name, row_shape, datatype)


def _run_exporter(spec: ModelSpec, workdir: Path, image_size: int) -> None:
    """`bench.export_models` in a subprocess: ortserve's exporter on random weights."""
    command = [sys.executable, "-m", "bench.export_models", "--name", spec.name]
    command += ["--repository", str(workdir / "repository"), "--image-size", str(image_size)]
    logger.info("exporting %s (once; cached in %s)", spec.name, workdir)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=EXPORT_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"export of {spec.name} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@dataclass(frozen=True)
class BatchingSettings:
    """The batching knobs shared by ortserve's dynamic batcher and MLServer's adaptive batching."""

    max_batch_size: int = 32
    max_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16, 32)


def ortserve_config(
    model: OnnxModel,
    batching: BatchingSettings,
    enabled: bool,
    intra_op_threads: int | None,
    gpu: bool = False,
) -> str:
    """The exporter's config.pbtxt with the benchmark's batching; off = no dynamic_batching. The thread
    count is ortserve's own default unless `intra_op_threads` is given; `gpu`: one KIND_GPU instance on
    GPU 0 (the CUDA execution provider), else one KIND_CPU instance.

    max_batch_size stays explicit either way: without it ortserve would turn batching on by itself.
    """
    config = model_config_pb2.ModelConfig()
    text_format.Parse(model.config_path.read_text(encoding="utf-8"), config)
    config.max_batch_size = batching.max_batch_size
    config.ClearField("dynamic_batching")
    if enabled:
        preferred = [size for size in batching.preferred_batch_sizes if size <= batching.max_batch_size]
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        # No max_queue_delay_microseconds: ortserve honours it by holding an idle instance, which lost 10%
        # here (docs/performance.md); the exporter does not write it either. MLServer gets max_delay_us.
    config.ClearField("instance_group")
    kinds = model_config_pb2.ModelInstanceGroup
    if gpu:
        config.instance_group.add(count=1, kind=kinds.KIND_GPU, gpus=[0])
    else:
        config.instance_group.add(count=1, kind=kinds.KIND_CPU)
    if intra_op_threads is not None:
        config.parameters["intra_op_thread_count"].string_value = str(intra_op_threads)
    return text_format.MessageToString(config)


def write_ortserve_repository(
    root: Path,
    models: list[OnnxModel],
    batching: BatchingSettings,
    enabled: bool,
    intra_op_threads: int | None,
    gpu: bool = False,
) -> Path:
    """A Triton-layout repository: NAME/config.pbtxt and NAME/1/model.onnx (hard links to the export)."""
    for model in models:
        model_dir = root / model.spec.name
        for source in model.path.parent.iterdir():  # model.onnx and any external-data file beside it
            _link(source, model_dir / "1" / source.name)
        config = ortserve_config(model, batching, enabled, intra_op_threads, gpu)
        (model_dir / "config.pbtxt").write_text(config)
    return root


def write_mlserver_repository(
    root: Path,
    models: list[OnnxModel],
    batching: BatchingSettings,
    enabled: bool,
    intra_op_threads: int,
    runtime_source: Path,
) -> Path:
    """MLServer's layout: ROOT/mlserver_runtime.py and ROOT/NAME/model-settings.json (uri -> the export)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(runtime_source, root / "mlserver_runtime.py")
    for model in models:
        settings: dict = {
            "name": model.spec.name,
            "implementation": "mlserver_runtime.OnnxRuntimeModel",
            "parameters": {"uri": str(model.path.resolve()), "extra": {"intra_op_threads": intra_op_threads}},
        }
        if enabled:
            settings["max_batch_size"] = batching.max_batch_size
            settings["max_batch_time"] = batching.max_delay_us / 1e6
        model_dir = root / model.spec.name
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return root


def write_bare_models(path: Path, models: list[OnnxModel]) -> Path:
    """The bare server's canned-response table: model -> output name, datatype, row shape."""
    table = {
        m.spec.name: {
            "output": m.output_name,
            "datatype": m.output_datatype,
            "row_shape": list(m.output_row_shape),
        }
        for m in models
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=2))
    return path
