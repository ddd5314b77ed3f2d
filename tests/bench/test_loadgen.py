"""The load generator against the real bare server over loopback gRPC: counts, bounds, errors (no timings)."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import loadgen, procs  # noqa: E402


@pytest.fixture(scope="module")
def bare_target(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bare")
    table = folder / "models.json"
    table.write_text(json.dumps({"seq": {"output": "logits", "datatype": "FP32", "row_shape": [10]}}))
    command = [sys.executable, "-m", "bench.bare_server", "--models", str(table)]
    server = procs.ServerProcess(
        "bare", command, folder / "bare.log", ready_pattern=r"BARE_LISTENING grpc=(\S+)", cwd=REPO_ROOT
    )
    target = server.start(timeout_s=60)
    yield target, server
    server.stop()


def _request(model: str) -> bytes:
    return loadgen.build_request(loadgen.RequestSpec(model, "input", np.zeros((1, 8, 8), np.float32)))


def test_closed_and_open_loop_count_answers_and_server_resources(bare_target) -> None:
    target, server = bare_target

    async def scenario():
        async with loadgen.LoadGenerator(target, _request("seq"), 1, channels=2) as generator:
            shape = await generator.check()
            closed = await generator.closed_loop(4, 0.1, 0.5, probe=procs.TreeMonitor(server.pid))
            opened = await generator.open_loop(50, 0.1, 0.5, probe=procs.TreeMonitor(server.pid))
        return shape, closed, opened

    shape, closed, opened = asyncio.run(scenario())
    assert shape == [1, 10]
    for result in (closed, opened):
        assert result.errors == 0 and result.first_error is None
        assert result.completed > 0
        assert not math.isnan(result.latency_ms["p99"])
        assert result.server["peak_rss_bytes"] > 0 and result.server["cpu_s"] >= 0
    assert opened.dropped == 0


def test_max_requests_bounds_the_window(bare_target) -> None:
    target, _ = bare_target

    async def scenario():
        async with loadgen.LoadGenerator(target, _request("seq"), 1) as generator:
            return await generator.closed_loop(2, 0.0, 30.0, max_requests=50)

    result = asyncio.run(scenario())
    # Stops at the cap (plus the requests already in flight), long before the 30 s window.
    assert 50 <= result.completed <= 52
    assert result.window_s < 30.0


def test_failed_requests_are_counted_with_their_status(bare_target) -> None:
    target, _ = bare_target

    async def scenario():
        async with loadgen.LoadGenerator(target, _request("missing"), 1) as generator:
            return await generator.closed_loop(2, 0.0, 0.3, max_requests=100)

    result = asyncio.run(scenario())
    assert result.completed == 0
    assert result.errors > 0
    assert result.first_error.startswith("NOT_FOUND")


def test_uint8_images_are_four_times_smaller_on_the_wire() -> None:
    sizes = {}
    for dtype in (np.uint8, np.float32):
        array = np.zeros((1, 3, 224, 224), dtype)
        sizes[dtype] = len(loadgen.build_request(loadgen.RequestSpec("resnet", "input", array)))
    assert sizes[np.float32] / sizes[np.uint8] == pytest.approx(4.0, rel=0.01)


def test_waiting_for_a_model_ends_at_once_when_its_load_failed(tmp_path: Path, start_ortserve) -> None:
    import onnx_models

    onnx_models.write_model(tmp_path, "good", onnx_models.linear_classifier())
    onnx_models.write_model(tmp_path, "broken", onnx_models.BROKEN_MODEL)
    with start_ortserve(tmp_path) as server:

        async def scenario():
            await loadgen.wait_model_ready(server.grpc_address, "good", 60)
            # A generous timeout: the ValueError (not a TimeoutError) shows the wait ended on the reason.
            with pytest.raises(ValueError, match="'broken' .* failed to load: .*cannot load"):
                await loadgen.wait_model_ready(server.grpc_address, "broken", 600)

        asyncio.run(scenario())
