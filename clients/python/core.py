"""State and logic shared by the sync and asyncio clients; they only add the calls themselves."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ortserve.protos import grpc_service_pb2 as pb

from . import image_input, tensors
from .errors import status_code_of
from .options import DEFAULT_MAX_MESSAGE_BYTES, RetryPolicy, channel_credentials, channel_options
from .sequences import SequenceSpec

Version = str | int | None
# One image's top-k (label, score) pairs, best first.
Classification = list[tuple[str, float]]
# RPCs that change server state; never retried.
NOT_IDEMPOTENT = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})


@dataclass(frozen=True)
class ModelIndexEntry:
    """One model version in the server's repository index."""

    name: str
    """Model name."""
    version: str
    """Version ("" when the server lists the model as a whole)."""
    state: str
    """e.g. READY, UNAVAILABLE, LOADING."""
    reason: str
    """Why the model is in that state ("" when the server says nothing)."""


def version_string(version: Version) -> str:
    """The protocol's version string: "" lets the server choose."""
    return "" if version is None else str(version)


class ClientCore:
    """Connection settings, retry decisions and per-model caches of one client."""

    def __init__(
        self,
        url: str,
        ssl: bool,
        root_certificates: str | Path | bytes | None,
        private_key: str | Path | bytes | None,
        certificate_chain: str | Path | bytes | None,
        timeout: float | None,
        retries: RetryPolicy,
        keepalive_time_ms: int | None,
        keepalive_timeout_ms: int,
        keepalive_permit_without_calls: bool,
        http2_max_pings_without_data: int,
        max_message_bytes: int,
        extra_channel_options: Sequence[tuple[str, Any]],
    ) -> None:
        if not url or url.startswith(("http://", "https://")):
            raise ValueError(f"url must be HOST:PORT (gRPC), got {url!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        tls_files = (root_certificates, private_key, certificate_chain)
        self.credentials = (
            channel_credentials(*tls_files) if ssl or any(f is not None for f in tls_files) else None
        )
        self.options = channel_options(
            retries,
            max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES,
            keepalive_time_ms,
            keepalive_timeout_ms,
            keepalive_permit_without_calls,
            http2_max_pings_without_data,
        ) + list(extra_channel_options)
        self.input_names: dict[tuple[str, str], list[str]] = {}
        self.image_specs: dict[tuple[str, str], image_input.ImageSpec] = {}
        self.sequence_specs: dict[tuple[str, str], SequenceSpec] = {}

    # ------------------------------------------------------------------ retries and deadlines

    def attempts(self, rpc: str) -> int:
        """How many tries `rpc` gets."""
        if rpc in NOT_IDEMPOTENT or (rpc == "ModelInfer" and not self.retries.retry_infer):
            return 1
        return self.retries.max_attempts

    def deadline(self, timeout: float | None) -> float | None:
        """The monotonic time by which the whole call (all its tries) must end."""
        timeout = self.timeout if timeout is None else timeout
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def remaining(deadline: float | None) -> float | None:
        """Seconds left for the next try (None: no deadline)."""
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    def retry_wait(
        self, exc: grpc.RpcError, attempt: int, attempts: int, deadline: float | None
    ) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise."""
        if attempt >= attempts or status_code_of(exc) not in self.retries.retry_codes:
            return None
        wait = self.retries.backoff_s(attempt - 1)
        if deadline is not None and time.monotonic() + wait >= deadline:
            return None
        return wait

    # ------------------------------------------------------------------ caches

    def forget(self, model: str) -> None:
        """Drop what is cached about `model` (after it was loaded or unloaded)."""
        for cache in (self.input_names, self.image_specs, self.sequence_specs):
            for key in [key for key in cache if key[0] == model]:
                del cache[key]

    # ------------------------------------------------------------------ request planning

    @staticmethod
    def named_inputs(
        model: str, inputs: Mapping[str, np.ndarray] | np.ndarray, input_names: list[str] | None
    ) -> Mapping[str, np.ndarray]:
        """The inputs as a name -> array mapping (a bare array goes to the model's only input)."""
        if isinstance(inputs, Mapping):
            return inputs
        if input_names is None:
            raise AssertionError("input names are needed for a bare array")
        if len(input_names) != 1:
            raise ValueError(
                f"model {model!r} has {len(input_names)} inputs {input_names}; pass a dict name -> array"
            )
        return {input_names[0]: inputs}

    @staticmethod
    def classify_requests(
        model: str, spec: image_input.ImageSpec, items: list[object], top_k: int, version: Version
    ) -> list[pb.ModelInferRequest]:
        """Requests of at most max_batch_size images each, asking for the top-k classes."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        pixels = [image_input.load_pixels(item, spec) for item in items]
        size = spec.max_batch_size if spec.batch_dim and spec.max_batch_size else 1
        return [
            tensors.build_infer_request(
                model,
                {spec.input_name: spec.to_tensor(pixels[start : start + size])},
                outputs=[spec.output_name],
                version=version_string(version),
                classification_top_k=top_k,
            )
            for start in range(0, len(pixels), size)
        ]

    @staticmethod
    def classify_results(
        spec: image_input.ImageSpec, responses: list[pb.ModelInferResponse]
    ) -> list[Classification]:
        """Per image a list of (label, score), best first, in input order."""
        results: list[Classification] = []
        for response in responses:
            outputs = tensors.parse_infer_response(response)
            if spec.output_name not in outputs:
                raise ValueError(f"model {spec.model!r} answered without output {spec.output_name!r}")
            results += tensors.parse_classification(outputs[spec.output_name])
        return results
