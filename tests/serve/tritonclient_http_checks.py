"""KServe v2 REST conformance checks, run through Triton's own HTTP client (`tritonclient[http]`).

A standalone script for the tritonclient virtual environment (see tritonclient_checks.py for why). It reads
the same JSON spec, with HTTP addresses: `url` (model-control-mode none, serving `linear` and
`two_outputs`) and `explicit_url` (model-control-mode explicit, nothing loaded). It prints a JSON report
`[{"name", "ok", "detail"}, ...]` and exits 1 if any check failed. tritonclient is imported only in `main`,
so the test module can read CHECK_NAMES without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RTOL, ATOL = 1e-5, 1e-5
CHECKS: list[tuple[str, Callable]] = []


def check(name: str):
    def register(function):
        CHECKS.append((name, function))
        return function

    return register


@dataclass
class Context:
    spec: dict
    client: object
    httpclient: object
    error_type: type

    @property
    def linear(self) -> dict:
        return self.spec["linear"]


def _x(ctx: Context, rows: int, seed: int) -> np.ndarray:
    features = len(ctx.linear["weight"])
    return np.random.default_rng(seed).uniform(-2, 2, size=(rows, features)).astype(np.float32)


def _expected(ctx: Context, x: np.ndarray) -> np.ndarray:
    return x @ np.asarray(ctx.linear["weight"], np.float32) + np.asarray(ctx.linear["bias"], np.float32)


def _infer(ctx: Context, x: np.ndarray, binary_in: bool, outputs=None, **kwargs):
    infer_input = ctx.httpclient.InferInput(ctx.linear["input"], list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x, binary_data=binary_in)
    return ctx.client.infer(ctx.linear["name"], [infer_input], outputs=outputs, **kwargs)


def _close(got, expected, what: str) -> None:
    assert got is not None, f"{what}: missing from the response"
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert np.allclose(got, expected, rtol=RTOL, atol=ATOL), f"{what}: values differ"


def _error(ctx: Context, call: Callable[[], object], status: str) -> str:
    try:
        call()
    except ctx.error_type as exc:
        assert exc.status() == status, f"expected HTTP {status}, got {exc.status()}: {exc.message()}"
        return f"{exc.status()}: {exc.message()}"
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


@check("http_server_live_ready_metadata")
def server_live_ready_metadata(ctx: Context) -> str:
    assert ctx.client.is_server_live() is True and ctx.client.is_server_ready() is True
    metadata = ctx.client.get_server_metadata()
    assert metadata["name"] and metadata["version"], metadata
    assert "binary_tensor_data" in metadata["extensions"], metadata["extensions"]
    return f"{metadata}"


@check("http_model_ready_metadata_config")
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


@check("http_infer_binary")
def infer_binary(ctx: Context) -> str:
    x = _x(ctx, 3, 1)
    wanted = [ctx.httpclient.InferRequestedOutput(ctx.linear["output"], binary_data=True)]
    result = _infer(ctx, x, True, wanted, request_id="bin-1")
    _close(result.as_numpy(ctx.linear["output"]), _expected(ctx, x), "binary output")
    assert result.get_response()["id"] == "bin-1", result.get_response()
    return "binary in, binary out"


@check("http_infer_json")
def infer_json(ctx: Context) -> str:
    x = _x(ctx, 2, 2)
    wanted = [ctx.httpclient.InferRequestedOutput(ctx.linear["output"], binary_data=False)]
    result = _infer(ctx, x, False, wanted)
    output = result.get_output(ctx.linear["output"])
    assert "data" in output, f"JSON output expected, got {output}"
    _close(result.as_numpy(ctx.linear["output"]), _expected(ctx, x), "JSON output")
    return "JSON in, JSON out"


@check("http_infer_all_outputs_default")
def infer_all_outputs(ctx: Context) -> str:
    x = _x(ctx, 1, 3)
    result = _infer(ctx, x, True)
    _close(result.as_numpy(ctx.linear["output"]), _expected(ctx, x), "default output")
    names = [o["name"] for o in result.get_response()["outputs"]]
    return f"outputs={names}"


@check("http_infer_gzip_request")
def infer_gzip(ctx: Context) -> str:
    x = _x(ctx, 2, 4)
    result = _infer(ctx, x, True, request_compression_algorithm="gzip", response_compression_algorithm="gzip")
    _close(result.as_numpy(ctx.linear["output"]), _expected(ctx, x), "gzip output")
    return "gzip-compressed request body"


@check("http_classification")
def classification(ctx: Context) -> str:
    x = _x(ctx, 2, 5)
    wanted = [ctx.httpclient.InferRequestedOutput(ctx.linear["output"], class_count=2)]
    got = _infer(ctx, x, True, wanted).as_numpy(ctx.linear["output"])
    top = np.argmax(_expected(ctx, x), axis=1)
    assert got.shape == (2, 2), got.shape
    labels = ctx.linear.get("labels")
    for row, index in zip(got, top, strict=True):
        entry = row[0].decode() if isinstance(row[0], bytes) else row[0]
        assert entry.split(":")[1] == str(index), f"top-1 {entry}, expected index {index}"
        if labels:
            assert entry.split(":")[2] == labels[index], entry
    return f"{got.tolist()}"


@check("http_two_outputs_mixed")
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
    _close(result.as_numpy(spec["outputs"][0]), a + b, "sum")
    _close(result.as_numpy(spec["outputs"][1]), a - b, "difference")
    return "one binary and one JSON input; one binary and one JSON output"


@check("http_statistics")
def statistics(ctx: Context) -> str:
    stats = ctx.client.get_inference_statistics(ctx.linear["name"])
    (entry,) = stats["model_stats"]
    assert entry["inference_stats"]["success"]["count"] >= 5, entry
    assert entry["execution_count"] >= 1 and entry["inference_count"] >= entry["execution_count"], entry
    return f"inference_count={entry['inference_count']} execution_count={entry['execution_count']}"


@check("http_errors")
def errors(ctx: Context) -> str:
    x = _x(ctx, 1, 6)
    details = [_error(ctx, lambda: ctx.client.get_model_metadata("no_such_model"), "404")]
    infer_input = ctx.httpclient.InferInput(ctx.linear["input"], [1, 1], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 1), np.float32))
    details.append(_error(ctx, lambda: ctx.client.infer(ctx.linear["name"], [infer_input]), "400"))
    details.append(_error(ctx, lambda: ctx.client.load_model(ctx.linear["name"]), "503"))
    _close(_infer(ctx, x, True).as_numpy(ctx.linear["output"]), _expected(ctx, x), "after errors")
    return "; ".join(details)


@check("http_repository_load_unload")
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
        detail = _error(ctx, lambda: client.load_model("no_such_model"), "404")
    finally:
        client.close()
    return f"load/unload ok; unknown model: {detail}"


CHECK_NAMES = [name for name, _ in CHECKS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="path of the JSON spec")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as handle:
        spec = json.load(handle)

    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    report = []
    client = httpclient.InferenceServerClient(url=spec["url"])
    try:
        ctx = Context(spec, client, httpclient, InferenceServerException)
        for name, function in CHECKS:
            try:
                report.append({"name": name, "ok": True, "detail": function(ctx)})
            except (AssertionError, InferenceServerException) as exc:
                report.append({"name": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"})
            except Exception:  # noqa: BLE001 - a check that crashes is reported, the others still run
                report.append({"name": name, "ok": False, "detail": traceback.format_exc(limit=3)})
    finally:
        client.close()
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0 if all(entry["ok"] for entry in report) else 1


if __name__ == "__main__":
    sys.exit(main())
