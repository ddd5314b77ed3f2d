"""`ortserve export` end to end: input kinds, refusals (exit 1, nothing written), the console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from export_models import files_under, make_rnn
from google.protobuf import text_format

from ortserve.export.cli import main
from ortserve.protos import model_config_pb2

HERE = Path(__file__).resolve().parent


def config_of(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


@pytest.fixture
def rnn_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "gru.pt"
    torch.save(
        {"model_state_dict": make_rnn(cell="gru", features=5, classes=3).state_dict(), "epoch": 2}, path
    )
    return path


@pytest.mark.slow
def test_resnet18_lightning_checkpoint(tmp_path: Path, repo: Path, resnet_state, capsys) -> None:
    checkpoint = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in resnet_state.items()}, "epoch": 3}, checkpoint)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    argv = [
        "--arch",
        "resnet18",
        "--checkpoint",
        str(checkpoint),
        "--image-size",
        "64",
        "--labels",
        str(labels),
    ]
    assert main([*argv, "--repository", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "max abs error" in out and "UINT8" in out
    config = config_of(repo / "resnet18")  # name defaults to the architecture
    assert list(config.output[0].dims) == [10]  # num_classes inferred from fc.weight
    assert list(config.input[0].dims) == [3, 64, 64]
    assert config.output[0].label_filename == "labels.txt"
    assert (repo / "resnet18" / "1" / "model.onnx").is_file()


@pytest.mark.slow
def test_factory_sequence_model(repo: Path, rnn_checkpoint: Path, capsys) -> None:
    kwargs = json.dumps({"cell": "gru", "features": 5, "classes": 3})
    argv = [
        "--factory",
        "export_models:make_rnn",
        "--factory-kwargs",
        kwargs,
        "--checkpoint",
        str(rnn_checkpoint),
    ]
    assert main([*argv, "--input-shape", "12,5", "--repository", str(repo), "--name", "gru"]) == 0
    config = config_of(repo / "gru")
    assert list(config.input[0].dims) == [-1, 5] and config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert json.loads(config.parameters["preprocessing"].string_value)["layout"] == "NTF"
    assert config.parameters["max_input_dims"].string_value == "input:4096,-1"
    assert "gru" in capsys.readouterr().out
    assert main([*argv, "--input-shape", "12,5", "--repository", str(repo), "--name", "short",
                 "--max-sequence-length", "64"]) == 0  # fmt: skip
    assert config_of(repo / "short").parameters["max_input_dims"].string_value == "input:64,-1"


def test_fixed_time_axis_override(repo: Path, rnn_checkpoint: Path) -> None:
    argv = [
        "--factory",
        "export_models:make_rnn",
        "--factory-kwargs",
        '{"cell": "gru", "features": 5, "classes": 3}',
    ]
    argv += [
        "--checkpoint",
        str(rnn_checkpoint),
        "--input-shape",
        "12,5",
        "--dynamic-axes",
        '{"input": {"0": "b"}}',
    ]
    assert main([*argv, "--repository", str(repo), "--name", "fixed", "--exporter", "torchscript"]) == 0
    assert list(config_of(repo / "fixed").input[0].dims) == [12, 5]


def test_precision_fp16_and_its_tolerance(repo: Path, rnn_checkpoint: Path, capsys) -> None:
    argv = ["--factory", "export_models:make_rnn", "--checkpoint", str(rnn_checkpoint)]
    argv += ["--factory-kwargs", '{"cell": "gru", "features": 5, "classes": 3}', "--input-shape", "12,5"]
    argv += ["--repository", str(repo), "--exporter", "torchscript", "--precision", "fp16"]
    assert main([*argv, "--name", "half"]) == 0
    assert config_of(repo / "half").parameters["precision"].string_value == "fp16"
    summary = capsys.readouterr().out
    assert "fp16" in summary and "atol=0.1 rtol=0.01" in summary
    # A tolerance that fp16 cannot meet is refused like any other mismatch, naming the tolerance.
    assert main([*argv, "--name", "strict", "--atol", "0", "--rtol", "0"]) == 1
    assert "atol=0, rtol=0" in capsys.readouterr().err and not (repo / "strict").exists()


def test_pickled_module_needs_trust_pickle(tmp_path: Path, repo: Path, capsys) -> None:
    path = tmp_path / "whole.pt"
    torch.save(make_rnn(features=5, classes=3), path)
    argv = ["--checkpoint", str(path), "--input-shape", "12,5", "--repository", str(repo), "--name", "whole"]
    assert main(argv) == 1
    assert "--trust-pickle" in capsys.readouterr().err
    assert files_under(repo) == {}
    assert main([*argv, "--trust-pickle", "--exporter", "torchscript"]) == 0
    assert config_of(repo / "whole").parameters["source"].string_value == "pickle:export_models.RnnClassifier"


def _garbage(tmp_path: Path, state) -> list[str]:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\x01 definitely not a checkpoint")
    return ["--arch", "resnet18", "--checkpoint", str(path)]


def _truncated(tmp_path: Path, state) -> list[str]:
    path = tmp_path / "truncated.pt"
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:4096])
    return ["--arch", "resnet18", "--checkpoint", str(path)]


def _missing(tmp_path: Path, state) -> list[str]:
    return ["--arch", "resnet18", "--checkpoint", str(tmp_path / "missing.pt")]


def _mismatch(tmp_path: Path, state) -> list[str]:
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    return ["--arch", "resnet34", "--checkpoint", str(path)]


def _num_classes(tmp_path: Path, state) -> list[str]:
    path = tmp_path / "r18.pt"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    return ["--arch", "resnet18", "--checkpoint", str(path), "--num-classes", "4"]


def _bad_factory(tmp_path: Path, state) -> list[str]:
    return ["--factory", "export_models:nope", "--input-shape", "4,5"]


def _bad_labels(tmp_path: Path, state) -> list[str]:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    return ["--factory", "export_models:make_rnn", "--input-shape", "4,6", "--labels", str(labels)]


REFUSALS = {
    "garbage": (_garbage, "garbage.pt is not a readable PyTorch checkpoint"),
    "truncated": (_truncated, "truncated.pt is not a readable PyTorch checkpoint (truncated"),
    "missing": (_missing, "checkpoint file not found"),
    "mismatch": (_mismatch, "checkpoint does not fit resnet34:\n  missing keys"),
    "num_classes": (_num_classes, "fc.weight: checkpoint [10, 512] vs model [4, 512]"),
    "bad_factory": (_bad_factory, "has no attribute 'nope'"),
    "bad_labels": (_bad_labels, "2 labels given but the model has 4 classes"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_exit_1_and_write_nothing(
    tmp_path: Path, repo: Path, resnet_state, capsys, case: str
) -> None:
    build, message = REFUSALS[case]
    assert main([*build(tmp_path, resnet_state), "--repository", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "ortserve export: error: " in err and message in err
    assert files_under(repo) == {}


def test_usage(capsys) -> None:
    assert main(["--help"]) == 0
    assert "--trust-pickle" in capsys.readouterr().out
    assert main(["--arch", "resnet18"]) == 2  # --repository is required


def test_console_script(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [Path(sys.executable).with_name("ortserve"), "export", "--factory", "export_models:make_rnn"]
    command += [
        "--input-shape",
        "8,6",
        "--repository",
        str(repo),
        "--name",
        "lstm",
        "--exporter",
        "torchscript",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "lstm" in done.stdout and "max abs error" in done.stdout
    assert "[export] validating" in done.stderr
    assert (repo / "lstm" / "1" / "model.onnx").is_file()
