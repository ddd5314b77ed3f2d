"""One batch of queued requests: the queued request, the result it resolves to, and running a batch (merge
the inputs, run the session, split the outputs back)."""

from __future__ import annotations

import asyncio
import logging
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


@dataclass(slots=True)
class Result:
    """What a request's future resolves to: its outputs and how long each phase took (ns)."""

    outputs: dict[str, np.ndarray]
    batch_size: int
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0


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
