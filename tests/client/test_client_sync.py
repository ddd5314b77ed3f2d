"""InferenceClient against the real server: every method, classify and predict_sequences end to end."""

from __future__ import annotations

import io

import client_reference as reference
import numpy as np
import pytest
from client_repository import IMAGE_MAX_BATCH, IMAGE_SIZE, LABELS, SEQUENCE_FEATURES
from PIL import Image

from ortserve.client import InferenceClient, ModelIndexEntry


def test_health(client: InferenceClient):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("image_u8") is True
    assert client.is_model_ready("image_u8", version=1) is True


def test_keepalive_options_are_accepted(address: str):
    with InferenceClient(address, keepalive_time_ms=60_000, keepalive_permit_without_calls=True) as client:
        assert client.is_server_live() is True


def test_server_and_model_metadata(client: InferenceClient):
    server = client.server_metadata()
    assert server.name and "classification" in server.extensions
    metadata = client.model_metadata("image_u8")
    assert metadata.name == "image_u8" and "1" in metadata.versions
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("image", "UINT8", [-1, 3, IMAGE_SIZE, IMAGE_SIZE])
    ]


def test_model_config(client: InferenceClient):
    config = client.model_config("image_u8", version="1")
    assert config.max_batch_size == IMAGE_MAX_BATCH
    assert config.output[0].label_filename == "labels.txt"
    assert "preprocessing" in config.parameters


def test_model_statistics(client: InferenceClient):
    client.infer("sequence", {"sequence": np.ones((1, 2, SEQUENCE_FEATURES), np.float32)})
    stats = client.model_statistics("sequence")
    assert [s.name for s in stats.model_stats] == ["sequence"]
    assert stats.model_stats[0].inference_count >= 1


def test_models_lists_the_repository(client: InferenceClient):
    entries = client.models()
    assert all(isinstance(e, ModelIndexEntry) for e in entries)
    by_name = {e.name: e for e in entries}
    assert {"image_u8", "image_f32", "sequence", "slow", "spare"} <= set(by_name)
    assert by_name["image_u8"].state == "READY"


def test_unload_and_load(client: InferenceClient):
    client.unload_model("spare")
    assert client.is_model_ready("spare") is False
    assert {e.name: e.state for e in client.models()}.get("spare") != "READY"
    client.load_model("spare")
    assert client.is_model_ready("spare") is True
    assert "spare" in {e.name for e in client.models(ready_only=True)}


def test_infer_with_named_inputs_and_output_selection(client: InferenceClient):
    sequence = np.arange(3 * SEQUENCE_FEATURES, dtype=np.float32).reshape(1, 3, SEQUENCE_FEATURES)
    outputs = client.infer("sequence", {"sequence": sequence})
    assert set(outputs) == {"summary", "steps"}
    np.testing.assert_allclose(outputs["summary"], sequence.sum(axis=1))
    assert outputs["steps"].shape == (1, 3, SEQUENCE_FEATURES) and outputs["steps"].dtype == np.float32
    only = client.infer("sequence", {"sequence": sequence}, outputs=["steps"], version=1)
    assert set(only) == {"steps"}
    np.testing.assert_array_equal(only["steps"], sequence * 2)
    only["steps"][0, 0, 0] = -1  # results are ordinary writable arrays


def test_infer_with_one_array_uses_the_model_input_name(client: InferenceClient):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    probabilities = client.infer("image_u8", pixels)["probabilities"]
    assert probabilities.shape == (2, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_infer_large_tensors_beyond_grpc_default_limit(client: InferenceClient):
    # 8 MB each way: above gRPC's 4 MiB default receive limit, below the 64 MiB both sides use.
    sequence = np.ones((1, 500_000, SEQUENCE_FEATURES), np.float32)
    steps = client.infer("sequence", {"sequence": sequence}, outputs=["steps"])["steps"]
    assert steps.shape == sequence.shape and float(steps[0, -1, -1]) == 2.0


@pytest.mark.parametrize("model", ["image_u8", "image_f32"])
def test_classify_grey_digit(client: InferenceClient, repository, model):
    grey = reference.digit_image()
    expected = reference.top_k(repository, model, reference.fit(Image.fromarray(grey, "L")), 3)
    result = client.classify(model, grey, top_k=3)
    assert [label for label, _ in result] == [label for label, _ in expected]
    np.testing.assert_allclose([s for _, s in result], [s for _, s in expected], atol=2e-6)


@pytest.mark.parametrize("model", ["image_u8", "image_f32"])
def test_classify_photo_resizes_and_crops(client: InferenceClient, repository, model):
    photo = reference.photo()
    expected = reference.top_k(repository, model, reference.fit(photo), 5)
    result = client.classify(model, photo)
    assert len(result) == 5 and all(isinstance(label, str) for label, _ in result)
    assert [label for label, _ in result] == [label for label, _ in expected]
    np.testing.assert_allclose([s for _, s in result], [s for _, s in expected], atol=2e-6)


def test_classify_every_image_kind_in_one_list(client: InferenceClient, repository, tmp_path):
    photo = reference.photo()
    path = tmp_path / "photo.png"
    photo.save(path)
    encoded = io.BytesIO()
    photo.save(encoded, format="PNG")
    rgba = np.asarray(photo.convert("RGBA"))
    items = [str(path), path, encoded.getvalue(), photo, np.asarray(photo), rgba, reference.digit_image()]
    assert len(items) > IMAGE_MAX_BATCH  # more than one request
    results = client.classify("image_u8", items, top_k=2)
    assert len(results) == len(items)
    photo_top = reference.top_k(repository, "image_u8", reference.fit(photo), 2)
    for result in results[:-1]:
        assert [label for label, _ in result] == [label for label, _ in photo_top]
    digit_top = reference.top_k(
        repository, "image_u8", reference.fit(Image.fromarray(reference.digit_image())), 2
    )
    assert [label for label, _ in results[-1]] == [label for label, _ in digit_top]


def test_classify_a_list_of_one_gives_a_list_of_lists(client: InferenceClient):
    results = client.classify("image_u8", [reference.digit_image()], top_k=1)
    assert len(results) == 1 and len(results[0]) == 1 and results[0][0][0] in LABELS


def test_predict_sequences_keeps_input_order(client: InferenceClient):
    rng = np.random.default_rng(7)
    lengths = [5, 1, 3, 5, 5, 2, 3, 5, 1, 5, 4]  # five of length 5: more than max_batch_size in one group
    sequences = [rng.normal(size=(n, SEQUENCE_FEATURES)).astype(np.float32) for n in lengths]
    summaries = client.predict_sequences("sequence", sequences)
    assert len(summaries) == len(sequences)
    for sequence, summary in zip(sequences, summaries, strict=True):
        np.testing.assert_allclose(summary, sequence.sum(axis=0), rtol=1e-5, atol=1e-6)
    steps = client.predict_sequences("sequence", [s.astype(np.float64) for s in sequences], output="steps")
    for sequence, step in zip(sequences, steps, strict=True):
        np.testing.assert_allclose(step, sequence * 2, rtol=1e-6)


def test_predict_sequences_rejects_a_wrong_feature_count(client: InferenceClient):
    with pytest.raises(ValueError, match=r"sequence 1 .* expected \[T, 4\]"):
        client.predict_sequences("sequence", [np.zeros((2, 4)), np.zeros((2, 3))])
