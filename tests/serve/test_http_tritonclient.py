"""REST conformance through Triton's own HTTP client (`tritonclient[http]`), binary and JSON tensors.

Runs `tritonclient_http_checks.py` in the tritonclient venv (the one the gRPC conformance test builds),
against a real server per model-control mode; each check is one test here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tritonclient_conformance import (  # noqa: F401 - the fixtures repository and tritonclient_python
    LINEAR_SPEC,
    TWO_OUTPUTS_SPEC,
    repository,
    run_checks_script,
    tritonclient_python,
)
from tritonclient_http_checks import CHECK_NAMES  # only the names: tritonclient is not imported

CHECKS_SCRIPT = Path(__file__).resolve().parent / "tritonclient_http_checks.py"


@pytest.fixture(scope="module")
def report(tritonclient_python, repository, tmp_path_factory) -> dict[str, dict]:  # noqa: F811 - imported
    spec = {"linear": LINEAR_SPEC, "two_outputs": TWO_OUTPUTS_SPEC}
    spec_dir = tmp_path_factory.mktemp("tritonclient-http-spec")
    return run_checks_script(tritonclient_python, CHECKS_SCRIPT, spec, repository, spec_dir, "http_address")


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_tritonclient_http(report, check):
    assert check in report, f"the checks script did not report {check!r}"
    entry = report[check]
    assert entry["ok"], f"{check}: {entry['detail']}\n{entry['logs']}"
