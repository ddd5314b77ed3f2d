"""A short, count-bounded atheris run of the request decoder's fuzz target (long run: its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris (dev extra) is not installed for this Python")

TARGET = Path(__file__).with_name("fuzz_decode_request.py")
DICTIONARY = Path(__file__).with_name("decode_request.dict")
RUNS = 20_000


def test_decoder_survives_a_short_fuzz_run(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(TARGET), "--seeds", str(corpus)], check=True, timeout=120)
    command = [
        sys.executable, str(TARGET), f"-runs={RUNS}", "-seed=1", "-max_len=4096", "-rss_limit_mb=2048",
        f"-dict={DICTIONARY}", f"-artifact_prefix={tmp_path}/", str(corpus),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-4000:]
