"""deploy/kubernetes.yaml with kubernetes-validate: offline (the schemas it bundles), and strict for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_dockerfile import MANIFEST, validate_python  # noqa: E402, F401 - the venv fixture


def _validate(python: Path, manifest: Path, *, offline: bool) -> subprocess.CompletedProcess:
    command = [str(python), "-m", "kubernetes_validate", "--strict", "--quiet", str(manifest)]
    if offline:
        command = ["unshare", "--map-root-user", "--net", *command]  # no network interface but loopback
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_validates_without_network(validate_python):  # noqa: F811 - the imported fixture
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.skip("cannot make a network namespace here (unshare -rn)")
    run = _validate(validate_python, MANIFEST, offline=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_an_unknown_field_is_refused(validate_python, tmp_path):  # noqa: F811 - the imported fixture
    text = MANIFEST.read_text(encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n", 1), encoding="utf-8")
    run = _validate(validate_python, broken, offline=False)
    assert run.returncode != 0 and "replicaz" in run.stdout + run.stderr, run.stdout + run.stderr
