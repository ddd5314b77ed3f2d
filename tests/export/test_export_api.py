"""export_model: uint8 preprocessing in the graph, repository layout, config.pbtxt, metadata, versions."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_models import FrozenTime, files_under, make_rnn, make_tiny_cnn
from google.protobuf import text_format

from ortserve.export.api import export_model, format_summary
from ortserve.export.errors import RepositoryError, ValidationError
from ortserve.export.preprocess import normalize_pixels
from ortserve.export.spec import ExportSpec
from ortserve.protos import model_config_pb2

LABELS = ["zero", "one", "two", "three", "four"]


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    """One export shared by the read-only tests below (exports cost seconds)."""
    repo = tmp_path_factory.mktemp("shared") / "models"
    model = make_tiny_cnn(classes=5)
    result = export_model(
        model,
        ExportSpec.image(32),
        repository=repo,
        name="cnn",
        labels=LABELS,
        source="tiny",
        checkpoint_sha256="ab",
    )
    return model, result


@pytest.fixture
def shared_repo(cnn_export) -> Path:
    return cnn_export[1].model_dir.parent


def test_uint8_model_matches_float_model_with_normalisation(cnn_export) -> None:
    model, result = cnn_export
    pixels = np.random.default_rng(5).integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": pixels})
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    with torch.no_grad():
        expected = model(normalize_pixels(torch.from_numpy(pixels), mean, std)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-3)


def test_repository_layout_and_config(cnn_export, shared_repo: Path) -> None:
    _, result = cnn_export
    repo = shared_repo
    assert result.version == 1
    assert sorted(files_under(repo)) == ["cnn/1/model.onnx", "cnn/config.pbtxt", "cnn/labels.txt"]
    assert (repo / "cnn" / "labels.txt").read_text().splitlines() == LABELS
    config = read_config(repo / "cnn" / "config.pbtxt")
    assert config.name == "cnn" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    (tensor,) = config.input
    assert (tensor.name, tensor.data_type, list(tensor.dims)) == (
        "input",
        model_config_pb2.TYPE_UINT8,
        [3, 32, 32],
    )
    assert tensor.format == model_config_pb2.ModelInput.FORMAT_NCHW
    (output,) = config.output
    assert (output.name, output.data_type, list(output.dims)) == ("output", model_config_pb2.TYPE_FP32, [5])
    assert output.label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 0  # no wait: see export/repository.py
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    pre = json.loads(config.parameters["preprocessing"].string_value)
    assert pre == {
        "input_dtype": "uint8",
        "in_graph": True,
        "scale": 1 / 255,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "layout": "NCHW",
    }
    assert config.parameters["exporter"].string_value == result.exporter


def test_metadata_props(cnn_export) -> None:
    _, result = cnn_export
    props = {p.key: p.value for p in onnx.load(str(result.model_path)).metadata_props}
    assert props["source"] == "tiny" and props["source_sha256"] == "ab"
    assert props["exporter"] == result.exporter
    assert props["torch_version"] == torch.__version__ and props["onnx_version"] == onnx.__version__
    assert json.loads(props["preprocessing"])["input_dtype"] == "uint8"
    validation = json.loads(props["validation"])
    assert validation["ok"] and len(validation["checks"]) == 4
    assert validation["trace_shape"] == [3, 3, 32, 32]


def test_second_export_is_version_2_and_version_1_is_untouched(repo: Path) -> None:
    first = export_model(
        make_tiny_cnn(classes=5), ExportSpec.image(32), repository=repo, name="cnn", labels=LABELS
    )
    assert first.version == 1
    before = files_under(repo / "cnn" / "1")
    second = export_model(
        make_tiny_cnn(classes=5), ExportSpec.image(32), repository=repo, name="cnn", labels=LABELS
    )
    assert second.version == 2 and second.model_path == repo / "cnn" / "2" / "model.onnx"
    assert files_under(repo / "cnn" / "1") == before
    assert sorted(p.name for p in repo.iterdir()) == ["cnn"]  # no staging directory left behind
    assert "version" in format_summary(second) and "cnn" in format_summary(second)


def test_float32_image_input(repo: Path) -> None:
    result = export_model(
        make_tiny_cnn(), ExportSpec.image(16, input_dtype="float32"), repository=repo, name="f"
    )
    config = read_config(result.config_path)
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert json.loads(config.parameters["preprocessing"].string_value)["in_graph"] is False
    assert result.labels_path is None and not config.output[0].label_filename


@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_fp16_export_computes_in_float16_behind_the_fp32_interface(repo: Path, input_dtype: str) -> None:
    model = make_tiny_cnn()
    result = export_model(
        model, ExportSpec.image(16, input_dtype=input_dtype, precision="fp16"), repository=repo, name="h"
    )
    graph = onnx.load(str(result.model_path)).graph
    weights = [t for t in graph.initializer if t.name.endswith("weight")]  # not uint8 mean/std (fp32)
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    config = read_config(result.config_path)
    want = model_config_pb2.TYPE_UINT8 if input_dtype == "uint8" else model_config_pb2.TYPE_FP32
    assert config.input[0].data_type == want and config.output[0].data_type == model_config_pb2.TYPE_FP32
    assert config.parameters["precision"].string_value == "fp16"
    assert (result.precision, result.report.atol, result.report.rtol) == ("fp16", 0.1, 0.01)
    # Validated against the float32 model the user trained, and close to it.
    assert result.report.ok and 0 < result.report.max_abs < 0.1
    assert "fp16" in format_summary(result)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched


def test_sequence_fp16_export(repo: Path) -> None:
    result = export_model(make_rnn(), ExportSpec.sequence(10, 6, precision="fp16"), repository=repo, name="s")
    assert result.report.ok and result.report.max_abs < 0.1
    props = {p.key: p.value for p in onnx.load(str(result.model_path)).metadata_props}
    assert props["precision"] == "fp16"


def test_sequence_config_has_dynamic_time(repo: Path) -> None:
    result = export_model(
        make_rnn(), ExportSpec.sequence(10, 6), repository=repo, name="seq", max_batch_size=8
    )
    config = read_config(result.config_path)
    assert list(config.input[0].dims) == [-1, 6]
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]


def test_wrong_label_count_writes_nothing(repo: Path) -> None:
    with pytest.raises(RepositoryError, match="3 labels given but the model has 5 classes"):
        export_model(
            make_tiny_cnn(), ExportSpec.image(16), repository=repo, name="cnn", labels=["a", "b", "c"]
        )
    assert files_under(repo) == {}


def test_failed_validation_leaves_existing_model_untouched(shared_repo: Path) -> None:
    repo = shared_repo
    before = files_under(repo)
    with pytest.raises(ValidationError):
        export_model(
            FrozenTime(), ExportSpec.sequence(10, 4, exporter="torchscript"), repository=repo, name="cnn"
        )
    assert files_under(repo) == before


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up"])
def test_bad_model_names(repo: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="must be a plain directory name"):
        export_model(make_tiny_cnn(), ExportSpec.image(16), repository=repo, name=name)
