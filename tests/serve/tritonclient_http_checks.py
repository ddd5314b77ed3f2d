"""KServe v2 REST conformance checks, run through Triton's own HTTP client (`tritonclient[http]`).

A standalone script for the tritonclient virtual environment (see tritonclient_checks.py for why). It reads
the same JSON spec, with HTTP addresses: `url` (model-control-mode none, serving `linear` and
`two_outputs`) and `explicit_url` (model-control-mode explicit, nothing loaded). It prints a JSON report
`[{"name", "ok", "detail"}, ...]` and exits 1 if any check failed. tritonclient is imported only in `main`,
so the test module can read CHECK_NAMES without it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from tritonclient_harness import Checks, close, emit, expect_error, linear_expected, linear_input, read_spec

CHECKS = Checks()


@dataclass
class Context:
    spec: dict
    client: object
    httpclient: object
    error_type: type

    @property
    def linear(self) -> dict:
        return self.spec["linear"]


def _infer(ctx: Context, x: np.ndarray, binary_in: bool, outputs=None, **kwargs):
    infer_input = ctx.httpclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x, binary_data=binary_in)
    return ctx.client.infer(ctx.linear["name"], [infer_input], outputs=outputs, **kwargs)


@CHECKS("http_server_live_ready_metadata")
def server_live_ready_metadata(ctx: Context) -> str:
    assert ctx.client.is_server_live() is True and ctx.client.is_server_ready() is True
    metadata = ctx.client.get_server_metadata()
    assert metadata["name"] and metadata["version"], metadata
    assert "binary_tensor_data" in metadata["extensions"], metadata["extensions"]
    return f"{metadata}"


@CHECKS("http_model_ready_metadata_config")
def model_ready_metadata_config(ctx: Context) -> str:
    name, features = ctx.linear["name"], len(ctx.linear["weight"])
    assert ctx.client.is_model_ready(name) is True and ctx.client.is_model_ready(name, "1") is True
    assert ctx.client.is_model_ready(name, "999") is False
    assert ctx.client.is_model_ready("no_such_model") is False
    metadata = ctx.client.get_model_metadata(name, "1")
    assert metadata["name"] == name and "1" in metadata["versions"], metadata
    assert metadata["inputs"] == [{"name": ctx.linear["input"], "datatype": "FP32", "shape": [-1, features]}]
    config = ctx.client.get_model_config(name)
    assert config["max_batch_size"] > 0 and config["input"][0]["dims"] == [features], config
    return f"inputs={metadata['inputs']} max_batch_size={config['max_batch_size']}"


@CHECKS("http_infer_binary")
def infer_binary(ctx: Context) -> str:
    x = linear_input(ctx.linear, 3, 1)
    wanted = [ctx.httpclient.InferRequestedOutput(ctx.linear["output"], binary_data=True)]
    result = _infer(ctx, x, True, wanted, request_id="bin-1")
    close(result.as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x), "binary output")
    assert result.get_response()["id"] == "bin-1", result.get_response()
    return "binary in, binary out"


@CHECKS("http_infer_json")
def infer_json(ctx: Context) -> str:
    x = linear_input(ctx.linear, 2, 2)
    wanted = [ctx.httpclient.InferRequestedOutput(ctx.linear["output"], binary_data=False)]
    result = _infer(ctx, x, False, wanted)
    output = result.get_output(ctx.linear["output"])
    assert "data" in output, f"JSON output expected, got {output}"
    close(result.as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x), "JSON output")
    return "JSON in, JSON out"


@CHECKS("http_infer_all_outputs_default")
def infer_all_outputs(ctx: Context) -> str:
    x = linear_input(ctx.linear, 1, 3)
    result = _infer(ctx, x, True)
    close(result.as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x), "default output")
    names = [o["name"] for o in result.get_response()["outputs"]]
    return f"outputs={names}"


@CHECKS("http_infer_gzip_request")
def infer_gzip(ctx: Context) -> str:
    x = linear_input(ctx.linear, 2, 4)
    result = _infer(ctx, x, True, request_compression_algorithm="gzip", response_compression_algorithm="gzip")
    close(result.as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x), "gzip output")
    return "gzip-compressed request body"


@CHECKS("http_classification")
def classification(ctx: Context) -> str:
    x = linear_input(ctx.linear, 2, 5)
    wanted = [ctx.httpclient.InferRequestedOutput(ctx.linear["output"], class_count=2)]
    got = _infer(ctx, x, True, wanted).as_numpy(ctx.linear["output"])
    top = np.argmax(linear_expected(ctx.linear, x), axis=1)
    assert got.shape == (2, 2), got.shape
    labels = ctx.linear.get("labels")
    for row, index in zip(got, top, strict=True):
        entry = row[0].decode() if isinstance(row[0], bytes) else row[0]
        assert entry.split(":")[1] == str(index), f"top-1 {entry}, expected index {index}"
        if labels:
            assert entry.split(":")[2] == labels[index], entry
    return f"{got.tolist()}"


@CHECKS("http_two_outputs_mixed")
def two_outputs(ctx: Context) -> str:
    spec = ctx.spec.get("two_outputs")
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = np.full((2, 2), 0.5, np.float32)
    inputs = []
    for name, value, binary in zip(spec["inputs"], (a, b), (True, False), strict=True):
        infer_input = ctx.httpclient.InferInput(name, list(value.shape), "FP32")
        infer_input.set_data_from_numpy(value, binary_data=binary)
        inputs.append(infer_input)
    wanted = [
        ctx.httpclient.InferRequestedOutput(spec["outputs"][0], binary_data=True),
        ctx.httpclient.InferRequestedOutput(spec["outputs"][1], binary_data=False),
    ]
    result = ctx.client.infer(spec["name"], inputs, outputs=wanted)
    close(result.as_numpy(spec["outputs"][0]), a + b, "sum")
    close(result.as_numpy(spec["outputs"][1]), a - b, "difference")
    return "one binary and one JSON input; one binary and one JSON output"


@CHECKS("http_statistics")
def statistics(ctx: Context) -> str:
    stats = ctx.client.get_inference_statistics(ctx.linear["name"])
    (entry,) = stats["model_stats"]
    assert entry["inference_stats"]["success"]["count"] >= 5, entry
    assert entry["execution_count"] >= 1 and entry["inference_count"] >= entry["execution_count"], entry
    return f"inference_count={entry['inference_count']} execution_count={entry['execution_count']}"


@CHECKS("http_errors")
def errors(ctx: Context) -> str:
    x = linear_input(ctx.linear, 1, 6)
    details = [expect_error(lambda: ctx.client.get_model_metadata("no_such_model"), ctx.error_type, "404")]
    infer_input = ctx.httpclient.InferInput(ctx.linear["input"], [1, 1], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 1), np.float32))
    details.append(
        expect_error(lambda: ctx.client.infer(ctx.linear["name"], [infer_input]), ctx.error_type, "400")
    )
    details.append(expect_error(lambda: ctx.client.load_model(ctx.linear["name"]), ctx.error_type, "503"))
    close(_infer(ctx, x, True).as_numpy(ctx.linear["output"]), linear_expected(ctx.linear, x), "after errors")
    return "; ".join(details)


@CHECKS("http_repository_load_unload")
def repository(ctx: Context) -> str:
    client = ctx.httpclient.InferenceServerClient(url=ctx.spec["explicit_url"])
    name = ctx.linear["name"]
    try:
        assert client.is_model_ready(name) is False
        client.load_model(name)
        assert client.is_model_ready(name) is True
        index = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
        assert index.get(name) == "READY", index
        client.unload_model(name)
        assert client.is_model_ready(name) is False
        detail = expect_error(lambda: client.load_model("no_such_model"), ctx.error_type, "404")
    finally:
        client.close()
    return f"load/unload ok; unknown model: {detail}"


CHECK_NAMES = CHECKS.names


def main(argv: list[str] | None = None) -> int:
    spec = read_spec(argv, __doc__.split("\n\n")[0])

    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=spec["url"])
    try:
        report = CHECKS.run(
            Context(spec, client, httpclient, InferenceServerException), InferenceServerException
        )
    finally:
        client.close()
    return emit(report)


if __name__ == "__main__":
    sys.exit(main())
