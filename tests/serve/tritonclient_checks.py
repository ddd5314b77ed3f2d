"""KServe v2 / Triton gRPC conformance checks, run through Triton's own client (`tritonclient[grpc]`).

A standalone script for a separate virtual environment: tritonclient ships its own generated `inference`
protos (which collide with ortserve's in one process) and pins a different protobuf. It is given a JSON spec
(the server addresses and what the served models compute), runs every check against the live server, prints a
JSON report `[{"name", "ok", "detail"}, ...]` on stdout and exits 1 if any check failed.

The spec (keys marked ? are optional; checks that need a missing key report ok with detail "skipped: ..."):
    url                 HOST:PORT of a server in model-control-mode none serving `linear` (and `two_outputs`)
    explicit_url?       HOST:PORT of a server in model-control-mode explicit whose repository holds `linear`,
                        nothing loaded at start
    linear              {"name", "input", "output", "weight": [[F x C]], "bias": [C], "labels"?: [C],
                         "softmax_output"?: NAME}
                        output = x @ weight + bias (and softmax_output = softmax(output) when named),
                        FP32, batched (max_batch_size > 0), version "1"
    two_outputs?        {"name", "inputs": [A, B], "outputs": [SUM, DIFF], "dims": [N]}
                        SUM = A + B, DIFF = A - B, FP32, batched

Only tritonclient, grpc and numpy are imported, and tritonclient only inside `main`, so the test module can
read CHECK_NAMES from this file without tritonclient installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

RTOL, ATOL = 1e-5, 1e-5
EXPECTED_EXTENSIONS = ("classification", "model_repository", "statistics")

CHECKS: list[tuple[str, Callable[[Context], str]]] = []


def check(name: str):
    """Register a check; it returns a detail string or raises (AssertionError or the client's error)."""

    def register(function):
        CHECKS.append((name, function))
        return function

    return register


@dataclass
class Context:
    spec: dict
    client: object
    grpcclient: object
    service_pb2: object
    stub: object
    error_type: type
    # successful ModelInfer requests and the rows they carried, per model, for the statistics check
    requests: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def linear(self) -> dict:
        return self.spec["linear"]

    def count(self, model: str, rows: int) -> None:
        self.requests[model] = self.requests.get(model, 0) + 1
        self.rows[model] = self.rows.get(model, 0) + rows


class Skip(Exception):  # noqa: N818 - a signal, not an error
    """The spec lacks what this check needs."""


# --- helpers -------------------------------------------------------------------------------------------


def _linear_input(rows: int, features: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(rows, features)).astype(np.float32)


def _linear_expected(ctx: Context, x: np.ndarray) -> np.ndarray:
    weight = np.asarray(ctx.linear["weight"], dtype=np.float32)
    bias = np.asarray(ctx.linear["bias"], dtype=np.float32)
    return x @ weight + bias


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _output_names(ctx: Context) -> list[str]:
    return [ctx.linear["output"]] + ([ctx.linear["softmax_output"]] if "softmax_output" in ctx.linear else [])


def _features(ctx: Context) -> int:
    return len(ctx.linear["weight"])


def _classes(ctx: Context) -> int:
    return len(ctx.linear["bias"])


def _infer_linear(ctx: Context, x: np.ndarray, **kwargs):
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    result = ctx.client.infer(ctx.linear["name"], [infer_input], **kwargs)
    ctx.count(ctx.linear["name"], x.shape[0])
    return result


def _expect_error(call: Callable[[], object], ctx: Context, status: str | tuple[str, ...]) -> str:
    """Run `call`, require a tritonclient error with `status`; return 'status: message'."""
    wanted = (status,) if isinstance(status, str) else status
    try:
        call()
    except ctx.error_type as exc:
        got = exc.status()
        assert got in wanted, f"expected {' or '.join(wanted)}, got {got}: {exc.message()}"
        return f"{got}: {exc.message()}"
    raise AssertionError(f"expected {' or '.join(wanted)}, the call succeeded")


def _close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got is not None, f"{what}: output missing from the response"
    assert got.shape == expected.shape, f"{what}: shape {list(got.shape)}, expected {list(expected.shape)}"
    assert np.allclose(got, expected, rtol=RTOL, atol=ATOL), (
        f"{what}: max abs error {float(np.max(np.abs(got - expected)))}"
    )


def _tensor_meta(tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, t.datatype, list(t.shape)) for t in tensors]


