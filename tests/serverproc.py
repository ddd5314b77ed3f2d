"""Run a real `ortserve serve` process for a test and find where it listens.

    with start_server(repo, "--model-control-mode", "explicit") as server:
        channel = grpc.insecure_channel(server.grpc_address)
        ...

The server is started with `--grpc-port 0 --http-port 0 --metrics-port 0` (free ports) and is ready once it
prints its start-up line `ORTSERVE_LISTENING grpc=HOST:PORT metrics=HOST:PORT|none http=HOST:PORT|none` on
stdout (models loaded or failed by then; older servers print no http=). Its stderr goes to a file whose
text is in every failure message. On exit the process gets SIGTERM (then SIGKILL after `stop_timeout`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

LISTENING = "ORTSERVE_LISTENING"


@dataclass
class ServerProcess:
    """A started server: its addresses, the Popen object and its stderr so far."""

    process: subprocess.Popen
    grpc_address: str
    metrics_address: str | None
    stderr_path: Path
    http_address: str | None = None

    @property
    def http_url(self) -> str | None:
        """http://HOST:PORT of the REST listener, or None when it is disabled."""
        return f"http://{self.http_address}" if self.http_address else None

    @property
    def metrics_url(self) -> str | None:
        """http://HOST:PORT/metrics, or None when metrics are disabled."""
        return f"http://{self.metrics_address}/metrics" if self.metrics_address else None

    def stderr(self) -> str:
        """The server's log so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (SIGKILL after `timeout`); return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def parse_listening(line: str) -> tuple[str, str | None]:
    """(grpc address, metrics address or None) from the start-up line."""
    fields = _listening_fields(line)
    return fields["grpc"], fields["metrics"]


def parse_http_address(line: str) -> str | None:
    """The REST address from the start-up line (None when disabled, or from a server without REST)."""
    return _listening_fields(line)["http"]


def _listening_fields(line: str) -> dict[str, str | None]:
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return {
        "grpc": fields["grpc"],
        **{key: None if fields.get(key, "none") == "none" else fields[key] for key in ("metrics", "http")},
    }


@contextlib.contextmanager
def start_server(
    repository: str | os.PathLike,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
    stop_timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """Start `python -m ortserve.serve` on the repository with free ports; yield once it listens."""
    command = [
        sys.executable, "-m", "ortserve.serve",
        "--model-repository", str(repository), "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0",
        *args,
    ]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    with tempfile.NamedTemporaryFile("wb", prefix="ortserve-", suffix=".log", delete=False) as log_file:
        stderr_path = Path(log_file.name)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, env=full_env, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    server = None
    try:
        server = _wait_listening(process, lines, stderr_path, timeout, command)
        yield server
    finally:
        if server is not None:
            server.stop(stop_timeout)
        elif process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            stderr_path.unlink()


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_listening(process, lines: queue.Queue, stderr_path: Path, timeout: float, command) -> ServerProcess:
    def failure(why: str) -> RuntimeError:
        log = stderr_path.read_text(encoding="utf-8", errors="replace")
        return RuntimeError(f"ortserve {why}\ncommand: {' '.join(command)}\n--- server stderr ---\n{log}")

    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            process.kill()
            raise failure(f"printed no {LISTENING} line within {timeout:.0f} s") from None
        if line is None:
            raise failure(f"exited with code {process.wait()} before listening")
        if line.startswith(LISTENING):
            grpc_address, metrics_address = parse_listening(line)
            return ServerProcess(
                process, grpc_address, metrics_address, stderr_path, parse_http_address(line)
            )
