"""Image recognition in one call on real trained models: every held-out digit through the real server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from digits_models import LSTM_NAME, RESNET_NAME

from ortserve.client import AsyncInferenceClient, InferenceClient
from ortserve.export.recipes import digits, models

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def digits_server(trained_digits, start_ortserve):
    with start_ortserve(trained_digits.repository) as server:
        yield server


def _pytorch_classes(trained_digits, count: int | None = None) -> np.ndarray:
    """The trained ResNet's predicted class for the first `count` held-out digits (all when None)."""
    split = digits.load_image_split(trained_digits.resnet.image_size)
    images = models.normalize_uint8_images(torch.from_numpy(split.x_test[:count]))
    with torch.no_grad():
        return trained_digits.torch_model("resnet")(images).argmax(dim=1).numpy()


def test_classify_heldout_digits_matches_pytorch_accuracy(trained_digits, digits_server):
    grey, labels = digits.heldout_grey_images()
    expected = _pytorch_classes(trained_digits)
    with InferenceClient(digits_server.grpc_address) as client:
        top = client.classify(RESNET_NAME, list(grey), top_k=3)
    predicted = np.array([int(ranked[0][0]) for ranked in top])
    assert all(len(ranked) == 3 for ranked in top)
    served_accuracy = float(np.mean(predicted == labels))
    assert served_accuracy >= 0.95
    assert abs(served_accuracy - float(np.mean(expected == labels))) <= 0.005
    assert np.array_equal(predicted, expected)


def test_predict_sequences_of_heldout_digits_in_order(trained_digits, digits_server):
    split = digits.load_sequence_split()
    # Cut some sequences short so lengths differ and requests are grouped by length.
    sequences = [row[: 8 - (i % 3)] for i, row in enumerate(split.x_test[:60])]
    model = trained_digits.torch_model("lstm")
    with torch.no_grad():
        expected = [model(torch.from_numpy(s[None])).numpy()[0] for s in sequences]
    with InferenceClient(digits_server.grpc_address) as client:
        served = client.predict_sequences(LSTM_NAME, sequences)
    assert len(served) == len(sequences)
    for got, want in zip(served, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_async_classify_concurrently_matches_pytorch(trained_digits, digits_server):
    grey, _ = digits.heldout_grey_images()
    expected = _pytorch_classes(trained_digits, 32)

    async def main():
        async with AsyncInferenceClient(digits_server.grpc_address) as client:
            return await asyncio.gather(*(client.classify(RESNET_NAME, g, top_k=1) for g in grey[:32]))

    results = asyncio.run(main())
    assert [int(r[0][0]) for r in results] == expected.tolist()
