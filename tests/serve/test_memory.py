"""The memory rules of a model version: the load-time estimate, the budget check, arena shrinkage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import sequence_model
from onnx_models import write_model
from prometheus_client import CollectorRegistry

from ortserve.serve import memory
from ortserve.serve.errors import ResourceExhausted
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
