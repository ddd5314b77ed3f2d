"""The three layouts KServe's storage initializer can put at --model-repository, each started with the
ServingRuntime's own arguments (`--model-repository DIR --model-name NAME`) and asked for an inference."""

from __future__ import annotations

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2
from ortserve.serve.settings import SettingsError, load_settings

X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]], np.float32)


def _serves(server, name: str, version: str = "") -> pb.ModelConfig:
    """The server is ready, lists exactly `name`, and `name` answers like the reference."""
    client = stub(server.grpc_address)
    assert client.ServerReady(pb.ServerReadyRequest()).ready, server.stderr()
    index = client.RepositoryIndex(pb.RepositoryIndexRequest()).models
    assert [(m.name, m.version, m.state) for m in index] == [(name, "1", "READY")]
    response = client.ModelInfer(request(name, {"input": X}, version=version))
    assert response.model_name == name and response.model_version == "1"
    np.testing.assert_allclose(
        outputs(response)["logits"], models.classifier_reference(X)["logits"], rtol=1e-5
    )
    return client.ModelConfig(pb.ModelConfigRequest(name=name)).config


def test_repository_root(tmp_path):
    repo = tmp_path / "models"
    models.write_model(repo, "clf", models.linear_classifier(), "max_batch_size: 8")
    with start_server(repo, "--model-name", "isvc") as server:
        _serves(server, "clf")
        assert "is a repository root" in server.stderr() and "--model-name ignored" in server.stderr()


def test_one_model_folder_with_config_is_served_under_model_name(tmp_path):
    model_dir = models.write_model(
        tmp_path, "mnt", models.linear_classifier(), 'name: "clf"\nmax_batch_size: 8'
    )
    with start_server(model_dir, "--model-name", "isvc") as server:
        config = _serves(server, "isvc")
        assert config.name == "isvc" and config.max_batch_size == 8
        log = server.stderr()
        assert f"serving one model directory {model_dir} as 'isvc'" in log
        assert "config.pbtxt names the model 'clf'; it is served as 'isvc'" in log
        error = _rpc_error(stub(server.grpc_address).ModelInfer, request("clf", {"input": X}))
        assert error.code() == grpc.StatusCode.NOT_FOUND


def test_one_model_folder_of_version_folders_defaults_to_the_folder_name(tmp_path):
    model_dir = models.write_model(tmp_path, "classifier", models.linear_classifier())
    with start_server(model_dir) as server:
        _serves(server, "classifier")
        assert f"serving one model directory {model_dir} as 'classifier'" in server.stderr()


def test_a_bare_model_file_is_version_1_with_a_config_completed_from_the_graph(tmp_path):
    folder = tmp_path / "mnt"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(models.linear_classifier().SerializeToString())
    with start_server(folder, "--model-name", "isvc") as server:
        config = _serves(server, "isvc", version="1")
        assert f"serving one model file {folder / 'model.onnx'} as 'isvc' version 1" in server.stderr()
    assert config.max_batch_size == 32  # the dynamic first axis: batched, --default-max-batch-size
    assert config.HasField("dynamic_batching") and config.default_model_filename == "model.onnx"
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in config.input] == [
        ("input", "TYPE_FP32", [4])
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [3]), ("probabilities", [3])]


def test_a_bare_model_file_of_any_name_is_served(tmp_path):
    folder = tmp_path / "mnt"
    folder.mkdir()
    (folder / "resnet.onnx").write_bytes(models.linear_classifier().SerializeToString())
    (folder / "README").write_text("downloaded by the storage initializer\n")
    with start_server(folder, "--model-name", "isvc") as server:
        assert _serves(server, "isvc").default_model_filename == "resnet.onnx"


@pytest.mark.parametrize(
    ("files", "folders", "message"),
    [
        (["a.onnx", "b.onnx"], [], "holds several model files"),
        (["a.onnx"], ["clf"], "holds both a bare model file a.onnx and model folders ['clf']"),
    ],
)
def test_ambiguous_layouts_are_refused_at_start(tmp_path, files, folders, message):
    folder = tmp_path / "mnt"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(models.linear_classifier().SerializeToString())
    for name in folders:
        models.write_model(folder, name, models.linear_classifier())
    with pytest.raises(RuntimeError, match="exited with code 2") as error:
        with start_server(folder, "--model-name", "isvc"):
            pass
    assert message in str(error.value)


def _rpc_error(call, message) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(message)
    return error.value


@pytest.mark.parametrize("name", ["a/b", ".hidden", "x" * 256])
def test_an_invalid_model_name_is_a_settings_error(tmp_path, name):
    with pytest.raises(SettingsError, match="--model-name .* is not a valid model name"):
        load_settings(["--model-repository", str(tmp_path), "--model-name", name], {})
    environ = {"ORTSERVE_MODEL_NAME": "isvc"}
    assert load_settings(["--model-repository", str(tmp_path)], environ).model_name == "isvc"
