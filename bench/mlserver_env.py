"""MLServer's own virtual environment (bench/.venv-mlserver) and its server settings.

MLServer 1.7.1 cannot share ortserve's environment: it needs protobuf < 7, and uvloop < 0.22 or its workers
fail to start. The harness creates the venv on request (`--with-mlserver`), from PyPI, once.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

VENV = Path(__file__).resolve().parent / ".venv-mlserver"
REQUIREMENTS = ("mlserver==1.7.1", "onnxruntime", "protobuf<7", "uvloop<0.22")


def python() -> Path:
    return VENV / "bin" / "python"


def exists() -> bool:
    return (VENV / "bin" / "mlserver").is_file()


def create() -> None:
    """python -m venv + pip install of REQUIREMENTS (minutes; needs PyPI)."""
    logger.info("creating %s with %s (one time)", VENV, " ".join(REQUIREMENTS))
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python()), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)


def version() -> str | None:
    if not exists():
        return None
    result = subprocess.run(
        [
            str(python()),
            "-c",
            "import mlserver, onnxruntime; print(mlserver.__version__, onnxruntime.__version__)",
        ],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or None


def write_settings(
    root: Path, grpc_port: int, http_port: int, metrics_port: int, parallel_workers: int
) -> None:
    """ROOT/settings.json: loopback only, our ports; parallel_workers 0 = inference in the server process."""
    settings = {
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))


def command(root: Path) -> list[str]:
    return [str(VENV / "bin" / "mlserver"), "start", str(root)]
