"""The scheduler's second batch in hand: while an instance runs one batch, the next waits on its thread
(staged), later requests join it, and the thread starts it without the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import sequence_model

from ortserve.serve.batcher import Batcher, BatchPolicy
from ortserve.serve.errors import DeadlineExceeded

POLICY = BatchPolicy(max_batch_size=8, dynamic=True)


def _session() -> ort.InferenceSession:
    return ort.InferenceSession(sequence_model.lstm().SerializeToString(), providers=["CPUExecutionProvider"])


def _submit(batcher: Batcher, steps: int, seed: int = 0) -> asyncio.Future:
    return batcher.submit({"x": sequence_model.sequence(steps, seed=seed)}, 1, ["h"])


async def _until(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the scheduler's state"
        await asyncio.sleep(0.001)


def test_requests_join_the_staged_batch_and_the_thread_starts_it_while_the_loop_is_blocked():
    session = _session()
    sizes: list[int] = []

    async def main():
        batcher = Batcher("s", [session], POLICY, lambda size, *_: sizes.append(size))
        running = _submit(batcher, sequence_model.LONG_STEPS)
        await _until(lambda: batcher._in_hand[0] == 1)  # the long batch is on the instance's thread
        second = _submit(batcher, 4, seed=1)
        await _until(lambda: batcher._in_hand[0] == 2)  # ... and the second is staged behind it
        staged = batcher._staged[0]
        third = _submit(batcher, 4, seed=2)
        assert batcher.pending == 0, "the third request joined the staged batch instead of queueing"
        # Block the event loop: the thread must start the staged batch on its own once the long one ends.
        deadline = time.monotonic() + 120
        while not staged.claimed:
            assert time.monotonic() < deadline, "the staged batch did not start while the loop was blocked"
            time.sleep(0.001)
        results = await asyncio.gather(running, second, third)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert sizes == [1, 2]
    assert [r.batch_size for r in results] == [1, 2, 2]
    for seed, result in zip((1, 2), results[1:], strict=True):
        alone = session.run(["h"], {"x": sequence_model.sequence(4, seed=seed)})[0]
        np.testing.assert_allclose(result.outputs["h"], alone, rtol=1e-5, atol=1e-6)


def test_an_idle_instance_runs_a_batch_before_a_busy_one_stages_it():
    sessions = [_session(), _session()]

    async def main():
        batcher = Batcher("two", sessions, POLICY)
        long = _submit(batcher, sequence_model.LONG_STEPS)
        await _until(lambda: sum(batcher._in_hand) == 1)
        short = _submit(batcher, 4)
        await short  # ran on the other instance while the long one still runs
        assert not long.done(), "the short request waited for the long one"
        await long
        await batcher.close()

    asyncio.run(main())


class GatedSession:
    """A real onnxruntime session whose runs wait for the test's go-ahead: which instance is busy, and for how
    long, is the test's choice rather than the machine's speed."""

    def __init__(self):
        self.session = _session()
        self.go = threading.Event()
        self.runs = 0

    def run(self, names, feeds, options=None):
        self.runs += 1
        assert self.go.wait(120), "the test never let this run go"
        return self.session.run(names, feeds, options)


def test_an_instance_that_becomes_free_runs_the_batch_staged_behind_the_other_and_takes_new_requests():
    sessions = [GatedSession(), GatedSession()]

    async def main():
        batcher = Batcher("two", sessions, POLICY)
        first = _submit(batcher, 4, seed=0)
        await _until(lambda: sum(batcher._in_hand) == 1)
        second = _submit(batcher, 4, seed=1)
        await _until(lambda: batcher._in_hand == [1, 1])
        staged = [_submit(batcher, 4, seed=2)]
        await _until(lambda: max(batcher._in_hand) == 2)
        staged.append(_submit(batcher, 4, seed=3))  # joins the staged batch: both instances are busy
        assert batcher.pending == 0
        behind = batcher._in_hand.index(2)  # the instance the batch is staged behind stays blocked
        free = 1 - behind
        sessions[free].go.set()
        staged_results = await asyncio.gather(*staged)
        assert [r.batch_size for r in staged_results] == [2, 2]
        assert [first.done(), second.done()].count(False) == 1, "the blocked instance's run ended"
        late = await _submit(batcher, 4, seed=4)  # an idle instance takes it; it joins no staged batch
        assert late.batch_size == 1
        assert sessions[behind].runs == 1, "the blocked instance ran something else meanwhile"
        sessions[behind].go.set()
        results = await asyncio.gather(first, second)
        await batcher.close()
        return results + staged_results + [late]

    results = asyncio.run(main())
    for seed, result in enumerate(results):
        alone = sessions[0].session.run(["h"], {"x": sequence_model.sequence(4, seed=seed)})[0]
        np.testing.assert_allclose(result.outputs["h"], alone, rtol=1e-5, atol=1e-6)


def test_a_request_that_expires_in_a_staged_batch_fails_on_time_and_never_runs():
    session = _session()
    sizes: list[int] = []

    async def main():
        batcher = Batcher("e", [session], POLICY, lambda size, *_: sizes.append(size))
        running = _submit(batcher, sequence_model.LONG_STEPS)
        await _until(lambda: batcher._in_hand[0] == 1)
        doomed = batcher.submit({"x": sequence_model.sequence(4)}, 1, ["h"], time.monotonic() + 0.05)
        await _until(lambda: batcher._in_hand[0] == 2 or doomed.done())
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            await doomed
        assert not running.done(), "the deadline fired only once the running batch was over"
        await running
        await batcher.close()

    asyncio.run(main())
    assert sizes == [1]
