"""The gRPC error and explicit-model-control checks, registered in tritonclient_grpc_checks.py's CHECKS after
that module's own (tritonclient_checks.py imports both; the errors run last on the main server)."""

from __future__ import annotations

import numpy as np
from tritonclient_grpc_checks import CHECKS, Context, feature_count, infer_linear
from tritonclient_harness import Skip, close, expect_error, linear_expected, linear_input

# --- errors --------------------------------------------------------------------------------------------


@CHECKS("error_unknown_model")
def error_unknown_model(ctx: Context) -> str:
    x = linear_input(ctx.linear, 1, seed=5)
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    not_found = "StatusCode.NOT_FOUND"
    infer = expect_error(lambda: ctx.client.infer("no_such_model", [infer_input]), ctx.error_type, not_found)
    meta = expect_error(lambda: ctx.client.get_model_metadata("no_such_model"), ctx.error_type, not_found)
    config = expect_error(lambda: ctx.client.get_model_config("no_such_model"), ctx.error_type, not_found)
    assert "no_such_model" in infer, f"the infer error does not name the model: {infer}"
    return f"infer: {infer} | metadata: {meta} | config: {config}"


@CHECKS("error_unknown_version")
def error_unknown_version(ctx: Context) -> str:
    x = linear_input(ctx.linear, 1, seed=6)
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    name = ctx.linear["name"]
    infer = expect_error(
        lambda: ctx.client.infer(name, [infer_input], model_version="999"),
        ctx.error_type,
        "StatusCode.NOT_FOUND",
    )
    meta = expect_error(
        lambda: ctx.client.get_model_metadata(name, "999"), ctx.error_type, "StatusCode.NOT_FOUND"
    )
    return f"infer: {infer} | metadata: {meta}"


def _bad_linear(ctx: Context, shape: list[int], datatype: str = "FP32", name: str | None = None):
    dtype = {"FP32": np.float32, "INT32": np.int32, "FP64": np.float64}[datatype]
    data = np.zeros(shape, dtype=dtype)
    infer_input = ctx.grpcclient.InferInput(name or ctx.linear["input"], shape, datatype)
    infer_input.set_data_from_numpy(data)
    return lambda: ctx.client.infer(ctx.linear["name"], [infer_input])


@CHECKS("error_bad_shape")
def error_bad_shape(ctx: Context) -> str:
    features = feature_count(ctx)
    wrong_width = expect_error(
        _bad_linear(ctx, [2, features + 1]), ctx.error_type, "StatusCode.INVALID_ARGUMENT"
    )
    wrong_rank = expect_error(_bad_linear(ctx, [features]), ctx.error_type, "StatusCode.INVALID_ARGUMENT")
    # The project's rule: the message names the model and the tensor.
    model, tensor = ctx.linear["name"], ctx.linear["input"]
    for message in (wrong_width, wrong_rank):
        assert model in message and tensor in message, (
            f"message does not name model {model!r} and tensor {tensor!r}: {message}"
        )
    return f"[2, {features + 1}]: {wrong_width} | [{features}]: {wrong_rank}"


@CHECKS("error_bad_datatype")
def error_bad_datatype(ctx: Context) -> str:
    return expect_error(
        _bad_linear(ctx, [1, feature_count(ctx)], "INT32"), ctx.error_type, "StatusCode.INVALID_ARGUMENT"
    )


@CHECKS("error_unknown_input")
def error_unknown_input(ctx: Context) -> str:
    return expect_error(
        _bad_linear(ctx, [1, feature_count(ctx)], name="not_an_input"),
        ctx.error_type,
        "StatusCode.INVALID_ARGUMENT",
    )


@CHECKS("error_missing_input")
def error_missing_input(ctx: Context) -> str:
    spec = ctx.spec.get("two_outputs")
    if spec is None:
        raise Skip("no two_outputs model in the spec")
    shape = [1, *spec["dims"]]
    only_a = ctx.grpcclient.InferInput(spec["inputs"][0], shape, "FP32")
    only_a.set_data_from_numpy(np.zeros(shape, dtype=np.float32))
    return expect_error(
        lambda: ctx.client.infer(spec["name"], [only_a]), ctx.error_type, "StatusCode.INVALID_ARGUMENT"
    )


