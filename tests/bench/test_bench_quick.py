"""The benchmark harness runs end to end in --quick mode: every contender answers, every file is written.

MLServer is left out (--without-mlserver): its venv is a PyPI download of a few hundred MB, too slow and heavy
for CI; `python -m bench.run --quick --with-mlserver` covers it by hand. No timing assertions: speed is what
the harness reports, not what a test on a shared machine can judge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GRPC_CONTENDERS = {"ortserve_batching", "ortserve_nobatching", "bare"}
RAW_CONTENDERS = {"raw_ort_b1", "raw_ort_best"}
MODELS = {"resnet18_uint8", "lstm"}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_run_without_mlserver(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "bench.run", "--quick", "--without-mlserver", "--out", str(out)]
    # Small images and short windows keep it near a minute on 2 cores; one open-loop cell per contender.
    # The provider sweep's image size: its resnet18_uint8 export comes from the cache this run fills.
    command += ["--image-size", "32", "--window", "1", "--warmup", "0.3", "--open-loop-fraction", "0.5"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    records = results["records"]
    assert {r["model"] for r in records} == MODELS
    for model in MODELS:
        seen = {r["contender"] for r in records if r["model"] == model}
        assert seen == GRPC_CONTENDERS | RAW_CONTENDERS, model
        for concurrency in (1, 8):
            cells = {
                r["contender"]
                for r in records
                if r["model"] == model and r["mode"] == "closed" and r["concurrency"] == concurrency
            }
            assert cells == GRPC_CONTENDERS, (model, concurrency)
        assert {
            r["contender"] for r in records if r["model"] == model and r["mode"] == "open"
        } == GRPC_CONTENDERS
    for record in records:
        assert record.get("errors", 0) == 0, record
        assert record.get("completed", record.get("runs")) > 0, record
        if record["mode"] != "direct":
            assert record["server"]["cpu_s"] >= 0 and record["server"]["peak_rss_bytes"] > 0, record
        if record["contender"].startswith("ortserve"):  # from ortserve's own statistics
            assert record["server"]["busy_fraction"] > 0 and record["server"]["mean_batch"] >= 1, record

    wire = results["wire"]
    assert wire["resnet18_float32"]["tensor_bytes"] == 4 * wire["resnet18_uint8"]["tensor_bytes"]
    for key in ("cpu_model", "logical_cores", "versions", "load_average_start"):
        assert key in results["machine"]
    assert {t["status"] for t in results["targets"]} <= {"PASS", "FAIL", "NOT MEASURED"}

    markdown = (out / "results.md").read_text()
    for label in (
        "ortserve, dynamic batching on",
        "ortserve, batching off",
        "bare grpc.aio server",
        "raw onnxruntime",
    ):
        assert label in markdown
    assert "## Targets" in markdown and "Bytes on the wire" in markdown


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_provider_sweep_on_the_cpu(tmp_path: Path) -> None:
    """The CUDA sweep's code path, run on the CPU provider: raw onnxruntime and ortserve at every batch
    size, fp32 and fp16 exports, dynamic batching cells, the report's tables."""
    out = tmp_path / "provider"
    command = [sys.executable, "-m", "bench.run", "--provider", "cpu", "--quick", "--out", str(out)]
    command += ["--image-size", "32", "--window", "0.5", "--warmup", "0.2", "--batch-concurrency", "1,2"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    assert results["config"]["precision"] == {"resnet18_uint8": "fp32", "resnet18_uint8_fp16": "fp16"}
    cells = {(r["model"], r["contender"], r["batch"], r["concurrency"]) for r in results["summary"]}
    for model in ("resnet18_uint8", "resnet18_uint8_fp16"):
        for batch in (1, 4, 16):
            assert (model, "raw_ort", batch, 1) in cells
            assert {(model, "ortserve_nobatching", batch, c) for c in (1, 2)} <= cells
        assert {(model, "ortserve_batching", 1, c) for c in (1, 8)} <= cells
    for row in results["summary"]:
        assert row["errors"] == 0 and row["rows_per_s"] > 0, row
    markdown = (out / "results.md").read_text()
    assert "cpu execution provider" in markdown and "## fp16 against fp32" in markdown
    assert "| 16 |" in markdown and "x raw best (batch" in markdown


def test_provider_sweep_refuses_a_missing_provider(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA, so --provider cuda would run")
    command = [sys.executable, "-m", "bench.run", "--provider", "cuda", "--out", str(tmp_path / "cuda")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "CUDAExecutionProvider" in result.stderr and "onnxruntime-gpu" in result.stderr
    assert not (tmp_path / "cuda" / "results.json").exists()
