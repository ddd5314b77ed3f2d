"""The repository of the bad-input suite: the shared test models plus a real 2-layer bidirectional GRU (on
which onnxruntime aborts the process for a zero-length sequence) and models with two dynamic axes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_models as models
from onnx import TensorProto, helper, numpy_helper

GRU_FEATURES, GRU_HIDDEN, GRU_MAX_TIME = 8, 6, 64
LABELS = ["cat", "dog", "bird"]
IDENTITY_DATATYPES = ("BYTES", "BOOL", "INT8", "UINT8", "INT16", "UINT16", "INT64", "UINT64", "FP16", "FP64")


def bidirectional_gru(features: int = GRU_FEATURES, hidden: int = GRU_HIDDEN, layers: int = 2):
    """FP32 x [B, T, features] -> y [B, T, 2*hidden]: `layers` stacked bidirectional GRUs, batch-first."""
    rng = np.random.default_rng(0)

    def weights(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2])]
    initializers = [numpy_helper.from_array(np.array([0, 0, 2 * hidden], np.int64), "tb_shape")]
    previous, width = "x_tbf", features
    for layer in range(layers):
        initializers += [
            weights(f"W{layer}", 2, 3 * hidden, width),
            weights(f"R{layer}", 2, 3 * hidden, hidden),
            weights(f"B{layer}", 2, 6 * hidden),
        ]
        nodes += [
            helper.make_node(
                "GRU",
                [previous, f"W{layer}", f"R{layer}", f"B{layer}"],
                [f"y{layer}", f"h{layer}"],
                hidden_size=hidden,
                direction="bidirectional",
            ),
            # [T, 2, B, H] -> [T, B, 2H]: both directions side by side, the next layer's input.
            helper.make_node("Transpose", [f"y{layer}"], [f"yt{layer}"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"yt{layer}", "tb_shape"], [f"out{layer}"]),
        ]
        previous, width = f"out{layer}", 2 * hidden
    nodes.append(helper.make_node("Transpose", [previous], ["y"], perm=[1, 0, 2]))
    graph = helper.make_graph(
        nodes,
        "gru",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", 2 * hidden])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", models.OPSET)])
    model.ir_version = models.IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_bad_input_repository(repo) -> None:
    """classifier, add_two, fixed, time_series, identity_<dtype>, gru, two_dynamic(_zero_ok),
    series_zero_ok, strings (BYTES [B, n])."""
    models.write_model(repo, "classifier", models.linear_classifier(), "max_batch_size: 8", labels=LABELS)
    models.write_model(repo, "add_two", models.add_two(), "max_batch_size: 4\ndynamic_batching {}")
    models.write_model(repo, "fixed", models.fixed_shape())
    models.write_model(repo, "time_series", models.time_series())
    for datatype in IDENTITY_DATATYPES:
        models.write_model(repo, f"identity_{datatype.lower()}", models.identity(datatype))
    gru_config = (
        "max_batch_size: 4\n"
        f'parameters {{ key: "max_input_dims" value: {{ string_value: "x:{GRU_MAX_TIME},-1" }} }}\n'
    )
    models.write_model(repo, "gru", bidirectional_gru(), gru_config)
    allow_zero = 'parameters { key: "allow_zero_size_dims" value: { string_value: "true" } }\n'
    models.write_model(repo, "two_dynamic", models.identity("FP32", ("a", "b")))
    models.write_model(repo, "two_dynamic_zero_ok", models.identity("FP32", ("a", "b")), allow_zero)
    models.write_model(repo, "series_zero_ok", models.time_series(), allow_zero)
    models.write_model(repo, "strings", models.identity("BYTES", ("n",)))
