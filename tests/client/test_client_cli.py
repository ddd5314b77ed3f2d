"""The `ortserve` client subcommands, run as the console script and through `main()`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import client_reference as reference
import numpy as np
import pytest
from client_repository import LABELS, SEQUENCE_FEATURES

from ortserve.client import commands

ORTSERVE = Path(sys.executable).with_name("ortserve")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ORTSERVE), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_models_command(address: str):
    result = run_cli("models", "--url", address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "REASON"]
    assert any(line.split()[:3] == ["image_u8", "1", "READY"] for line in lines[1:])


def test_url_from_the_environment(address: str):
    result = run_cli("health", env={"ORTSERVE_URL": address})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "server live: yes\nserver ready: yes\n"


def test_classify_command(address: str, tmp_path: Path):
    photo, digit = tmp_path / "photo.jpg", tmp_path / "digit.png"
    reference.photo().save(photo)
    from PIL import Image

    Image.fromarray(reference.digit_image(), "L").save(digit)
    result = run_cli(
        "classify", "--url", address, "--model", "image_u8", "--top-k", "3", str(photo), str(digit)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "RANK", "LABEL", "SCORE"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:2] for row in rows] == [[str(photo), "1"], [str(photo), "2"], [str(photo), "3"]] + [
        [str(digit), "1"],
        [str(digit), "2"],
        [str(digit), "3"],
    ]
    assert all(row[2] in LABELS and 0 <= float(row[3]) <= 1 for row in rows)


def test_infer_command_through_main(address: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    sequence = np.arange(2 * 3 * SEQUENCE_FEATURES, dtype=np.float32).reshape(2, 3, SEQUENCE_FEATURES)
    np.save(tmp_path / "sequence.npy", sequence)
    argv = ["--url", address, "--model", "sequence", "--input", f"sequence={tmp_path / 'sequence.npy'}"]
    code = commands.main([*argv, "--output", "summary", "--save-dir", str(tmp_path / "out")], command="infer")
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[1].split()[:4] == ["summary", "[2,", "4]", "float32"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "summary.npy"), sequence.sum(axis=1))
    # A bare FILE.npy feeds a one-input model; every output comes back.
    assert (
        commands.main(
            ["--url", address, "--model", "sequence", "--input", str(tmp_path / "sequence.npy")], "infer"
        )
        == 0
    )
    assert {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]} == {"summary", "steps"}


def test_health_command_with_model(address: str, capsys: pytest.CaptureFixture):
    assert commands.main(["--url", address, "--model", "image_u8"], command="health") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "model image_u8 ready: yes"


def test_server_error_is_one_line_and_exit_1(address: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    image = tmp_path / "digit.png"  # never read: the model is looked up first
    code = commands.main(["--url", address, "--model", "no_such_model", str(image)], command="classify")
    err = capsys.readouterr().err
    assert code == 1
    assert (
        err.startswith("ortserve classify: NOT_FOUND: ") and err.count("\n") == 1 and "no_such_model" in err
    )


def test_bad_input_is_one_line_and_exit_1(address: str, tmp_path: Path):
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 2, 2), np.float64))
    result = run_cli(
        "infer", "--url", address, "--model", "image_u8", "--input", f"image={tmp_path / 'wrong.npy'}"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ortserve infer: INVALID_ARGUMENT: ") and result.stderr.count("\n") == 1


def test_missing_file_is_one_line_and_exit_1(address: str, tmp_path: Path):
    result = run_cli("classify", "--url", address, "--model", "image_u8", str(tmp_path / "missing.png"))
    assert result.returncode == 1
    assert (
        result.stderr.startswith("ortserve classify: FileNotFoundError: ") and result.stderr.count("\n") == 1
    )


def test_connection_failure_is_one_line_without_traceback(dead_address: str):
    result = run_cli("health", "--url", dead_address, "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr.startswith("ortserve health: UNAVAILABLE: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2():
    result = run_cli("classify", "--top-k", "3")
    assert result.returncode == 2 and "--model" in result.stderr
    assert commands.main(["--help"], command="models") == 0
