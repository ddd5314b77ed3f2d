"""The int8 verdicts: each *_int8 model against its fp32 export, served and raw, 2x for ResNet-18 at 8."""

from __future__ import annotations

from bench import report


def _row(model: str, contender: str, rps: float, concurrency: int | None = None) -> dict:
    mode = "direct" if contender.startswith("raw_") else "closed"
    return {
        "model": model,
        "contender": contender,
        "mode": mode,
        "concurrency": concurrency,
        "throughput_rps": rps,
        "p50_ms": 1000.0 / rps,
    }


def test_int8_targets_compare_each_int8_model_with_its_fp32_export() -> None:
    summary = [
        _row("resnet18_uint8", "ortserve_batching", 10.0, 8),
        _row("resnet18_uint8_int8", "ortserve_batching", 25.0, 8),
        _row("resnet18_uint8", "ortserve_batching", 10.0, 1),
        _row("resnet18_uint8_int8", "ortserve_batching", 9.0, 1),
        _row("resnet18_uint8", "raw_ort_best", 12.0),
        _row("resnet18_uint8_int8", "raw_ort_best", 30.0),
    ]
    verdicts = {v["target"]: v for v in report.evaluate_targets(summary, {})}
    at8 = verdicts["resnet18_uint8_int8, 8 in flight: ortserve int8 >= 2 x fp32 throughput"]
    assert (at8["value"], at8["status"]) == (2.5, "PASS")
    at1 = verdicts["resnet18_uint8_int8, 1 in flight: ortserve int8 >= 1 x fp32 throughput"]
    assert at1["status"] == "FAIL"
    raw = verdicts["resnet18_uint8_int8: raw onnxruntime, best batch (no gRPC) int8 >= 1.0 x fp32"]
    assert (raw["value"], raw["status"]) == (2.5, "PASS")
    missing = verdicts["resnet18_uint8_int8: raw onnxruntime, batch 1 (no gRPC) int8 >= 1.0 x fp32"]
    assert missing["status"] == "NOT MEASURED"