# --- health and metadata -------------------------------------------------------------------------------


@check("server_live")
def server_live(ctx: Context) -> str:
    assert ctx.client.is_server_live() is True, "is_server_live() is not True"
    return "live"


@check("server_ready")
def server_ready(ctx: Context) -> str:
    assert ctx.client.is_server_ready() is True, "is_server_ready() is not True"
    return "ready"


@check("server_metadata")
def server_metadata(ctx: Context) -> str:
    metadata = ctx.client.get_server_metadata()
    assert metadata.name, "ServerMetadataResponse.name is empty"
    assert metadata.version, "ServerMetadataResponse.version is empty"
    missing = [ext for ext in EXPECTED_EXTENSIONS if ext not in metadata.extensions]
    assert not missing, f"extensions {list(metadata.extensions)} lack {missing}"
    as_json = ctx.client.get_server_metadata(as_json=True)
    assert as_json["name"] == metadata.name, f"as_json name {as_json.get('name')!r}"
    return f"name={metadata.name!r} version={metadata.version!r} extensions={list(metadata.extensions)}"


@check("model_ready")
def model_ready(ctx: Context) -> str:
    name = ctx.linear["name"]
    assert ctx.client.is_model_ready(name) is True, f"is_model_ready({name!r}) is not True"
    assert ctx.client.is_model_ready(name, "1") is True, f"is_model_ready({name!r}, '1') is not True"
    # Triton answers ready=false (not an error) for a version it does not serve.
    try:
        other = ctx.client.is_model_ready(name, "999")
        version_999 = f"ready={other}"
        assert other is False, f"is_model_ready({name!r}, '999') is {other}"
    except ctx.error_type as exc:
        version_999 = f"{exc.status()}: {exc.message()}"
    return f"version '' and '1' ready; version '999': {version_999}"


@check("model_metadata")
def model_metadata(ctx: Context) -> str:
    spec = ctx.linear
    metadata = ctx.client.get_model_metadata(spec["name"])
    assert metadata.name == spec["name"], f"name {metadata.name!r}"
    assert "1" in metadata.versions, f"versions {list(metadata.versions)} lack '1'"
    platform = metadata.platform
    assert platform == "onnxruntime_onnx", f"platform {platform!r}, expected 'onnxruntime_onnx'"
    inputs, outputs = _tensor_meta(metadata.inputs), _tensor_meta(metadata.outputs)
    want_in = [(spec["input"], "FP32", [-1, _features(ctx)])]
    want_out = [(name, "FP32", [-1, _classes(ctx)]) for name in _output_names(ctx)]
    assert inputs == want_in, f"inputs {inputs}, expected {want_in}"
    assert outputs == want_out, f"outputs {outputs}, expected {want_out}"
    as_json = ctx.client.get_model_metadata(spec["name"], "1", as_json=True)
    shape = [int(dim) for dim in as_json["inputs"][0]["shape"]]
    assert shape == [-1, _features(ctx)], f"as_json input shape {shape}"
    return f"inputs={inputs} outputs={outputs} versions={list(metadata.versions)}"


@check("model_config")
def model_config(ctx: Context) -> str:
    spec = ctx.linear
    config = ctx.client.get_model_config(spec["name"], as_json=True)["config"]
    assert config["name"] == spec["name"], f"name {config.get('name')!r}"
    platform, backend = config.get("platform", ""), config.get("backend", "")
    assert platform == "onnxruntime_onnx" or backend == "onnxruntime", f"platform {platform!r} {backend=}"
    max_batch = int(config.get("max_batch_size", 0))
    assert max_batch > 0, f"max_batch_size {max_batch}, expected > 0 (the model is batched)"
    inputs = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config.get("input", [])]
    outputs = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config.get("output", [])]
    assert inputs == [(spec["input"], "TYPE_FP32", [_features(ctx)])], f"input {inputs}"
    want = [(name, "TYPE_FP32", [_classes(ctx)]) for name in _output_names(ctx)]
    assert outputs == want, f"output {outputs}, expected {want}"
    if spec.get("labels"):
        labelled = [t["name"] for t in config["output"] if t.get("label_filename")]
        assert labelled == [spec["output"]], f"outputs with a label_filename: {labelled}"
    return f"{platform=} {backend=} max_batch_size={max_batch} input={inputs} output={outputs}"


