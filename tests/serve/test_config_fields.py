"""Honest configuration: one table says which config.pbtxt fields and `parameters` keys ortserve honours;
the rest is warned about at load (refused with --strict-config-fields), typos get the closest known key."""

from __future__ import annotations

import grpc
import numpy as np
import onnx_models as models
import pytest
from google.protobuf import text_format
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2
from ortserve.serve import config_support
from ortserve.serve.settings import load_settings

X = np.ones((1, 4), np.float32)
UNHONOURED = """
max_batch_size: 8
input [ { name: "input" is_shape_tensor: true } ]
dynamic_batching { preferred_batch_size: [ 4 ] preserve_ordering: true }
instance_group [ { count: 1 kind: KIND_CPU rate_limiter { priority: 2 } } ]
optimization { graph { level: 1 } cuda { graphs: true } }
model_warmup [ { name: "w" batch_size: 1 } ]
response_cache { enable: true }
metric_tags { key: "team" value: "vision" }
parameters { key: "intra_op_threads" value: { string_value: "2" } }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "execution_provider" value: { string_value: "CUDAExecutionProvider" } }
"""
EXPECTED_FIELDS = [
    "input.is_shape_tensor",
    "dynamic_batching.preserve_ordering",
    "optimization.cuda",
    "instance_group.rate_limiter",
    "metric_tags",
    "model_warmup",
    "response_cache",
]


def _config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_fields_set_but_not_honoured_are_found_by_walking_the_config():
    assert sorted(config_support.unhonoured_fields(_config(UNHONOURED))) == sorted(EXPECTED_FIELDS)


def test_parameter_typos_name_the_closest_known_key():
    notes = config_support.parameter_notes(_config(UNHONOURED).parameters)
    assert (
        "parameter 'intra_op_threads' is not known to ortserve (did you mean 'intra_op_thread_count'?)"
        in notes
    )
    assert any("'execution_provider' is set by the server" in note for note in notes)
    assert not any("'intra_op_thread_count'" in note.split("(")[0] for note in notes)
    (far,) = config_support.parameter_notes(_config('parameters { key: "zzz" value: {} }').parameters)
    assert "(known: allow_spinning, allow_zero_size_dims," in far


def test_every_path_in_the_table_is_a_real_field():
    for path in config_support.FIELDS:
        descriptor = model_config_pb2.ModelConfig.DESCRIPTOR
        for part in path.split("."):
            assert descriptor is not None and part in descriptor.fields_by_name, path
            descriptor = descriptor.fields_by_name[part].message_type


def test_a_new_proto_field_is_reported_until_the_table_names_it(monkeypatch):
    config = _config("max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 100 }")
    assert config_support.unhonoured_fields(config) == []
    fields = dict(config_support.FIELDS)
    del fields["dynamic_batching.max_queue_delay_microseconds"]
    monkeypatch.setattr(config_support, "FIELDS", fields)
    assert config_support.unhonoured_fields(config) == ["dynamic_batching.max_queue_delay_microseconds"]


def test_the_strict_flag_is_a_typed_setting(tmp_path):
    assert not load_settings(["--model-repository", str(tmp_path)], {}).strict_config_fields
    assert load_settings(
        ["--model-repository", str(tmp_path), "--strict-config-fields"], {}
    ).strict_config_fields
    environ = {"ORTSERVE_STRICT_CONFIG_FIELDS": "true"}
    assert load_settings(["--model-repository", str(tmp_path)], environ).strict_config_fields


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("fields") / "models"
    models.write_model(repo, "loose", models.linear_classifier(), UNHONOURED)
    models.write_model(repo, "clean", models.linear_classifier(), "max_batch_size: 8")
    return repo


def test_unhonoured_fields_are_warned_about_once_per_model(repo):
    with start_server(repo, "--model-control-mode", "explicit", "--load-model", "*") as server:
        client = stub(server.grpc_address)
        assert client.ServerReady(pb.ServerReadyRequest()).ready
        client.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="loose"))  # a reload
        outputs(client.ModelInfer(request("loose", {"input": X})))
        log = server.stderr()
    for path in EXPECTED_FIELDS:
        line = f"model 'loose': config.pbtxt: {path} is not honoured by ortserve and is ignored"
        assert log.count(line) == 1, (line, log)
    assert log.count("did you mean 'intra_op_thread_count'?") == 1
    assert "model 'clean': config.pbtxt" not in log


def test_strict_config_fields_refuses_the_load(repo):
    with start_server(repo, "--strict-config-fields") as server:
        client = stub(server.grpc_address)
        assert not client.ServerReady(pb.ServerReadyRequest()).ready
        rows = {m.name: m for m in client.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        assert rows["clean"].state == "READY"
        assert rows["loose"].state == "UNAVAILABLE"
        assert "response_cache is not honoured" in rows["loose"].reason
        assert "intra_op_threads" in rows["loose"].reason and "--strict-config-fields" in rows["loose"].reason
        with pytest.raises(grpc.RpcError) as error:
            client.ModelInfer(request("loose", {"input": X}))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_fields_that_refuse_the_load_are_not_called_ignored():
    config = _config(
        'ensemble_scheduling { step [ { model_name: "a" } ] }\ninput [ { name: "x" reshape { } } ]'
    )
    assert config_support.unhonoured_fields(config) == []


def test_the_parameters_ortserve_export_writes_are_known():
    keys = ("preprocessing", "exporter", "kind", "precision", "source", "stateful")
    config = _config(
        "".join(f'parameters {{ key: "{key}" value: {{ string_value: "x" }} }}\n' for key in keys)
    )
    assert config_support.config_notes(config) == []


def test_scheduling_fields_the_batcher_honours_raise_no_warning():
    config = _config(
        """
        max_batch_size: 8
        dynamic_batching {
          preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100
          priority_levels: 2 default_priority_level: 2
          default_queue_policy {
            max_queue_size: 4 default_timeout_microseconds: 10 allow_timeout_override: true
          }
          priority_queue_policy { key: 1 value: { max_queue_size: 2 } }
        }
        """
    )
    assert config_support.unhonoured_fields(config) == []
