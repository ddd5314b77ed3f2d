"""The digits recipes: the data views, the models, real trainings (slow) and the `ortserve train` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.models import resnet18

from ortserve.export.recipes import cli, digits, models, train

RESNET_TARGET = 0.95
SEQUENCE_TARGET = 0.93


def _client_pipeline(digit_0_16: np.ndarray, size: int) -> np.ndarray:
    """What the client SDK does with an 8x8 grey digit, written out independently of `digits`."""
    grey = np.array([[round(v * 255 / 16) for v in row] for row in digit_0_16], dtype=np.uint8)
    rgb = Image.fromarray(grey, "L").convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)


def _heldout_accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: np.ndarray) -> float:
    model.eval()
    with torch.inference_mode():
        predicted = model(inputs).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


# --- data -------------------------------------------------------------------------------------------------


def test_split_is_fixed_stratified_and_disjoint():
    train_idx, test_idx = digits.split_indices()
    labels = load_digits().target
    assert (len(train_idx), len(test_idx)) == (1347, 450)
    assert not set(train_idx) & set(test_idx)
    assert sorted(np.concatenate([train_idx, test_idx])) == list(range(1797))
    test_share = np.bincount(labels[test_idx], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(test_share - 0.25) < 0.02)
    again_train, again_test = digits.split_indices()
    assert np.array_equal(train_idx, again_train) and np.array_equal(test_idx, again_test)


@pytest.mark.parametrize("size", [32, 20])
def test_image_view_is_the_client_pillow_pipeline(size):
    raw = load_digits().images
    train_idx, test_idx = digits.split_indices()
    split = digits.load_image_split(size)
    assert split.x_train.dtype == np.uint8 and split.x_train.shape == (1347, 3, size, size)
    assert split.x_test.shape == (450, 3, size, size)
    for position in (0, 1, 117, 449):
        assert np.array_equal(split.x_test[position], _client_pipeline(raw[test_idx[position]], size))
    for position in (0, 700, 1346):
        assert np.array_equal(split.x_train[position], _client_pipeline(raw[train_idx[position]], size))


def test_heldout_grey_images_are_what_the_client_sends():
    grey, labels = digits.heldout_grey_images()
    split = digits.load_image_split()
    assert grey.dtype == np.uint8 and grey.shape == (450, 8, 8)
    assert grey.min() == 0 and grey.max() == 255
    assert np.array_equal(labels, split.y_test)
    for position in (0, 5, 300):
        assert np.array_equal(digits.grey_to_rgb_resized(grey[position]), split.x_test[position])


def test_sequence_view_is_rows_scaled_to_unit_range():
    raw = load_digits().images
    _, test_idx = digits.split_indices()
    split = digits.load_sequence_split()
    assert split.x_train.dtype == np.float32 and split.x_train.shape == (1347, 8, 8)
    assert np.array_equal(split.x_test, (raw[test_idx] / 16).astype(np.float32))
    assert split.x_train.min() == 0.0 and split.x_train.max() == 1.0


# --- models -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_sequence_classifier_accepts_any_length(cell, bidirectional, num_layers):
    model = models.build_sequence_classifier(
        cell=cell, hidden_size=16, num_layers=num_layers, bidirectional=bidirectional, dropout=0.1
    ).eval()
    for steps in (1, 3, 17):
        assert model(torch.rand(4, steps, 8)).shape == (4, 10)


def test_bidirectional_head_reads_the_backward_state_after_the_whole_sequence():
    torch.manual_seed(0)
    model = models.build_sequence_classifier(cell="gru", hidden_size=8, bidirectional=True).eval()
    x = torch.rand(2, 5, 8)
    with torch.inference_mode():
        output, hidden = model.rnn(x)
    # The backward direction's final state is its output at t=0 (it ran from T-1 down to 0).
    assert torch.allclose(hidden[-1], output[:, 0, 8:])
    assert torch.allclose(hidden[-2], output[:, -1, :8])


def test_sequence_classifier_rejects_an_unknown_cell():
    with pytest.raises(ValueError, match="cell must be one of"):
        models.build_sequence_classifier(cell="rnn")


def test_normalisation_matches_the_exporters_formula():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    assert torch.allclose(models.normalize_uint8_images(images), expected)


# --- quick trainings --------------------------------------------------------------------------------------


def test_freeze_backbone_trains_only_fc(tmp_path):
    torch.manual_seed(1)
    init = tmp_path / "init.pt"
    torch.save(resnet18(num_classes=10).state_dict(), init)
    before = torch.load(init, weights_only=True)
    result = train.train_digits_resnet(
        tmp_path / "frozen.pt",
        epochs=1,
        freeze_backbone=True,
        progress=False,
        init_checkpoint=init,
        max_train_samples=128,
    )
    after = torch.load(result.checkpoint, weights_only=True)
    assert after.keys() == before.keys()
    # Parameters and BatchNorm buffers alike: a frozen backbone is not touched.
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"fc.weight", "fc.bias"}
    assert result.freeze_backbone and result.init_checkpoint == str(init)


def test_resnet_short_run_with_a_lone_trailing_sample_and_another_size(tmp_path):
    # 65 samples = one batch of 64 and one of 1, which BatchNorm cannot train on.
    result = train.train_digits_resnet(
        tmp_path / "small.pt", epochs=1, progress=False, image_size=16, max_train_samples=65
    )
    assert result.image_size == 16 and result.test_samples == 450 and not result.freeze_backbone
    resnet18(num_classes=10).load_state_dict(torch.load(result.checkpoint, weights_only=True))


def test_same_seed_same_weights(tmp_path):
    first = train.train_digits_sequence(
        tmp_path / "a.pt", cell="gru", epochs=1, progress=False, max_train_samples=256
    )
    second = train.train_digits_sequence(
        tmp_path / "b.pt", cell="gru", epochs=1, progress=False, max_train_samples=256
    )
    a, b = (torch.load(r.checkpoint, weights_only=True) for r in (first, second))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert first.accuracy == second.accuracy


def test_training_leaves_the_callers_torch_state_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train.train_digits_sequence(
        tmp_path / "m.pt", cell="lstm", epochs=1, progress=False, max_train_samples=64
    )
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_sidecar_round_trips_and_notices_a_changed_checkpoint(tmp_path):
    result = train.train_digits_sequence(
        tmp_path / "m.pt", cell="lstm", epochs=1, progress=False, max_train_samples=64
    )
    sidecar = json.loads(train.sidecar_path(result.checkpoint).read_text())
    assert sidecar["factory"] == "ortserve.export.recipes.models:build_sequence_classifier"
    assert sidecar["label_names"] == [str(d) for d in range(10)] and sidecar["seed"] == 0
    assert train.load_train_result(result.checkpoint) == result
    torch.save({}, result.checkpoint)
    assert train.load_train_result(result.checkpoint) is None


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_trains_and_prints_one_summary_line(tmp_path, capsys):
    out = tmp_path / "gru.pt"
    assert cli.main(["digits-gru", "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("digits-gru: held-out accuracy ")
    assert str(out) in lines[0] and train.load_train_result(out) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["digits-lstm", "--out", "x.pt", "--freeze-backbone"],
        ["digits-gru", "--out", "x.pt", "--image-size", "16"],
        ["digits-resnet", "--out", "x.pt", "--epochs", "0"],
        ["digits-cnn", "--out", "x.pt"],
        ["digits-resnet"],
    ],
)
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "ortserve train: error:" in capsys.readouterr().err


def test_package_and_cli_import_without_torch():
    code = (
        "import sys, ortserve.export.recipes, ortserve.export.recipes.cli; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- the real trainings (slow) ----------------------------------------------------------------------------


# The trainings are the session-wide ones (tests/digits_models.py), shared with the export, client and
# quickstart tests.
@pytest.fixture
def resnet_result(trained_digits):
    return trained_digits.resnet


@pytest.fixture(params=["lstm", "gru"])
def sequence_result(request, trained_digits):
    return getattr(trained_digits, request.param)


@pytest.mark.slow
# About a minute on 2 idle cores, but the fixture's training counts against this test's timeout and
# shared cores have stretched it past the project's 600 s default.
@pytest.mark.timeout(1800)
def test_resnet_reaches_target_and_loads_into_plain_torchvision(resnet_result):
    print(resnet_result.summary())
    assert resnet_result.accuracy >= RESNET_TARGET
    state = torch.load(resnet_result.checkpoint, weights_only=True)
    model = resnet18(num_classes=10)
    model.load_state_dict(state)  # strict: a plain torchvision state_dict, no prefixes, nothing missing
    split = digits.load_image_split(resnet_result.image_size)
    inputs = models.normalize_uint8_images(torch.from_numpy(split.x_test))
    assert _heldout_accuracy(model, inputs, split.y_test) == pytest.approx(resnet_result.accuracy)
    assert (resnet_result.factory, resnet_result.factory_kwargs) == (
        "torchvision.models:resnet18",
        {"num_classes": 10},
    )
    assert train.load_train_result(resnet_result.checkpoint) == resnet_result


@pytest.mark.slow
def test_sequence_model_reaches_target_and_loads_from_its_factory_kwargs(sequence_result):
    print(sequence_result.summary(), json.dumps(sequence_result.factory_kwargs))
    assert sequence_result.accuracy >= SEQUENCE_TARGET
    sidecar = json.loads(train.sidecar_path(sequence_result.checkpoint).read_text())
    model = models.build_sequence_classifier(**sidecar["factory_kwargs"])
    model.load_state_dict(torch.load(sequence_result.checkpoint, weights_only=True))
    split = digits.load_sequence_split()
    accuracy = _heldout_accuracy(model, torch.from_numpy(split.x_test), split.y_test)
    assert accuracy == pytest.approx(sequence_result.accuracy)
    with torch.inference_mode():
        for steps in (1, 3, 17):
            assert model(torch.rand(5, steps, 8)).shape == (5, 10)
