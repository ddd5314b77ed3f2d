"""grpc.health.v1: the overall status ("") follows ServerReady, and each model name its readiness."""

from __future__ import annotations

from collections.abc import Mapping

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Owns the health servicer and keeps its statuses in step with the repository."""

    def __init__(self):
        self.servicer = health.aio.HealthServicer()
        self._known: set[str] = set()

    async def update(self, server_ready: bool, models: Mapping[str, bool]) -> None:
        """Set the overall status and one status per model name (NOT_SERVING once it has no ready version)."""
        await self.servicer.set(health.OVERALL_HEALTH, SERVING if server_ready else NOT_SERVING)
        for name in self._known - set(models):
            await self.servicer.set(name, NOT_SERVING)
        for name, ready in models.items():
            await self.servicer.set(name, SERVING if ready else NOT_SERVING)
        self._known |= set(models)

    async def shutdown(self) -> None:
        """Everything NOT_SERVING, for good (new statuses are ignored)."""
        await self.servicer.enter_graceful_shutdown()
