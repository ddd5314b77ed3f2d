"""REST errors: JSON `{"error": ...}` with the status of the gRPC code, and the server stays up."""

from __future__ import annotations

import json

import numpy as np
import onnx_models as models
import pytest
from rest import HEADER_LENGTH, binary_infer_body, call
from serverproc import start_server

X = np.zeros((1, 4), np.float32)
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("rest-errors") / "models"
    models.write_model(repo, "classifier", models.linear_classifier(), "max_batch_size: 8")
    models.write_model(repo, "identity_fp16", models.identity("FP16"))
    models.write_model(repo, "identity_int8", models.identity("INT8"))
    models.write_model(repo, "identity_bytes", models.identity("BYTES"))
    models.write_model(repo, "broken", models.BROKEN_MODEL)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    args = ("--max-message-bytes", str(MAX_BODY), "--strict-readiness", "false")
    with start_server(repo, *args) as process:
        yield process


@pytest.fixture(scope="module")
def base(server) -> str:
    return server.http_url


def _tensor(data=None, shape=(1, 4), datatype="FP32", name="input", **extra) -> dict:
    tensor = {"name": name, "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": datatype}
    tensor.update(extra)
    if data is not None:
        tensor["data"] = data
    return tensor


def _infer(base, body, model="classifier", headers=None):
    return call(base, f"/v2/models/{model}/infer", body, headers=headers)


BAD_BODIES = {
    "not json": (b"{not json", "not valid JSON"),
    "a list": (b"[1, 2]", "must be a JSON object"),
    "no inputs": ({"inputs": []}, "'inputs' must be a non-empty list"),
    "input not an object": ({"inputs": [3]}, "each input must be a JSON object"),
    "shape not a list": ({"inputs": [_tensor([0] * 4, shape=4)]}, "'shape' must be a list"),
    "negative dim": ({"inputs": [_tensor([0] * 4, shape=(-1, 4))]}, "non-negative integers, got [-1, 4]"),
    "dim past int64": ({"inputs": [_tensor([0], shape=(2**64, 4))]}, "non-negative integers"),
    "huge shape": ({"inputs": [_tensor([0] * 4, shape=(10**9, 10**9))]}, "expected 1000000000000000000"),
    "zero batch": ({"inputs": [_tensor([], shape=(0, 4))]}, "batch size 0 is outside 1..max_batch_size 8"),
    "too few values": ({"inputs": [_tensor([0] * 3)]}, "expected 4 values for shape [1, 4], got 3"),
    "strings for FP32": ({"inputs": [_tensor(["a"] * 4)]}, "FP32 data must be numbers"),
    "null value": ({"inputs": [_tensor([0, 1, None, 2])]}, "FP32 data must be numbers"),
    "unknown datatype": ({"inputs": [_tensor([0] * 4, datatype="FLOAT")]}, "not a KServe v2 datatype"),
    "wrong datatype": ({"inputs": [_tensor([0] * 4, datatype="INT32")]}, "expected datatype FP32, got INT32"),
    "unknown input": ({"inputs": [_tensor([0] * 4, name="nope")]}, "unexpected input 'nope'"),
    "no data": ({"inputs": [_tensor()]}, "no 'data' and no binary_data_size"),
    "bad parameter": ({"inputs": [_tensor([0] * 4)], "parameters": {"p": [1]}}, "parameter 'p' must be"),
    "id not a string": ({"inputs": [_tensor([0] * 4)], "id": 5}, "'id' must be str"),
    "unknown output": ({"inputs": [_tensor([0] * 4)], "outputs": [{"name": "z"}]}, "unexpected output 'z'"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_are_400_with_a_clear_message(base, case):
    body, expected = BAD_BODIES[case]
    answer = _infer(base, body, headers={"Content-Type": "application/json"})
    assert answer.status == 400, (answer.status, answer.body)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert expected in answer.error, answer.error


@pytest.mark.parametrize(
    ("model", "tensor", "expected"),
    [
        ("identity_fp16", _tensor([0.5] * 3, (1, 3), "FP16", "x"), "FP16 cannot travel as JSON data"),
        ("identity_int8", _tensor([0, 1, 128], (1, 3), "INT8", "x"), "values do not fit INT8 (-128..127)"),
        ("identity_int8", _tensor([0, 1, 1.5], (1, 3), "INT8", "x"), "INT8 data must be integers"),
        ("identity_int8", _tensor([0, 1, True], (1, 3), "INT8", "x"), "INT8 data must be integers"),
        ("identity_int8", _tensor([0, -1, 2**64], (1, 3), "INT8", "x"), "values do not fit INT8"),
        ("classifier", _tensor([0, 1, 2, True]), "FP32 data must be numbers"),
        ("identity_bytes", _tensor(["a", 1, "b"], (1, 3), "BYTES", "x"), "BYTES data must be JSON strings"),
    ],
)
def test_bad_values_per_datatype(base, model, tensor, expected):
    answer = _infer(base, {"inputs": [tensor]}, model)
    assert answer.status == 400 and expected in answer.error, (answer.status, answer.body)


def _binary(size_claimed=None, extra=b"", header_length=None, cut=0, content_type="application/octet-stream"):
    body, headers = binary_infer_body({"input": X}, {"input": "FP32"})
    length = int(headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    if size_claimed is not None:
        header["inputs"][0]["parameters"]["binary_data_size"] = size_claimed
    head = json.dumps(header).encode()
    length_text = str(len(head)) if header_length is None else header_length
    return head + body[length : len(body) - cut] + extra, {
        HEADER_LENGTH: length_text,
        "Content-Type": content_type,
    }


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"size_claimed": 12, "cut": 4},
            "expected 16 bytes of raw contents for shape [1, 4] of FP32, got 12",
        ),
        ({"size_claimed": 17}, "binary_data_size 17 does not fit the 16 binary bytes left"),
        ({"size_claimed": -1}, "binary_data_size -1 does not fit"),
        ({"size_claimed": True}, "'binary_data_size' must be int"),
        ({"extra": b"\0" * 5}, "5 binary bytes in the body are claimed by no binary_data_size"),
        ({"header_length": "99999"}, "Inference-Header-Content-Length 99999 is outside the body"),
        ({"header_length": "-3"}, "must be a non-negative integer, got -3"),
        ({"header_length": "3"}, "not valid JSON"),
    ],
)
def test_bad_binary_bodies(base, kwargs, expected):
    body, headers = _binary(**kwargs)
    answer = _infer(base, body, headers=headers)
    assert answer.status == 400 and expected in answer.error, (answer.status, answer.body)


