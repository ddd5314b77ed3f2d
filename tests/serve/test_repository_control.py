"""Model control: start-up failures beside working models, explicit load/unload, failed reloads, bad names."""

from __future__ import annotations

import grpc
import numpy as np
import onnx_models as models
import onnxruntime as ort
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

X = np.ones((1, 4), np.float32)
GPU_CONFIG = "max_batch_size: 8\ninstance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("control") / "models"
    for name in ("good", "reload", "spare"):
        models.write_model(repo, name, models.linear_classifier(), "max_batch_size: 8")
    models.write_model(repo, "broken", models.BROKEN_MODEL)
    models.write_model(repo, "gpu", models.linear_classifier(), GPU_CONFIG)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    args = ["--model-control-mode", "explicit"]
    for name in ("good", "reload", "broken", "gpu"):
        args += ["--load-model", name]
    with start_server(repo, *args) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    return stub(server.grpc_address)


def _index(client) -> dict[tuple[str, str], tuple[str, str]]:
    models_ = client.RepositoryIndex(pb.RepositoryIndexRequest()).models
    return {(m.name, m.version): (m.state, m.reason) for m in models_}


def _rpc_error(call, message) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(message)
    return error.value


def test_failed_models_are_reported_beside_working_ones(client):
    index = _index(client)
    assert index[("good", "1")] == ("READY", "")
    state, reason = index[("broken", "1")]
    assert state == "UNAVAILABLE" and "broken" in reason and "cannot load" in reason
    state, reason = index[("gpu", "1")]
    assert state == "UNAVAILABLE" and "CUDAExecutionProvider" in reason and "KIND_GPU" in reason
    assert index[("spare", "")] == ("UNAVAILABLE", "not loaded")
    assert not client.ServerReady(pb.ServerReadyRequest()).ready  # strict readiness: a wanted model failed
    assert client.ServerLive(pb.ServerLiveRequest()).live
    assert not client.ModelReady(pb.ModelReadyRequest(name="broken")).ready
    error = _rpc_error(client.ModelInfer, request("broken", {"input": X}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "broken" in error.details()
    outputs(client.ModelInfer(request("good", {"input": X})))
    ready = client.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert {m.name for m in ready} == {"good", "reload"}


def test_gpu_load_fails_with_a_clear_reason_on_cpu_only_onnxruntime(client):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: see test_gpu_instance_runs_on_cuda")
    error = _rpc_error(client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="gpu"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CUDAExecutionProvider" in error.details() and "gpu" in error.details()
    assert not client.ModelReady(pb.ModelReadyRequest(name="gpu")).ready


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu with CUDAExecutionProvider (this onnxruntime is CPU-only)",
)
def test_gpu_instance_runs_on_cuda(client):
    client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="gpu"))
    config = client.ModelConfig(pb.ModelConfigRequest(name="gpu")).config
    assert config.parameters["execution_provider"].string_value == "CUDAExecutionProvider"
    got = outputs(client.ModelInfer(request("gpu", {"input": X})))
    np.testing.assert_allclose(got["logits"], models.classifier_reference(X)["logits"], rtol=1e-4, atol=1e-5)


def test_unload_then_load_again(client):
    client.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="spare"))  # not loaded: fine
    client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="spare"))
    assert _index(client)[("spare", "1")] == ("READY", "")
    outputs(client.ModelInfer(request("spare", {"input": X})))
    client.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="spare"))
    assert _index(client)[("spare", "")] == ("UNAVAILABLE", "unloaded")
    assert not client.ModelReady(pb.ModelReadyRequest(name="spare")).ready
    error = _rpc_error(client.ModelInfer, request("spare", {"input": X}))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="spare"))
    outputs(client.ModelInfer(request("spare", {"input": X})))


def test_failed_reload_keeps_the_working_version(client, repo):
    models.write_model(repo, "reload", models.BROKEN_MODEL, version=2)
    error = _rpc_error(client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="reload"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reload" in error.details() and "version 2" in error.details()
    index = _index(client)
    assert index[("reload", "1")] == ("READY", "")
    assert index[("reload", "2")][0] == "UNAVAILABLE"
    response = client.ModelInfer(request("reload", {"input": X}))
    assert response.model_version == "1"
    assert client.ModelReady(pb.ModelReadyRequest(name="reload")).ready


def test_reload_picks_up_a_new_version(client, repo):
    models.write_model(repo, "good", models.linear_classifier(), version=2)
    client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="good"))
    index = _index(client)
    assert index[("good", "2")] == ("READY", "")
    assert ("good", "1") not in index  # version policy: latest 1
    assert client.ModelInfer(request("good", {"input": X})).model_version == "2"
    error = _rpc_error(client.ModelInfer, request("good", {"input": X}, version="1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", ["", "..", "../good", "/etc", "a/b", "a\\b", ".hidden"])
def test_model_names_that_leave_the_repository_are_rejected(client, name):
    for call, message in (
        (client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=name)),
        (client.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=name)),
    ):
        error = _rpc_error(call, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid model name" in error.details()
    assert _rpc_error(client.ModelInfer, request(name, {"input": X})).code() == grpc.StatusCode.NOT_FOUND


def test_loading_an_unknown_model_is_not_found(client):
    error = _rpc_error(client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="no_such_model"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in error.details()


def test_model_control_none_loads_everything_and_keeps_failures_apart(repo):
    with start_server(repo, "--strict-readiness", "false") as server:
        client = stub(server.grpc_address)
        index = _index(client)
        assert index[("spare", "1")] == ("READY", "")
        assert index[("broken", "1")][0] == "UNAVAILABLE"
        assert client.ServerReady(pb.ServerReadyRequest()).ready  # readiness not strict
        outputs(client.ModelInfer(request("spare", {"input": X})))
