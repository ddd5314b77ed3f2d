"""AsyncInferenceClient against the real server: every method, and many calls in flight on one channel."""

from __future__ import annotations

import asyncio

import client_reference as reference
import grpc
import numpy as np
import pytest
from client_repository import IMAGE_SIZE, SEQUENCE_FEATURES, SLOW_SIZE

from ortserve.client import AsyncInferenceClient, InferenceServerError, RetryPolicy


def test_every_method(address: str):
    async def scenario() -> None:
        async with AsyncInferenceClient(address, timeout=60) as client:
            assert await client.is_server_live() is True
            assert await client.is_server_ready() is True
            assert await client.is_model_ready("image_u8", version=1) is True
            assert "classification" in (await client.server_metadata()).extensions
            assert (await client.model_metadata("image_u8")).inputs[0].name == "image"
            assert (await client.model_config("image_u8")).max_batch_size > 0
            assert {"image_u8", "sequence", "spare"} <= {e.name for e in await client.models()}
            await client.unload_model("spare")
            assert await client.is_model_ready("spare") is False
            await client.load_model("spare")
            assert await client.is_model_ready("spare") is True

            pixels = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
            assert (await client.infer("image_u8", pixels))["probabilities"].shape == (1, 10)
            assert set(
                await client.infer("sequence", {"sequence": np.ones((2, 3, 4), np.float32)}, ["steps"])
            ) == {"steps"}
            assert (await client.model_statistics("image_u8")).model_stats[0].name == "image_u8"

            top = await client.classify("image_u8", reference.photo(), top_k=3)
            assert len(top) == 3
            both = await client.classify("image_u8", [reference.digit_image()] * 6, top_k=2)
            assert len(both) == 6 and all(row == both[0] for row in both)

            sequences = [np.full((n, SEQUENCE_FEATURES), n, np.float32) for n in (4, 1, 4, 2, 4, 4, 1)]
            summaries = await client.predict_sequences("sequence", sequences)
            for sequence, summary in zip(sequences, summaries, strict=True):
                np.testing.assert_allclose(summary, sequence.sum(axis=0))

    asyncio.run(scenario())


def test_classify_matches_the_sync_reference(address: str, repository):
    async def scenario():
        async with AsyncInferenceClient(address) as client:
            return await client.classify("image_f32", reference.photo(), top_k=4)

    expected = reference.top_k(repository, "image_f32", reference.fit(reference.photo()), 4)
    assert [label for label, _ in asyncio.run(scenario())] == [label for label, _ in expected]


def test_32_concurrent_calls_each_get_their_own_answer(address: str):
    rng = np.random.default_rng(3)
    sequences = [rng.normal(size=(1, 1 + i % 5, SEQUENCE_FEATURES)).astype(np.float32) for i in range(32)]

    async def scenario():
        async with AsyncInferenceClient(address, timeout=60) as client:
            return await asyncio.gather(
                *(client.infer("sequence", {"sequence": s}, ["summary"]) for s in sequences)
            )

    results = asyncio.run(scenario())
    assert len(results) == 32
    for sequence, result in zip(sequences, results, strict=True):
        np.testing.assert_allclose(result["summary"], sequence.sum(axis=1), rtol=1e-5, atol=1e-6)


def test_errors(address: str, dead_address: str):
    async def scenario():
        async with AsyncInferenceClient(address) as client:
            with pytest.raises(InferenceServerError) as not_found:
                await client.model_metadata("no_such_model")
            with pytest.raises(InferenceServerError) as deadline:
                await client.infer("slow", {"x": np.ones((1, SLOW_SIZE), np.float32)}, timeout=0.01)
        async with AsyncInferenceClient(dead_address, retries=RetryPolicy(initial_backoff_s=0.01)) as client:
            with pytest.raises(InferenceServerError) as down:
                await client.is_server_live()
        return not_found.value, deadline.value, down.value

    not_found, deadline, down = asyncio.run(scenario())
    assert not_found.code == grpc.StatusCode.NOT_FOUND and "no_such_model" in not_found.message
    assert deadline.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert down.code == grpc.StatusCode.UNAVAILABLE and down.attempts == 3
    assert isinstance(down.__cause__, grpc.RpcError)