@CHECKS("error_unknown_output")
def error_unknown_output(ctx: Context) -> str:
    x = linear_input(ctx.linear, 1, seed=7)
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    wanted = [ctx.grpcclient.InferRequestedOutput("not_an_output")]
    return expect_error(
        lambda: ctx.client.infer(ctx.linear["name"], [infer_input], outputs=wanted),
        ctx.error_type,
        "StatusCode.INVALID_ARGUMENT",
    )


@CHECKS("error_raw_size_mismatch")
def error_raw_size_mismatch(ctx: Context) -> str:
    import grpc  # the tritonclient venv's grpc, for the stub's error type

    pb = ctx.service_pb2
    request = pb.ModelInferRequest(model_name=ctx.linear["name"])
    request.inputs.add(name=ctx.linear["input"], datatype="FP32", shape=[2, feature_count(ctx)])
    one_row = np.zeros(feature_count(ctx), dtype=np.float32)
    request.raw_input_contents.append(one_row.tobytes())  # the shape says two rows
    try:
        ctx.stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"expected INVALID_ARGUMENT, got {exc.code()}"
        return f"{exc.code()}: {exc.details()}"
    raise AssertionError("expected INVALID_ARGUMENT, the call succeeded")


@CHECKS("server_up_after_errors")
def server_up_after_errors(ctx: Context) -> str:
    assert ctx.client.is_server_live(), "server not live after the errors"
    assert ctx.client.is_server_ready(), "server not ready after the errors"
    x = linear_input(ctx.linear, 2, seed=8)
    close(infer_linear(ctx, x).as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x), "y")
    return "live, ready and inferring"


# --- explicit model control ----------------------------------------------------------------------------


def _explicit_client(ctx: Context):
    url = ctx.spec.get("explicit_url")
    if not url:
        raise Skip("no explicit_url in the spec")
    return ctx.grpcclient.InferenceServerClient(url=url)


@CHECKS("explicit_load_unload")
def explicit_load_unload(ctx: Context) -> str:
    name, steps = ctx.linear["name"], []
    with _explicit_client(ctx) as client:
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert name in index, f"index {index} lacks the unloaded model {name!r}"
        assert index[name] != "READY", f"{name} is READY before any load"
        assert client.is_model_ready(name) is False, "model ready before load"
        steps.append(f"before load: state={index[name]!r}")

        client.load_model(name)
        assert client.is_model_ready(name) is True, "model not ready after load_model"
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index.get(name) == "READY", f"state after load {index.get(name)!r}, expected 'READY'"
        x = linear_input(ctx.linear, 2, seed=9)
        infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
        infer_input.set_data_from_numpy(x)
        got = client.infer(name, [infer_input]).as_numpy(ctx.linear["output"])
        close(got, linear_expected(ctx.linear, x), "y")
        steps.append("after load: READY, infer ok")

        client.unload_model(name)
        assert client.is_model_ready(name) is False, "model still ready after unload_model"
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index.get(name) != "READY", f"state after unload {index.get(name)!r}"
        error = expect_error(
            lambda: client.infer(name, [infer_input]),
            ctx.error_type,
            ("StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND"),
        )
        steps.append(f"after unload: state={index.get(name)!r}, infer -> {error}")

        client.load_model(name)
        assert client.is_model_ready(name) is True, "model not ready after a second load_model"
        steps.append("reload: ready")
    return " | ".join(steps)


@CHECKS("explicit_load_unknown_model")
def explicit_load_unknown_model(ctx: Context) -> str:
    with _explicit_client(ctx) as client:
        return expect_error(
            lambda: client.load_model("no_such_model"),
            ctx.error_type,
            ("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT"),
        )
