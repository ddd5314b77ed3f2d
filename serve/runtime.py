"""onnxruntime sessions: one InferenceSession per model instance, providers from `instance_group`.

KIND_GPU asks for CUDAExecutionProvider; when onnxruntime cannot give it, the model fails to load with a
reason that says so: there is never a silent CPU fallback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ortserve.protos import model_config_pb2

from .errors import ModelLoadError
from .model_config import TensorSpec

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# How onnxruntime's intra-op threads wait for work (config parameter `allow_spinning`):
# - "auto" (the default): a slow model spins only inside a run (the gaps between parallel sections are
#   microseconds: sleeping there cost ResNet-18 ~1 ms a run at batch 1) and sleeps between runs; a quick
#   model (batch 1 under the batcher's inline limit) never spins: its batches run on the event loop, and
#   spinning threads burned the cores the loop and gRPC needed (2x the CPU per request for the LSTM at 8 in
#   flight on 2 cores). See docs/performance.md.
# - "1": onnxruntime's own default (spin inside runs and for a while after them); "0": never spin.
# A tiny model (batch 1 under 0.5 ms) also gets 1 intra-op thread unless `intra_op_thread_count` says
# otherwise: its batches of a few rows ran slower and cost more CPU on two threads than on one (the LSTM).
SPINNING_CHOICES = ("auto", "0", "1")
SPIN_IN_RUNS = "in_runs"  # what "auto" gives a slow model
# onnxruntime's `session.dynamic_block_base` for a slow model (config parameter `dynamic_block_base`, "0":
# off): each parallel loop is cut into shrinking blocks that idle threads take, instead of one fixed share
# per thread. In a server the event loop, gRPC and the clients preempt one of the compute threads now and
# then, and with fixed shares the others wait at every parallel section's end: ResNet-18 at 8 in flight ran
# at a median 0.85x raw onnxruntime with fixed shares against 0.93x with 4 (docs/performance.md, item 15).
SLOW_MODEL_BLOCK_BASE = 4
Kind = model_config_pb2.ModelInstanceGroup.Kind

GRAPH_LEVELS = {
    "ORT_DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "ORT_ENABLE_BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "ORT_ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "ORT_ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    # Triton's onnxruntime backend numbers (optimization { graph { level } }).
    "-1": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "0": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "1": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


@dataclass(frozen=True)
class InstanceSpec:
    """One model instance to create: its name and the providers its session must run on."""

    name: str
    providers: tuple
    provider: str


def cuda_available() -> bool:
    """Whether this onnxruntime build offers the CUDA execution provider."""
    return CUDA in ort.get_available_providers()


def complete_instance_groups(config: model_config_pb2.ModelConfig) -> None:
    """Default instance_group like Triton (one instance, on GPU 0 when CUDA is there); resolve KIND_AUTO."""
    if not config.instance_group:
        config.instance_group.add()
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.count <= 0:
            group.count = 1
        if group.kind in (Kind.KIND_AUTO, Kind.KIND_MODEL):
            group.kind = Kind.KIND_GPU if cuda_available() else Kind.KIND_CPU
        if group.kind == Kind.KIND_GPU and not group.gpus:
            group.gpus.append(0)


def instance_specs(config: model_config_pb2.ModelConfig) -> list[InstanceSpec]:
    """The instances a completed config asks for; fails the load if CUDA is asked for and missing."""
    specs = []
    for group in config.instance_group:
        if group.kind == Kind.KIND_CPU:
            specs += [InstanceSpec(f"{group.name}_{i}", (CPU,), CPU) for i in range(group.count)]
            continue
        if not cuda_available():
            raise ModelLoadError(
                f"model '{config.name}': instance group '{group.name}' is KIND_GPU but onnxruntime offers no "
                f"{CUDA} (available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
                "with CUDA or use KIND_CPU"
            )
        for gpu in group.gpus:
            specs += [
                InstanceSpec(f"{group.name}_gpu{gpu}_{i}", ((CUDA, {"device_id": int(gpu)}), CPU), CUDA)
                for i in range(group.count)
            ]
    return specs


def spinning_choice(config: model_config_pb2.ModelConfig) -> str:
    """The config's `allow_spinning` parameter: "auto" (absent), "0" or "1"; anything else is refused."""
    parameter = config.parameters.get("allow_spinning")
    choice = parameter.string_value if parameter is not None else "auto"
    if choice not in SPINNING_CHOICES:
        raise ModelLoadError(
            f"model '{config.name}': allow_spinning must be one of {', '.join(SPINNING_CHOICES)}, "
            f"got '{choice}'"
        )
    return choice


