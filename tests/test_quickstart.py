"""The README's main command, in its short mode, reusing the session's trained checkpoints."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_quickstart_short_reuses_checkpoints_and_agrees_with_pytorch(trained_digits, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for result in (trained_digits.resnet, trained_digits.lstm):
        for path in (result.checkpoint, result.checkpoint + ".json"):
            shutil.copy(path, checkpoints)
    command = [
        sys.executable,
        "-m",
        "ortserve.client.cli",
        "quickstart",
        "--short",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "reusing" in out and "served acc" in out
    for name in ("digits_resnet", "digits_lstm"):
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert " yes " in row, row
    streamed = next(line for line in out.splitlines() if line.startswith("digits_lstm_stream: streamed"))
    assert "100 sequences row by row (8 steps each)" in streamed and "matches" in streamed, streamed
    assert "at 800 of 800 steps" in streamed, streamed
    assert "/metrics" in out and "server stopped (exit code 0)" in out
    assert (tmp_path / "model_repository" / "digits_resnet" / "1" / "model.onnx").is_file()
    assert (tmp_path / "model_repository" / "digits_lstm" / "config.pbtxt").is_file()
    assert (tmp_path / "model_repository" / "digits_lstm_stream" / "1" / "model.onnx").is_file()


def test_quickstart_int8_reports_int8_beside_fp32(trained_digits, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for result in (trained_digits.resnet, trained_digits.lstm):
        for path in (result.checkpoint, result.checkpoint + ".json"):
            shutil.copy(path, checkpoints)
    command = [sys.executable, "-m", "ortserve.client.cli", "quickstart", "--short", "--precision", "int8"]
    command += ["--grpc-port", "0", "--metrics-port", "0"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "int8 agreement" in out  # the export summary's proof
    for name in ("digits_resnet", "digits_resnet_int8", "digits_lstm"):
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert " yes " in row, row
    config = (tmp_path / "model_repository" / "digits_resnet_int8" / "config.pbtxt").read_text()
    assert 'string_value: "int8"' in config


def test_accuracy_gate_counts_samples_not_float_differences():
    from ortserve.export.quickstart import ServedAccuracy

    def gate(served: float, pytorch: float, tolerance: float) -> bool:
        return ServedAccuracy("m", 100, served, pytorch, 1.0, np.zeros(1), tolerance=tolerance).agrees

    # One sample of 100 is exactly the int8 tolerance (in floats 0.97 - 0.96 > 0.01).
    assert gate(0.97, 0.96, 0.01)
    assert not gate(0.98, 0.96, 0.01)
    assert not gate(0.97, 0.96, 0.005)
