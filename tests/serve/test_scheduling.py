"""The scheduler without gRPC: priority levels, queue timeouts on a timer, the queue delay, the per-batch
choice between the event loop and the pool, and the `priority` / `timeout` request parameters."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import onnx_models as models
import onnxruntime as ort
import pytest
import sequence_model

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import model_config_pb2
from ortserve.serve.batcher import Batcher, BatchPolicy
from ortserve.serve.errors import InvalidArgument, ModelLoadError, QueueTimeout
from ortserve.serve.idle_loop import run
from ortserve.serve.scheduling import QueuePolicy, Scheduling, batch_policy, request_scheduling
from ortserve.serve.settings import SettingsError, load_settings

X = {"input": np.zeros((1, 4), np.float32)}


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_higher_priority_levels_run_first():
    session = _session(models.linear_classifier())
    order: list[int] = []
    policy = BatchPolicy(max_batch_size=8, priority_levels=3, default_priority_level=2)

    async def main():
        batcher = Batcher("p", [session], policy, lambda size, *_: order.append(size))
        # Submitted in one loop turn, before the worker runs; rows tell the requests apart.
        low = batcher.submit({"input": np.zeros((3, 4), np.float32)}, 3, ["logits"], None, Scheduling(3))
        default = batcher.submit({"input": np.zeros((2, 4), np.float32)}, 2, ["logits"], None, Scheduling(2))
        high = batcher.submit(X, 1, ["logits"], None, Scheduling(1))
        await asyncio.gather(low, default, high)
        await batcher.close()

    asyncio.run(main())
    assert order == [1, 2, 3]


def test_a_full_level_refuses_only_its_own_requests():
    session = _session(models.linear_classifier())
    policy = BatchPolicy(
        max_batch_size=8,
        dynamic=True,
        priority_levels=2,
        default_priority_level=2,
        level_policies={2: QueuePolicy(max_queue_size=1)},
    )

    async def main():
        batcher = Batcher("p", [session], policy)
        futures = [batcher.submit(X, 1, ["logits"], None, Scheduling(2))]
        with pytest.raises(Exception, match="exceeds maximum queue size 1"):
            batcher.submit(X, 1, ["logits"], None, Scheduling(2))
        futures += [batcher.submit(X, 1, ["logits"], None, Scheduling(1)) for _ in range(3)]
        await asyncio.gather(*futures)
        await batcher.close()

    asyncio.run(main())


def _long_request(batcher, steps=sequence_model.LONG_STEPS):
    x = sequence_model.sequence(steps)
    return batcher.submit({"x": x}, 1, ["h"])


def test_queue_timeouts_fire_while_the_instance_is_still_busy():
    """The queued request fails when its timeout passes, not when the worker is free to take a batch."""
    session = _session(sequence_model.lstm())

    async def main():
        policy = BatchPolicy(max_batch_size=1, dynamic=True)
        batcher = Batcher("t", [session], policy)
        running = _long_request(batcher)
        while not batcher._running:  # the long request is in the pool
            await asyncio.sleep(0.001)
        short = {"x": sequence_model.sequence(4)}
        waiting = batcher.submit(short, 1, ["h"], None, Scheduling(0, 0.05))
        with pytest.raises(QueueTimeout, match="request timeout expired"):
            await waiting
        assert not running.done(), "the timeout fired only once the running batch was over"
        await running
        await batcher.close()

    asyncio.run(main())


def test_cancelled_and_expired_requests_are_skipped_when_a_batch_is_taken():
    session = _session(models.linear_classifier())
    sizes: list[int] = []

    async def main():
        batcher = Batcher(
            "s", [session], BatchPolicy(max_batch_size=8, dynamic=True), lambda s, *_: sizes.append(s)
        )
        gone = batcher.submit(X, 1, ["logits"], time.monotonic() - 1)  # its deadline has passed
        cancelled = batcher.submit(X, 1, ["logits"])
        cancelled.cancel()
        kept = batcher.submit(X, 1, ["logits"])
        assert (await kept).batch_size == 1
        with pytest.raises(Exception, match="deadline passed"):
            await gone
        await batcher.close()

    asyncio.run(main())
    assert sizes == [1]


def test_max_queue_delay_holds_an_idle_instance_until_a_preferred_size():
    session = _session(models.linear_classifier())
    sizes: list[int] = []
    waiting = BatchPolicy(max_batch_size=8, dynamic=True, max_queue_delay_s=60, preferred_batch_size=(4,))

    async def main():
        batcher = Batcher("d", [session], waiting, lambda size, *_: sizes.append(size))
        futures = []
        for _ in range(4):  # one per loop turn: without the delay the idle worker would run each alone
            futures.append(batcher.submit(X, 1, ["logits"]))
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert sizes == [4] and all(r.batch_size == 4 for r in results)


def test_max_queue_delay_ends_and_a_lone_request_runs():
    session = _session(models.linear_classifier())
    policy = BatchPolicy(max_batch_size=8, dynamic=True, max_queue_delay_s=0.01, preferred_batch_size=(4,))

    async def main():
        batcher = Batcher("d", [session], policy)
        result = await batcher.submit(X, 1, ["logits"])
        await batcher.close()
        return result

    assert asyncio.run(main()).batch_size == 1


def test_a_long_batch_of_a_quick_model_runs_in_the_pool_not_on_the_loop():
    """The model is quick (its short batches run on the loop); one long sequence is judged by its size."""
    session = _session(sequence_model.lstm())

    async def main():
        # Judged quick at load (0.1 us per input element): its short batches run on the event loop.
        policy = BatchPolicy(max_batch_size=8, dynamic=True)
        batcher = Batcher("q", [session], policy, seconds_per_element=1e-7)
        short = {"x": sequence_model.sequence(8)}
        assert batcher._inline_ok(short["x"].size)
        await batcher.submit(short, 1, ["h"])
        running = _long_request(batcher)
        seen_in_pool = False
        while not running.done():  # the loop keeps turning while it runs
            seen_in_pool = seen_in_pool or batcher._running == 1
            await asyncio.sleep(0.001)
        assert seen_in_pool, "the long batch ran on the event loop"
        assert (await batcher.submit(short, 1, ["h"])).outputs["h"].shape == (1, 64)
        await batcher.close()

    run(main())


def _parameters(**values) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    for name, value in values.items():
        if isinstance(value, str):
            request.parameters[name].string_param = value
        elif value < 0:
            request.parameters[name].int64_param = value
        else:
            request.parameters[name].uint64_param = value
    return request


LEVELS = BatchPolicy(
    max_batch_size=4,
    dynamic=True,
    priority_levels=2,
    default_priority_level=2,
    queue_timeout_s=1.0,
    allow_timeout_override=True,
)


@pytest.mark.parametrize(
    ("policy", "values", "expected"),
    [
        (LEVELS, {}, Scheduling(2, None)),
        (LEVELS, {"priority": 0}, Scheduling(2, None)),
        (LEVELS, {"priority": 1, "timeout": 2500}, Scheduling(1, 0.0025)),
        (LEVELS, {"timeout": 0}, Scheduling(2, None)),
        (BatchPolicy(max_batch_size=4, dynamic=True), {"priority": 7, "timeout": 10}, Scheduling(0, None)),
    ],
)
def test_priority_and_timeout_parameters(policy, values, expected):
    assert request_scheduling("m", _parameters(**values).parameters, policy) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"priority": 3}, "priority 3 is above the model's 2 priority levels"),
        ({"priority": -1}, "'priority' must be >= 0, got -1"),
        ({"timeout": "soon"}, "'timeout' must be an integer"),
    ],
)
def test_bad_priority_and_timeout_parameters_are_refused(values, message):
    with pytest.raises(InvalidArgument, match=message):
        request_scheduling("m", _parameters(**values).parameters, LEVELS)


def test_batch_policy_reads_dynamic_batching_and_checks_priority_levels():
    config = model_config_pb2.ModelConfig(name="m", max_batch_size=8)
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = 1500
    batching.preferred_batch_size.extend([2, 4])
    batching.priority_levels = 2
    batching.default_priority_level = 2
    batching.priority_queue_policy[1].max_queue_size = 3
    policy = batch_policy(config)
    assert (policy.max_queue_delay_s, policy.batch_target, policy.levels) == (0.0015, 4, 2)
    assert policy.queue_policy(1).max_queue_size == 3 and policy.queue_policy(2).max_queue_size == 0
    batching.default_priority_level = 3
    with pytest.raises(ModelLoadError, match="default_priority_level must be in 1..2"):
        batch_policy(config)


def test_the_memory_budget_setting():
    assert load_settings(["--model-repository", "."], {}).max_request_memory_bytes == 1 << 30
    env = {"ORTSERVE_MAX_REQUEST_MEMORY_BYTES": "0"}
    assert load_settings(["--model-repository", "."], env).max_request_memory_bytes == 0
    with pytest.raises(SettingsError, match="max-request-memory-bytes must be >= 0"):
        load_settings(["--model-repository", ".", "--max-request-memory-bytes", "-1"], {})
