"""Checkpoint loading, wrapper unwrapping, num_classes inference and fit errors (no ONNX export here)."""

from pathlib import Path

import pytest
import torch
import torchvision
from export_models import RnnClassifier

from ortserve.export.architectures import build_architecture, build_from_factory, infer_num_classes
from ortserve.export.checkpoint import extract_state_dict, load_checkpoint, load_weights
from ortserve.export.errors import ArchitectureError, ArchitectureMismatchError, CheckpointError


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=7).state_dict()


WRAPPERS = {
    "raw": lambda sd: sd,
    "ddp": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "lightning": lambda sd: {
        "state_dict": {f"model.{k}": v for k, v in sd.items()},
        "epoch": 3,
        "global_step": 9,
    },
    "model": lambda sd: {"model": sd, "epoch": 1},
    "model_state_dict": lambda sd: {
        "model_state_dict": sd,
        "optimizer_state_dict": {"state": {}},
        "loss": 0.1,
    },
    "ddp_in_model_state_dict": lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
    "compiled_lightning": lambda sd: {"state_dict": {f"model._orig_mod.{k}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_wrapped_checkpoints_load_into_resnet(tmp_path: Path, resnet_state, wrapper: str) -> None:
    path = tmp_path / "ck.pt"
    torch.save(WRAPPERS[wrapper](resnet_state), path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.module is None and len(checkpoint.sha256) == 64
    assert infer_num_classes(checkpoint.state_dict) == 7
    model = build_architecture("resnet18", infer_num_classes(checkpoint.state_dict))
    load_weights(model, checkpoint.state_dict, "resnet18")
    for key, value in model.state_dict().items():
        assert torch.equal(value, resnet_state[key]), key


def test_infer_num_classes_absent() -> None:
    assert infer_num_classes({"linear.weight": torch.zeros(3, 2)}) is None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("these are my notes, not weights\n")
    with pytest.raises(CheckpointError, match="notes.pt is not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path, resnet_state) -> None:
    path = tmp_path / "ck.pt"
    torch.save(resnet_state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"ck.pt is not a readable PyTorch checkpoint \(truncated"):
        load_checkpoint(path)


def test_pickled_module_needs_trust_pickle(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    model = RnnClassifier()
    torch.save(model, path)
    with pytest.raises(CheckpointError, match="--trust-pickle") as info:
        load_checkpoint(path)
    assert "whole.pt" in str(info.value)
    checkpoint = load_checkpoint(path, trust_pickle=True)
    assert isinstance(checkpoint.module, RnnClassifier)
    assert torch.equal(checkpoint.module.fc.weight, model.fc.weight)


def test_dict_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "note": "no weights"}, path)
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_checkpoint(path)


def test_extract_state_dict_from_module() -> None:
    model = RnnClassifier()
    assert set(extract_state_dict({"model": model})) == set(model.state_dict())


def test_mismatch_lists_missing_unexpected_and_shapes(resnet_state) -> None:
    state = dict(resnet_state)
    state["extra.weight"] = torch.zeros(2)
    del state["layer1.0.conv1.weight"]
    model = build_architecture("resnet18", num_classes=10)  # checkpoint has 7 classes
    with pytest.raises(ArchitectureMismatchError) as info:
        load_weights(model, state, "resnet18")
    message = str(info.value)
    assert "checkpoint does not fit resnet18" in message
    assert "missing keys (1): layer1.0.conv1.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "fc.weight: checkpoint [7, 512] vs model [10, 512]" in message
    assert "fc.bias: checkpoint [7] vs model [10]" in message
    assert info.value.missing == ["layer1.0.conv1.weight"]


def test_resnet18_checkpoint_does_not_fit_resnet34(resnet_state) -> None:
    with pytest.raises(ArchitectureMismatchError, match=r"missing keys \(\d+\): layer1.2.conv1.weight"):
        load_weights(build_architecture("resnet34", 7), resnet_state, "resnet34")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("export_models", "must look like 'package.module:callable'"),
        ("no_such_module_xyz:make", "cannot import factory module 'no_such_module_xyz'"),
        ("export_models:missing_factory", "has no attribute 'missing_factory'"),
        ("export_models:not_a_module", "returned str, not a torch.nn.Module"),
    ],
)
def test_bad_factory(path: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        build_from_factory(path)


def test_unknown_architecture() -> None:
    with pytest.raises(ArchitectureError, match="unknown architecture 'vgg11'"):
        build_architecture("vgg11")
