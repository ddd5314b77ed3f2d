"""Fixtures of the server tests: the shared repository and one server process on it for the session."""

from __future__ import annotations

import pytest
from kserve import stub
from serverproc import start_server
from shared_repo import write_shared_repository


@pytest.fixture(scope="session")
def shared_repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("shared") / "models"
    write_shared_repository(repo)
    return repo


@pytest.fixture(scope="session")
def server(shared_repository):
    """One server (model control 'none') on the shared repository."""
    with start_server(shared_repository) as process:
        yield process


@pytest.fixture(scope="session")
def client(server):
    """A GRPCInferenceService stub connected to the shared server."""
    return stub(server.grpc_address)
