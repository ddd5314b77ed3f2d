"""KServe v2 REST against a real server, with the standard library: every route, JSON and binary tensors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from rest import binary_infer_body, binary_outputs, call
from serverproc import parse_http_address, start_server

from ortserve.protos import grpc_service_pb2 as pb

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]], np.float32)
LABELS = ["cat", "dog", "bird"]
CLASSIFIER = 'max_batch_size: 8\noutput [ { name: "logits" label_filename: "labels.txt" } ]\n'


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("rest") / "models"
    models.write_model(repo, "classifier", models.linear_classifier(), CLASSIFIER, labels=LABELS)
    models.write_model(repo, "classifier_stats", models.linear_classifier(), "max_batch_size: 8")
    for datatype in ("BYTES", "INT64", "UINT64", "UINT8", "BOOL", "FP16", "FP64", "INT8"):
        models.write_model(repo, f"identity_{datatype.lower()}", models.identity(datatype))
    models.write_model(repo, "fixed", models.fixed_shape())
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with start_server(repo) as process:
        yield process


@pytest.fixture(scope="module")
def base(server) -> str:
    return server.http_url


def _infer_json(data, shape=(2, 4), datatype="FP32", name="input", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}], **extra}


# --- health and metadata -------------------------------------------------------------------------------


def test_live_ready_and_server_metadata(base):
    assert call(base, "/v2/health/live").status == 200
    assert call(base, "/v2/health/ready").status == 200
    answer = call(base, "/v2")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/json")
    metadata = answer.json()
    assert metadata["name"] == "ortserve" and metadata["version"]
    assert {"model_repository", "statistics", "binary_tensor_data"} <= set(metadata["extensions"])


def test_model_metadata_ready_and_config(base):
    for path in ("/v2/models/classifier", "/v2/models/classifier/versions/1"):
        metadata = call(base, path).json()
        assert metadata["name"] == "classifier" and metadata["versions"] == ["1"]
        assert metadata["platform"] == "onnxruntime_onnx"
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {
            "logits": [-1, 3],
            "probabilities": [-1, 3],
        }
        assert call(base, f"{path}/ready").status == 200
    config = call(base, "/v2/models/classifier/config").json()
    assert config["name"] == "classifier" and config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [4], "int64 dims must be JSON numbers, as Triton sends them"
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert call(base, "/v2/models/classifier/versions/1/config").json() == config


def test_statistics_count_rest_requests(base):
    for rows in (1, 3):
        x = np.ones((rows, 4), np.float32).tolist()
        assert call(base, "/v2/models/classifier_stats/infer", _infer_json(x, (rows, 4))).status == 200
    stats = call(base, "/v2/models/classifier_stats/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("classifier_stats", "1")]
    assert stats[0]["inference_count"] == 4
    assert stats[0]["inference_stats"]["success"]["count"] == 2
    assert isinstance(stats[0]["inference_stats"]["success"]["ns"], int)
    assert call(base, "/v2/models/classifier_stats/versions/1/stats").json()["model_stats"] == stats
    everything = call(base, "/v2/models/stats").json()["model_stats"]
    assert {"classifier", "classifier_stats", "fixed"} <= {s["name"] for s in everything}


# --- inference -----------------------------------------------------------------------------------------


def test_infer_json_flat_and_nested(base):
    expected = models.classifier_reference(X)
    for data in (X.tolist(), X.reshape(-1).tolist()):
        answer = call(base, "/v2/models/classifier/infer", _infer_json(data, id="req-7"))
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/json")
        body = answer.json()
        assert body["model_name"] == "classifier" and body["model_version"] == "1" and body["id"] == "req-7"
        got = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in body["outputs"]}
        assert {o["name"]: o["datatype"] for o in body["outputs"]} == {
            "logits": "FP32",
            "probabilities": "FP32",
        }
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)


def test_infer_version_route_and_classification(base):
    body = _infer_json(X.tolist(), outputs=[{"name": "logits", "parameters": {"classification": 2}}])
    answer = call(base, "/v2/models/classifier/versions/1/infer", body)
    assert answer.status == 200, answer.body
    (output,) = answer.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    top = np.argsort(-models.classifier_reference(X)["logits"], axis=1)[:, 0]
    assert [row.split(":")[-1] for row in output["data"][::2]] == [LABELS[i] for i in top]


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("BYTES", ["a", "héllo", "", "x" * 300, "z", "\u2603"]),
        ("INT64", [-(2**63), 2**63 - 1, 0, 1, -1, 7]),
        ("UINT8", [0, 255, 1, 2, 3, 4]),
        ("UINT64", [0, 2**64 - 1, 2**63, 1, 2, 3]),
        ("BOOL", [True, False, True, True, False, False]),
        ("FP64", [0.1, -2.5, 1e300, 3, 0, -0.0]),
        ("INT8", [[-128, 127, 0], [1, 2, 3]]),
    ],
)
def test_json_round_trip_per_datatype(base, datatype, data):
    body = _infer_json(data, (2, 3), datatype, name="x")
    answer = call(base, f"/v2/models/identity_{datatype.lower()}/infer", body)
    assert answer.status == 200, answer.body
    (output,) = answer.json()["outputs"]
    assert output["datatype"] == datatype and output["shape"] == [2, 3]
    flat = np.array(data, dtype=object).reshape(-1).tolist()
    assert output["data"] == flat


def test_binary_inputs_and_outputs(base):
    body, headers = binary_infer_body({"input": X}, {"input": "FP32"}, ["logits"])
    answer = call(base, "/v2/models/classifier/infer", body, headers=headers)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "application/octet-stream"
    got = binary_outputs(answer)
    assert list(got) == ["logits"]
    np.testing.assert_allclose(got["logits"], models.classifier_reference(X)["logits"], rtol=1e-5, atol=1e-6)


def test_fp16_travels_as_binary_and_binary_data_output_asks_every_output(base):
    x = np.array([[1.5, -2.0, 65504.0]], np.float16)
    body, headers = binary_infer_body({"x": x}, {"x": "FP16"})
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header).encode()
    headers["Inference-Header-Content-Length"] = str(len(head))
    answer = call(base, "/v2/models/identity_fp16/infer", head + body[length:], headers=headers)
    assert answer.status == 200, answer.body
    np.testing.assert_array_equal(binary_outputs(answer)["y"], x)


def test_mixed_binary_and_json_outputs(base):
    body = _infer_json(
        X.tolist(),
        outputs=[{"name": "logits", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
    )
    answer = call(base, "/v2/models/classifier/infer", body)
    assert answer.status == 200, answer.body
    length = int(answer.headers["Inference-Header-Content-Length"])
    header = json.loads(answer.body[:length])
    logits, probabilities = header["outputs"]
    assert "data" not in logits and logits["parameters"]["binary_data_size"] == X.shape[0] * 3 * 4
    assert len(probabilities["data"]) == X.shape[0] * 3
    got = np.frombuffer(answer.body[length:], np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, models.classifier_reference(X)["logits"], rtol=1e-5, atol=1e-6)


def test_a_rest_error_has_the_grpc_message(base, server):
    body = _infer_json(np.zeros((2, 4), int).tolist(), shape=(2, 4), datatype="INT32")
    answer = call(base, "/v2/models/classifier/infer", body)
    message = pb.ModelInferRequest(model_name="classifier")
    message.inputs.add(name="input", datatype="INT32", shape=[2, 4])
    message.raw_input_contents.append(np.zeros((2, 4), np.int32).tobytes())
    with pytest.raises(grpc.RpcError) as error:
        stub(server.grpc_address).ModelInfer(message)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert answer.status == 400 and answer.error == error.value.details()
    grpc_answer = stub(server.grpc_address).ModelInfer(request("classifier", {"input": X}))
    np.testing.assert_allclose(
        outputs(grpc_answer)["logits"], models.classifier_reference(X)["logits"], rtol=1e-5, atol=1e-6
    )


def test_listening_line_reports_http(repo):
    assert parse_http_address("ORTSERVE_LISTENING grpc=h:1 metrics=h:2 http=h:3\n") == "h:3"
    assert parse_http_address("ORTSERVE_LISTENING grpc=h:1 metrics=none http=none") is None
    assert parse_http_address("ORTSERVE_LISTENING grpc=h:1 metrics=h:2") is None  # a server without REST
    with start_server(repo, "--allow-http", "false") as server:
        assert server.http_address is None and server.http_url is None
        assert stub(server.grpc_address).ServerLive(pb.ServerLiveRequest()).live


def test_http_port_taken_is_a_start_up_error(repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "ortserve.serve", "--model-repository", str(repo)]
        command += ["--grpc-port", "0", "--metrics-port", "0", "--http-port", str(port)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"ortserve serve: error: cannot listen for HTTP on 127.0.0.1:{port}" in result.stderr
