"""Tiny ONNX models built with onnx.helper (no torch), and a writer for Triton-layout repositories.

Used by the server tests and by anyone who needs a real model to serve in a test:

    repo = tmp_path / "models"
    write_model(repo, "classifier", linear_classifier(), config="max_batch_size: 8", labels=["cat", "dog"])
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime >= 1.14

# Fixed weights of the linear classifier, so tests can compute the expected answer with numpy too.
CLASSIFIER_WEIGHTS = np.array(
    [[1.0, -1.0, 0.5], [0.5, 2.0, -1.0], [-1.5, 0.5, 1.0], [0.25, -0.5, 2.0]], dtype=np.float32
)
CLASSIFIER_BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)

KSERVE_TO_ONNX = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def linear_classifier() -> onnx.ModelProto:
    """FP32 input [B, 4] -> logits [B, 3] and probabilities = softmax(logits) [B, 3]."""
    return _model(
        [
            helper.make_node("MatMul", ["input", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
        ],
        [numpy_helper.from_array(CLASSIFIER_WEIGHTS, "W"), numpy_helper.from_array(CLASSIFIER_BIAS, "b")],
    )


def classifier_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """What linear_classifier computes, in numpy."""
    logits = x.astype(np.float32) @ CLASSIFIER_WEIGHTS + CLASSIFIER_BIAS
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return {"logits": logits, "probabilities": exp / exp.sum(axis=-1, keepdims=True)}


def identity(datatype: str, dims: Sequence[int | str] = (3,), batched: bool = True) -> onnx.ModelProto:
    """x -> y (Identity) for any KServe datatype, shape [B, *dims] (or dims when not batched)."""
    shape = (["batch"] if batched else []) + list(dims)
    elem = KSERVE_TO_ONNX[datatype]
    return _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
    )


def add_two() -> onnx.ModelProto:
    """Two FP32 inputs a, b [B, 2] -> sum [B, 2] and difference [B, 2]."""
    shape = ["batch", 2]
    return _model(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["difference"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("sum", "difference")],
    )


def time_series() -> onnx.ModelProto:
    """FP32 [B, T, 2] -> doubled [B, T, 2]: a dynamic time axis that must never be padded."""
    return _model(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 2])],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )


def fixed_shape() -> onnx.ModelProto:
    """Non-batching: FP32 [4] -> tripled [4] (auto-complete gives max_batch_size 0)."""
    return _model(
        [helper.make_node("Mul", ["x", "three"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three")],
    )


def slow(size: int = 256, rows: int = 2048, depth: int = 32) -> onnx.ModelProto:
    """FP32 [B, size] -> [B, size]; each row is expanded to `rows` rows and pushed through `depth` MatMuls,
    so one run takes tens of milliseconds even at batch 1 (for queue, deadline and shutdown tests)."""
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis1"], ["x3"]),
        helper.make_node("Expand", ["x3", "expand_shape"], ["h"]),
    ]
    name = "h"
    for step in range(depth):
        nodes.append(helper.make_node("MatMul", [name, "W"], [f"h{step}"]))
        name = f"h{step}"
    nodes.append(helper.make_node("ReduceMean", [name], ["y"], axes=[1], keepdims=0))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", size])],
        [
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array([1, rows, 1], dtype=np.int64), "expand_shape"),
        ],
    )


def slow_depth_for(
    seconds: float, size: int = 256, rows: int = 2048, batch: int = 1, threads: int = 1, probe_depth: int = 32
) -> int:
    """The depth of slow(size, rows) whose run on `batch` rows takes about `seconds` here with `threads`
    intra-op threads (0: onnxruntime's default), scaled from the fastest of three runs of a shallow one.
    A fixed depth is machine-bound: depth 192 took 0.8 s on an AVX2 machine and 0.26 s on an AVX-512 one."""
    import onnxruntime as ort  # here, not at the top: only the tests that time a model need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    probe = slow(size, rows, probe_depth).SerializeToString()
    session = ort.InferenceSession(probe, options, providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((batch, size), np.float32)}
    session.run(None, feed)
    fastest = math.inf
    for _ in range(3):  # the fastest: a busy moment during the probe would make the model too shallow
        started = time.perf_counter()
        session.run(None, feed)
        fastest = min(fastest, time.perf_counter() - started)
    return max(probe_depth, min(round(probe_depth * seconds / fastest), 4096))


BROKEN_MODEL = b"this is not an ONNX model"


def write_model(
    repository: Path,
    name: str,
    model: onnx.ModelProto | bytes,
    config: str | None = None,
    version: int = 1,
    labels: Sequence[str] | None = None,
    labels_filename: str = "labels.txt",
) -> Path:
    """Write NAME/VERSION/model.onnx (+ NAME/config.pbtxt and labels when given); return the model dir."""
    model_dir = Path(repository) / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    (version_dir / "model.onnx").write_bytes(data)
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config, encoding="utf-8")
    if labels is not None:
        (model_dir / labels_filename).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return model_dir
