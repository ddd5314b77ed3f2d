"""An LSTM like the quickstart's, built with onnx.helper (no torch): quick at warm-up (a batch of a few
short sequences runs in well under a millisecond) while one long sequence runs for seconds and needs
hundreds of MB of onnxruntime memory. For the scheduler and memory tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = 8
HIDDEN = 64
# Input elements of a request that runs for seconds on a loaded 2-core machine and grows onnxruntime's
# arena by ~250 MB without shrinkage (measured: ~158 bytes per input element).
LONG_STEPS = 200_000


def lstm(features: int = FEATURES, hidden: int = HIDDEN) -> onnx.ModelProto:
    """FP32 x [B, T, features] -> h [B, hidden]: one LSTM layer over a dynamic time axis, its last state."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1, 4 * hidden, features)) * 0.1).astype(np.float32)
    r = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["time_major"], perm=[1, 0, 2]),
            helper.make_node("LSTM", ["time_major", "W", "R"], ["all_states", "last"], hidden_size=hidden),
            helper.make_node("Squeeze", ["last", "axis0"], ["h"]),
        ],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", hidden])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(r, "R"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def sequence(steps: int, rows: int = 1, seed: int = 0) -> np.ndarray:
    """A random FP32 input [rows, steps, FEATURES]."""
    return np.random.default_rng(seed).standard_normal((rows, steps, FEATURES), dtype=np.float32)
