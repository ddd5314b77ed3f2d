"""Wiring: grpc.aio (TLS/mTLS), the REST and metrics listeners, model loading, signals, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from .errors import ServeError
from .health import HealthReporter
from .http_api import HttpApi
from .layouts import LayoutError
from .metrics import ServerMetrics
from .model import LoadOptions
from .repository import ModelRepository
from .service import InferenceServicer
from .settings import ServerSettings
from .tls import TlsError, server_credentials

log = logging.getLogger(__name__)

EXIT_TIMED_OUT = 1
"""Exit code when --exit-timeout-secs passed with requests still running (they were cancelled)."""
LINGER_S = 0.5
"""After the drain, how long RPCs still get UNAVAILABLE before grpc stops: the last answers go out, and a
client that sends again right after one gets UNAVAILABLE (retried) rather than a call that grpc's stop,
having received it, cancels (CANCELLED)."""

# (grpc "host:port", metrics "host:port" or None, http "host:port" or None)
ListeningCallback = Callable[[str, str | None, str | None], None]


class StartupError(RuntimeError):
    """A listener could not be set up (port taken, bad certificate...)."""


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """One running ortserve: repository, gRPC server, health, metrics. Create it inside the event loop."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.started = False
        self.registry = CollectorRegistry()
        self.metrics = ServerMetrics(self.registry)
        self.health = HealthReporter()
        self._tasks: set[asyncio.Task] = set()
        options = LoadOptions(
            settings.strict_model_config,
            settings.default_max_batch_size,
            max_request_memory_bytes=settings.max_request_memory_bytes,
        )
        try:
            self.repository = ModelRepository(
                Path(settings.model_repository),
                self.metrics,
                options,
                self._changed,
                model_name=settings.model_name,
                strict_config_fields=settings.strict_config_fields,
            )
        except LayoutError as exc:
            raise StartupError(str(exc)) from None
        limit = settings.max_message_bytes
        self.grpc = grpc.aio.server(
            options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        )
        servicer = InferenceServicer(self.repository, settings.model_control_mode == "explicit", self.ready)
        servicer.add_to(self.grpc)
        self.admission = servicer.admission
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.grpc)
        self._metrics_http = None
        self.http = (
            HttpApi(self.repository, servicer.explicit_control, self.ready, limit)
            if settings.allow_http
            else None
        )

    def ready(self) -> bool:
        """ServerReady: start-up done and (with strict readiness) every wanted model ready."""
        return self.started and (not self.settings.strict_readiness or self.repository.is_ready())

    def _changed(self) -> None:
        task = asyncio.get_running_loop().create_task(
            self.health.update(self.ready(), self.repository.ready_names())
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def bind(self) -> tuple[str, str | None]:
        """Bind both listeners; return their actual host:port (metrics None when disabled)."""
        settings = self.settings
        address = host_port(settings.grpc_address, settings.grpc_port)
        try:
            if settings.grpc_use_ssl:
                port = self.grpc.add_secure_port(address, server_credentials(settings))
            else:
                port = self.grpc.add_insecure_port(address)
        except TlsError as exc:
            raise StartupError(str(exc)) from None
        except RuntimeError as exc:
            raise StartupError(f"cannot listen for gRPC on {address}: {exc}") from None
        if not port:
            raise StartupError(f"cannot listen for gRPC on {address}")
        metrics_address = None
        if settings.allow_metrics:
            try:
                self._metrics_http, _ = start_http_server(
                    settings.metrics_port, settings.metrics_address, registry=self.registry
                )
            except OSError as exc:
                raise StartupError(
                    "cannot listen for metrics on "
                    f"{host_port(settings.metrics_address, settings.metrics_port)}: {exc}"
                ) from None
            metrics_address = host_port(settings.metrics_address, self._metrics_http.server_port)
        return host_port(settings.grpc_address, port), metrics_address

    async def start_http(self) -> str | None:
        """Start the REST listener on this loop; return its actual host:port (None when disabled)."""
        if self.http is None:
            return None
        address, port = self.settings.http_address, self.settings.http_port
        try:
            bound = await self.http.start(address, port, self.settings.exit_timeout_secs)
        except OSError as exc:
            raise StartupError(f"cannot listen for HTTP on {host_port(address, port)}: {exc}") from None
        return host_port(address, bound)

    def models_to_load(self) -> list[str]:
        names = self.repository.model_names()
        if self.settings.model_control_mode == "none" or "*" in self.settings.load_model:
            return names
        return list(dict.fromkeys(self.settings.load_model))

    async def load_models(self) -> None:
        """Load the start-up models concurrently; failures are logged and shown in the index."""
        results = await asyncio.gather(
            *(self.repository.load(name) for name in self.models_to_load()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, ServeError):
                log.debug("start-up load failed: %s", result)  # the repository logged the reason
            elif isinstance(result, BaseException):
                log.error("start-up load failed", exc_info=result)

    async def run(self, on_listening: ListeningCallback) -> int:
        """Serve until SIGTERM/SIGINT, then shut down gracefully; return the exit code."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def first_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            log.info("%s: shutting down; a second SIGTERM or SIGINT exits at once", name)
            for other in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(other)
                signal.signal(other, signal.SIG_DFL)  # the kernel ends the process, however busy it is
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, first_signal, signum)
        grpc_address, metrics_address = self.bind()
        await self.grpc.start()
        try:
            http_address = await self.start_http()
            await self.load_models()
            self.started = True
            self._changed()
            log.info(
                "serving gRPC on %s, HTTP on %s, metrics on %s",
                grpc_address,
                http_address or "none",
                metrics_address or "none",
            )
            on_listening(grpc_address, metrics_address, http_address)
            await stop.wait()
        finally:
            clean = await self.shutdown()
        return 0 if clean else EXIT_TIMED_OUT

    async def shutdown(self) -> bool:
        """Refuse new RPCs (UNAVAILABLE), close idle streams, let admitted RPCs finish within
        exit_timeout_secs, then release everything. False when the timeout cut work short."""
        timeout = self.settings.exit_timeout_secs
        deadline = time.monotonic() + timeout
        log.info("shutting down: %d RPCs in flight get up to %g s", self.admission.active, timeout)
        self.started = False  # ServerReady and /v2/health/ready say no from here on
        self.admission.close()
        await self.health.shutdown()
        # REST stops listening, then drains its requests within the same timeout, beside gRPC's drain.
        http_stopping = asyncio.ensure_future(self.http.stop()) if self.http is not None else None
        drained = await self.admission.drained(timeout)
        if not drained:
            log.warning("exit timeout: %d RPCs still in flight get UNAVAILABLE", self.admission.active)
            self.admission.cut_short()
        await asyncio.sleep(LINGER_S)
        await self.grpc.stop(0)
        if http_stopping is not None:
            await http_stopping
        try:
            await asyncio.wait_for(self.repository.unload_all(), max(deadline - time.monotonic(), LINGER_S))
        except asyncio.TimeoutError:
            log.warning("exit timeout: models still running are left to the process exit")
            drained = False
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        log.info("stopped" if drained else "stopped (exit timeout)")
        return drained


async def serve(settings: ServerSettings, on_listening: ListeningCallback) -> int:
    """Create the server inside the running loop (grpc.aio needs that) and run it until a signal."""
    return await Server(settings).run(on_listening)