# --- inference -----------------------------------------------------------------------------------------


@check("infer_raw")
def infer_raw(ctx: Context) -> str:
    x = _linear_input(3, _features(ctx), seed=1)
    result = _infer_linear(ctx, x, request_id="raw-1")
    response = result.get_response()
    assert response.model_name == ctx.linear["name"], f"model_name {response.model_name!r}"
    assert response.id == "raw-1", f"id {response.id!r}, expected the request's 'raw-1'"
    outputs = _tensor_meta(response.outputs)
    want = [(name, "FP32", [3, _classes(ctx)]) for name in _output_names(ctx)]
    assert sorted(outputs) == sorted(want), f"outputs {outputs}, expected {want} (none requested: all)"
    logits = _linear_expected(ctx, x)
    _close(result.as_numpy(ctx.linear["output"]), logits, ctx.linear["output"])
    if "softmax_output" in ctx.linear:
        _close(result.as_numpy(ctx.linear["softmax_output"]), _softmax(logits), ctx.linear["softmax_output"])
    # A named version answers too, and says which version answered.
    result = _infer_linear(ctx, x[:1], model_version="1")
    version = result.get_response().model_version
    assert version == "1", f"model_version {version!r}, expected '1'"
    _close(result.as_numpy(ctx.linear["output"]), _linear_expected(ctx, x[:1]), "y (version 1)")
    raw = len(response.raw_output_contents)
    return f"batch 3 and 1 match numpy; outputs={outputs}; raw_output_contents={raw}"


