"""REST conformance through Triton's own HTTP client (`tritonclient[http]`), binary and JSON tensors.

Runs `tritonclient_http_checks.py` in the tritonclient venv (the one the gRPC conformance test builds),
against a real server per model-control mode; each check is one test here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_models import CLASSIFIER_BIAS, CLASSIFIER_WEIGHTS, add_two, linear_classifier, write_model
from serverproc import start_server
from test_tritonclient_conformance import CLASSIFIER_CONFIG, LABELS, tritonclient_python  # noqa: F401

CHECKS_SCRIPT = Path(__file__).resolve().parent / "tritonclient_http_checks.py"


def _check_names() -> list[str]:
    spec = importlib.util.spec_from_file_location("tritonclient_http_checks", CHECKS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.CHECK_NAMES


@pytest.fixture(scope="module")
def report(tritonclient_python, tmp_path_factory) -> dict[str, dict]:  # noqa: F811 - the imported fixture
    repository = tmp_path_factory.mktemp("tritonclient-http-repository")
    write_model(repository, "classifier", linear_classifier(), config=CLASSIFIER_CONFIG, labels=LABELS)
    write_model(repository, "add_two", add_two())
    spec = {
        "linear": {
            "name": "classifier",
            "input": "input",
            "output": "logits",
            "weight": CLASSIFIER_WEIGHTS.tolist(),
            "bias": CLASSIFIER_BIAS.tolist(),
            "labels": LABELS,
        },
        "two_outputs": {"name": "add_two", "inputs": ["a", "b"], "outputs": ["sum", "difference"]},
    }
    spec_path = tmp_path_factory.mktemp("tritonclient-http-spec") / "spec.json"
    with (
        start_server(repository) as server,
        start_server(repository, "--model-control-mode", "explicit") as explicit,
    ):
        spec.update(url=server.http_address, explicit_url=explicit.http_address)
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        run = subprocess.run(
            [str(tritonclient_python), str(CHECKS_SCRIPT), str(spec_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        logs = f"--- server stderr ---\n{server.stderr()[-3000:]}\n--- explicit server stderr ---\n"
        logs += explicit.stderr()[-3000:]
    try:
        entries = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"the checks script printed no report (exit {run.returncode}):\n{run.stderr[-5000:]}\n{logs}"
        )
    return {entry["name"]: {**entry, "logs": logs} for entry in entries}


@pytest.mark.parametrize("check", _check_names())
def test_tritonclient_http(report, check):
    assert check in report, f"the checks script did not report {check!r}"
    entry = report[check]
    assert entry["ok"], f"{check}: {entry['detail']}\n{entry['logs']}"
