"""The scheduler of one model version: request queues (one per priority level), dynamic batching, one
worker per instance.

Each request gets one asyncio.Future. An idle worker takes what is queued at once, so by default batching
adds no latency: batches form from the requests that queued while every instance was busy. Holding an idle
instance back to fill a preferred size (max_queue_delay_microseconds) cost the LSTM half its throughput at 8
in flight, with nothing gained for the ResNet, so it is done only when a config asks for it. Only requests
with the same key (non-batch shapes, dtypes, input names) share a batch, of max_batch_size rows at most.
Requests whose client cancelled, whose deadline passed or whose queue timeout expired never run: a timer
fails them on time, and taking a batch skips them. Sessions run in a thread pool (one thread per instance)
so onnxruntime works without the GIL while the event loop stays free.

Quick batches of a single-instance model run on the event loop instead: the thread hand-off would cost more
than the run. A batch is quick by its size (input elements times the measured seconds per element), so one
long sequence to a quick model runs in the pool and never freezes the loop. On ortserve's IdleAwareEventLoop
quick batches run when the loop has nothing else to do: the requests that arrived while it was busy share
one batch, and a lone request runs before the loop sleeps (docs/performance.md).

An instance whose last batches grew onnxruntime's arena beyond an idle model's gives it back once it has
been idle for memory.IDLE_SHRINK_S: its worker runs one small shrinking run in the pool, holding the
instance like a batch (serve.memory).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .batch_run import Pending, Result, execute, fail, output_names
from .errors import DeadlineExceeded, InternalError, QueueFull, QueueTimeout, Unavailable
from .memory import IDLE_SHRINK_S, MemoryGuard
from .scheduling import BatchPolicy, Scheduling

log = logging.getLogger(__name__)


# Below this onnxruntime time per batch, handing the batch to a worker thread (and the result back to the
# event loop) costs more CPU and latency than the run itself: the LSTM served 1.6-1.8x faster inline,
# measured with bench/run.py (docs/performance.md). Longer batches run in the pool, never on the loop.
INLINE_INFER_S = 0.002
INFER_EWMA = 0.2
DEFAULT_SCHEDULING = Scheduling()

BatchObserver = Callable[[int, int, int, int], None]  # (batch_size, input_ns, infer_ns, output_ns)


class Batcher:
    """Queues + workers of one model version. Create and use it inside the running event loop.

    `seconds_per_element`: onnxruntime's time per input element measured at warm-up (None: unknown, the
    first batches run in the pool); `memory`: the budget check and arena shrinkage (None: neither);
    `on_shrink`: called after each idle arena shrink (counted in `arena_shrinks` too)."""

    def __init__(
        self,
        name: str,
        sessions: Sequence,
        policy: BatchPolicy,
        on_batch: BatchObserver | None = None,
        *,
        seconds_per_element: float | None = None,
        memory: MemoryGuard | None = None,
        on_shrink: Callable[[], None] | None = None,
    ):
        self.name = name
        self.policy = policy
        self._sessions = list(sessions)
        self._on_batch = on_batch
        self._memory = memory
        self._on_shrink = on_shrink
        self.arena_shrinks = 0
        # Per instance: time.monotonic() of its last run since one grew its arena (None: idle-sized).
        self._grown_at: list[float | None] = [None] * len(self._sessions)
        self._queues: list[deque[Pending]] = [deque() for _ in range(policy.levels)]
        self._arrived = asyncio.Event()
        self._running = 0
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=len(self._sessions), thread_name_prefix=f"ort-{name}")
        # Running average of onnxruntime's time per input element: a batch's cost is its elements times it.
        self._s_per_element = seconds_per_element
        self._loop = loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # IdleAwareEventLoop.when_idle; None on another loop or when batches wait to fill (worker only).
        self._when_idle = None if policy.max_queue_delay_s > 0 else getattr(loop, "when_idle", None)
        self._flush_scheduled = False
        self._workers = [asyncio.create_task(self._work(index)) for index in range(len(self._sessions))]

    def estimate_s(self, elements: int) -> float:
        """onnxruntime's expected time for a batch of this many input elements (inf while unknown)."""
        return math.inf if self._s_per_element is None else elements * self._s_per_element

    def _inline_ok(self, elements: int = 1) -> bool:
        """Run on the event loop: one instance and a batch so quick the thread hand-off would cost more."""
        return len(self._sessions) == 1 and self.estimate_s(elements) < INLINE_INFER_S

    @property
    def pending(self) -> int:
        """Requests waiting in the queues."""
        return sum(len(queue) for queue in self._queues)

    def submit(
        self,
        inputs: dict[str, np.ndarray],
        rows: int,
        outputs: Sequence[str],
        deadline: float | None = None,
        scheduling: Scheduling = DEFAULT_SCHEDULING,
    ) -> asyncio.Future:
        """Queue a request; return its future (resolving to a Result). Raises Unavailable when closed or
        the level's queue is full, ResourceExhausted when it would exceed the memory budget."""
        if self._closed:
            raise Unavailable(f"model {self.name} is unloading")
        policy = self.policy
        queue = self._queues[max(scheduling.level, 1) - 1]
        queue_policy = policy.queue_policy(scheduling.level)
        if queue_policy.max_queue_size and len(queue) >= queue_policy.max_queue_size:
            raise QueueFull(
                f"model {self.name}: request exceeds maximum queue size {queue_policy.max_queue_size}"
            )
        elements = sum(array.size for array in inputs.values())
        if self._memory is not None:
            self._memory.check(inputs, elements)
        now = time.monotonic()
        key = tuple(
            (name, array.shape[1:] if policy.max_batch_size else array.shape, array.dtype)
            for name, array in inputs.items()
        )
        timeout = queue_policy.timeout_s if scheduling.timeout_s is None else scheduling.timeout_s
        expires = now + timeout if timeout and queue_policy.reject_on_timeout else None
        future = self._loop.create_future()
        pending = Pending(inputs, rows, key, tuple(outputs), future, now, expires, deadline, elements)
        queue.append(pending)
        for when in (expires, deadline):
            if when is not None and when < self._timer_at:
                self._arm(when)
        if self._when_idle is not None and not self._running and self._inline_ok(elements):
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._when_idle(self._flush)
        else:
            self._arrived.set()
        return future

    def _arm(self, when: float) -> None:
        """Fail expired requests at `when` (time.monotonic()), not only when a worker takes a batch."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_later(max(when - time.monotonic(), 0.0), self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        earliest = math.inf
        for index, queue in enumerate(self._queues):
            kept = deque(p for p in queue if self._live(p, now))
            self._queues[index] = kept
            for pending in kept:
                earliest = min(earliest, pending.expires or math.inf, pending.deadline or math.inf)
        if earliest < math.inf:
            self._arm(earliest)

    def _live(self, pending: Pending, now: float) -> bool:
        """False for a request that must not run: cancelled, or failed here as its deadline or queue
        timeout passed."""
        if pending.future.done():
            return False
        if pending.deadline is not None and pending.deadline <= now:
            pending.future.set_exception(DeadlineExceeded(f"model {self.name}: deadline passed in the queue"))
            return False
        if pending.expires is not None and pending.expires <= now:
            pending.future.set_exception(QueueTimeout(f"model {self.name}: request timeout expired"))
            return False
        return True

    def _peek(self) -> Pending | None:
        """The request the next batch starts with (highest level first), dropping stale ones before it."""
        now = time.monotonic()
        for queue in self._queues:
            while queue:
                if self._live(queue[0], now):
                    return queue[0]
                queue.popleft()
        return None

    def _flush(self) -> None:
        """The loop is about to wait: run what queued meanwhile, on the loop, batch after batch, as long
        as each batch is quick; a long one is left to the worker, which runs it in the pool."""
        self._flush_scheduled = False
        while not self._running and (head := self._peek()) is not None and self._inline_ok(head.elements):
            budget = INLINE_INFER_S / self._s_per_element if self._s_per_element else None
            self._finish(self._take(budget), 0)
        if self.pending:
            self._arrived.set()

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the workers."""
        self._closed = True
        while self.pending or self._running:
            await asyncio.sleep(0.01)
        if self._timer is not None:
            self._timer.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._executor.shutdown(wait=False)

    async def _work(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            head = self._peek()
            if head is None:
                self._arrived.clear()
                await self._idle(loop, index)
                continue
            if self.policy.max_queue_delay_s > 0:
                await self._fill(head)
            batch = self._take()
            if not batch:
                continue
            self._running += 1
            try:
                await self._run(loop, index, batch)
            finally:
                self._running -= 1
                if self.pending:
                    self._arrived.set()

    async def _idle(self, loop, index: int) -> None:
        """Wait for requests; meanwhile shrink this instance's arena once it has been idle IDLE_SHRINK_S
        after a run that grew it."""
        while (grown_at := self._grown_at[index]) is not None and not self._closed:
            remaining = grown_at + IDLE_SHRINK_S - time.monotonic()
            if remaining <= 0:
                if not self.pending:  # else requests queued for an inline flush: take them instead
                    await self._shrink(loop, index)
                return
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
                return
            except asyncio.TimeoutError:
                continue  # batches may have run inline meanwhile, moving grown_at on
        await self._arrived.wait()

    async def _shrink(self, loop, index: int) -> None:
        """One small shrinking run on instance `index`, in the pool and holding the instance like a batch:
        a request arriving meanwhile waits for this run only."""
        self._running += 1
        try:
            await loop.run_in_executor(self._executor, self._memory.shrink_idle, self._sessions[index], index)
        except Exception:  # noqa: BLE001 - onnxruntime raises many types; serving goes on as it is
            log.warning("model %s: shrinking instance %d's arena failed", self.name, index, exc_info=True)
        else:
            self.arena_shrinks += 1
            log.debug("model %s: instance %d idle, arena shrunk", self.name, index)
            if self._on_shrink is not None:
                self._on_shrink()
        finally:
            self._running -= 1
            self._grown_at[index] = None
            if self.pending:
                self._arrived.set()

    async def _fill(self, head: Pending) -> None:
        """max_queue_delay: wait until requests like `head` reach the batch target, or its delay ends."""
        until = head.enqueued + self.policy.max_queue_delay_s
        target = self.policy.batch_target
        while not head.future.done() and self._rows_like(head) < target:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _rows_like(self, head: Pending) -> int:
        return sum(p.rows for queue in self._queues for p in queue if p.key == head.key)

    def _take(self, max_elements: float | None = None) -> list[Pending]:
        """The next batch: the first live request of the highest non-empty level and, with dynamic
        batching, later ones with its key (higher levels first) up to max_batch_size rows and
        `max_elements` input elements. Stale requests met on the way are dropped."""
        head = self._peek()
        if head is None:
            return []
        for queue in self._queues:
            if queue and queue[0] is head:
                queue.popleft()
                break
        batch, rows, elements = [head], head.rows, head.elements
        limit = self.policy.max_batch_size
        now = time.monotonic()
        if self.policy.dynamic and rows < limit:
            for index, queue in enumerate(self._queues):
                if rows >= limit:
                    break
                kept: deque[Pending] = deque()
                while queue and rows < limit:
                    pending = queue.popleft()
                    if not self._live(pending, now):
                        continue
                    fits = max_elements is None or elements + pending.elements <= max_elements
                    if pending.key == head.key and rows + pending.rows <= limit and fits:
                        batch.append(pending)
                        rows += pending.rows
                        elements += pending.elements
                    else:
                        kept.append(pending)
                kept.extend(queue)
                self._queues[index] = kept
        for pending in batch:
            pending.queued_s = now - pending.enqueued
        return batch

    def _execute(self, index: int, batch: list[Pending], names: list[str]):
        """execute() on the calling thread (loop or worker); failures become InternalError."""
        elements = sum(p.elements for p in batch)
        memory = self._memory
        options = memory.run_options(index, elements) if memory is not None else None
        try:
            return execute(self._sessions[index], batch, names, self.policy.max_batch_size > 0, options)
        except Exception as exc:  # noqa: BLE001 - reported to every request of the batch
            raise self._failure(batch, exc) from exc
        finally:  # only this instance's worker (or the loop, for its inline runs) touches its entry
            if self._grown_at[index] is not None or (memory and memory.grows_idle_arena(index, elements)):
                self._grown_at[index] = time.monotonic()

    def _failure(self, batch: list[Pending], exc: Exception) -> InternalError:
        if isinstance(exc, InternalError):
            return exc
        log.error("model %s: batch of %d requests failed", self.name, len(batch), exc_info=exc)
        return InternalError("internal error")

    async def _run(self, loop, index: int, batch: list[Pending]) -> None:
        if self._inline_ok(sum(p.elements for p in batch)):
            self._finish(batch, index)
            return
        names = output_names(batch)
        try:
            split, timings = await loop.run_in_executor(self._executor, self._execute, index, batch, names)
        except InternalError as error:
            fail(batch, error)
            return
        self._deliver(batch, split, timings)

    def _finish(self, batch: list[Pending], index: int) -> None:
        """Run a batch on the event loop and answer its requests."""
        try:
            split, timings = self._execute(index, batch, output_names(batch))
        except InternalError as error:
            fail(batch, error)
            return
        self._deliver(batch, split, timings)

    def _deliver(self, batch: list[Pending], split: list[dict], timings: tuple[int, int, int]) -> None:
        """On the event loop: answer each request of a batch that ran, then report the batch."""
        rows = sum(p.rows for p in batch)
        for pending, outputs in zip(batch, split, strict=True):
            if not pending.future.done():
                pending.future.set_result(Result(outputs, rows, int(pending.queued_s * 1e9), *timings))
        measured = timings[1] / 1e9 / max(sum(p.elements for p in batch), 1)
        old = self._s_per_element
        self._s_per_element = measured if old is None else INFER_EWMA * measured + (1 - INFER_EWMA) * old
        if self._on_batch is not None:
            try:
                self._on_batch(rows, *timings)
            except Exception:  # noqa: BLE001 - a reporting bug must not stop the scheduler
                log.exception("model %s: recording a batch failed", self.name)
