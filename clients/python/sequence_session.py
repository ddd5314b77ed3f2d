"""`client.sequence(model)`: a context manager that streams one sequence, chunk by chunk (see streaming.py).

    with client.sequence("digits_lstm") as sequence:
        for row in rows:
            outputs = sequence.step(row[None])      # the outputs for the sequence so far

Each step is one ModelInfer call, never retried (a retried step could advance the state twice). A unary
call keeps the server's status code in the InferenceServerError; ModelStreamInfer reports errors as bare
text. With server-held state the last step can say `end=True`; otherwise leaving the block sends one zero
time step with sequence_end, so the server frees the state at once rather than after its idle time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from .core import version_string
from .streaming import SequenceSteps, StreamPlan

if TYPE_CHECKING:
    from .async_client import AsyncInferenceClient
    from .sync_client import InferenceClient


class StreamedSequence:
    """One sequence through `model` on a blocking client; use it as a context manager."""

    def __init__(
        self,
        client: InferenceClient,
        model: str,
        sequence_id: int | str | None,
        outputs: Iterable[str] | str | None,
        version,
        timeout: float | None,
    ) -> None:
        self._client, self._model, self._version, self._timeout = client, model, version, timeout
        self._sequence_id = sequence_id
        self._outputs = [outputs] if isinstance(outputs, str) else None if outputs is None else list(outputs)
        self._steps: SequenceSteps | None = None

    @property
    def id(self) -> int | str | None:
        """The sequence_id sent (None while not entered, and with client-carried state)."""
        return self._steps.id if self._steps else None

    @property
    def server_held(self) -> bool:
        """Whether the server keeps the state (sequence_batching) rather than this client."""
        return self._open().plan.server_held

    def _open(self) -> SequenceSteps:
        if self._steps is None:
            config = self._client.model_config(self._model, self._version, self._timeout)
            plan = StreamPlan.from_config(config, version_string(self._version))
            self._steps = SequenceSteps(plan, self._sequence_id, self._outputs)
        return self._steps

    def __enter__(self) -> StreamedSequence:
        self._open()
        return self

    def __exit__(self, exc_type, *exc_info: object) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise  # an error while ending is the caller's; never hide the error that left the block

    def step(self, chunk: Mapping[str, np.ndarray] | np.ndarray, end: bool = False) -> dict[str, np.ndarray]:
        """Send one chunk (e.g. [T, F]); return the outputs for the sequence so far."""
        steps = self._open()
        request = steps.request(chunk, end)
        return steps.answer(self._client._call("ModelInfer", request, self._timeout, retry=False))

    def close(self) -> None:
        """End the sequence on the server (nothing to do with client-carried state)."""
        if self._steps is not None and (request := self._steps.closing_request()) is not None:
            self._client._call("ModelInfer", request, self._timeout, retry=False)


class AsyncStreamedSequence:
    """One sequence through `model` on an asyncio client; `async with`, `await sequence.step(chunk)`."""

    def __init__(
        self,
        client: AsyncInferenceClient,
        model: str,
        sequence_id: int | str | None,
        outputs: Iterable[str] | str | None,
        version,
        timeout: float | None,
    ) -> None:
        self._client, self._model, self._version, self._timeout = client, model, version, timeout
        self._sequence_id = sequence_id
        self._outputs = [outputs] if isinstance(outputs, str) else None if outputs is None else list(outputs)
        self._steps: SequenceSteps | None = None

    @property
    def id(self) -> int | str | None:
        """The sequence_id sent (None while not entered, and with client-carried state)."""
        return self._steps.id if self._steps else None

    async def _open(self) -> SequenceSteps:
        if self._steps is None:
            config = await self._client.model_config(self._model, self._version, self._timeout)
            plan = StreamPlan.from_config(config, version_string(self._version))
            self._steps = SequenceSteps(plan, self._sequence_id, self._outputs)
        return self._steps

    @property
    def server_held(self) -> bool:
        """Whether the server keeps the state; known once the block is entered."""
        if self._steps is None:
            raise RuntimeError("enter the sequence (async with) first")
        return self._steps.plan.server_held

    async def __aenter__(self) -> AsyncStreamedSequence:
        await self._open()
        return self

    async def __aexit__(self, exc_type, *exc_info: object) -> None:
        try:
            await self.close()
        except Exception:
            if exc_type is None:
                raise

    async def step(
        self, chunk: Mapping[str, np.ndarray] | np.ndarray, end: bool = False
    ) -> dict[str, np.ndarray]:
        """Send one chunk; return the outputs for the sequence so far (see StreamedSequence.step)."""
        steps = await self._open()
        request = steps.request(chunk, end)
        return steps.answer(await self._client._call("ModelInfer", request, self._timeout, retry=False))

    async def close(self) -> None:
        """End the sequence on the server (nothing to do with client-carried state)."""
        if self._steps is not None and (request := self._steps.closing_request()) is not None:
            await self._client._call("ModelInfer", request, self._timeout, retry=False)
