"""The sequence batcher of a stateful model: Triton's sequence semantics with implicit state.

Each live sequence keeps its state tensors between requests. A step is submitted to the model's Batcher
with the stored state added as inputs, so steps of different sequences with equal shapes share one
onnxruntime run (Triton's `oldest` strategy: whatever steps are ready run together), while the steps of
one sequence run one at a time, in the order they were submitted: each waits for its predecessor's
completion. Submission order is the order `run` is called in (its checks and registration happen before
its first await), so a ModelStreamInfer stream that submits in arrival order keeps a sequence's order.

State is zeros at START, replaced by the state outputs after each successful step (a failed or cancelled
step leaves it as it was), and freed at END, after `max_sequence_idle_microseconds` without a request (a
timer), and when the model is unloaded (steps still waiting then fail UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .batcher import Batcher, Result
from .errors import InvalidArgument, ResourceExhausted, Unavailable, clip
from .metrics import ModelMetrics
from .sequence_state import SequenceFlags, SequencePolicy, describe_id

log = logging.getLogger(__name__)
# The idle timer never wakes more often than this, however small max_sequence_idle_microseconds is.
MIN_TIMER_S = 0.001


@dataclass(eq=False, slots=True)
class LiveSequence:
    """One open sequence: its stored state (None until a step succeeded) and its chain of steps."""

    id: int | str
    rows: int
    last_used: float
    state: dict[str, np.ndarray] | None = None
    tail: asyncio.Future | None = None
    """Resolved when the last submitted step has finished (successfully or not)."""
    steps: int = 0
    """Steps submitted and not finished."""
    ending: bool = False
    """A step with END was submitted: later steps need START."""


class SequenceBatcher:
    """The live sequences of one model version, in front of its Batcher. Use inside the event loop."""

    def __init__(self, name: str, policy: SequencePolicy, batcher: Batcher, metrics: ModelMetrics):
        self.name = name
        self.policy = policy
        self._batcher = batcher
        self._metrics = metrics
        self._state_outputs = tuple(pair.output_name for pair in policy.states)
        # Least recently used first, so the idle timer stops at the first sequence still in use.
        self._live: OrderedDict[int | str, LiveSequence] = OrderedDict()
        self._closing = asyncio.get_running_loop().create_future()
        self._timer = asyncio.create_task(self._expire_idle())

    @property
    def live(self) -> int:
        """Sequences open now."""
        return len(self._live)

    async def run(
        self,
        flags: SequenceFlags,
        inputs: dict[str, np.ndarray],
        rows: int,
        outputs: tuple[str, ...] | list[str],
        deadline: float | None = None,
    ) -> Result:
        """Run one step of the sequence `flags.id`, after its earlier steps; the state stays inside."""
        sequence, start, end = self._register(flags, inputs, rows)
        loop = asyncio.get_running_loop()
        previous, done = sequence.tail, loop.create_future()
        sequence.tail = done
        sequence.steps += 1
        try:
            if previous is not None and not previous.done():
                # asyncio.wait never cancels `previous`, even when this request is cancelled.
                await asyncio.wait((previous, self._closing), return_when=asyncio.FIRST_COMPLETED)
            if self._closing.done():
                raise Unavailable(
                    f"model {self.name} was unloaded while sequence {describe_id(sequence.id)} was live; "
                    "its state is gone, start it again with sequence_start"
                )
            return await self._step(sequence, start, inputs, rows, outputs, deadline)
        finally:
            sequence.steps -= 1
            sequence.last_used = time.monotonic()
            if end and self._live.get(sequence.id) is sequence:
                del self._live[sequence.id]
                self._metrics.sequence_ended += 1
                self._metrics.sequences_live -= 1
            elif self._live.get(sequence.id) is sequence:
                self._live.move_to_end(sequence.id)
            if previous is None or previous.done():
                done.set_result(None)
                if sequence.tail is done:
                    sequence.tail = None  # an idle sequence keeps no future alive
            else:  # cancelled while an earlier step still runs: the next one waits for that one too
                previous.add_done_callback(lambda _: done.done() or done.set_result(None))

    def _register(self, flags: SequenceFlags, inputs: dict[str, np.ndarray], rows: int):
        """Check the request against the sequence and open/find it; no await, so order is kept."""
        if self._closing.done():
            raise Unavailable(f"model {self.name} is unloading")
        if flags.id is None:
            raise InvalidArgument(
                f"model {self.name} is a sequence model: a request needs a sequence_id parameter "
                "(and sequence_start on the first request of a sequence)"
            )
        for name, array in inputs.items():
            if array.size == 0:
                raise InvalidArgument(
                    f"model {self.name}: input '{name}' has shape {clip(list(array.shape))} with no "
                    "elements; a sequence step needs at least one time step"
                )
        sequence = self._live.get(flags.id)
        if flags.start:
            if sequence is None or sequence.ending:
                if sequence is None and len(self._live) >= self.policy.max_sequences:
                    raise ResourceExhausted(
                        f"model {self.name}: {len(self._live)} sequences are live, the maximum "
                        f"(max_candidate_sequences {self.policy.max_sequences}); end or let one expire first"
                    )
                sequence = LiveSequence(flags.id, rows, time.monotonic())
                if flags.id not in self._live:
                    self._metrics.sequences_live += 1
                self._live[flags.id] = sequence
            sequence.rows = rows
            self._metrics.sequence_started += 1
        elif sequence is None or sequence.ending:
            raise InvalidArgument(
                f"model {self.name}: sequence {describe_id(flags.id)} is not live (never started, ended, or "
                f"idle for more than {self.policy.idle_s:g} s); a sequence must begin with a request "
                "that sets sequence_start"
            )
        elif rows != sequence.rows:
            raise InvalidArgument(
                f"model {self.name}: sequence {describe_id(flags.id)} started with batch size "
                f"{sequence.rows}, this request has {rows}"
            )
        if flags.end:
            sequence.ending = True
        sequence.last_used = time.monotonic()
        self._live.move_to_end(flags.id)
        return sequence, flags.start, flags.end

    async def _step(self, sequence: LiveSequence, start: bool, inputs, rows, outputs, deadline) -> Result:
        stored = None if start else sequence.state
        feeds = dict(inputs)
        for pair in self.policy.states:
            feeds[pair.input_name] = pair.zeros(rows) if stored is None else stored[pair.input_name]
        names = (*outputs, *(name for name in self._state_outputs if name not in outputs))
        future = self._batcher.submit(feeds, rows, names, deadline)
        future.add_done_callback(lambda f: self._store(sequence, f))
        result = await future
        result.outputs = {name: result.outputs[name] for name in outputs}
        return result

    def _store(self, sequence: LiveSequence, future: asyncio.Future) -> None:
        """Keep the state outputs of a step that ran (copied: the batch's arrays are not kept alive)."""
        if future.cancelled() or future.exception() is not None:
            return
        arrays = future.result().outputs
        sequence.state = {
            pair.input_name: np.array(arrays[pair.output_name], copy=True) for pair in self.policy.states
        }

    async def _expire_idle(self) -> None:
        """Free sequences idle for longer than max_sequence_idle_microseconds."""
        idle_s = self.policy.idle_s
        while True:
            now = time.monotonic()
            wait_s, expired = idle_s, []
            for key, sequence in self._live.items():
                if sequence.last_used + idle_s > now:
                    wait_s = sequence.last_used + idle_s - now
                    break
                if not sequence.steps:
                    expired.append(key)
            for key in expired:
                del self._live[key]
            if expired:
                self._metrics.sequence_expired += len(expired)
                self._metrics.sequences_live -= len(expired)
                log.info("model %s: %d idle sequence(s) expired", self.name, len(expired))
            await asyncio.sleep(max(wait_s, MIN_TIMER_S))

    async def close(self) -> None:
        """Unload: drop every sequence; steps still waiting for an earlier one fail UNAVAILABLE."""
        if not self._closing.done():
            self._closing.set_result(None)
        self._timer.cancel()
        await asyncio.gather(self._timer, return_exceptions=True)
        if self._live:
            log.info("model %s: unloaded with %d live sequence(s)", self.name, len(self._live))
        # A reload's new version shares the metrics and may have sequences already: subtract, never reset.
        self._metrics.sequences_live -= len(self._live)
        self._live.clear()
