"""The scheduler of one model version: request queues (one per priority level), dynamic batching, one
worker per instance.

Each request gets one asyncio.Future. An idle worker takes what is queued at once, so by default batching
adds no latency: batches form from the requests that queued while every instance was busy. Holding an idle
instance back to fill a preferred size (max_queue_delay_microseconds) cost the LSTM half its throughput at 8
in flight, with nothing gained for the ResNet, so it is done only when a config asks for it. Only requests
with the same key (non-batch shapes, dtypes, input names) share a batch, of max_batch_size rows at most.
Requests whose client cancelled, whose deadline passed or whose queue timeout expired never run: a timer
fails them on time, and taking a batch skips them. Sessions run on one thread per instance so onnxruntime
works without the GIL while the event loop stays free.

An instance never waits for the event loop between two batches: while it runs one, the next is formed and
handed to its thread (a StagedBatch), and requests arriving meanwhile join that batch until the thread
claims it. So each instance has up to two batches in hand, one running and one staged; the event loop
answers the first while the second runs. A request joins a staged batch only when nothing else waits in the
queues, so it never overtakes an older or higher-priority request, and only while every instance holds a
batch; an instance left with nothing takes back a batch staged behind another's run (with two instances, a
request joining a batch behind a busy instance while the other sat idle left them 32% idle).

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .batch_run import Pending, Result, StagedBatch, execute, fail, output_names
from .errors import InternalError, Unavailable
from .memory import IDLE_SHRINK_S, MemoryGuard
from .request_queues import RequestQueues
from .scheduling import BatchPolicy, Scheduling

log = logging.getLogger(__name__)


# Below this onnxruntime time per batch, handing the batch to a worker thread (and the result back to the
# event loop) costs more CPU and latency than the run itself: the LSTM served 1.6-1.8x faster inline,
# measured with bench/run.py (docs/performance.md). Longer batches run in the pool, never on the loop.
INLINE_INFER_S = 0.002
INFER_EWMA = 0.2
# Batches an instance holds at once: one running, one staged behind it on its thread.
BATCHES_IN_HAND = 2
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
        self._queues = RequestQueues(name, policy, self._held)
        self._arrived = asyncio.Event()
        self._running = 0
        self._closed = False
        # One thread per instance: its staged batch starts the moment the running one ends.
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}-{index}")
            for index in range(len(self._sessions))
        ]
        self._in_hand = [0] * len(self._sessions)  # batches given to each instance's thread, not yet answered
        self._staged: list[StagedBatch | None] = [None] * len(self._sessions)
        # Running average of onnxruntime's time per input element: a batch's cost is its elements times it.
        self._s_per_element = seconds_per_element
        self._loop = loop = asyncio.get_running_loop()
        # IdleAwareEventLoop.when_idle; None on another loop or when batches wait to fill (worker only).
        self._when_idle = None if policy.max_queue_delay_s > 0 else getattr(loop, "when_idle", None)
        self._flush_scheduled = False
        self._workers = [
            asyncio.create_task(self._work(index, slot))
            for index in range(len(self._sessions))
            for slot in range(BATCHES_IN_HAND)
        ]

    def estimate_s(self, elements: int) -> float:
        """onnxruntime's expected time for a batch of this many input elements (inf while unknown)."""
        return math.inf if self._s_per_element is None else elements * self._s_per_element

    def _inline_ok(self, elements: int = 1) -> bool:
        """Run on the event loop: one instance and a batch so quick the thread hand-off would cost more."""
        return len(self._sessions) == 1 and self.estimate_s(elements) < INLINE_INFER_S

    @property
    def pending(self) -> int:
        """Requests waiting in the queues."""
        return len(self._queues)

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
        self._queues.check_room(scheduling.level)
        queue_policy = policy.queue_policy(scheduling.level)
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
        self._queues.watch(pending)
        if policy.dynamic and not self.pending and self._join_staged(pending):
            return future
        self._queues.append(pending, scheduling.level)
        if self._when_idle is not None and not self._running and self._inline_ok(elements):
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._when_idle(self._flush)
        else:
            self._arrived.set()
        return future

    def _join_staged(self, pending: Pending) -> bool:
        """Add the request to a batch staged on an instance's thread, if one is open and it fits. Only
        while every instance holds a batch: an idle one takes the request from the queue at once."""
        return min(self._in_hand) > 0 and any(
            staged is not None and staged.join(pending, self.policy.max_batch_size) for staged in self._staged
        )

    def _held(self, live: Callable[[Pending], bool]) -> list[Pending]:
        """For the expiry timer: the requests waiting in staged batches, minus those `live` rejects."""
        return [pending for staged in self._staged if staged is not None for pending in staged.keep(live)]

    def _flush(self) -> None:
        """The loop is about to wait: run what queued meanwhile, on the loop, batch after batch, as long
        as each batch is quick; a long one is left to the worker, which runs it in the pool."""
        self._flush_scheduled = False
        while (
            not self._running and (head := self._queues.peek()) is not None and self._inline_ok(head.elements)
        ):
            budget = INLINE_INFER_S / self._s_per_element if self._s_per_element else None
            self._finish(self._queues.take(budget), 0)
        if self.pending:
            self._arrived.set()

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the workers."""
        self._closed = True
        while self.pending or self._running:
            await asyncio.sleep(0.01)
        self._queues.close()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for executor in self._executors:
            executor.shutdown(wait=False)

    def _may_take(self, index: int) -> bool:
        """Instance `index` may take another batch: it holds fewer than BATCHES_IN_HAND, and no other
        instance holds fewer (an idle instance runs a batch before a busy one stages one)."""
        held = self._in_hand[index]
        return held < BATCHES_IN_HAND and held <= min(self._in_hand)

    async def _work(self, index: int, slot: int) -> None:
        """One of an instance's BATCHES_IN_HAND workers; slot 0 also shrinks the instance's arena."""
        loop = asyncio.get_running_loop()
        while True:
            head = self._queues.peek()
            if head is None and self._in_hand[index] == 0 and (stolen := self._withdraw_staged()):
                await self._run_batch(loop, index, stolen)
                continue
            if head is None or not self._may_take(index):
                self._arrived.clear()
                if head is None and slot == 0:
                    await self._idle(loop, index)
                else:
                    await self._arrived.wait()
                continue
            if self.policy.max_queue_delay_s > 0:
                await self._fill(head)
            batch = self._queues.take()
            if batch:
                await self._run_batch(loop, index, batch)

    async def _run_batch(self, loop, index: int, batch: list[Pending]) -> None:
        self._running += 1
        try:
            await self._run(loop, index, batch)
        finally:
            self._running -= 1
            # Slot 0 may be idle, waiting without a timer, when another slot's run grows the arena: wake
            # it so that it counts the idle time to the shrink (else the arena is kept until a request).
            if self.pending or self._grown_at[index] is not None:
                self._arrived.set()

    def _withdraw_staged(self) -> list[Pending]:
        """For an instance left with nothing: a batch staged behind another instance's run, taken back
        before that thread claims it, so that the free instance runs it now instead of idling."""
        for staged in self._staged:
            if staged is not None and (items := staged.withdraw()):
                return items
        return []

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
            await loop.run_in_executor(
                self._executors[index], self._memory.shrink_idle, self._sessions[index], index
            )
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
        while not head.future.done() and self._queues.rows_like(head) < target:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

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
        """Run a batch on instance `index`: on the loop when it is quick and the instance's thread holds
        nothing, else staged on that thread (where later requests may join it until it starts)."""
        if self._in_hand[index] == 0 and self._inline_ok(sum(p.elements for p in batch)):
            self._finish(batch, index)
            return
        staged = self._staged[index] = StagedBatch(batch)
        self._in_hand[index] += 1
        try:
            ran, split, timings = await loop.run_in_executor(
                self._executors[index], self._execute_staged, index, staged
            )
        except InternalError as error:
            fail(staged.items, error)
            return
        finally:
            self._in_hand[index] -= 1
            if self._staged[index] is staged:
                self._staged[index] = None
        self._deliver(ran, split, timings)

    def _execute_staged(self, index: int, staged: StagedBatch):
        """On the instance's thread: claim the staged batch, leave out requests cancelled or expired while it
        waited (failed on the loop), run the rest."""
        now = time.monotonic()
        ran, expired = [], []
        for pending in staged.claim():
            if not pending.future.done():
                (expired if pending.overdue(now) else ran).append(pending)
        if expired:
            self._loop.call_soon_threadsafe(self._drop_expired, expired)
        if not ran:
            return ran, [], (0, 0, 0)
        split, timings = self._execute(index, ran, output_names(ran))
        return ran, split, timings

    def _drop_expired(self, expired: list[Pending]) -> None:
        now = time.monotonic()
        for pending in expired:
            self._queues.live(pending, now)  # fails it with its deadline or queue timeout

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
        if not batch:
            return
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
