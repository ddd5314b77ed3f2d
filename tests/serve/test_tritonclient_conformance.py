"""Conformance through an independent client: Triton's `tritonclient[grpc]` against a real ortserve.

tritonclient ships its own generated `inference` protos (which collide with ours in one process) and pins a
different protobuf, so it lives in its own virtual environment (`<repo>/.venv-tritonclient`, created once and
reused) and runs `tritonclient_checks.py` in a subprocess. The script reports every check as JSON; each check
is one test here, so a failure names the RPC and what differed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # tests/: the shared server fixtures

from onnx_models import CLASSIFIER_BIAS, CLASSIFIER_WEIGHTS, add_two, linear_classifier, write_model  # noqa: E402
from serverproc import start_server  # noqa: E402
from tritonclient_checks import CHECK_NAMES  # noqa: E402 - only the names: tritonclient is not imported

CHECKS_SCRIPT = HERE / "tritonclient_checks.py"
TRITONCLIENT_VENV = ROOT / ".venv-tritonclient"
# http too, for tests/serve/test_http_tritonclient.py (which shares this venv and its fixture).
REQUIREMENTS = ["tritonclient[grpc,http]", "numpy"]
PROBE = "import grpc, numpy, tritonclient.grpc, tritonclient.grpc.service_pb2_grpc, tritonclient.http"
LABELS = ["cat", "dog", "bird"]
FEATURES, CLASSES = CLASSIFIER_WEIGHTS.shape

CLASSIFIER_CONFIG = f"""
name: "classifier"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ {FEATURES} ] }} ]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {CLASSES} ] label_filename: "labels.txt" }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {CLASSES} ] }}
]
"""


def _venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def _usable(python: Path) -> bool:
    if not python.is_file():
        return False
    return subprocess.run([str(python), "-c", PROBE], capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """Python of a venv with tritonclient[grpc,http]: reused if it imports, else made (skip if pip can't)."""
    python = _venv_python(TRITONCLIENT_VENV)
    # Outside the checkout, so git sees nothing new; one lock per venv path.
    digest = hashlib.sha256(str(TRITONCLIENT_VENV).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"ortserve-venv-tritonclient-{digest}.lock"
    with open(lock_path, "w") as lock, contextlib.ExitStack() as release:
        # Several test sessions on one checkout must not build the venv at the same time.
        fcntl.flock(lock, fcntl.LOCK_EX)
        release.callback(fcntl.flock, lock, fcntl.LOCK_UN)
        if _usable(python):
            return python
        # No ensurepip (seconds of CPU): this venv's pip fills the new one (`pip --python`).
        venv.EnvBuilder(with_pip=False, clear=True).create(TRITONCLIENT_VENV)
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
        install = subprocess.run(
            [*pip, "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if install.returncode != 0:
            last = (install.stderr.strip().splitlines() or ["(no output)"])[-1]
            pytest.skip(f"cannot install {' '.join(REQUIREMENTS)} into {TRITONCLIENT_VENV} (pip: {last})")
        if not _usable(python):
            pytest.skip(f"{TRITONCLIENT_VENV} was created but `{PROBE}` fails in it")
        return python


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("tritonclient-repository")
    write_model(repo, "classifier", linear_classifier(), config=CLASSIFIER_CONFIG, labels=LABELS)
    write_model(repo, "add_two", add_two())  # no config.pbtxt: the server completes it from the model
    return repo


# What the served models compute, in the checks scripts' spec format (see tritonclient_checks.py).
LINEAR_SPEC = {
    "name": "classifier",
    "input": "input",
    "output": "logits",
    "weight": CLASSIFIER_WEIGHTS.tolist(),
    "bias": CLASSIFIER_BIAS.tolist(),
    "labels": LABELS,
}
TWO_OUTPUTS_SPEC = {"name": "add_two", "inputs": ["a", "b"], "outputs": ["sum", "difference"], "dims": [2]}


def run_checks_script(
    python: Path, script: Path, spec: dict, repository: Path, spec_dir: Path, address: str
) -> dict[str, dict]:
    """Run a checks script on `spec` against one server per model-control mode serving `repository`, at
    each server's `address` attribute (grpc_address or http_address); name -> {"ok", "detail", "logs"}."""
    spec_path = spec_dir / "spec.json"
    with (
        start_server(repository) as server,
        start_server(repository, "--model-control-mode", "explicit") as explicit,
    ):
        spec = {**spec, "url": getattr(server, address), "explicit_url": getattr(explicit, address)}
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        run = subprocess.run(
            [str(python), str(script), str(spec_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        logs = f"--- server stderr ---\n{server.stderr()[-3000:]}\n--- explicit server stderr ---\n"
        logs += explicit.stderr()[-3000:]
    try:
        entries = json.loads(run.stdout)
    except json.JSONDecodeError:
        why = f"exit {run.returncode}"
        pytest.fail(f"the checks script printed no report ({why}):\n{run.stderr[-5000:]}\n{logs}")
    return {entry["name"]: {**entry, "logs": logs} for entry in entries}


@pytest.fixture(scope="module")
def report(tritonclient_python, repository, tmp_path_factory) -> dict[str, dict]:
    """Run every check once, against one server per model-control mode; name -> {"ok", "detail"}."""
    spec = {"linear": {**LINEAR_SPEC, "softmax_output": "probabilities"}, "two_outputs": TWO_OUTPUTS_SPEC}
    spec_dir = tmp_path_factory.mktemp("tritonclient-spec")
    return run_checks_script(tritonclient_python, CHECKS_SCRIPT, spec, repository, spec_dir, "grpc_address")


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_tritonclient(report, check):
    assert check in report, f"the checks script did not report {check!r}"
    entry = report[check]
    assert entry["ok"], f"{check}: {entry['detail']}\n{entry['logs']}"
