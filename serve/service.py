"""The GRPCInferenceService servicer: each RPC converts the protobuf, calls the core, converts back.

Errors are mapped to gRPC statuses here, in `rpc`, and nowhere else.
"""

# ruff: noqa: N802 - the RPC method names are fixed by the protocol

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from importlib import metadata

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc

from .drain import CUT_SHORT, Admission
from .errors import (
    FailedPrecondition,
    InvalidArgument,
    ServeError,
    Unavailable,
    clip,
    served_error,
)
from .inference import infer
from .repository import ModelRepository
from .stream import StreamAnswers
from .wire import Undecodable, add_servicer

log = logging.getLogger(__name__)

SERVER_NAME = "ortserve"
EXTENSIONS = (
    "classification",
    "model_repository",
    "schedule_policy",
    "model_configuration",
    "statistics",
    "sequence",
    "sequence(string_id)",
)


def server_version() -> str:
    try:
        return metadata.version("ortserve")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def rpc(method):
    """Run a unary RPC (admitted, so shutdown can wait for it); abort with the error's status when it
    raises. An undecodable request is answered INVALID_ARGUMENT without calling the method."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            with self.admission.admit():
                if isinstance(request, Undecodable):
                    raise request.error()
                return await method(self, request, context)
        except asyncio.CancelledError:
            if not self.admission.cut:
                raise
            error = Unavailable(CUT_SHORT)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in served_error
            error = served_error(exc, method.__name__)
        await context.abort(error.code, str(error))

    return wrapper


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Triton gRPC over a ModelRepository."""

    def __init__(self, repository: ModelRepository, explicit_control: bool, server_ready: Callable[[], bool]):
        self.repository = repository
        self.explicit_control = explicit_control
        self.server_ready = server_ready
        self.admission = Admission()

    def add_to(self, server) -> None:
        """Register with a grpc.aio server (undecodable requests reach the methods as Undecodable)."""
        add_servicer(self, server, pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], pb)

    @rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.server_ready())

    @rpc
    async def ModelReady(self, request, context):
        try:
            self.repository.resolve(request.name, request.version)
        except (ServeError, ValueError):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @rpc
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS)

    @rpc
    async def ModelMetadata(self, request, context):
        model = self.repository.resolve(request.name, request.version)
        batch = [-1] if model.max_batch_size > 0 else []
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in self.repository.ready_versions(model.name)],
            platform=model.config.platform,
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=s.name, datatype=s.datatype, shape=batch + list(s.dims)
                )
                for s in model.inputs.values()
            ],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=s.name, datatype=s.datatype, shape=batch + list(s.dims)
                )
                for s in model.outputs.values()
            ],
        )

    @rpc
    async def ModelInfer(self, request, context):
        return await infer(self.repository, request, _deadline(context))

    async def ModelStreamInfer(self, request_iterator, context):
        """Requests of a stream run concurrently (so they can batch), queued in arrival order; each answer
        carries its id. The stream ends with a status once every request read is answered (stream.py)."""
        deadline = _deadline(context)

        async def respond(request):
            return pb.ModelStreamInferResponse(infer_response=await infer(self.repository, request, deadline))

        def fail(request, exc: Exception):
            return pb.ModelStreamInferResponse(
                error_message=str(served_error(exc, "ModelStreamInfer")),
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version, id=request.id
                ),
            )

        stream = StreamAnswers(request_iterator, respond, fail)
        try:
            with self.admission.admit(stream.stop_reading):
                async for response in stream.responses():
                    yield response
            return
        except asyncio.CancelledError:
            if not self.admission.cut:
                raise
            error = Unavailable(CUT_SHORT)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in served_error
            error = served_error(exc, "ModelStreamInfer")
        await context.abort(error.code, str(error))

    @rpc
    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.repository.resolve(request.name, request.version).config)

    @rpc
    async def ModelStatistics(self, request, context):
        recorders = self.repository.recorders(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[recorder.stats.to_proto(name, str(version)) for name, version, recorder in recorders]
        )

    @rpc
    async def RepositoryIndex(self, request, context):
        rows = self.repository.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=r.name, version=r.version, state=r.state, reason=r.reason
                )
                for r in rows
            ]
        )

    @rpc
    async def RepositoryModelLoad(self, request, context):
        self._check_control(request)
        await self.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(self, request, context):
        self._check_control(request)
        await self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _check_control(self, request) -> None:
        if not self.explicit_control:
            raise Unavailable(
                "explicit model load / unload is not allowed if polling is enabled or model control is "
                "'none' (start the server with --model-control-mode explicit)"
            )
        if request.repository_name:
            raise InvalidArgument(
                f"repository_name '{clip(request.repository_name)}' is not supported: there is one repository"
            )
        unsupported = sorted(set(request.parameters) - {"unload_dependents"})
        if unsupported:
            raise FailedPrecondition(
                f"model '{clip(request.model_name)}': load parameters {clip(unsupported)} are not supported"
            )
