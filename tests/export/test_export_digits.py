"""The trained digits models, exported with validation, agree with PyTorch on every held-out sample."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from digits_models import GRU_NAME, LSTM_NAME, RESNET_NAME

from ortserve.export.recipes import digits, models

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _onnx_predictions(path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: inputs})
    return logits.argmax(axis=1)


def _torch_predictions(model, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(inputs).argmax(dim=1).numpy()


def test_resnet_export_predicts_the_same_class_for_every_heldout_digit(trained_digits):
    split = digits.load_image_split(trained_digits.resnet.image_size)
    expected = _torch_predictions(
        trained_digits.torch_model("resnet"), models.normalize_uint8_images(torch.from_numpy(split.x_test))
    )
    served = _onnx_predictions(trained_digits.repository / RESNET_NAME / "1" / "model.onnx", split.x_test)
    assert len(served) == 450
    assert np.array_equal(served, expected), f"{int((served != expected).sum())} of 450 differ"
    assert np.mean(served == split.y_test) >= 0.95


@pytest.mark.parametrize(("which", "name"), [("lstm", LSTM_NAME), ("gru", GRU_NAME)])
def test_sequence_export_predicts_the_same_class_for_every_heldout_digit(trained_digits, which, name):
    split = digits.load_sequence_split()
    expected = _torch_predictions(trained_digits.torch_model(which), torch.from_numpy(split.x_test))
    served = _onnx_predictions(trained_digits.repository / name / "1" / "model.onnx", split.x_test)
    assert np.array_equal(served, expected), f"{int((served != expected).sum())} of 450 differ"
    assert np.mean(served == split.y_test) >= 0.93
