"""The gRPC conformance checks (health, metadata, inference, statistics) and what every gRPC check uses:
the Context, the linear model's helpers and the registry, CHECKS. tritonclient_grpc_error_checks.py adds the
error and model-control checks to the same registry; tritonclient_checks.py runs them all, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tritonclient_harness import Checks, Skip, close, linear_expected, linear_input

EXPECTED_EXTENSIONS = ("classification", "model_repository", "statistics")

CHECKS = Checks()


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _output_names(ctx: Context) -> list[str]:
    return [ctx.linear["output"]] + ([ctx.linear["softmax_output"]] if "softmax_output" in ctx.linear else [])


def feature_count(ctx: Context) -> int:
    return len(ctx.linear["weight"])


def _classes(ctx: Context) -> int:
    return len(ctx.linear["bias"])


def infer_linear(ctx: Context, x: np.ndarray, **kwargs):
    infer_input = ctx.grpcclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    result = ctx.client.infer(ctx.linear["name"], [infer_input], **kwargs)
    ctx.count(ctx.linear["name"], x.shape[0])
    return result


def _tensor_meta(tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, t.datatype, list(t.shape)) for t in tensors]


# --- health and metadata -------------------------------------------------------------------------------


@CHECKS("server_live")
def server_live(ctx: Context) -> str:
    assert ctx.client.is_server_live() is True, "is_server_live() is not True"
    return "live"


@CHECKS("server_ready")
def server_ready(ctx: Context) -> str:
    assert ctx.client.is_server_ready() is True, "is_server_ready() is not True"
    return "ready"


@CHECKS("server_metadata")
def server_metadata(ctx: Context) -> str:
    metadata = ctx.client.get_server_metadata()
    assert metadata.name, "ServerMetadataResponse.name is empty"
    assert metadata.version, "ServerMetadataResponse.version is empty"
    missing = [ext for ext in EXPECTED_EXTENSIONS if ext not in metadata.extensions]
    assert not missing, f"extensions {list(metadata.extensions)} lack {missing}"
    as_json = ctx.client.get_server_metadata(as_json=True)
    assert as_json["name"] == metadata.name, f"as_json name {as_json.get('name')!r}"
    return f"name={metadata.name!r} version={metadata.version!r} extensions={list(metadata.extensions)}"


@CHECKS("model_ready")
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


@CHECKS("model_metadata")
def model_metadata(ctx: Context) -> str:
    spec = ctx.linear
    metadata = ctx.client.get_model_metadata(spec["name"])
    assert metadata.name == spec["name"], f"name {metadata.name!r}"
    assert "1" in metadata.versions, f"versions {list(metadata.versions)} lack '1'"
    platform = metadata.platform
    assert platform == "onnxruntime_onnx", f"platform {platform!r}, expected 'onnxruntime_onnx'"
    inputs, outputs = _tensor_meta(metadata.inputs), _tensor_meta(metadata.outputs)
    want_in = [(spec["input"], "FP32", [-1, feature_count(ctx)])]
    want_out = [(name, "FP32", [-1, _classes(ctx)]) for name in _output_names(ctx)]
    assert inputs == want_in, f"inputs {inputs}, expected {want_in}"
    assert outputs == want_out, f"outputs {outputs}, expected {want_out}"
    as_json = ctx.client.get_model_metadata(spec["name"], "1", as_json=True)
    shape = [int(dim) for dim in as_json["inputs"][0]["shape"]]
    assert shape == [-1, feature_count(ctx)], f"as_json input shape {shape}"
    return f"inputs={inputs} outputs={outputs} versions={list(metadata.versions)}"


@CHECKS("model_config")
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
    assert inputs == [(spec["input"], "TYPE_FP32", [feature_count(ctx)])], f"input {inputs}"
    want = [(name, "TYPE_FP32", [_classes(ctx)]) for name in _output_names(ctx)]
    assert outputs == want, f"output {outputs}, expected {want}"
    if spec.get("labels"):
        labelled = [t["name"] for t in config["output"] if t.get("label_filename")]
        assert labelled == [spec["output"]], f"outputs with a label_filename: {labelled}"
    return f"{platform=} {backend=} max_batch_size={max_batch} input={inputs} output={outputs}"


# --- inference -----------------------------------------------------------------------------------------


@CHECKS("infer_raw")
def infer_raw(ctx: Context) -> str:
    x = linear_input(ctx.linear, 3, seed=1)
    result = infer_linear(ctx, x, request_id="raw-1")
    response = result.get_response()
    assert response.model_name == ctx.linear["name"], f"model_name {response.model_name!r}"
    assert response.id == "raw-1", f"id {response.id!r}, expected the request's 'raw-1'"
    outputs = _tensor_meta(response.outputs)
    want = [(name, "FP32", [3, _classes(ctx)]) for name in _output_names(ctx)]
    assert sorted(outputs) == sorted(want), f"outputs {outputs}, expected {want} (none requested: all)"
    logits = linear_expected(ctx.linear, x)
    close(result.as_numpy(ctx.linear["output"]), logits, ctx.linear["output"])
    if "softmax_output" in ctx.linear:
        close(result.as_numpy(ctx.linear["softmax_output"]), _softmax(logits), ctx.linear["softmax_output"])
    # A named version answers too, and says which version answered.
    result = infer_linear(ctx, x[:1], model_version="1")
    version = result.get_response().model_version
    assert version == "1", f"model_version {version!r}, expected '1'"
    close(result.as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x[:1]), "y (version 1)")
    raw = len(response.raw_output_contents)
    return f"batch 3 and 1 match numpy; outputs={outputs}; raw_output_contents={raw}"


@CHECKS("infer_typed_contents")
def infer_typed_contents(ctx: Context) -> str:
    # tritonclient only sends raw_input_contents; typed contents go through its generated stub.
    spec, pb = ctx.linear, ctx.service_pb2
    x = linear_input(ctx.linear, 2, seed=2)
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
    close(got.reshape(list(output.shape)), linear_expected(ctx.linear, x), f"y from {where}")
    return f"fp32_contents in, answer in {where}, matches numpy"


@CHECKS("requested_outputs")
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
        close(result.as_numpy(wanted), expected, wanted)
        details.append(f"{wanted}->{names}")
    result = ctx.client.infer(spec["name"], inputs)
    ctx.count(spec["name"], shape[0])
    names = sorted(o.name for o in result.get_response().outputs)
    assert names == sorted([sum_name, diff_name]), f"no outputs requested: got {names}, expected both"
    close(result.as_numpy(sum_name), a + b, sum_name)
    close(result.as_numpy(diff_name), a - b, diff_name)
    return "; ".join(details) + f"; none requested -> {names}"


@CHECKS("classification")
def classification(ctx: Context) -> str:
    spec, k = ctx.linear, min(2, _classes(ctx))
    labels = spec.get("labels")
    x = linear_input(ctx.linear, 3, seed=4)
    wanted = ctx.grpcclient.InferRequestedOutput(spec["output"], class_count=k)
    result = infer_linear(ctx, x, outputs=[wanted])
    (output,) = result.get_response().outputs
    assert output.datatype == "BYTES", f"datatype {output.datatype!r}, expected 'BYTES'"
    assert list(output.shape) == [3, k], f"shape {list(output.shape)}, expected [3, {k}]"
    got = result.as_numpy(spec["output"])
    expected = linear_expected(ctx.linear, x)
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


@CHECKS("model_statistics")
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


@CHECKS("repository_index")
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
