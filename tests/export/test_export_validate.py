"""The validator: it compares at every shape, collects every mismatch and refuses frozen time axes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from export_models import FrozenTime, FrozenTimeDataDependent, files_under, make_rnn

from ortserve.export.api import export_model
from ortserve.export.errors import ValidationError
from ortserve.export.onnx_export import export_onnx
from ortserve.export.spec import ExportSpec
from ortserve.export.validate import compare, validate_onnx


def test_compare_criterion_is_allclose() -> None:
    spec = ExportSpec.sequence(5, 4, atol=1e-4, rtol=1e-3)
    torch_out = np.array([[1000.0, 0.0]], dtype=np.float32)
    within = compare(np.array([[1000.5, 5e-5]], dtype=np.float32), torch_out, spec, [1, 5, 4], "output")
    assert within.ok and within.max_abs == pytest.approx(0.5) and within.max_rel == pytest.approx(5e-4)
    outside = compare(np.array([[1000.0, 2e-4]], dtype=np.float32), torch_out, spec, [1, 5, 4], "output")
    assert not outside.ok and "max abs error 0.0002" in outside.problem and "1 of 2 values" in outside.problem
    shape = compare(np.zeros((2, 2), np.float32), torch_out, spec, [1, 5, 4], "output")
    assert not shape.ok and "shape [2, 2] differs from PyTorch's [1, 2]" in shape.problem


def test_validator_collects_every_mismatch(tmp_path: Path) -> None:
    spec = ExportSpec.sequence(5, 6)
    exported, other = make_rnn(), make_rnn()
    torch.nn.init.constant_(other.fc.bias, 1.0)
    attempt = export_onnx(exported.eval(), torch.randn(3, 5, 6), spec, "torchscript", tmp_path, 1)
    with pytest.raises(ValidationError) as info:
        validate_onnx(attempt.path, other.eval(), spec, exporter="torchscript", trace_shape=(3, 5, 6))
    error = info.value
    assert len(error.mismatches) == 16  # 4 batch sizes x 4 time lengths, all reported at once
    assert all("max abs error" in line for line in error.mismatches)
    assert "batch 32, time length 64" in str(error)
    assert not error.report.ok and len(error.report.checks) == 16


def test_frozen_time_axis_is_refused_with_torchscript(repo: Path) -> None:
    spec = ExportSpec.sequence(10, 4, exporter="torchscript")
    with pytest.raises(ValidationError) as info:
        export_model(FrozenTime(), spec, repository=repo, name="frozen")
    message = str(info.value)
    for length in (1, 3, 17, 64):
        assert f"time length {length}" in message
    assert "onnxruntime failed: Reshape node" in message
    assert "TracerWarning" in message  # the exporter's own hint travels with the refusal
    assert files_under(repo) == {}


@pytest.mark.slow
def test_frozen_time_axis_after_dynamo_failure_is_refused(repo: Path) -> None:
    with pytest.raises(ValidationError) as info:
        export_model(FrozenTimeDataDependent(), ExportSpec.sequence(10, 4), repository=repo, name="frozen")
    message = str(info.value)
    assert "dynamo exporter failed" in message  # why it fell back
    assert "[torchscript] batch 7, time length 17 (input [7, 17, 4]): onnxruntime failed" in message
    assert files_under(repo) == {}


def test_frozen_time_axis_is_refused_with_auto(repo: Path) -> None:
    # torch 2.14's dynamo exporter specialises the axes that int(x.shape[i]) reads, without raising.
    with pytest.raises(ValidationError) as info:
        export_model(FrozenTime(), ExportSpec.sequence(10, 4), repository=repo, name="frozen")
    message = str(info.value)
    assert "axis 1 (time) should be dynamic but was exported with the fixed size 10" in message
    assert "[torchscript] batch 2, time length 3 (input [2, 3, 4]): onnxruntime failed" in message
    assert files_under(repo) == {}
