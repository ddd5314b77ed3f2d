"""The client tests' model repository: tiny ONNX models built with onnx.helper, in Triton's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx_models import IR_VERSION, OPSET, slow, write_model

IMAGE_SIZE = 16
IMAGE_CLASSES = 10
IMAGE_MAX_BATCH = 4
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SEQUENCE_FEATURES = 4
SEQUENCE_MAX_BATCH = 3
SLOW_SIZE = 256  # onnx_models.slow(): FP32 [B, 256] -> [B, 256], long enough to miss a 10 ms deadline


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def image_weights() -> np.ndarray:
    """The classifier's [3*S*S, 10] weights: every pixel matters, so layout and cropping mistakes show."""
    return (
        np.random.default_rng(0)
        .normal(0, 0.05, (3 * IMAGE_SIZE * IMAGE_SIZE, IMAGE_CLASSES))
        .astype(np.float32)
    )


def image_model(uint8_input: bool) -> onnx.ModelProto:
    """[B,3,S,S] uint8 (normalised in the graph) or float32 (normalised by the client) -> softmax [B,10]."""
    shape = ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    initializers = [numpy_helper.from_array(image_weights(), "w")]
    if uint8_input:
        initializers += [
            numpy_helper.from_array(np.asarray(1 / 255, np.float32), "scale"),
            numpy_helper.from_array(mean, "mean"),
            numpy_helper.from_array(std, "std"),
        ]
        nodes = [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "scale"], ["scaled"]),
            helper.make_node("Sub", ["scaled", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["normalised"]),
        ]
        source = "normalised"
    else:
        nodes, source = [], "image"
    nodes += [
        helper.make_node("Flatten", [source], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    elem = TensorProto.UINT8 if uint8_input else TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", elem, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", IMAGE_CLASSES])],
        initializers,
    )


def sequence_model() -> onnx.ModelProto:
    """[B,T,F] float32 -> summary [B,F] (sum over time) and steps [B,T,F] (doubled)."""
    nodes = [
        helper.make_node("ReduceSum", ["sequence", "time_axis"], ["summary"], keepdims=0),
        helper.make_node("Add", ["sequence", "sequence"], ["steps"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["batch", "time", SEQUENCE_FEATURES])],
        [
            helper.make_tensor_value_info("summary", TensorProto.FLOAT, ["batch", SEQUENCE_FEATURES]),
            helper.make_tensor_value_info("steps", TensorProto.FLOAT, ["batch", "time", SEQUENCE_FEATURES]),
        ],
        [numpy_helper.from_array(np.asarray([1], np.int64), "time_axis")],
    )


def _config(name: str, body: str) -> str:
    return f'name: "{name}"\nplatform: "onnxruntime_onnx"\n{body}'


def _image_config(name: str, datatype: str, preprocessing: dict) -> str:
    return _config(
        name,
        f"""max_batch_size: {IMAGE_MAX_BATCH}
input [{{ name: "image" data_type: {datatype} format: FORMAT_NCHW dims: [3, {IMAGE_SIZE}, {IMAGE_SIZE}] }}]
output [{{ name: "probabilities" data_type: TYPE_FP32 dims: [{IMAGE_CLASSES}] label_filename: "labels.txt" }}]
dynamic_batching {{ }}
parameters {{ key: "preprocessing" value: {{ string_value: {json.dumps(json.dumps(preprocessing))} }} }}
""",
    )


def write_repository(repository: Path) -> Path:
    """Models: image_u8 and image_f32 (classifiers), sequence (dynamic T), slow, spare (for load/unload)."""
    prep = {"scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "layout": "NCHW"}
    for name, uint8_input in (("image_u8", True), ("image_f32", False)):
        datatype, input_dtype = ("TYPE_UINT8", "uint8") if uint8_input else ("TYPE_FP32", "float32")
        config = _image_config(name, datatype, {"input_dtype": input_dtype, **prep})
        write_model(repository, name, image_model(uint8_input), config, labels=LABELS)
    sequence_config = f"""max_batch_size: {SEQUENCE_MAX_BATCH}
input [{{ name: "sequence" data_type: TYPE_FP32 dims: [-1, {SEQUENCE_FEATURES}] }}]
output [{{ name: "summary" data_type: TYPE_FP32 dims: [{SEQUENCE_FEATURES}] }},
        {{ name: "steps" data_type: TYPE_FP32 dims: [-1, {SEQUENCE_FEATURES}] }}]
dynamic_batching {{ }}
"""
    write_model(repository, "sequence", sequence_model(), _config("sequence", sequence_config))
    write_model(repository, "slow", slow(), _config("slow", "max_batch_size: 2\n"))
    write_model(
        repository, "spare", sequence_model(), _config("spare", f"max_batch_size: {SEQUENCE_MAX_BATCH}\n")
    )
    return repository
