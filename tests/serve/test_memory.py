"""The memory rules of a model version: the load-time estimate, the budget check, arena shrinkage after
outsized runs and once an instance is idle after large batches."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import onnxruntime as ort
import pytest
import sequence_model
from onnx_models import write_model
from prometheus_client import CollectorRegistry

from ortserve.serve import memory
from ortserve.serve.batcher import Batcher, BatchPolicy
from ortserve.serve.errors import ResourceExhausted
from ortserve.serve.idle_loop import run
from ortserve.serve.metrics import ServerMetrics
from ortserve.serve.model import LoadOptions
from ortserve.serve.repository import ModelRepository


def _load(repo, options: LoadOptions):
    async def main():
        repository = ModelRepository(repo, ServerMetrics(CollectorRegistry()), options, lambda: None)
        await repository.load("lstm")
        model = repository.resolve("lstm")
        await repository.unload_all()
        return model

    return asyncio.run(main())


def test_the_estimate_is_measured_at_load_from_a_long_probe(tmp_path):
    write_model(tmp_path, "lstm", sequence_model.lstm(), "max_batch_size: 8\ndynamic_batching { }")
    guard = _load(tmp_path, LoadOptions()).memory_guard
    # The probe: one sequence of 4096 steps (more elements than warm-up's batch of 8 one-step sequences).
    assert guard.known_elements == memory.PROBE_ELEMENTS_PER_ROW_DIMS * sequence_model.FEATURES
    # An LSTM keeps its gates for every step: about 160 bytes per input element measured on this model.
    assert guard.bytes_per_element is not None and 20 < guard.bytes_per_element < 5000
    assert guard.budget_bytes == 1 << 30


def _guard(budget: int = 100 << 20) -> memory.MemoryGuard:
    shrink = (memory.shrink_options(["cpu:0"]),)
    return memory.MemoryGuard("'m' version 1", budget, 100.0, 1000, shrink)


def test_requests_over_the_budget_are_refused_and_what_ran_at_load_never_is():
    guard = _guard(budget=50_000)  # 500 elements' worth, below what ran at load
    small = {"x": np.zeros((1, 1000), np.float32)}
    guard.check(small, 1000)
    large = {"x": np.zeros((1, 2_000_000), np.float32)}
    with pytest.raises(ResourceExhausted) as error:
        guard.check(large, 2_000_000)
    message = str(error.value)
    for part in ("model 'm' version 1", "x [1, 2000000]", "about 191 MiB", "100 bytes per input element"):
        assert part in message
    assert "budget of 0 MiB (--max-request-memory-bytes 50000)" in message
    _guard(budget=0).check(large, 2_000_000)  # 0: no limit


def test_only_outsized_runs_shrink_the_arena():
    guard = _guard()
    assert guard.run_options(0, 4000) is None
    options = guard.run_options(0, 4001)
    assert options is not None and options.get_run_config_entry(memory.SHRINK_KEY) == "cpu:0"


# Eight sequences of 6000 steps: ~60 MB of LSTM intermediates in the arena (about 160 bytes per element).
LARGE = {"x": sequence_model.sequence(6000, rows=8)}
SMALL = {"x": sequence_model.sequence(1)}
DEADLINE_S = 120


def _large_batch_batcher(on_batch=None, instances: int = 1) -> Batcher:
    """An LSTM batcher whose load-time runs were batch 1 (the idle arena) up to LARGE (not outsized)."""
    model = sequence_model.lstm().SerializeToString()
    sessions = [ort.InferenceSession(model, providers=["CPUExecutionProvider"]) for _ in range(instances)]
    shrink = tuple(memory.shrink_options(["cpu:0"]) for _ in sessions)
    guard = memory.MemoryGuard("'lstm' version 1", 0, None, LARGE["x"].size, shrink, SMALL)
    policy = BatchPolicy(max_batch_size=8, dynamic=True)
    # Quick at load: small batches of one instance run inline on the event loop, LARGE ones in the pool.
    return Batcher("'lstm' version 1", sessions, policy, on_batch, seconds_per_element=1e-7, memory=guard)


async def _shrinks(batcher: Batcher, count: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while batcher.arena_shrinks < count:
        assert time.monotonic() < deadline, f"arena never shrunk {count} time(s)"
        await asyncio.sleep(0.01)


def test_the_arena_is_given_back_whichever_of_the_instances_workers_ran_the_large_batch():
    # An instance has BATCHES_IN_HAND workers and only the first shrinks; the small runs between rounds change
    # which worker wakes first and takes the large batch.
    async def main():
        batcher = _large_batch_batcher()
        for round_index in range(4):
            for _ in range(round_index % 2 + 1):
                await batcher.submit(SMALL, 1, ["h"])
            await batcher.submit(LARGE, 8, ["h"])
            await _shrinks(batcher, round_index + 1)
        await batcher.close()

    run(main())


def test_an_instance_idle_after_a_large_batch_gives_its_arena_back():
    async def main():
        batcher = _large_batch_batcher()
        for _ in range(20):  # small runs inline: they never grow the arena beyond an idle model's
            await batcher.submit(SMALL, 1, ["h"])
        before = memory.resident_bytes()
        await batcher.submit(LARGE, 8, ["h"])
        grown = memory.resident_bytes() - before
        await _shrinks(batcher, 1)
        kept = memory.resident_bytes() - before
        await batcher.submit(SMALL, 1, ["h"])  # a small run after the shrink: no second one is due
        shrinks = batcher.arena_shrinks
        await batcher.close()
        return grown, kept, shrinks

    grown, kept, shrinks = run(main())
    assert shrinks == 1
    assert grown > 30 << 20, f"the large batch grew resident memory by only {grown >> 20} MiB"
    assert kept < grown / 3, f"{kept >> 20} of {grown >> 20} MiB still resident after the shrink"


def test_a_steady_stream_of_large_batches_is_not_shrunk_between_them():
    seen: list[int] = []  # arena_shrinks as each batch was delivered

    async def main():
        batcher = _large_batch_batcher(lambda *_: seen.append(batcher.arena_shrinks))
        # Queued together: the worker takes batch after batch and is never idle in between.
        await asyncio.gather(*(batcher.submit(LARGE, 8, ["h"]) for _ in range(4)))
        await _shrinks(batcher, 1)  # idle afterwards: shrunk once
        await batcher.close()
        return batcher.arena_shrinks

    assert run(main()) == 1
    assert seen == [0, 0, 0, 0]


def test_each_instance_is_shrunk_once_it_is_idle():
    async def main():
        batcher = _large_batch_batcher(instances=2)
        # Two batches of 8 rows (max_batch_size): one on each instance's worker.
        await asyncio.gather(*(batcher.submit(LARGE, 8, ["h"]) for _ in range(2)))
        await _shrinks(batcher, 2)
        await batcher.close()
        return batcher.arena_shrinks

    assert run(main()) == 2
