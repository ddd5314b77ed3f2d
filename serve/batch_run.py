"""One batch of queued requests: the queued request, the result it resolves to, and running a batch (merge
the inputs, run the session, split the outputs back)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from .errors import InternalError

log = logging.getLogger(__name__)


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
    elements: int
    queued_s: float = 0.0

    def overdue(self, now: float) -> bool:
        """Its deadline or its queue timeout has passed (time.monotonic())."""
        return (self.deadline is not None and self.deadline <= now) or (
            self.expires is not None and self.expires <= now
        )


@dataclass(slots=True)
class Result:
    """What a request's future resolves to: its outputs and how long each phase took (ns)."""

    outputs: dict[str, np.ndarray]
    batch_size: int
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0


class StagedBatch:
    """A batch handed to an instance's thread while that instance still runs the one before: requests
    arriving meanwhile join it (same key, within max_batch_size rows) until the thread claims it as its run
    starts, so the instance starts its next batch without waiting for the event loop."""

    __slots__ = ("items", "rows", "key", "claimed", "_lock")

    def __init__(self, items: list[Pending]):
        self.items = items
        self.rows = sum(p.rows for p in items)
        self.key = items[0].key
        self.claimed = False
        self._lock = threading.Lock()

    def join(self, pending: Pending, max_rows: int) -> bool:
        """Add `pending` (on the event loop); False once claimed, or when it does not fit."""
        with self._lock:
            if self.claimed or pending.key != self.key or self.rows + pending.rows > max_rows:
                return False
            self.items.append(pending)
            self.rows += pending.rows
            return True

    def keep(self, live) -> list[Pending]:
        """Drop the requests `live(pending)` rejects (on the event loop) unless the batch was claimed;
        the requests still waiting in it."""
        with self._lock:
            if self.claimed:
                return []
            self.items[:] = [pending for pending in self.items if live(pending)]
            self.rows = sum(p.rows for p in self.items)
            return list(self.items)

    def withdraw(self) -> list[Pending]:
        """Take the batch back unclaimed (on the event loop), for an instance that became free first; the
        thread it was handed to then finds it empty. [] once claimed."""
        with self._lock:
            if self.claimed:
                return []
            self.claimed = True
            items, self.items, self.rows = self.items, [], 0
            return items

    def claim(self) -> list[Pending]:
        """The batch as it runs (on the instance's thread); nothing joins it after this."""
        with self._lock:
            self.claimed = True
        now = time.monotonic()
        for pending in self.items:
            pending.queued_s = now - pending.enqueued
        return self.items


def execute(session, batch: list[Pending], names: list[str], batched: bool, run_options=None):
    """Run one batch (on the loop or a worker thread): merge inputs, run, check rows, split outputs back."""
    start = time.perf_counter_ns()
    if len(batch) == 1:
        feeds = batch[0].inputs
    else:
        feeds = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
    ran = time.perf_counter_ns()
    arrays = session.run(names, feeds, run_options)
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


def output_names(batch: list[Pending]) -> list[str]:
    return list(dict.fromkeys(name for pending in batch for name in pending.outputs))


def fail(batch: list[Pending], error: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
