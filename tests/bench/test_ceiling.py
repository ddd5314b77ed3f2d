"""bench.ceiling runs end to end: raw onnxruntime alone and beside the bare gRPC server under a paced load.
No timing assertions: the ratio is what the tool reports, not what a test on a shared machine can judge."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_round_reports_raw_alone_and_beside_the_transport() -> None:
    command = [sys.executable, "-m", "bench.ceiling", "--model", "resnet18_uint8", "--image-size", "32"]
    command += ["--rounds", "1", "--window", "1", "--raw-batch", "2"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    round_line = re.search(
        r"round 0: raw b2 alone ([\d.]+) rows/s; while the bare server answers ([\d.]+)", result.stderr
    )
    assert round_line and float(round_line[1]) > 0 and float(round_line[2]) > 0, result.stderr[-3000:]
    assert "over raw alone: median" in result.stderr, result.stderr[-3000:]
