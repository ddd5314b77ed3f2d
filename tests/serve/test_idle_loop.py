"""The idle-aware event loop and the batcher's quick-model path on it (no gRPC)."""

from __future__ import annotations

import asyncio
import logging
import socket

import numpy as np
import onnx_models as models
import onnxruntime as ort

from ortserve.serve.batcher import Batcher, BatchPolicy
from ortserve.serve.idle_loop import POSTPONE_WHILE_IO_READY, IdleAwareEventLoop, run


def test_idle_callbacks_run_once_before_the_loop_waits():
    events = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.when_idle(lambda: events.append("idle"))
        loop.call_soon(lambda: events.append("ready"))
        await asyncio.sleep(0.01)  # the loop waits here: the idle callback runs first, once
        events.append("slept")
        return 7

    assert run(main()) == 7
    assert events == ["ready", "idle", "slept"]


def test_idle_work_lets_ready_io_go_first_a_bounded_number_of_turns():
    events = []
    reader, writer = socket.socketpair()
    reader.setblocking(False)

    async def main():
        loop = asyncio.get_running_loop()
        drained = loop.create_future()

        def on_readable():  # one byte per turn, so I/O stays ready for six turns
            events.append("io")
            reader.recv(1)
            if events.count("io") == 6:
                drained.set_result(None)

        loop.add_reader(reader.fileno(), on_readable)
        writer.send(b"x" * 6)
        loop.when_idle(lambda: events.append("idle"))
        await asyncio.wait_for(drained, 5)
        loop.remove_reader(reader.fileno())

    try:
        run(main())
    finally:
        reader.close()
        writer.close()
    # Postponed while I/O was ready, but only POSTPONE_WHILE_IO_READY turns: the idle work is never starved.
    assert events[: POSTPONE_WHILE_IO_READY + 2] == ["io"] * POSTPONE_WHILE_IO_READY + ["idle", "io"]


def test_a_failing_idle_callback_is_logged_and_the_loop_goes_on(caplog):
    def broken():
        raise RuntimeError("boom")

    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, IdleAwareEventLoop)
        loop.when_idle(broken)
        await asyncio.sleep(0.01)
        return "still running"

    with caplog.at_level(logging.ERROR, logger="ortserve.serve.idle_loop"):
        assert run(main()) == "still running"
    assert "idle callback" in caplog.text and "boom" in caplog.text


def test_a_quick_model_batches_what_queued_while_the_loop_was_busy():
    session = ort.InferenceSession(
        models.linear_classifier().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    sizes: list[int] = []
    rng = np.random.default_rng(5)

    async def main():
        batcher = Batcher(
            "quick",
            [session],
            BatchPolicy(max_batch_size=8, dynamic=True),
            lambda size, *_: sizes.append(size),
        )
        x = {"input": np.zeros((1, 4), np.float32)}
        for _ in range(30):  # one at a time until the running average calls the model quick
            await batcher.submit(x, 1, ["logits"])
        assert batcher._inline_ok()
        sizes.clear()
        inputs = [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 2, 1, 3)]
        # Submitted in one loop turn: they wait for the loop to run out of work, then run as one batch.
        results = await asyncio.gather(*(batcher.submit({"input": a}, len(a), ["logits"]) for a in inputs))
        lone = await batcher.submit(x, 1, ["logits"])
        await batcher.close()
        return inputs, results, lone

    inputs, results, lone = run(main())
    assert sizes == [7, 1]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(
            result.outputs["logits"], models.classifier_reference(x)["logits"], rtol=1e-5
        )
        assert result.batch_size == 7
    assert lone.batch_size == 1
