"""Exporter traps in recurrent models: GRU gate semantics, bidirectional and stacked LSTM/GRU, dynamic T."""

from pathlib import Path

import pytest
from export_models import make_rnn

from ortserve.export.api import export_model
from ortserve.export.spec import ExportSpec

CASES = {
    "gru": {"cell": "gru"},
    "lstm_bidirectional_2_layers": {"cell": "lstm", "num_layers": 2, "bidirectional": True},
    "gru_bidirectional_2_layers": {"cell": "gru", "num_layers": 2, "bidirectional": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_recurrent_models_validate_at_every_time_length(repo: Path, case: str) -> None:
    model = make_rnn(features=6, hidden=8, classes=4, **CASES[case])
    result = export_model(model, ExportSpec.sequence(10, 6), repository=repo, name=case)
    report = result.report
    assert report.ok
    assert {tuple(check.input_shape) for check in report.checks} == {
        (b, t, 6) for b in (1, 2, 7, 32) for t in (1, 3, 17, 64)
    }
    assert report.max_abs <= 1e-4
    assert result.inputs[0].dims == (-1, 6)  # the time axis stays dynamic in config.pbtxt
    assert result.outputs[0].dims == (4,)
    assert result.exporter in ("dynamo", "torchscript")