def test_octet_stream_without_header_length_is_400(base):
    answer = _infer(base, b"\0" * 16, headers={"Content-Type": "application/octet-stream"})
    assert answer.status == 400 and "needs the Inference-Header-Content-Length header" in answer.error


def test_wrong_content_type_is_400(base):
    body = json.dumps({"inputs": [_tensor([0] * 4)]}).encode()
    answer = _infer(base, body, headers={"Content-Type": "text/plain"})
    assert answer.status == 400 and "Content-Type text/plain is not accepted" in answer.error


def test_body_over_max_message_bytes_is_413(base):
    answer = _infer(base, b" " * (MAX_BODY + 1), headers={"Content-Type": "application/json"})
    assert answer.status == 413, answer.body
    assert f"Maximum request body size {MAX_BODY} exceeded" in answer.error, answer.error


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/v2/models/nope", 404, "unknown model 'nope'"),
        ("/v2/models/nope/ready", 404, "unknown model 'nope'"),
        ("/v2/models/nope/config", 404, "unknown model 'nope'"),
        ("/v2/models/nope/stats", 404, "unknown model 'nope'"),
        ("/v2/models/classifier/versions/7", 404, "unknown model 'classifier' version 7"),
        ("/v2/models/classifier/versions/7/ready", 404, "unknown model 'classifier' version 7"),
        ("/v2/models/broken", 503, "model 'broken' is not ready"),
        ("/v2/models/broken/ready", 503, "model 'broken' is not ready"),
        ("/v2/no/such/route", 404, "Not Found"),
    ],
)
def test_unknown_and_unready_models(base, path, status, expected):
    answer = call(base, path)
    assert answer.status == status and expected in answer.error, (answer.status, answer.body)


def test_infer_on_unknown_and_unready_models(base):
    body = {"inputs": [_tensor([0] * 4)]}
    assert _infer(base, body, "nope").status == 404
    answer = _infer(base, body, "broken")
    assert answer.status == 503 and "model 'broken' is not ready" in answer.error


def test_wrong_method_is_405_json(base):
    answer = call(base, "/v2/models/classifier/infer", method="GET")
    assert answer.status == 405 and answer.error == "Method Not Allowed"


def test_repository_control_refused_in_mode_none(base):
    for action in ("load", "unload"):
        answer = call(base, f"/v2/repository/models/classifier/{action}", {})
        assert answer.status == 503 and "--model-control-mode explicit" in answer.error


def test_server_stays_up_and_serves_after_bad_requests(base):
    for case in BAD_BODIES.values():
        _infer(base, case[0], headers={"Content-Type": "application/json"})
    assert call(base, "/v2/health/live").status == 200
    answer = _infer(base, {"inputs": [_tensor([1, 2, 3, 4])]})
    assert answer.status == 200, answer.body
