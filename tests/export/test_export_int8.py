"""int8 export: calibration data (image folder, .npy/.npz), the proof (agreement, speed) and its refusals,
the dynamic LSTM, and an int8 model served by the real server answering like onnxruntime on the same file.

The fast tests use tiny random-weight models, so their agreement threshold is lowered and --allow-slower
given (a few-kilobyte CNN gains nothing from int8); the trained digits ResNet (slow) proves the default 99%.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_models import files_under, make_rnn, make_tiny_cnn
from google.protobuf import text_format
from PIL import Image

from ortserve.client import InferenceClient
from ortserve.export.api import export_model, format_summary
from ortserve.export.calibration import Samples
from ortserve.export.cli import main
from ortserve.export.errors import CalibrationError, QuantizationError, SpecError
from ortserve.export.quantize import Int8Options
from ortserve.export.spec import ExportSpec
from ortserve.protos import model_config_pb2

LOOSE = {"min_agreement": 0.5, "allow_slower": True}


def config_of(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def ops_of(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 15) -> Path:
    """Class subfolders of random PNGs in odd sizes and modes (the client's decode/resize must apply)."""
    rng = np.random.default_rng(1)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40 + index, 36 + i % 3, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if i % 4 == 0 else image).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def cnn_int8(tmp_path_factory):
    """One int8 export calibrated from an image folder, shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("int8")
    folder = image_folder(root / "images")
    result = export_model(
        make_tiny_cnn(classes=2),
        ExportSpec.image(32, precision="int8", batch_sizes=(1, 2)),
        repository=root / "repo",
        name="cnn_int8",
        labels=["cat", "dog"],
        int8=Int8Options(calibration_data=folder, calibration_method="entropy", **LOOSE),
    )
    return result


def test_image_folder_calibration_writes_a_qdq_graph_and_records_the_proof(cnn_int8) -> None:
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops_of(cnn_int8.model_path)
    report = cnn_int8.int8
    # 30 images: a fifth (6) held out for the proof, the other 24 calibrate.
    assert (report.calibration_samples, report.validation_samples) == (24, 6)
    assert report.calibration_method == "entropy"
    assert report.accuracy_fp32 is not None and report.accuracy_int8 is not None  # class folders are labels
    assert [check.batch for check in report.speed] == [1, 8]
    config = config_of(cnn_int8.model_dir)
    assert config.parameters["precision"].string_value == "int8"
    recorded = json.loads(config.parameters["quantization"].string_value)
    assert recorded["agreement"] == report.agreement and recorded["calibration_samples"] == 24
    props = {p.key: p.value for p in onnx.load(str(cnn_int8.model_path)).metadata_props}
    assert props["precision"] == "int8"
    assert json.loads(props["quantization"])["calibration_method"] == "entropy"
    summary = format_summary(cnn_int8)
    assert "int8 agreement" in summary and "speed batch 8" in summary and "entropy, 24 sample(s)" in summary


def test_int8_model_is_served_like_onnxruntime_runs_it(cnn_int8, start_ortserve) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    session = ort.InferenceSession(str(cnn_int8.model_path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"input": pixels})
    with start_ortserve(cnn_int8.model_dir.parent) as server:
        with InferenceClient(server.grpc_address) as client:
            assert client.is_model_ready("cnn_int8")
            got = client.infer("cnn_int8", pixels)["output"]
            one = client.infer("cnn_int8", pixels[:1])["output"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one, expected[:1], rtol=1e-5, atol=1e-5)


def test_npy_calibration_with_npz_validation_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.save(tmp_path / "calib.npy", rng.integers(0, 256, (20, 3, 16, 16), dtype=np.uint8))
    np.savez(
        tmp_path / "val.npz",
        inputs=rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8),
        labels=rng.integers(0, 3, 12),
    )
    options = Int8Options(
        calibration_data=tmp_path / "calib.npy",
        validation_data=tmp_path / "val.npz",
        calibration_samples=8,
        **LOOSE,
    )
    spec = ExportSpec.image(16, precision="int8", batch_sizes=(1,))
    model = make_tiny_cnn(classes=3)
    result = export_model(model, spec, repository=tmp_path / "repo", name="n", int8=options)
    assert (result.int8.calibration_samples, result.int8.validation_samples) == (8, 12)
    assert result.int8.accuracy_int8 is not None


def test_agreement_below_the_threshold_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    np.save(tmp_path / "calib.npy", rng.integers(0, 256, (10, 3, 16, 16), dtype=np.uint8))
    repo = tmp_path / "repo"
    options = Int8Options(calibration_data=tmp_path / "calib.npy", min_agreement=1.01, allow_slower=True)
    spec = ExportSpec.image(16, precision="int8", batch_sizes=(1,))
    with pytest.raises(QuantizationError, match=r"top-1 agreement .* below --min-agreement 101\.00%"):
        export_model(make_tiny_cnn(), spec, repository=repo, name="n", int8=options)
    assert files_under(repo) == {}


def test_dynamic_lstm_export(tmp_path: Path) -> None:
    np.save(tmp_path / "seq.npy", np.random.default_rng(5).standard_normal((16, 7, 6), dtype=np.float32))
    spec = ExportSpec.sequence(10, 6, precision="int8", batch_sizes=(1, 2), time_lengths=(3, 7))
    options = Int8Options(validation_data=tmp_path / "seq.npy", **LOOSE)
    result = export_model(make_rnn(), spec, repository=tmp_path / "repo", name="lstm", int8=options)
    assert "DynamicQuantizeLSTM" in ops_of(result.model_path) and "LSTM" not in ops_of(result.model_path)
    assert result.int8.scheme == "dynamic, int8 weights" and result.int8.validation_samples == 16


def test_gru_is_refused_with_the_reason(tmp_path: Path) -> None:
    np.save(tmp_path / "seq.npy", np.zeros((4, 10, 6), dtype=np.float32))
    spec = ExportSpec.sequence(10, 6, precision="int8", batch_sizes=(1,), time_lengths=(3,))
    options = Int8Options(validation_data=tmp_path / "seq.npy", **LOOSE)
    with pytest.raises(QuantizationError, match="GRU.* no int8 kernel in onnxruntime"):
        export_model(make_rnn(cell="gru"), spec, repository=tmp_path / "repo", name="g", int8=options)
    assert files_under(tmp_path / "repo") == {}


def _npy(array: np.ndarray):
    def make(path: Path) -> Path:
        np.save(path.with_suffix(".npy"), array)
        return path.with_suffix(".npy")

    return make


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda path: None, "needs calibration data"),
        (lambda path: path.mkdir() or path, "holds no images"),
        (_npy(np.zeros((0, 3, 16, 16), np.uint8)), "is empty"),
        (_npy(np.zeros((4, 3, 8, 8), np.uint8)), r"takes \['N', 3, 16, 16\]"),
        (_npy(np.zeros((4, 3, 16, 16), np.float32)), "dtype float32"),
        (lambda path: path.with_suffix(".npy"), "does not exist"),
    ],
    ids=["missing", "empty_folder", "empty_npy", "wrong_shape", "wrong_dtype", "no_such_file"],
)
def test_calibration_data_errors_come_before_the_export(tmp_path: Path, make_source, message) -> None:
    options = Int8Options(calibration_data=make_source(tmp_path / "data"))
    spec = ExportSpec.image(16, precision="int8")
    with pytest.raises(CalibrationError, match=message):
        export_model(make_tiny_cnn(), spec, repository=tmp_path / "r", name="n", int8=options)


def test_option_errors() -> None:
    with pytest.raises(SpecError, match="calibration method must be one of"):
        Int8Options(calibration_method="kl")
    with pytest.raises(SpecError, match="--calibration-samples must be >= 1"):
        Int8Options(calibration_samples=0)
    with pytest.raises(SpecError, match="int8 is not available for stateful"):
        ExportSpec.sequence(8, 8, precision="int8", stateful=True)
    with pytest.raises(SpecError, match="int8 options given for a fp32 export"):
        export_model(make_tiny_cnn(), ExportSpec.image(16), repository="unused", name="n", int8=Int8Options())
    with pytest.raises(CalibrationError, match="at least 2 are needed"):
        export_model(
            make_tiny_cnn(),
            ExportSpec.image(16, precision="int8"),
            repository="unused",
            name="n",
            int8=Int8Options(Samples(np.zeros((1, 3, 16, 16), np.uint8))),
        )


def test_cli_flags_and_their_errors(tmp_path: Path, capsys) -> None:
    pixels = np.random.default_rng(6).integers(0, 256, (10, 3, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "calib.npy", pixels)
    base = ["--factory", "export_models:make_tiny_cnn", "--kind", "image", "--image-size", "16"]
    base += ["--repository", str(tmp_path / "repo")]
    assert main([*base, "--calibration-data", str(tmp_path / "calib.npy")]) == 1
    assert "--calibration-data only apply to --precision int8" in capsys.readouterr().err
    assert main([*base, "--precision", "int8"]) == 1
    assert "needs calibration data" in capsys.readouterr().err
    assert main([*base, "--precision", "int8", "--calibration-method", "kl"]) == 2
    assert "invalid choice: 'kl'" in capsys.readouterr().err
    argv = [*base, "--precision", "int8", "--calibration-data", str(tmp_path / "calib.npy")]
    argv += ["--calibration-samples", "5", "--calibration-method", "percentile", "--min-agreement", "0.5"]
    assert main([*argv, "--allow-slower", "--name", "cli_int8"]) == 0
    out = capsys.readouterr().out
    assert "percentile, 5 sample(s)" in out and "precision         int8" in out
    assert config_of(tmp_path / "repo" / "cli_int8").parameters["precision"].string_value == "int8"


def _digits_int8(trained_digits, repo: Path, calibration: Samples) -> object:
    from ortserve.export.recipes import digits, models

    split = digits.load_image_split(trained_digits.resnet.image_size)
    spec = ExportSpec.image(
        trained_digits.resnet.image_size,
        precision="int8",
        mean=models.IMAGENET_MEAN,
        std=models.IMAGENET_STD,
        batch_sizes=(1, 2),
    )
    # Speed is judged by the benchmark: a test on a shared 2-core machine must not depend on timings.
    options = Int8Options(calibration, validation_data=Samples(split.x_test, split.y_test), allow_slower=True)
    return export_model(trained_digits.torch_model("resnet"), spec, repository=repo, name="d", int8=options)


@pytest.mark.slow
def test_trained_digits_resnet_int8_meets_the_default_agreement(trained_digits, tmp_path: Path) -> None:
    from ortserve.export.recipes import digits

    split = digits.load_image_split(trained_digits.resnet.image_size)
    result = _digits_int8(trained_digits, tmp_path / "repo", Samples(split.x_train, split.y_train))
    report = result.int8
    assert report.agreement >= 0.99 and report.validation_samples == len(split.x_test)
    assert abs(report.accuracy_int8 - report.accuracy_fp32) <= 0.01


@pytest.mark.slow
def test_all_zero_calibration_is_refused(trained_digits, tmp_path: Path) -> None:
    size = trained_digits.resnet.image_size
    zeros = Samples(np.zeros((64, 3, size, size), np.uint8))
    with pytest.raises(QuantizationError, match="top-1 agreement with the PyTorch model is"):
        _digits_int8(trained_digits, tmp_path / "repo", zeros)
    assert files_under(tmp_path / "repo") == {}
