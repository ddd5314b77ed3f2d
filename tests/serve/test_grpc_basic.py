"""The KServe v2 / Triton RPCs over real gRPC against the shared server."""

from __future__ import annotations

import grpc
import numpy as np
import onnx_models as models
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kserve import outputs, request
from shared_repo import DATATYPES, LABELS

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2
from ortserve.protos.datatypes import KSERVE_TO_NUMPY


def test_live_ready_and_server_metadata(client):
    assert client.ServerLive(pb.ServerLiveRequest()).live
    assert client.ServerReady(pb.ServerReadyRequest()).ready
    metadata = client.ServerMetadata(pb.ServerMetadataRequest())
    assert metadata.name == "ortserve"
    assert metadata.version
    assert {"classification", "model_repository", "statistics", "model_configuration"} <= set(
        metadata.extensions
    )


def test_model_ready_and_metadata(client):
    assert client.ModelReady(pb.ModelReadyRequest(name="classifier")).ready
    assert client.ModelReady(pb.ModelReadyRequest(name="classifier", version="1")).ready
    assert not client.ModelReady(pb.ModelReadyRequest(name="no_such_model")).ready
    metadata = client.ModelMetadata(pb.ModelMetadataRequest(name="classifier"))
    assert metadata.name == "classifier"
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probabilities", "FP32", [-1, 3]),
        ("logits", "FP32", [-1, 3]),
    ]
    fixed = client.ModelMetadata(pb.ModelMetadataRequest(name="fixed"))
    assert [list(t.shape) for t in fixed.inputs] == [[4]]


def test_model_config_is_completed_and_names_the_provider(client):
    config = client.ModelConfig(pb.ModelConfigRequest(name="classifier")).config
    assert config.name == "classifier"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == ["input"]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(config.input[0].dims) == [4]
    assert config.output[0].label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.parameters["execution_provider"].string_value == "CPUExecutionProvider"
    auto = client.ModelConfig(pb.ModelConfigRequest(name="identity_fp32")).config
    assert auto.max_batch_size == 32  # first dimension dynamic everywhere: auto-completed
    assert auto.HasField("dynamic_batching")
    assert client.ModelConfig(pb.ModelConfigRequest(name="fixed")).config.max_batch_size == 0


