"""Streaming sequences step by step through a stateful model and checking every running prediction.

`stream_rows` takes any way of opening a sequence (`open_sequence()` -> a context manager whose `step(chunk)`
returns the outputs for the sequence so far): a server-held sequence from the client, client-carried state
over plain inference calls (`CarriedState`), or onnxruntime on the exported file (`onnxruntime_sequences`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn


class Stepper(Protocol):
    def step(self, chunk: np.ndarray) -> object:
        """The outputs after `chunk` ([1, steps, features]): an array, a list, or name -> array."""


OpenSequence = Callable[[], AbstractContextManager[Stepper]]


@dataclass(frozen=True)
class StreamAgreement:
    """Running predictions of streamed sequences against PyTorch's on each prefix."""

    model: str
    sequences: int
    steps_per_sequence: int
    agreeing: int
    """Steps whose running prediction (argmax) equals PyTorch's on the same prefix."""
    max_abs: float
    """Largest |streamed output - PyTorch's on the prefix| over every step."""
    seconds: float

    @property
    def steps(self) -> int:
        return self.sequences * self.steps_per_sequence

    @property
    def agrees(self) -> bool:
        return self.agreeing == self.steps

    def summary(self) -> str:
        verdict = "matches" if self.agrees else "DIFFERS from"
        return (
            f"{self.model}: streamed {self.sequences} sequences row by row ({self.steps_per_sequence} steps "
            f"each): the running prediction {verdict} PyTorch's on the prefix at {self.agreeing} of "
            f"{self.steps} steps (max abs output error {self.max_abs:.3g}, "
            f"{self.steps / self.seconds:.0f} steps/s)"
        )


def stream_rows(
    open_sequence: OpenSequence,
    model: nn.Module,
    sequences: np.ndarray,
    *,
    name: str,
    output: str = "output",
    batched: bool = True,
) -> StreamAgreement:
    """Send each of `sequences` ([N, T, F]) one step at a time through its own sequence, and compare the
    output after every step with `model` on that prefix. `step` gets [1, 1, F] chunks when `batched`, else
    [1, F] (the client's `sequence(model).step` adds the batch axis itself)."""
    count, length, _ = sequences.shape
    model.eval()
    with torch.no_grad():
        prefixes = [model(torch.from_numpy(sequences[:, : t + 1])).numpy() for t in range(length)]
    expected = np.stack(prefixes, axis=1)
    agreeing, worst = 0, 0.0
    started = time.perf_counter()
    for index in range(count):
        with open_sequence() as sequence:
            for t in range(length):
                chunk = sequences[index : index + 1, t : t + 1]
                got = np.asarray(_pick(sequence.step(chunk if batched else chunk[0]), output))
                want = expected[index, t]
                got = got.reshape(want.shape)
                worst = max(worst, float(np.abs(got.astype(np.float64) - want).max()))
                agreeing += int(got.argmax() == want.argmax())
    seconds = time.perf_counter() - started
    return StreamAgreement(name, count, length, agreeing, worst, seconds)


class CarriedState:
    """A client-carried sequence: each step sends the chunk and the state the previous step returned
    (zeros first) through `infer(inputs) -> outputs`, e.g. `functools.partial(client.infer, model)`, so
    any replica can serve any step."""

    def __init__(
        self,
        infer: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
        states: Sequence[Mapping[str, object]],
        input_name: str = "input",
    ) -> None:
        self.infer = infer
        self.states = list(states)
        """The config's `stateful` parameter entries: {"input", "output", "dims"}."""
        self.input_name = input_name
        self._carried: dict[str, np.ndarray] | None = None

    def step(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        if self._carried is None:
            self._carried = {
                str(s["input"]): np.zeros((chunk.shape[0], *s["dims"]), np.float32) for s in self.states
            }
        outputs = dict(self.infer({self.input_name: chunk, **self._carried}))
        self._carried = {str(s["input"]): outputs.pop(str(s["output"])) for s in self.states}
        return outputs

    def __enter__(self) -> CarriedState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._carried = None


def onnxruntime_sequences(path: str | Path, input_name: str = "input") -> OpenSequence:
    """Open sequences on the exported step graph at `path` with onnxruntime (the state carried here)."""
    import onnx

    from ortserve.export.stateful_proof import load_session

    metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "stateful" not in metadata:
        raise ValueError(f"{path} is not a stateful export (no 'stateful' metadata)")
    states = json.loads(metadata["stateful"])["states"]
    session = load_session(path)
    outputs = [o.name for o in session.get_outputs()]

    def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(None, feeds), strict=True))

    @contextlib.contextmanager
    def open_sequence() -> Iterator[Stepper]:
        with CarriedState(infer, states, input_name) as sequence:
            yield sequence

    return open_sequence


def _pick(result: object, output: str) -> object:
    if isinstance(result, Mapping):
        return result[output] if output in result else next(iter(result.values()))
    if isinstance(result, (list, tuple)):
        return result[0]
    return result
