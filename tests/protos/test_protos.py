"""Contract tests for the generated KServe v2 / Triton protocol bindings."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from ortserve.protos import grpc_service_pb2, grpc_service_pb2_grpc, model_config_pb2

EXPECTED_RPCS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse", False, False),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse", False, False),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse", False, False),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse", False, False),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse", False, False),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse", False, False),
    "ModelStreamInfer": ("ModelInferRequest", "ModelStreamInferResponse", True, True),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse", False, False),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse", False, False),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse", False, False),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse", False, False),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse", False, False),
}

SAMPLE_CONFIG = """
name: "resnet18"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
max_batch_size: 32
version_policy: { latest: { num_versions: 2 } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "labels.txt"
  }
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 500
  default_queue_policy {
    timeout_action: REJECT
    default_timeout_microseconds: 100000
    allow_timeout_override: true
    max_queue_size: 256
  }
}
instance_group [
  { count: 2 kind: KIND_GPU gpus: [ 0 ] },
  { count: 1 kind: KIND_CPU }
]
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }
parameters { key: "intra_op_thread_count" value: { string_value: "4" } }
parameters { key: "cudnn_conv_algo_search" value: { string_value: "HEURISTIC" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 3, 224, 224 ] zero_data: true } }
  }
]
"""


def _field_number(message_cls, name: str) -> int:
    return message_cls.DESCRIPTOR.fields_by_name[name].number


def test_modules_import_and_share_package():
    assert grpc_service_pb2.DESCRIPTOR.package == "inference"
    assert model_config_pb2.DESCRIPTOR.package == "inference"
    assert hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceStub")
    assert hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceServicer")
    assert hasattr(grpc_service_pb2_grpc, "add_GRPCInferenceServiceServicer_to_server")
    # ModelConfigResponse.config must be the one ModelConfig type.
    config_field = grpc_service_pb2.ModelConfigResponse.DESCRIPTOR.fields_by_name["config"]
    assert config_field.message_type is model_config_pb2.ModelConfig.DESCRIPTOR


def test_service_rpcs():
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == set(EXPECTED_RPCS)
    for name, (req, resp, client_streaming, server_streaming) in EXPECTED_RPCS.items():
        method = methods[name]
        assert method.input_type.full_name == f"inference.{req}", name
        assert method.output_type.full_name == f"inference.{resp}", name
        # client_streaming/server_streaming exist on MethodDescriptor in protobuf >= 4.
        assert getattr(method, "client_streaming", client_streaming) == client_streaming, name
        assert getattr(method, "server_streaming", server_streaming) == server_streaming, name


@pytest.mark.parametrize(
    ("message_cls", "field", "number"),
    [
        # Numbers checked against triton-inference-server/common protobuf/*.proto.
        (grpc_service_pb2.ModelInferRequest, "model_name", 1),
        (grpc_service_pb2.ModelInferRequest, "inputs", 5),
        (grpc_service_pb2.ModelInferRequest, "outputs", 6),
        (grpc_service_pb2.ModelInferRequest, "raw_input_contents", 7),
        (grpc_service_pb2.ModelInferRequest.InferInputTensor, "contents", 5),
        (grpc_service_pb2.ModelInferResponse, "outputs", 5),
        (grpc_service_pb2.ModelInferResponse, "raw_output_contents", 6),
        (grpc_service_pb2.InferParameter, "string_param", 3),
        (grpc_service_pb2.InferParameter, "double_param", 4),
        (grpc_service_pb2.InferParameter, "uint64_param", 5),
        (grpc_service_pb2.InferTensorContents, "fp32_contents", 6),
        (grpc_service_pb2.InferTensorContents, "bytes_contents", 8),
        (grpc_service_pb2.ModelStatistics, "batch_stats", 7),
        (grpc_service_pb2.ModelStatistics, "memory_usage", 8),
        (grpc_service_pb2.RepositoryIndexResponse.ModelIndex, "reason", 4),
        (grpc_service_pb2.RepositoryModelLoadRequest, "parameters", 3),
        (model_config_pb2.ModelConfig, "backend", 17),
        (model_config_pb2.ModelConfig, "max_batch_size", 4),
        (model_config_pb2.ModelConfig, "instance_group", 7),
        (model_config_pb2.ModelConfig, "dynamic_batching", 11),
        (model_config_pb2.ModelConfig, "parameters", 14),
        (model_config_pb2.ModelConfig, "model_warmup", 16),
        (model_config_pb2.ModelInput, "format", 3),
        (model_config_pb2.ModelInput, "dims", 4),
        (model_config_pb2.ModelOutput, "dims", 3),
        (model_config_pb2.ModelOutput, "label_filename", 4),
        (model_config_pb2.ModelOutput, "reshape", 5),
        (model_config_pb2.ModelInstanceGroup, "kind", 4),
        (model_config_pb2.ModelInstanceGroup, "gpus", 3),
        (model_config_pb2.ModelDynamicBatching, "default_queue_policy", 6),
    ],
)
def test_field_numbers(message_cls, field, number):
    assert _field_number(message_cls, field) == number


def test_enum_values():
    assert model_config_pb2.TYPE_INVALID == 0
    assert model_config_pb2.TYPE_FP32 == 11
    assert model_config_pb2.TYPE_STRING == 13
    assert model_config_pb2.TYPE_BF16 == 14
    assert model_config_pb2.ModelInstanceGroup.KIND_CPU == 2
    assert model_config_pb2.ModelQueuePolicy.DELAY == 1


def test_dynamic_batching_is_in_scheduling_oneof():
    oneof = model_config_pb2.ModelConfig.DESCRIPTOR.oneofs_by_name["scheduling_choice"]
    assert {f.name for f in oneof.fields} == {"dynamic_batching", "sequence_batching", "ensemble_scheduling"}


def test_infer_request_roundtrip():
    req = grpc_service_pb2.ModelInferRequest(model_name="m", model_version="1", id="req-1")
    tensor = req.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    tensor.parameters["binary_data_size"].int64_param = 12
    req.outputs.add(name="logits")
    req.parameters["priority"].uint64_param = 1
    req.raw_input_contents.append(b"\x00" * 12)
    data = req.SerializeToString()
    back = grpc_service_pb2.ModelInferRequest.FromString(data)
    assert back == req
    assert list(back.inputs[0].shape) == [1, 3]
    assert back.parameters["priority"].WhichOneof("parameter_choice") == "uint64_param"


def test_config_pbtxt_roundtrip():
    cfg = text_format.Parse(SAMPLE_CONFIG, model_config_pb2.ModelConfig())
    assert cfg.name == "resnet18"
    assert cfg.max_batch_size == 32
    assert cfg.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert list(cfg.input[0].dims) == [3, 224, 224]
    assert cfg.input[0].format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert cfg.output[0].label_filename == "labels.txt"
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(cfg.instance_group[0].gpus) == [0]
    assert cfg.version_policy.latest.num_versions == 2
    assert cfg.parameters["intra_op_thread_count"].string_value == "4"
    assert cfg.model_warmup[0].inputs["input"].zero_data

    text = text_format.MessageToString(cfg)
    assert text_format.Parse(text, model_config_pb2.ModelConfig()) == cfg
    assert model_config_pb2.ModelConfig.FromString(cfg.SerializeToString()) == cfg

    response = grpc_service_pb2.ModelConfigResponse(config=cfg)
    assert grpc_service_pb2.ModelConfigResponse.FromString(response.SerializeToString()).config == cfg


def test_unknown_config_field_is_rejected():
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nno_such_field: 1\n', model_config_pb2.ModelConfig())
