"""Dynamic batching under concurrency (row-for-row correctness) and metrics scraped from /metrics."""

from __future__ import annotations

import numpy as np
import onnx_models as models
import onnxruntime as ort
from kserve import outputs, request, sample, scrape

from ortserve.protos import grpc_service_pb2 as pb


def test_64_concurrent_mixed_batches_match_onnxruntime_row_for_row(client, server):
    reference = ort.InferenceSession(
        models.linear_classifier().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(3)
    sent, merged = 0, 0.0
    for _ in range(5):  # concurrency is not timing: another round if every request happened to run alone
        inputs = [rng.standard_normal((int(rng.integers(1, 9)), 4)).astype(np.float32) for _ in range(64)]
        futures = [client.ModelInfer.future(request("classifier_batching", {"input": x})) for x in inputs]
        sent += len(futures)
        for x, future in zip(inputs, futures, strict=True):
            got = outputs(future.result(timeout=60))
            logits, probabilities = reference.run(["logits", "probabilities"], {"input": x})
            assert got["logits"].shape == (x.shape[0], 3)
            np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
        samples = scrape(server.metrics_url)
        batches = sample(samples, "ortserve_inference_batch_size_count", model="classifier_batching")
        single_rows = sample(
            samples, "ortserve_inference_batch_size_bucket", model="classifier_batching", le="1.0"
        )
        merged = sent - batches  # requests that shared a batch with another one
        if merged > 0 and batches > single_rows:
            break
    assert batches - single_rows > 0, "the batch-size histogram shows no batch larger than 1"
    assert merged > 0, f"{sent} requests ran in {batches} batches: nothing was merged"
    stats = client.ModelStatistics(pb.ModelStatisticsRequest(name="classifier_batching")).model_stats[0]
    assert stats.execution_count == batches
    assert all(b.batch_size <= 8 for b in stats.batch_stats)


def test_different_time_lengths_never_share_a_padded_batch(client):
    rng = np.random.default_rng(4)
    inputs = [
        rng.standard_normal((int(rng.integers(1, 4)), int(rng.choice([2, 3, 5])), 2)).astype(np.float32)
        for _ in range(32)
    ]
    futures = [client.ModelInfer.future(request("time_series", {"x": x})) for x in inputs]
    for x, future in zip(inputs, futures, strict=True):
        np.testing.assert_array_equal(outputs(future.result(timeout=60))["y"], x * 2)


def test_metrics_agree_with_the_requests_sent(client, server):
    rows = [1, 2, 3, 4, 5]
    for n in rows:
        client.ModelInfer(request("classifier_metrics", {"input": np.zeros((n, 4), np.float32)}))
    for _ in range(2):
        try:
            client.ModelInfer(request("classifier_metrics", {"input": np.zeros((1, 5), np.float32)}))
        except Exception:  # noqa: BLE001 - the refusal is what is being counted
            pass
    samples = scrape(server.metrics_url)
    labels = {"model": "classifier_metrics", "version": "1"}
    assert sample(samples, "ortserve_inference_request_success_total", **labels) == 5
    assert (
        sample(samples, "ortserve_inference_request_failure_total", reason="invalid_argument", **labels) == 2
    )
    assert sample(samples, "ortserve_inference_count_total", **labels) == sum(rows)
    executions = sample(samples, "ortserve_inference_exec_count_total", **labels)
    assert 1 <= executions <= 5
    assert sample(samples, "ortserve_inference_batch_size_count", **labels) == executions
    assert sample(samples, "ortserve_inference_batch_size_sum", **labels) == sum(rows)
    assert sample(samples, "ortserve_inference_request_duration_seconds_count", **labels) == 5
    assert sample(samples, "ortserve_inference_queue_duration_seconds_count", **labels) == 5
    assert sample(samples, "ortserve_inference_compute_infer_duration_seconds_count", **labels) == 5
    assert sample(samples, "ortserve_inference_pending_request_count", **labels) == 0
    assert sample(samples, "ortserve_model_ready", provider="CPUExecutionProvider", **labels) == 1
    assert sample(samples, "process_resident_memory_bytes") > 0
    assert sample(samples, "process_cpu_seconds_total") > 0