def test_infer_raw_matches_reference_and_echoes_id(client):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    response = client.ModelInfer(request("classifier", {"input": x}, request_id="req-7"))
    assert (response.model_name, response.model_version, response.id) == ("classifier", "1", "req-7")
    assert not any(t.HasField("contents") for t in response.outputs)
    got = outputs(response)
    expected = models.classifier_reference(x)
    assert [t.name for t in response.outputs] == ["probabilities", "logits"]
    np.testing.assert_allclose(got["logits"], expected["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_infer_typed_contents(client):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = outputs(client.ModelInfer(request("classifier", {"input": x}, ["logits"], typed=True)))
    np.testing.assert_allclose(got["logits"], models.classifier_reference(x)["logits"], rtol=1e-5)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips(client, datatype):
    rng = np.random.default_rng(2)
    dtype = KSERVE_TO_NUMPY[datatype]
    if datatype == "BYTES":
        x = np.array([["a", "bé", ""], ["x" * 100, "y", "z"]], dtype=object)
    elif datatype == "BOOL":
        x = rng.integers(0, 2, (2, 3)).astype(bool)
    else:
        x = (rng.standard_normal((2, 3)) * 50).astype(dtype)
    for typed in (False, True) if datatype != "FP16" else (False,):
        response = client.ModelInfer(request(f"identity_{datatype.lower()}", {"x": x}, typed=typed))
        assert response.outputs[0].datatype == datatype
        got = outputs(response)["y"]
        if datatype == "BYTES":
            assert got.tolist() == [[s.encode() for s in row] for row in x.tolist()]
        else:
            np.testing.assert_array_equal(got, x)


def test_requested_outputs_are_filtered_and_ordered(client):
    a = np.array([[1, 2]], dtype=np.float32)
    b = np.array([[10, 20]], dtype=np.float32)
    both = client.ModelInfer(request("add_two", {"a": a, "b": b}, ["difference", "sum"]))
    assert [t.name for t in both.outputs] == ["difference", "sum"]
    got = outputs(both)
    np.testing.assert_array_equal(got["difference"], a - b)
    np.testing.assert_array_equal(got["sum"], a + b)
    only = client.ModelInfer(request("add_two", {"a": a, "b": b}, ["sum"]))
    assert [t.name for t in only.outputs] == ["sum"]
    everything = client.ModelInfer(request("add_two", {"a": a, "b": b}))
    assert [t.name for t in everything.outputs] == ["sum", "difference"]


def test_dynamic_time_axis_and_non_batching_model(client):
    x = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    np.testing.assert_array_equal(outputs(client.ModelInfer(request("time_series", {"x": x})))["y"], x * 2)
    v = np.array([1, 2, 3, 4], dtype=np.float32)
    np.testing.assert_array_equal(outputs(client.ModelInfer(request("fixed", {"x": v})))["y"], v * 3)


def test_classification_top_k_with_labels(client):
    x = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    response = client.ModelInfer(
        request("classifier", {"input": x}, ["probabilities", "logits"], classification={"probabilities": 2})
    )
    assert response.outputs[0].datatype == "BYTES"
    got = outputs(response)
    assert got["probabilities"].shape == (2, 2)
    probabilities = models.classifier_reference(x)["probabilities"]
    for row in range(2):
        order = np.argsort(-probabilities[row])[:2]
        expected = [f"{probabilities[row, i]:f}:{i}:{LABELS[i]}".encode() for i in order]
        assert got["probabilities"][row].tolist() == expected
    assert got["logits"].shape == (2, 3)  # not classified: the raw tensor


def test_classification_without_labels_and_unbatched(client):
    v = np.array([1, 4, 2, 3], dtype=np.float32)
    response = client.ModelInfer(request("fixed", {"x": v}, ["y"], classification={"y": 3}))
    got = outputs(response)["y"]
    assert got.tolist() == [b"12.000000:1", b"9.000000:3", b"6.000000:2"]


def test_statistics_count_requests_rows_and_batches(client):
    for rows in (1, 2, 3):
        client.ModelInfer(request("classifier_stats", {"input": np.zeros((rows, 4), np.float32)}))
    stats = client.ModelStatistics(pb.ModelStatisticsRequest(name="classifier_stats")).model_stats
    assert len(stats) == 1
    (entry,) = stats
    assert (entry.name, entry.version) == ("classifier_stats", "1")
    assert entry.inference_count == 6
    assert 1 <= entry.execution_count <= 3
    assert entry.last_inference > 1_600_000_000_000
    assert entry.inference_stats.success.count == 3
    assert entry.inference_stats.success.ns > 0
    assert entry.inference_stats.fail.count == 0
    assert entry.inference_stats.queue.count == 3
    assert entry.inference_stats.compute_infer.count == 3
    assert sum(b.batch_size * b.compute_infer.count for b in entry.batch_stats) == 6
    everything = client.ModelStatistics(pb.ModelStatisticsRequest()).model_stats
    assert {"classifier", "classifier_stats", "fixed"} <= {s.name for s in everything}
    with pytest.raises(grpc.RpcError) as error:
        client.ModelStatistics(pb.ModelStatisticsRequest(name="no_such_model"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_repository_index_lists_ready_models(client):
    index = client.RepositoryIndex(pb.RepositoryIndexRequest()).models
    by_name = {m.name: m for m in index}
    assert by_name["classifier"].state == "READY"
    assert by_name["classifier"].version == "1"
    ready = client.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert {m.name for m in ready} == {m.name for m in index}


def test_load_and_unload_refused_without_explicit_mode(client):
    for call, message in (
        (client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="classifier")),
        (client.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="classifier")),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(message)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "explicit model load / unload is not allowed" in error.value.details()
    assert client.ModelReady(pb.ModelReadyRequest(name="classifier")).ready


def test_health_service_overall_and_per_model(server):
    channel = grpc.insecure_channel(server.grpc_address)
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
    assert health.Check(health_pb2.HealthCheckRequest(service="classifier")).status == serving
    with pytest.raises(grpc.RpcError) as error:
        health.Check(health_pb2.HealthCheckRequest(service="no_such_model"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_infer_answers_each_request_and_reports_errors_inline(client):
    x = np.ones((1, 4), np.float32)
    requests = [
        request("classifier", {"input": x}, request_id="a"),
        request("no_such_model", {"input": x}, request_id="b"),
        request("classifier", {"input": x * 2}, request_id="c"),
    ]
    answers = {a.infer_response.id: a for a in client.ModelStreamInfer(iter(requests))}
    assert set(answers) == {"a", "b", "c"}
    assert not answers["a"].error_message
    assert "no_such_model" in answers["b"].error_message
    got = outputs(answers["c"].infer_response)
    np.testing.assert_allclose(got["logits"], models.classifier_reference(x * 2)["logits"], rtol=1e-5)
