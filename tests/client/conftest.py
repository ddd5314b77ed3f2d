"""Client test fixtures: one real ortserve server (explicit model control) over the client test repository."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from ortserve.client import InferenceClient

# tests/ holds the shared test helpers (serverproc, onnx_models); make them importable however pytest was
# started (a tests/conftest.py would do it too, but `pytest tests/client` must not depend on one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client_repository import write_repository  # noqa: E402
from serverproc import start_server  # noqa: E402


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("client-repository"))


@pytest.fixture(scope="session")
def server(repository: Path):
    with start_server(repository, "--model-control-mode", "explicit", "--load-model", "*") as running:
        yield running


@pytest.fixture(scope="session")
def address(server) -> str:
    return server.grpc_address


@pytest.fixture
def client(address: str):
    with InferenceClient(address, timeout=60) as connected:
        yield connected


@pytest.fixture
def dead_address() -> str:
    """An address nothing listens on (a port the OS just handed out and took back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
