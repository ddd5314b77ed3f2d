"""The client works with the oldest releases it supports: a fresh venv with only those, against the server.

The project is built as a wheel from a copy of its sources (with this venv's setuptools, no build
isolation) and installed without dependencies next to the pinned releases; the check script then runs in
that venv, outside the source tree, against the server that runs from the main venv. The venv is made
without pip (ensurepip alone takes longer than the rest) and filled by this venv's pip (`pip --python`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("oldest_pins_check.py")
GRPCIO, PROTOBUF, NUMPY, PILLOW = "1.66.2", "5.27.2", "1.24.4", "10.0.0"
SOURCES = ("pyproject.toml", "README.md", "clients", "protos", "export", "serve")
NETWORK_ERRORS = (
    "NewConnectionError",
    "Could not fetch URL",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeoutError",
)


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def old_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("oldest-pins")
    context = work / "src"
    context.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                  "--wheel-dir", str(work / "dist"), str(context)], cwd=work)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("ortserve-*.whl")

    venv = work / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    pins = [f"grpcio=={GRPCIO}", f"protobuf=={PROTOBUF}", f"numpy=={NUMPY}", f"pillow=={PILLOW}"]
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    installed = _run([*pip, *pins], cwd=work)
    if installed.returncode != 0 and any(marker in installed.stderr for marker in NETWORK_ERRORS):
        pytest.skip(f"pip cannot reach the package index to install {' '.join(pins)}")
    assert installed.returncode == 0, installed.stderr
    project = _run([*pip, "--no-deps", str(wheel)], cwd=work)
    assert project.returncode == 0, project.stderr
    return python


def test_client_with_oldest_supported_releases(old_python: Path, address: str, tmp_path: Path):
    result = _run([str(old_python), str(CHECK), address, GRPCIO, PROTOBUF, NUMPY], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"OK grpcio={GRPCIO} protobuf={PROTOBUF} numpy={NUMPY}"
