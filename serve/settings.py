"""Typed server settings, from command-line flags and `ORTSERVE_*` environment variables (flags win).

Flag names follow Triton's where Triton has one (`--grpc-port`, `--model-control-mode`...). Nothing is
parsed at import time; `load_settings(argv, environ)` builds and validates a `ServerSettings`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ortserve.protos.repository_layout import model_name_problem

ENV_PREFIX = "ORTSERVE_"
CONTROL_MODES = ("none", "explicit")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting is invalid; the message is one line meant for the operator."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything `ortserve serve` can be told."""

    model_repository: str = ""
    """A repository root (NAME/config.pbtxt, NAME/VERSION/model.onnx), one model folder or a bare .onnx."""
    model_name: str = ""
    """Name to serve one model folder or bare .onnx file under (default: the folder's name)."""
    grpc_address: str = "127.0.0.1"
    """Address the gRPC (KServe v2) listener binds to."""
    grpc_port: int = 8001
    """Port of the gRPC listener; 0 picks a free port."""
    http_address: str = "127.0.0.1"
    """Address the HTTP/REST (KServe v2) listener binds to."""
    http_port: int = 8000
    """Port of the HTTP/REST listener; 0 picks a free port."""
    allow_http: bool = True
    """Serve KServe v2 over HTTP/REST beside gRPC (true|false)."""
    metrics_address: str = "127.0.0.1"
    """Address the Prometheus /metrics listener binds to."""
    metrics_port: int = 8002
    """Port of the Prometheus /metrics listener; 0 picks a free port."""
    allow_metrics: bool = True
    """Serve Prometheus metrics over HTTP (true|false)."""
    model_control_mode: str = "none"
    """none: load every model at start; explicit: load/unload through the repository API."""
    load_model: tuple[str, ...] = ()
    """Model to load at start in explicit mode (repeatable; '*' loads all)."""
    strict_model_config: bool = False
    """Require a complete config.pbtxt instead of completing it from the ONNX model."""
    strict_config_fields: bool = False
    """Refuse to load a model whose config.pbtxt sets fields or parameters ortserve does not honour."""
    strict_readiness: bool = True
    """ServerReady is true only when every model that should be loaded is ready."""
    default_max_batch_size: int = 32
    """max_batch_size given to auto-completed models whose inputs all have a dynamic first dimension."""
    exit_timeout_secs: float = 30.0
    """Seconds admitted requests get after SIGTERM/SIGINT (new ones: UNAVAILABLE); bounds the whole exit."""
    grpc_use_ssl: bool = False
    """Serve gRPC over TLS (needs --grpc-server-cert and --grpc-server-key)."""
    grpc_use_ssl_mutual: bool = False
    """Require client certificates signed by --grpc-root-cert (mTLS)."""
    grpc_server_cert: str = ""
    """PEM file with the server certificate chain."""
    grpc_server_key: str = ""
    """PEM file with the server private key."""
    grpc_root_cert: str = ""
    """PEM file with the CA certificates that client certificates must chain to."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted or sent, in bytes."""
    max_request_memory_bytes: int = 1 << 30
    """Refuse a request whose estimated intermediate memory exceeds this many bytes (0 = no limit)."""
    log_level: str = "INFO"
    """Log level on stderr: DEBUG, INFO, WARNING or ERROR."""
    log_verbose: int = 0
    """Triton-style verbosity; any value above 0 means DEBUG logging."""

    def validate(self) -> ServerSettings:
        """Check the settings together; raise SettingsError with a one-line message on the first problem."""
        repo = Path(self.model_repository)
        if not self.model_repository:
            raise SettingsError("--model-repository is required")
        if not repo.is_dir():
            raise SettingsError(f"--model-repository {self.model_repository!r} is not a directory")
        problem = model_name_problem(self.model_name) if self.model_name else None
        if problem:
            raise SettingsError(f"--model-name {self.model_name[:80]!r} is not a valid model name: {problem}")
        for name in ("grpc_port", "http_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"--{_flag(name)} {port} is out of range 0..65535")
        if self.model_control_mode not in CONTROL_MODES:
            raise SettingsError(
                f"--model-control-mode {self.model_control_mode!r} is not one of {', '.join(CONTROL_MODES)}"
            )
        if self.load_model and self.model_control_mode != "explicit":
            raise SettingsError("--load-model needs --model-control-mode explicit")
        if self.default_max_batch_size < 1:
            raise SettingsError(
                f"--default-max-batch-size must be at least 1, got {self.default_max_batch_size}"
            )
        if self.exit_timeout_secs < 0:
            raise SettingsError(f"--exit-timeout-secs must be >= 0, got {self.exit_timeout_secs}")
        if self.max_message_bytes <= 0:
            raise SettingsError(f"--max-message-bytes must be positive, got {self.max_message_bytes}")
        if self.max_request_memory_bytes < 0:
            raise SettingsError(
                f"--max-request-memory-bytes must be >= 0 (0 = no limit), got {self.max_request_memory_bytes}"
            )
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"--log-level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        self._validate_tls()
        return self

    def _validate_tls(self) -> None:
        if self.grpc_use_ssl_mutual and not self.grpc_use_ssl:
            raise SettingsError("--grpc-use-ssl-mutual needs --grpc-use-ssl")
        if not self.grpc_use_ssl:
            return
        needed = ["grpc_server_cert", "grpc_server_key"] + (
            ["grpc_root_cert"] if self.grpc_use_ssl_mutual else []
        )
        for name in needed:
            path = getattr(self, name)
            if not path:
                raise SettingsError(f"--{_flag(name)} is required with --grpc-use-ssl")
            if not Path(path).is_file():
                raise SettingsError(f"--{_flag(name)} {path!r} is not a file")
        if self.grpc_root_cert and not Path(self.grpc_root_cert).is_file():
            raise SettingsError(f"--grpc-root-cert {self.grpc_root_cert!r} is not a file")

    @property
    def logging_level(self) -> int:
        """The `logging` level these settings ask for."""
        return logging.DEBUG if self.log_verbose > 0 else getattr(logging, self.log_level.upper())


def _flag(name: str) -> str:
    return name.replace("_", "-")


def parse_bool(text: str) -> bool:
    """Parse true/false the way Triton's flags do (also 1/0, yes/no, on/off)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _field_docs() -> dict[str, str]:
    """The one-line docstrings under each ServerSettings field, for --help."""
    try:
        tree = ast.parse(inspect.getsource(ServerSettings))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, following in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            value = following.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs[node.target.id] = value.value
    return docs


def _converter(field_: dataclasses.Field):
    kind = str(field_.type)
    if kind == "bool":
        return parse_bool
    if kind == "int":
        return int
    if kind == "float":
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `ortserve serve`; every flag defaults to 'not given' so env can fill in."""
    parser = argparse.ArgumentParser(
        prog="ortserve serve",
        description="Serve a Triton-layout ONNX model repository over KServe v2 (gRPC and REST) with "
        "onnxruntime. "
        f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG_NAME> (flags win).",
        argument_default=argparse.SUPPRESS,
    )
    docs = _field_docs()
    for field_ in dataclasses.fields(ServerSettings):
        flag = f"--{_flag(field_.name)}"
        help_ = f"{docs.get(field_.name, '')} (env {ENV_PREFIX}{field_.name.upper()})"
        if field_.name == "load_model":
            parser.add_argument(flag, action="append", metavar="NAME", help=help_)
        elif str(field_.type) == "bool":
            parser.add_argument(
                flag, type=parse_bool, nargs="?", const=True, metavar="true|false", help=help_
            )
        else:
            parser.add_argument(flag, type=_converter(field_), help=help_)
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Settings from flags, then `ORTSERVE_*` env, then defaults; validated. Raises SettingsError."""
    environ = os.environ if environ is None else environ
    given = vars(build_parser().parse_args(list(argv)))
    values = {}
    for field_ in dataclasses.fields(ServerSettings):
        env_name = f"{ENV_PREFIX}{field_.name.upper()}"
        if field_.name in given:
            value = given[field_.name]
        elif environ.get(env_name, "") != "":
            try:
                value = _from_env(field_, environ[env_name])
            except ValueError as exc:
                raise SettingsError(f"{env_name}: {exc}") from None
        else:
            continue
        values[field_.name] = tuple(value) if field_.name == "load_model" else value
    return ServerSettings(**values).validate()


def _from_env(field_: dataclasses.Field, text: str):
    if field_.name == "load_model":
        return [item.strip() for item in text.split(",") if item.strip()]
    return _converter(field_)(text)
