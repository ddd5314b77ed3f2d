"""AsyncInferenceClient: the asyncio (grpc.aio) twin of InferenceClient, same methods as coroutines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc as pb_grpc
from ortserve.protos import model_config_pb2 as mc

from . import image_input, tensors
from .core import Classification, ClientCore, ModelIndexEntry, Version, version_string
from .errors import from_rpc_error
from .options import DEFAULT_MAX_MESSAGE_BYTES, RetryPolicy
from .sequence_session import AsyncStreamedSequence
from .sequences import SequenceSpec, scatter


class AsyncInferenceClient:
    """asyncio client; use `async with AsyncInferenceClient(url) as client:`.

    The channel is opened on first use inside the running event loop and shared by every call, so many
    calls can be in flight at once (asyncio.gather). Settings and errors are as for InferenceClient.
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        ssl: bool = False,
        root_certificates: str | Path | bytes | None = None,
        private_key: str | Path | bytes | None = None,
        certificate_chain: str | Path | bytes | None = None,
        timeout: float | None = None,
        retries: RetryPolicy | None = None,
        keepalive_time_ms: int | None = None,
        keepalive_timeout_ms: int = 20_000,
        keepalive_permit_without_calls: bool = False,
        http2_max_pings_without_data: int = 2,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        extra_channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._core = ClientCore(
            url, ssl, root_certificates, private_key, certificate_chain, timeout, retries or RetryPolicy(),
            keepalive_time_ms, keepalive_timeout_ms, keepalive_permit_without_calls,
            http2_max_pings_without_data, max_message_bytes, extra_channel_options,
        )  # fmt: skip
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None

    async def __aenter__(self) -> AsyncInferenceClient:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _open(self) -> pb_grpc.GRPCInferenceServiceStub:
        if self._stub is None:
            core = self._core
            if core.credentials is None:
                self._channel = grpc.aio.insecure_channel(core.url, options=core.options)
            else:
                self._channel = grpc.aio.secure_channel(core.url, core.credentials, options=core.options)
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    async def _call(self, rpc: str, request: Any, timeout: float | None = None, retry: bool = True) -> Any:
        core = self._core
        deadline = core.deadline(timeout)
        attempts = core.attempts(rpc) if retry else 1
        method = getattr(self._open(), rpc)
        for attempt in range(1, attempts + 1):
            try:
                return await method(request, timeout=core.remaining(deadline))
            except grpc.RpcError as exc:
                wait = core.retry_wait(exc, attempt, attempts, deadline)
                if wait is None:
                    raise from_rpc_error(exc, attempt) from exc
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ------------------------------------------------------------------ health and metadata

    async def is_server_live(self, timeout: float | None = None) -> bool:
        """Whether the server is live."""
        return (await self._call("ServerLive", pb.ServerLiveRequest(), timeout)).live

    async def is_server_ready(self, timeout: float | None = None) -> bool:
        """Whether the server is ready to serve."""
        return (await self._call("ServerReady", pb.ServerReadyRequest(), timeout)).ready

    async def is_model_ready(self, model: str, version: Version = None, timeout: float | None = None) -> bool:
        """Whether `model` (the server's default version unless given) is ready."""
        request = pb.ModelReadyRequest(name=model, version=version_string(version))
        return (await self._call("ModelReady", request, timeout)).ready

    async def server_metadata(self, timeout: float | None = None) -> pb.ServerMetadataResponse:
        """The server's name, version and extensions."""
        return await self._call("ServerMetadata", pb.ServerMetadataRequest(), timeout)

    async def model_metadata(
        self, model: str, version: Version = None, timeout: float | None = None
    ) -> pb.ModelMetadataResponse:
        """A model's versions, platform and input/output tensors (shapes include the batch dimension)."""
        request = pb.ModelMetadataRequest(name=model, version=version_string(version))
        return await self._call("ModelMetadata", request, timeout)

    async def model_config(
        self, model: str, version: Version = None, timeout: float | None = None
    ) -> mc.ModelConfig:
        """A model's configuration (the parsed config.pbtxt)."""
        request = pb.ModelConfigRequest(name=model, version=version_string(version))
        return (await self._call("ModelConfig", request, timeout)).config

    async def model_statistics(
        self, model: str = "", version: Version = None, timeout: float | None = None
    ) -> pb.ModelStatisticsResponse:
        """Inference statistics of one model, or of all models when `model` is empty."""
        request = pb.ModelStatisticsRequest(name=model, version=version_string(version))
        return await self._call("ModelStatistics", request, timeout)

    # ------------------------------------------------------------------ repository

    async def models(self, ready_only: bool = False, timeout: float | None = None) -> list[ModelIndexEntry]:
        """The repository index: every model version with its state and the reason for it."""
        response = await self._call("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready_only), timeout)
        return [ModelIndexEntry(m.name, m.version, m.state, m.reason) for m in response.models]

    async def load_model(self, name: str, timeout: float | None = None) -> None:
        """Load (or reload) a model from the repository; never retried."""
        self._core.forget(name)
        await self._call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name), timeout)

    async def unload_model(self, name: str, timeout: float | None = None) -> None:
        """Unload a model; never retried."""
        self._core.forget(name)
        await self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name), timeout)

    # ------------------------------------------------------------------ inference

    async def _input_names(self, model: str, version: Version) -> list[str]:
        key = (model, version_string(version))
        if key not in self._core.input_names:
            metadata = await self.model_metadata(model, version)
            self._core.input_names[key] = [t.name for t in metadata.inputs]
        return self._core.input_names[key]

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        outputs: Iterable[str] | str | None = None,
        version: Version = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs`; see InferenceClient.infer."""
        names = None if isinstance(inputs, Mapping) else await self._input_names(model, version)
        named = self._core.named_inputs(model, inputs, names)
        request = tensors.build_infer_request(model, named, outputs, version_string(version))
        return tensors.parse_infer_response(await self._call("ModelInfer", request, timeout))

    async def _image_spec(self, model: str, version: Version) -> image_input.ImageSpec:
        key = (model, version_string(version))
        if key not in self._core.image_specs:
            config = await self.model_config(model, version)
            self._core.image_specs[key] = image_input.ImageSpec.from_config(config)
        return self._core.image_specs[key]

    async def classify(
        self,
        model: str,
        images: object,
        top_k: int = 5,
        version: Version = None,
        timeout: float | None = None,
    ) -> Classification | list[Classification]:
        """Top-k (label, score) pairs per image; see InferenceClient.classify. Batches go concurrently."""
        spec = await self._image_spec(model, version)
        single = image_input.is_single_image(images)
        items = [images] if single else list(images)
        requests = self._core.classify_requests(model, spec, items, top_k, version)
        responses = await asyncio.gather(*(self._call("ModelInfer", r, timeout) for r in requests))
        results = self._core.classify_results(spec, list(responses))
        return results[0] if single else results

    async def _sequence_spec(self, model: str, version: Version) -> SequenceSpec:
        key = (model, version_string(version))
        if key not in self._core.sequence_specs:
            self._core.sequence_specs[key] = SequenceSpec.from_config(await self.model_config(model, version))
        return self._core.sequence_specs[key]

    async def predict_sequences(
        self,
        model: str,
        sequences: Sequence[np.ndarray],
        output: str | None = None,
        version: Version = None,
        timeout: float | None = None,
    ) -> list[np.ndarray]:
        """One output row per sequence, in input order; see InferenceClient.predict_sequences."""
        spec = await self._sequence_spec(model, version)
        output = output or spec.default_output
        batches = spec.batches(sequences)
        answers = await asyncio.gather(
            *(self.infer(model, {spec.input_name: batch}, [output], version, timeout) for _, batch in batches)
        )
        results: list[np.ndarray | None] = [None] * len(sequences)
        for (positions, _), outputs in zip(batches, answers, strict=True):
            scatter(results, positions, outputs[output], spec.batch_dim)
        return results  # type: ignore[return-value]

    def sequence(
        self,
        model: str,
        sequence_id: int | str | None = None,
        outputs: Iterable[str] | str | None = None,
        version: Version = None,
        timeout: float | None = None,
        transport: str = "stream",
    ) -> AsyncStreamedSequence:
        """`async with client.sequence(model) as s: await s.step(chunk)`; see InferenceClient.sequence."""
        return AsyncStreamedSequence(self, model, sequence_id, outputs, version, timeout, transport)