def session_options(
    config: model_config_pb2.ModelConfig,
    version_dir: Path,
    spinning: str = SPIN_IN_RUNS,
    one_thread: bool = False,
) -> ort.SessionOptions:
    """SessionOptions from config `parameters` (and optimization.graph.level); `spinning` "0", "1" or
    SPIN_IN_RUNS (spin inside a run, stop when it ends; such a slow model also gets SLOW_MODEL_BLOCK_BASE
    unless `dynamic_block_base` says otherwise). Without `intra_op_thread_count`: 1 intra-op thread when
    `one_thread`, else onnxruntime's default (one per physical core)."""
    params = {key: value.string_value for key, value in config.parameters.items()}
    options = ort.SessionOptions()
    try:
        if "intra_op_thread_count" in params:
            options.intra_op_num_threads = int(params["intra_op_thread_count"])
        elif one_thread:
            options.intra_op_num_threads = 1
        default_base = SLOW_MODEL_BLOCK_BASE if spinning == SPIN_IN_RUNS else 0
        block_base = int(params.get("dynamic_block_base", default_base))
        if block_base < 0:
            raise ValueError(f"dynamic_block_base {block_base} is negative")
        if block_base:
            options.add_session_config_entry("session.dynamic_block_base", str(block_base))
        if "inter_op_thread_count" in params:
            options.inter_op_num_threads = int(params["inter_op_thread_count"])
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    except ValueError as exc:
        raise ModelLoadError(
            f"model '{config.name}': thread parameter is not a non-negative integer: {exc}"
        ) from None
    allow = "0" if spinning == "0" else "1"
    options.add_session_config_entry("session.intra_op.allow_spinning", allow)
    options.add_session_config_entry("session.inter_op.allow_spinning", allow)
    if spinning == SPIN_IN_RUNS:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    level = params.get("graph_optimization_level")
    if level is None and config.optimization.HasField("graph"):
        level = str(config.optimization.graph.level)
    if level is not None:
        if level not in GRAPH_LEVELS:
            raise ModelLoadError(
                f"model '{config.name}': graph_optimization_level '{level}' is not one of "
                f"{', '.join(GRAPH_LEVELS)}"
            )
        options.graph_optimization_level = GRAPH_LEVELS[level]
    cache = params.get("optimized_model_filepath")
    if cache:
        path = Path(cache)
        options.optimized_model_filepath = str(path if path.is_absolute() else version_dir / path)
    options.log_severity_level = 3
    return options


def create_session(model_path: Path, spec: InstanceSpec, options: ort.SessionOptions, model: str):
    """An InferenceSession on the instance's providers; checks the provider asked for is really in use."""
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=list(spec.providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the reason goes to the index
        raise ModelLoadError(f"model '{model}': onnxruntime cannot load {model_path.name}: {exc}") from exc
    if spec.provider not in session.get_providers():
        raise ModelLoadError(
            f"model '{model}': instance '{spec.name}' asked for {spec.provider} but the session runs on "
            f"{session.get_providers()}; refusing to fall back"
        )
    # onnxruntime's own fallback would, on a CUDA failure inside run(), print to stdout, switch the session
    # to CPU for good and retry: a silent fallback. Without it the run fails and the batch gets INTERNAL.
    session.disable_fallback()
    return session


def arena_devices(spec: InstanceSpec) -> tuple[str, ...]:
    """The memory arenas an instance's runs use, as the arena shrinkage run option names them."""
    devices = ["cpu:0"]
    for provider in spec.providers:
        if isinstance(provider, tuple) and provider[0] == CUDA:
            devices.append(f"gpu:{provider[1]['device_id']}")
    return tuple(devices)


def warmup_feeds(
    inputs: dict[str, TensorSpec], batch_size: int | None, length: int = 1
) -> dict[str, np.ndarray]:
    """Zero inputs of the given batch size (None: not batched); variable dims become `length`."""
    feeds = {}
    for spec in inputs.values():
        shape = ([batch_size] if batch_size is not None else []) + [
            length if dim < 0 else dim for dim in spec.dims
        ]
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds
