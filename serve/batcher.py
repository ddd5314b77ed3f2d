"""The scheduler of one model version: a request queue, dynamic batching, one worker per instance.

Each request gets one asyncio.Future. A worker that is idle takes what is queued at once, so batching
never adds latency: batches form from the requests that queued while every instance was busy. Holding an
idle instance back to fill a preferred size (max_queue_delay_microseconds) was measured to cost the
LSTM half its throughput at 8 in flight, with nothing gained for the ResNet, so it is not done.
Only requests with the same key (non-batch shapes, dtypes, input names) share a batch; a batch never
exceeds max_batch_size rows. Sessions run in a thread pool (one thread per instance) so onnxruntime
works without the GIL while the event loop stays free.

Quick models (one instance, batches under INLINE_INFER_S) run on the event loop instead: the hand-off to
a thread would cost more than the run. On ortserve's IdleAwareEventLoop their queue is run when the loop
has nothing else to do, so the requests that arrived while it was busy share one batch, and a lone
request runs before the loop sleeps (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import DeadlineExceeded, InternalError, QueueFull, QueueTimeout, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    """How a model version queues and batches (from config max_batch_size and dynamic_batching)."""

    max_batch_size: int = 0
    """Rows per batch at most; 0 means the model does not batch (inputs have no batch dimension)."""
    dynamic: bool = False
    """Merge queued requests into one batch (dynamic_batching present)."""
    max_queue_size: int = 0
    """Queued requests at most (0 = unbounded); more are refused with UNAVAILABLE."""
    queue_timeout_s: float = 0.0
    """Time a request may wait in the queue (0 = forever)."""
    reject_on_timeout: bool = True
    """Timeout action REJECT (True) or DELAY (False: an expired request still runs)."""


@dataclass(eq=False, slots=True)
class Pending:
    """One queued request."""

    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple
    outputs: tuple[str, ...]
    future: asyncio.Future
    enqueued: float
    expires: float | None
    deadline: float | None
    queued_s: float = 0.0


@dataclass(slots=True)
class Result:
    """What a request's future resolves to: its outputs and how long each phase took (ns)."""

    outputs: dict[str, np.ndarray]
    batch_size: int
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0


# Below this onnxruntime time per batch, handing the batch to a worker thread (and the result back to the
# event loop) costs more CPU and latency than the run itself: the LSTM served 1.6-1.8x faster inline,
# measured with bench/run.py (docs/performance.md). Slow models still run in the pool, never on the loop.
INLINE_INFER_S = 0.002
INFER_EWMA = 0.2

BatchObserver = Callable[[int, int, int, int], None]  # (batch_size, input_ns, infer_ns, output_ns)


class Batcher:
    """Queue + workers of one model version. Create and use it inside the running event loop."""

    def __init__(
        self, name: str, sessions: Sequence, policy: BatchPolicy, on_batch: BatchObserver | None = None
    ):
        self.name = name
        self.policy = policy
        self._sessions = list(sessions)
        self._on_batch = on_batch
        self._queue: deque[Pending] = deque()
        self._arrived = asyncio.Event()
        self._running = 0
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=len(self._sessions), thread_name_prefix=f"ort-{name}")
        # Running average of onnxruntime's time per batch; starts high so the first batches use the pool.
        self._infer_s = INLINE_INFER_S * 4
        # IdleAwareEventLoop.when_idle, or None on another loop (then the worker runs quick batches too).
        self._when_idle = getattr(asyncio.get_running_loop(), "when_idle", None)
        self._flush_scheduled = False
        self._workers = [asyncio.create_task(self._work(session)) for session in self._sessions]

    def _inline_ok(self) -> bool:
        """Run on the event loop: one instance and batches so quick the thread hand-off would cost more."""
        return len(self._sessions) == 1 and self._infer_s < INLINE_INFER_S

    @property
    def pending(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)

    def submit(
        self, inputs: dict[str, np.ndarray], rows: int, outputs: Sequence[str], deadline: float | None = None
    ):
        """Queue a request; return its future. Raises Unavailable when closed or the queue is full."""
        if self._closed:
            raise Unavailable(f"model {self.name} is unloading")
        policy = self.policy
        if policy.max_queue_size and len(self._queue) >= policy.max_queue_size:
            raise QueueFull(f"model {self.name}: request exceeds maximum queue size {policy.max_queue_size}")
        now = time.monotonic()
        key = tuple(
            (name, array.shape[1:] if policy.max_batch_size else array.shape, array.dtype)
            for name, array in inputs.items()
        )
        pending = Pending(
            inputs,
            rows,
            key,
            tuple(outputs),
            asyncio.get_running_loop().create_future(),
            now,
            now + policy.queue_timeout_s if policy.queue_timeout_s else None,
            deadline,
        )
        self._queue.append(pending)
        if self._when_idle is not None and not self._running and self._inline_ok():
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._when_idle(self._flush)
        else:
            self._arrived.set()
        return pending.future

    def _flush(self) -> None:
        """The loop is about to wait: run what queued meanwhile, on the loop, batch after batch."""
        self._flush_scheduled = False
        session = self._sessions[0]
        while self._queue and not self._running and self._inline_ok():
            self._drop_stale()
            if self._queue:
                self._finish(self._take(), session)
        if self._queue:
            self._arrived.set()  # the model turned slow or a batch is running: the worker takes over

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the workers."""
        self._closed = True
        while self._queue or self._running:
            await asyncio.sleep(0.01)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._executor.shutdown(wait=False)

    async def _work(self, session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_stale()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = self._take()
            self._running += 1
            try:
                await self._run(loop, session, batch)
            finally:
                self._running -= 1
                if self._queue:
                    self._arrived.set()

    def _drop_stale(self) -> None:
        """Forget cancelled requests; fail those whose queue timeout or client deadline passed."""
        now = time.monotonic()
        if not any(
            p.future.done() or (p.expires and p.expires <= now) or (p.deadline and p.deadline <= now)
            for p in self._queue
        ):
            return
        kept = deque()
        for pending in self._queue:
            if pending.future.done():
                continue
            if pending.deadline and pending.deadline <= now:
                pending.future.set_exception(
                    DeadlineExceeded(f"model {self.name}: deadline passed in the queue")
                )
            elif pending.expires and pending.expires <= now and self.policy.reject_on_timeout:
                pending.future.set_exception(QueueTimeout(f"model {self.name}: request timeout expired"))
            else:
                kept.append(pending)
        self._queue = kept

    def _take(self) -> list[Pending]:
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        limit = self.policy.max_batch_size
        if self.policy.dynamic and rows < limit:
            kept = deque()
            while self._queue:
                pending = self._queue.popleft()
                if pending.key == head.key and rows + pending.rows <= limit:
                    batch.append(pending)
                    rows += pending.rows
                    if rows == limit:
                        break
                else:
                    kept.append(pending)
            kept.extend(self._queue)
            self._queue = kept
        taken = time.monotonic()
        for pending in batch:
            pending.queued_s = taken - pending.enqueued
        return batch

    def _execute(self, session, batch: list[Pending], names: list[str]):
        """execute() on the calling thread (loop or worker); failures become InternalError."""
        try:
            return execute(session, batch, names, self.policy.max_batch_size > 0)
        except Exception as exc:  # noqa: BLE001 - reported to every request of the batch
            raise self._failure(batch, exc) from exc

    def _failure(self, batch: list[Pending], exc: Exception) -> InternalError:
        if isinstance(exc, InternalError):
            return exc
        log.error("model %s: batch of %d requests failed", self.name, len(batch), exc_info=exc)
        return InternalError("internal error")

    async def _run(self, loop, session, batch: list[Pending]) -> None:
        if self._inline_ok():
            self._finish(batch, session)
            return
        names = _output_names(batch)
        try:
            split, timings = await loop.run_in_executor(self._executor, self._execute, session, batch, names)
        except InternalError as error:
            _fail(batch, error)
            return
        self._deliver(batch, split, timings)

    def _finish(self, batch: list[Pending], session) -> None:
        """Run a batch on the event loop and answer its requests."""
        try:
            split, timings = self._execute(session, batch, _output_names(batch))
        except InternalError as error:
            _fail(batch, error)
            return
        self._deliver(batch, split, timings)

    def _deliver(self, batch: list[Pending], split: list[dict], timings: tuple[int, int, int]) -> None:
        """On the event loop: answer each request of a batch that ran, then report the batch."""
        rows = sum(p.rows for p in batch)
        for pending, outputs in zip(batch, split, strict=True):
            if not pending.future.done():
                pending.future.set_result(Result(outputs, rows, int(pending.queued_s * 1e9), *timings))
        self._infer_s = INFER_EWMA * timings[1] / 1e9 + (1 - INFER_EWMA) * self._infer_s
        if self._on_batch is not None:
            try:
                self._on_batch(rows, *timings)
            except Exception:  # noqa: BLE001 - a reporting bug must not stop the scheduler
                log.exception("model %s: recording a batch failed", self.name)


def _output_names(batch: list[Pending]) -> list[str]:
    return list(dict.fromkeys(name for pending in batch for name in pending.outputs))


def _fail(batch: list[Pending], error: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def execute(session, batch: list[Pending], names: list[str], batched: bool):
    """Run one batch (on the loop or a worker thread): merge inputs, run, check rows, split outputs back."""
    start = time.perf_counter_ns()
    if len(batch) == 1:
        feeds = batch[0].inputs
    else:
        feeds = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
    ran = time.perf_counter_ns()
    arrays = session.run(names, feeds)
    done = time.perf_counter_ns()
    if not batched:
        split = [dict(zip(names, arrays, strict=True))]
    else:
        rows = sum(p.rows for p in batch)
        for name, array in zip(names, arrays, strict=True):
            if array.ndim == 0 or array.shape[0] != rows:
                log.error("model output %r has shape %s for a batch of %d rows", name, array.shape, rows)
                raise InternalError("internal error")
        split, offset = [], 0
        for pending in batch:
            stop = offset + pending.rows
            split.append({name: array[offset:stop] for name, array in zip(names, arrays, strict=True)})
            offset = stop
    end = time.perf_counter_ns()
    return split, (ran - start, done - ran, end - done)
