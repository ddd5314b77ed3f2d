"""Shared fixtures: tiny ONNX model repositories and a real server process (see tests/serverproc.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from digits_models import TrainedDigits  # noqa: E402
from serverproc import start_server  # noqa: E402


@pytest.fixture(scope="session")
def start_ortserve():
    """`start_server(repository, *args, env=None)`: a context manager running a real server."""
    return start_server


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> TrainedDigits:
    """Real digits checkpoints (ResNet, LSTM, GRU) and their exported repository, made once, on demand."""
    return TrainedDigits(tmp_path_factory.mktemp("digits"))