@check("infer_typed_contents")
def infer_typed_contents(ctx: Context) -> str:
    # tritonclient only sends raw_input_contents; typed contents go through its generated stub.
    spec, pb = ctx.linear, ctx.service_pb2
    x = _linear_input(2, _features(ctx), seed=2)
    request = pb.ModelInferRequest(model_name=spec["name"], id="typed-1")
    tensor = request.inputs.add(name=spec["input"], datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    response = ctx.stub.ModelInfer(request, timeout=30)
    ctx.count(spec["name"], x.shape[0])
    assert response.id == "typed-1", f"id {response.id!r}"
    names = [o.name for o in response.outputs]
    assert spec["output"] in names, f"outputs {names} lack {spec['output']!r}"
    position = names.index(spec["output"])
    output = response.outputs[position]
    if response.raw_output_contents:
        got = np.frombuffer(response.raw_output_contents[position], dtype=np.float32)
        where = "raw_output_contents"
    else:
        got = np.asarray(output.contents.fp32_contents, dtype=np.float32)
        where = "contents.fp32_contents"
    _close(got.reshape(list(output.shape)), _linear_expected(ctx, x), f"y from {where}")
    return f"fp32_contents in, answer in {where}, matches numpy"


@check("requested_outputs")
def requested_outputs(ctx: Context) -> str:
    spec = ctx.spec.get("two_outputs")
    if spec is None:
        raise Skip("no two_outputs model in the spec")
    a_name, b_name = spec["inputs"]
    sum_name, diff_name = spec["outputs"]
    shape = [2, *spec["dims"]]
    rng = np.random.default_rng(3)
    a, b = (rng.uniform(-1, 1, size=shape).astype(np.float32) for _ in range(2))
    inputs = [ctx.grpcclient.InferInput(tensor, shape, "FP32") for tensor in (a_name, b_name)]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    details = []
    for wanted, expected in ((diff_name, a - b), (sum_name, a + b)):
        result = ctx.client.infer(spec["name"], inputs, outputs=[ctx.grpcclient.InferRequestedOutput(wanted)])
        ctx.count(spec["name"], shape[0])
        names = [o.name for o in result.get_response().outputs]
        assert names == [wanted], f"asked for [{wanted!r}], got {names}"
        _close(result.as_numpy(wanted), expected, wanted)
        details.append(f"{wanted}->{names}")
    result = ctx.client.infer(spec["name"], inputs)
    ctx.count(spec["name"], shape[0])
    names = sorted(o.name for o in result.get_response().outputs)
    assert names == sorted([sum_name, diff_name]), f"no outputs requested: got {names}, expected both"
    _close(result.as_numpy(sum_name), a + b, sum_name)
    _close(result.as_numpy(diff_name), a - b, diff_name)
    return "; ".join(details) + f"; none requested -> {names}"


@check("classification")
def classification(ctx: Context) -> str:
    spec, k = ctx.linear, min(2, _classes(ctx))
    labels = spec.get("labels")
    x = _linear_input(3, _features(ctx), seed=4)
    wanted = ctx.grpcclient.InferRequestedOutput(spec["output"], class_count=k)
    result = _infer_linear(ctx, x, outputs=[wanted])
    (output,) = result.get_response().outputs
    assert output.datatype == "BYTES", f"datatype {output.datatype!r}, expected 'BYTES'"
    assert list(output.shape) == [3, k], f"shape {list(output.shape)}, expected [3, {k}]"
    got = result.as_numpy(spec["output"])
    expected = _linear_expected(ctx, x)
    for row in range(3):
        order = np.argsort(-expected[row], kind="stable")[:k]
        for rank, index in enumerate(order):
            entry = got[row][rank]
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            parts = text.split(":")
            where = f"row {row} rank {rank}: {text!r}"
            form = "score:index:label" if labels else "score:index"
            assert len(parts) == (3 if labels else 2), f"{where} is not {form}"
            assert int(parts[1]) == int(index), f"{where}, expected index {index}"
            assert np.isclose(float(parts[0]), expected[row][index], rtol=1e-4, atol=1e-4), (
                f"{where}, expected score {expected[row][index]:.6f}"
            )
            if labels:
                assert parts[2] == labels[index], f"{where}, expected label {labels[index]!r}"
    return f"class_count={k}: {[e.decode() for e in got[0]]}"


# --- statistics and repository -------------------------------------------------------------------------


@check("model_statistics")
def model_statistics(ctx: Context) -> str:
    name = ctx.linear["name"]
    stats = ctx.client.get_inference_statistics(name)
    entries = [s for s in stats.model_stats if s.name == name]
    assert entries, f"model_stats has no entry for {name!r}: {[s.name for s in stats.model_stats]}"
    (entry,) = entries
    assert entry.version == "1", f"version {entry.version!r}"
    requests, rows = ctx.requests.get(name, 0), ctx.rows.get(name, 0)
    success = entry.inference_stats.success.count
    count, executions = entry.inference_count, entry.execution_count
    assert success == requests, f"inference_stats.success.count {success}, expected {requests} (requests)"
    assert count == rows, f"inference_count {count}, expected {rows} (rows sent)"
    assert 1 <= executions <= requests, f"execution_count {executions}, expected 1..{requests}"
    assert entry.inference_stats.success.ns > 0, "inference_stats.success.ns is 0"
    assert entry.last_inference > 0, "last_inference is 0"
    stages = ("queue", "compute_input", "compute_infer", "compute_output")
    empty = [stage for stage in stages if getattr(entry.inference_stats, stage).count == 0]
    assert not empty, f"inference_stats {empty} have count 0 after {requests} requests"
    batched = sum(batch.compute_infer.count for batch in entry.batch_stats)
    assert batched == executions, f"batch_stats compute_infer counts sum to {batched}, expected {executions}"
    everything = ctx.client.get_inference_statistics()
    names = sorted(s.name for s in everything.model_stats)
    assert name in names, f"statistics of all models {names} lack {name!r}"
    as_json = ctx.client.get_inference_statistics(name, as_json=True)
    assert as_json["model_stats"][0]["name"] == name, "as_json model_stats[0].name"
    return (
        f"success.count={success} inference_count={count} execution_count={executions}"
        f" fail.count={entry.inference_stats.fail.count} all models={names}"
    )


@check("repository_index")
def repository_index(ctx: Context) -> str:
    index = ctx.client.get_model_repository_index()
    by_name = {m.name: m for m in index.models}
    name = ctx.linear["name"]
    assert name in by_name, f"index {sorted(by_name)} lacks {name!r}"
    entry = by_name[name]
    assert entry.state == "READY", f"{name} state {entry.state!r}, expected 'READY'"
    assert entry.version == "1", f"{name} version {entry.version!r}, expected '1'"
    ready = ctx.client.get_model_repository_index(as_json=True)
    assert any(m["name"] == name for m in ready.get("models", [])), "as_json lacks the model"
    return ", ".join(f"{m.name}:{m.version}:{m.state}" for m in index.models)


# --- errors --------------------------------------------------------------------------------------------


@check("error_unknown_model")
def error_unknown_model(ctx: Context) -> str:
    x = _linear_input(1, _features(ctx), seed=5)
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    not_found = "StatusCode.NOT_FOUND"
    infer = _expect_error(lambda: ctx.client.infer("no_such_model", [infer_input]), ctx, not_found)
    meta = _expect_error(lambda: ctx.client.get_model_metadata("no_such_model"), ctx, not_found)
    config = _expect_error(lambda: ctx.client.get_model_config("no_such_model"), ctx, not_found)
    assert "no_such_model" in infer, f"the infer error does not name the model: {infer}"
    return f"infer: {infer} | metadata: {meta} | config: {config}"


@check("error_unknown_version")
def error_unknown_version(ctx: Context) -> str:
    x = _linear_input(1, _features(ctx), seed=6)
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    name = ctx.linear["name"]
    infer = _expect_error(
        lambda: ctx.client.infer(name, [infer_input], model_version="999"), ctx, "StatusCode.NOT_FOUND"
    )
    meta = _expect_error(lambda: ctx.client.get_model_metadata(name, "999"), ctx, "StatusCode.NOT_FOUND")
    return f"infer: {infer} | metadata: {meta}"


def _bad_linear(ctx: Context, shape: list[int], datatype: str = "FP32", name: str | None = None):
    dtype = {"FP32": np.float32, "INT32": np.int32, "FP64": np.float64}[datatype]
    data = np.zeros(shape, dtype=dtype)
    infer_input = ctx.grpcclient.InferInput(name or ctx.linear["input"], shape, datatype)
    infer_input.set_data_from_numpy(data)
    return lambda: ctx.client.infer(ctx.linear["name"], [infer_input])


@check("error_bad_shape")
def error_bad_shape(ctx: Context) -> str:
    features = _features(ctx)
    wrong_width = _expect_error(_bad_linear(ctx, [2, features + 1]), ctx, "StatusCode.INVALID_ARGUMENT")
    wrong_rank = _expect_error(_bad_linear(ctx, [features]), ctx, "StatusCode.INVALID_ARGUMENT")
    # The project's rule: the message names the model and the tensor.
    model, tensor = ctx.linear["name"], ctx.linear["input"]
    for message in (wrong_width, wrong_rank):
        assert model in message and tensor in message, (
            f"message does not name model {model!r} and tensor {tensor!r}: {message}"
        )
    return f"[2, {features + 1}]: {wrong_width} | [{features}]: {wrong_rank}"


@check("error_bad_datatype")
def error_bad_datatype(ctx: Context) -> str:
    return _expect_error(_bad_linear(ctx, [1, _features(ctx)], "INT32"), ctx, "StatusCode.INVALID_ARGUMENT")


@check("error_unknown_input")
def error_unknown_input(ctx: Context) -> str:
    return _expect_error(
        _bad_linear(ctx, [1, _features(ctx)], name="not_an_input"), ctx, "StatusCode.INVALID_ARGUMENT"
    )


@check("error_missing_input")
def error_missing_input(ctx: Context) -> str:
    spec = ctx.spec.get("two_outputs")
    if spec is None:
        raise Skip("no two_outputs model in the spec")
    shape = [1, *spec["dims"]]
    only_a = ctx.grpcclient.InferInput(spec["inputs"][0], shape, "FP32")
    only_a.set_data_from_numpy(np.zeros(shape, dtype=np.float32))
    return _expect_error(lambda: ctx.client.infer(spec["name"], [only_a]), ctx, "StatusCode.INVALID_ARGUMENT")


@check("error_unknown_output")
def error_unknown_output(ctx: Context) -> str:
    x = _linear_input(1, _features(ctx), seed=7)
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    wanted = [ctx.grpcclient.InferRequestedOutput("not_an_output")]
    return _expect_error(
        lambda: ctx.client.infer(ctx.linear["name"], [infer_input], outputs=wanted),
        ctx,
        "StatusCode.INVALID_ARGUMENT",
    )


@check("error_raw_size_mismatch")
def error_raw_size_mismatch(ctx: Context) -> str:
    import grpc  # the tritonclient venv's grpc, for the stub's error type

    pb = ctx.service_pb2
    request = pb.ModelInferRequest(model_name=ctx.linear["name"])
    request.inputs.add(name=ctx.linear["input"], datatype="FP32", shape=[2, _features(ctx)])
    one_row = np.zeros(_features(ctx), dtype=np.float32)
    request.raw_input_contents.append(one_row.tobytes())  # the shape says two rows
    try:
        ctx.stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"expected INVALID_ARGUMENT, got {exc.code()}"
        return f"{exc.code()}: {exc.details()}"
    raise AssertionError("expected INVALID_ARGUMENT, the call succeeded")


@check("server_up_after_errors")
def server_up_after_errors(ctx: Context) -> str:
    assert ctx.client.is_server_live(), "server not live after the errors"
    assert ctx.client.is_server_ready(), "server not ready after the errors"
    x = _linear_input(2, _features(ctx), seed=8)
    _close(_infer_linear(ctx, x).as_numpy(ctx.linear["output"]), _linear_expected(ctx, x), "y")
    return "live, ready and inferring"


# --- explicit model control ----------------------------------------------------------------------------


def _explicit_client(ctx: Context):
    url = ctx.spec.get("explicit_url")
    if not url:
        raise Skip("no explicit_url in the spec")
    return ctx.grpcclient.InferenceServerClient(url=url)


@check("explicit_load_unload")
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
        x = _linear_input(2, _features(ctx), seed=9)
        infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
        infer_input.set_data_from_numpy(x)
        got = client.infer(name, [infer_input]).as_numpy(ctx.linear["output"])
        _close(got, _linear_expected(ctx, x), "y")
        steps.append("after load: READY, infer ok")

        client.unload_model(name)
        assert client.is_model_ready(name) is False, "model still ready after unload_model"
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index.get(name) != "READY", f"state after unload {index.get(name)!r}"
        error = _expect_error(
            lambda: client.infer(name, [infer_input]), ctx, ("StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND")
        )
        steps.append(f"after unload: state={index.get(name)!r}, infer -> {error}")

        client.load_model(name)
        assert client.is_model_ready(name) is True, "model not ready after a second load_model"
        steps.append("reload: ready")
    return " | ".join(steps)


@check("explicit_load_unknown_model")
def explicit_load_unknown_model(ctx: Context) -> str:
    with _explicit_client(ctx) as client:
        return _expect_error(
            lambda: client.load_model("no_such_model"),
            ctx,
            ("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT"),
        )


CHECK_NAMES = [name for name, _ in CHECKS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="path of the JSON spec")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as handle:
        spec = json.load(handle)

    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import InferenceServerException

    report = []
    with grpcclient.InferenceServerClient(url=spec["url"]) as client:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(spec["url"]))
        ctx = Context(spec, client, grpcclient, service_pb2, stub, InferenceServerException)
        for name, function in CHECKS:
            try:
                report.append({"name": name, "ok": True, "detail": function(ctx)})
            except Skip as exc:
                report.append({"name": name, "ok": True, "detail": f"skipped: {exc}"})
            except (AssertionError, InferenceServerException) as exc:
                report.append({"name": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"})
            except Exception:  # noqa: BLE001 - a check that crashes is reported, the others still run
                report.append({"name": name, "ok": False, "detail": traceback.format_exc(limit=3)})
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0 if all(entry["ok"] for entry in report) else 1


if __name__ == "__main__":
    sys.exit(main())
