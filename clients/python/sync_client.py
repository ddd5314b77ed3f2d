"""InferenceClient: the blocking KServe v2 gRPC client (one channel, reused by every call)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import grpc_service_pb2_grpc as pb_grpc
from ortserve.protos import model_config_pb2 as mc

from . import image_input, tensors
from .core import Classification, ClientCore, ModelIndexEntry, Version, version_string
from .errors import from_rpc_error
from .options import DEFAULT_MAX_MESSAGE_BYTES, RetryPolicy
from .sequence_session import StreamedSequence
from .sequences import SequenceSpec, scatter


class InferenceClient:
    """Blocking client for ortserve or any KServe v2 / Triton gRPC server; use it as a context manager.

    - `url`: HOST:PORT of the gRPC endpoint. `ssl=True` (implied by any certificate argument) uses TLS:
      `root_certificates` verify the server (system roots when None), `private_key` plus
      `certificate_chain` authenticate the client (mTLS); each is a PEM path or PEM bytes.
    - `timeout`: default deadline in seconds of every call, all its retries included (None: no deadline);
      each method's `timeout` overrides it.
    - `retries`: RetryPolicy() by default (see ortserve.client for what is retried).
    - `keepalive_*`: HTTP/2 keepalive pings; None (the default) leaves gRPC's default (no pings). The
      server must allow the interval chosen, or it closes the connection.
    - `max_message_bytes`: largest message sent or received, 64 MiB like the server's default.
    - `extra_channel_options`: further gRPC channel arguments, e.g. ("grpc.ssl_target_name_override", ...).

    Failed calls raise InferenceServerError. Thread-safe: one channel serves concurrent calls.
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
        if self._core.credentials is None:
            self._channel = grpc.insecure_channel(url, options=self._core.options)
        else:
            self._channel = grpc.secure_channel(url, self._core.credentials, options=self._core.options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; the client cannot be used afterwards."""
        self._channel.close()

    def _call(self, rpc: str, request: Any, timeout: float | None = None, retry: bool = True) -> Any:
        core = self._core
        deadline = core.deadline(timeout)
        attempts = core.attempts(rpc) if retry else 1
        method = getattr(self._stub, rpc)
        for attempt in range(1, attempts + 1):
            try:
                return method(request, timeout=core.remaining(deadline))
            except grpc.RpcError as exc:
                wait = core.retry_wait(exc, attempt, attempts, deadline)
                if wait is None:
                    raise from_rpc_error(exc, attempt) from exc
            time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ------------------------------------------------------------------ health and metadata

    def is_server_live(self, timeout: float | None = None) -> bool:
        """Whether the server is live."""
        return self._call("ServerLive", pb.ServerLiveRequest(), timeout).live

    def is_server_ready(self, timeout: float | None = None) -> bool:
        """Whether the server is ready to serve."""
        return self._call("ServerReady", pb.ServerReadyRequest(), timeout).ready

    def is_model_ready(self, model: str, version: Version = None, timeout: float | None = None) -> bool:
        """Whether `model` (the server's default version unless given) is ready."""
        request = pb.ModelReadyRequest(name=model, version=version_string(version))
        return self._call("ModelReady", request, timeout).ready

    def server_metadata(self, timeout: float | None = None) -> pb.ServerMetadataResponse:
        """The server's name, version and extensions."""
        return self._call("ServerMetadata", pb.ServerMetadataRequest(), timeout)

    def model_metadata(
        self, model: str, version: Version = None, timeout: float | None = None
    ) -> pb.ModelMetadataResponse:
        """A model's versions, platform and input/output tensors (shapes include the batch dimension)."""
        request = pb.ModelMetadataRequest(name=model, version=version_string(version))
        return self._call("ModelMetadata", request, timeout)

    def model_config(
        self, model: str, version: Version = None, timeout: float | None = None
    ) -> mc.ModelConfig:
        """A model's configuration (the parsed config.pbtxt)."""
        request = pb.ModelConfigRequest(name=model, version=version_string(version))
        return self._call("ModelConfig", request, timeout).config

    def model_statistics(
        self, model: str = "", version: Version = None, timeout: float | None = None
    ) -> pb.ModelStatisticsResponse:
        """Inference statistics of one model, or of all models when `model` is empty."""
        request = pb.ModelStatisticsRequest(name=model, version=version_string(version))
        return self._call("ModelStatistics", request, timeout)

    # ------------------------------------------------------------------ repository

    def models(self, ready_only: bool = False, timeout: float | None = None) -> list[ModelIndexEntry]:
        """The repository index: every model version with its state and the reason for it."""
        response = self._call("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready_only), timeout)
        return [ModelIndexEntry(m.name, m.version, m.state, m.reason) for m in response.models]

    def load_model(self, name: str, timeout: float | None = None) -> None:
        """Load (or reload) a model from the repository; never retried."""
        self._core.forget(name)
        self._call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name), timeout)

    def unload_model(self, name: str, timeout: float | None = None) -> None:
        """Unload a model; never retried."""
        self._core.forget(name)
        self._call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name), timeout)

    # ------------------------------------------------------------------ inference

    def _input_names(self, model: str, version: Version) -> list[str]:
        key = (model, version_string(version))
        if key not in self._core.input_names:
            self._core.input_names[key] = [t.name for t in self.model_metadata(model, version).inputs]
        return self._core.input_names[key]

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        outputs: Iterable[str] | str | None = None,
        version: Version = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (name -> array, or one array for a one-input model).

        Returns output name -> array in the response's shape (BYTES outputs as object arrays of bytes);
        all outputs unless `outputs` names some.
        """
        names = None if isinstance(inputs, Mapping) else self._input_names(model, version)
        named = self._core.named_inputs(model, inputs, names)
        request = tensors.build_infer_request(model, named, outputs, version_string(version))
        return tensors.parse_infer_response(self._call("ModelInfer", request, timeout))

    def _image_spec(self, model: str, version: Version) -> image_input.ImageSpec:
        key = (model, version_string(version))
        if key not in self._core.image_specs:
            self._core.image_specs[key] = image_input.ImageSpec.from_config(self.model_config(model, version))
        return self._core.image_specs[key]

    def classify(
        self,
        model: str,
        images: object,
        top_k: int = 5,
        version: Version = None,
        timeout: float | None = None,
    ) -> Classification | list[Classification]:
        """Top-k (label, score) pairs, best first, per image, via the server's classification extension.

        An image is a path, encoded bytes, a PIL image or a numpy array (HxW, HxWx3 or HxWx4, values 0..255).
        One image in gives its list; a list of images gives a list of lists in the same order.
        """
        spec = self._image_spec(model, version)
        single = image_input.is_single_image(images)
        items = [images] if single else list(images)
        requests = self._core.classify_requests(model, spec, items, top_k, version)
        results = self._core.classify_results(spec, [self._call("ModelInfer", r, timeout) for r in requests])
        return results[0] if single else results

    def _sequence_spec(self, model: str, version: Version) -> SequenceSpec:
        key = (model, version_string(version))
        if key not in self._core.sequence_specs:
            self._core.sequence_specs[key] = SequenceSpec.from_config(self.model_config(model, version))
        return self._core.sequence_specs[key]

    def predict_sequences(
        self,
        model: str,
        sequences: Sequence[np.ndarray],
        output: str | None = None,
        version: Version = None,
        timeout: float | None = None,
    ) -> list[np.ndarray]:
        """Run a [T, F] model on sequences of different lengths; one output row per sequence, in input order.

        Same-length sequences share a request (at most max_batch_size of them).
        """
        spec = self._sequence_spec(model, version)
        output = output or spec.default_output
        results: list[np.ndarray | None] = [None] * len(sequences)
        for positions, batch in spec.batches(sequences):
            outputs = self.infer(model, {spec.input_name: batch}, [output], version, timeout)
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
    ) -> StreamedSequence:
        """A context manager streaming one sequence through a stateful model, one chunk per `step`.

        `step(chunk)` sends a chunk (e.g. [T, F]; the batch dimension is added) and returns the outputs for
        the sequence so far. The server keeps the state when the model has sequence_batching (ids and
        START/END are handled: a random uint64 id unless `sequence_id` gives an int or a string); a plain
        model with state inputs NAME_in[_K] and outputs NAME_out[_K] gets its state carried by the client.
        `transport`: "stream" (one ModelStreamInfer stream per server-held sequence: cheaper per step, but a
        failed step is InferenceServerError with code UNKNOWN) or "unary" (ModelInfer calls, status codes
        kept); see ortserve.client.sequence_session.
        """
        return StreamedSequence(self, model, sequence_id, outputs, version, timeout, transport)
