"""`ortserve serve` settings: flags, ORTSERVE_* env (flags win), start-up validation with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import parse_listening, start_server

from ortserve.serve.cli import main
from ortserve.serve.settings import SettingsError, load_settings


def test_flags_win_over_environment(tmp_path):
    env = {"ORTSERVE_MODEL_REPOSITORY": str(tmp_path), "ORTSERVE_GRPC_PORT": "9001",
           "ORTSERVE_METRICS_PORT": "9002", "ORTSERVE_ALLOW_METRICS": "false", "ORTSERVE_LOAD_MODEL": "a,b",
           "ORTSERVE_MODEL_CONTROL_MODE": "explicit"}  # fmt: skip
    settings = load_settings(["--grpc-port", "7001"], env)
    assert settings.model_repository == str(tmp_path)
    assert (settings.grpc_port, settings.metrics_port, settings.allow_metrics) == (7001, 9002, False)
    assert settings.load_model == ("a", "b")
    assert load_settings(["--model-repository", str(tmp_path)], {}).grpc_port == 8001
    assert (
        load_settings(
            ["--model-repository", str(tmp_path), "--max-message-bytes", "1024"], {}
        ).max_message_bytes
        == 1024
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--model-repository is required"),
        (["--model-repository", "/no/such/dir"], "is not a directory"),
        (["--grpc-port", "70000"], "--grpc-port 70000 is out of range"),
        (["--model-control-mode", "poll"], "--model-control-mode 'poll' is not one of"),
        (["--load-model", "x"], "--load-model needs --model-control-mode explicit"),
        (["--grpc-use-ssl"], "--grpc-server-cert is required"),
        (["--grpc-use-ssl-mutual"], "needs --grpc-use-ssl"),
        (
            ["--grpc-use-ssl", "--grpc-server-cert", "/nope.pem", "--grpc-server-key", "/nope.key"],
            "is not a file",
        ),
        (["--log-level", "LOUD"], "--log-level 'LOUD' is not one of"),
    ],
)
def test_invalid_settings_exit_2_with_one_line(tmp_path, capsys, args, message):
    if args and args[0] != "--model-repository":
        args = ["--model-repository", str(tmp_path), *args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_bad_environment_value_is_named(tmp_path):
    with pytest.raises(SettingsError, match="ORTSERVE_GRPC_PORT"):
        load_settings(["--model-repository", str(tmp_path)], {"ORTSERVE_GRPC_PORT": "eighty"})


def test_module_entry_point_reports_settings_errors():
    result = subprocess.run(
        [sys.executable, "-m", "ortserve.serve", "--model-repository", "/no/such/dir"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "ortserve serve: error: --model-repository '/no/such/dir' is not a directory" in result.stderr
    assert result.stdout == ""


def test_parse_listening_line():
    assert parse_listening("ORTSERVE_LISTENING grpc=127.0.0.1:1 metrics=none") == ("127.0.0.1:1", None)
    assert parse_listening("ORTSERVE_LISTENING grpc=h:1 metrics=h:2\n") == ("h:1", "h:2")


def test_metrics_can_be_disabled_and_env_configures_the_server(tmp_path):
    models.write_model(tmp_path, "classifier", models.linear_classifier())
    with start_server(
        tmp_path, env={"ORTSERVE_ALLOW_METRICS": "false", "ORTSERVE_LOG_VERBOSE": "1"}
    ) as server:
        assert server.metrics_url is None
        x = np.ones((1, 4), np.float32)
        outputs(stub(server.grpc_address).ModelInfer(request("classifier", {"input": x})))
        assert "DEBUG" in server.stderr()
