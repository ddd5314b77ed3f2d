"""The request queues of one model version: one per priority level, level 1 taken first, with queue limits,
queue timeouts and deadlines that fail requests on a timer, and taking the next batch out of them.

Used on the event loop only. Requests that already left the queues but have not started (a batch staged on
an instance's thread) are still failed on time: `held` lists them for the timer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from .batch_run import Pending
from .errors import DeadlineExceeded, QueueFull, QueueTimeout
from .scheduling import BatchPolicy

# held(live): the requests waiting outside the queues that `live` accepts (it fails the others).
Held = Callable[[Callable[[Pending], bool]], list[Pending]]


class RequestQueues:
    """Per-level queues of Pending requests, with their expiry timer."""

    def __init__(self, name: str, policy: BatchPolicy, held: Held | None = None):
        self.name = name
        self.policy = policy
        self._held = held
        self._levels: list[deque[Pending]] = [deque() for _ in range(policy.levels)]
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._levels)

    def check_room(self, level: int) -> None:
        """Raise QueueFull when the level's queue holds its max_queue_size."""
        limit = self.policy.queue_policy(level).max_queue_size
        if limit and len(self._levels[max(level, 1) - 1]) >= limit:
            raise QueueFull(f"model {self.name}: request exceeds maximum queue size {limit}")

    def watch(self, pending: Pending) -> None:
        """Fail `pending` on time once its queue timeout or deadline passes, wherever it waits."""
        for when in (pending.expires, pending.deadline):
            if when is not None and when < self._timer_at:
                self._arm(when)

    def append(self, pending: Pending, level: int) -> None:
        self._levels[max(level, 1) - 1].append(pending)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _arm(self, when: float) -> None:
        """Fail expired requests at `when` (time.monotonic()), not only when a worker takes a batch."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_later(max(when - time.monotonic(), 0.0), self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        waiting: list[Pending] = []
        for index, queue in enumerate(self._levels):
            kept = deque(p for p in queue if self.live(p, now))
            self._levels[index] = kept
            waiting += kept
        if self._held is not None:
            waiting += self._held(lambda pending: self.live(pending, now))
        earliest = min(
            (min(p.expires or math.inf, p.deadline or math.inf) for p in waiting), default=math.inf
        )
        if earliest < math.inf:
            self._arm(earliest)

    def live(self, pending: Pending, now: float) -> bool:
        """False for a request that must not run: cancelled, or failed here as its deadline or queue
        timeout passed."""
        if pending.future.done():
            return False
        if not pending.overdue(now):
            return True
        if pending.deadline is not None and pending.deadline <= now:
            pending.future.set_exception(DeadlineExceeded(f"model {self.name}: deadline passed in the queue"))
        else:
            pending.future.set_exception(QueueTimeout(f"model {self.name}: request timeout expired"))
        return False

    def peek(self) -> Pending | None:
        """The request the next batch starts with (highest level first), dropping stale ones before it."""
        now = time.monotonic()
        for queue in self._levels:
            while queue:
                if self.live(queue[0], now):
                    return queue[0]
                queue.popleft()
        return None

    def rows_like(self, head: Pending) -> int:
        """Queued rows that could share a batch with `head`."""
        return sum(p.rows for queue in self._levels for p in queue if p.key == head.key)

    def take(self, max_elements: float | None = None) -> list[Pending]:
        """The next batch: the first live request of the highest non-empty level and, with dynamic
        batching, later ones with its key (higher levels first) up to max_batch_size rows and
        `max_elements` input elements. Stale requests met on the way are dropped."""
        head = self.peek()
        if head is None:
            return []
        for queue in self._levels:
            if queue and queue[0] is head:
                queue.popleft()
                break
        batch, rows, elements = [head], head.rows, head.elements
        limit = self.policy.max_batch_size
        now = time.monotonic()
        if self.policy.dynamic and rows < limit:
            for index, queue in enumerate(self._levels):
                if rows >= limit:
                    break
                kept: deque[Pending] = deque()
                while queue and rows < limit:
                    pending = queue.popleft()
                    if not self.live(pending, now):
                        continue
                    fits = max_elements is None or elements + pending.elements <= max_elements
                    if pending.key == head.key and rows + pending.rows <= limit and fits:
                        batch.append(pending)
                        rows += pending.rows
                        elements += pending.elements
                    else:
                        kept.append(pending)
                kept.extend(queue)
                self._levels[index] = kept
        for pending in batch:
            pending.queued_s = now - pending.enqueued
        return batch
